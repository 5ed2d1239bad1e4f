"""debiaskit: compare debiasing methods for language models on occupational gender bias, in one table."""

from debiaskit.data import DatasetSpec, Occupation, OccupationSet, TemplateFamily
from debiaskit.errors import DebiasKitError
from debiaskit.hookspecs import hookimpl
from debiaskit.method import FitContext, Intervention, Method, check_layers, hooked, resid_post
from debiaskit.model import LoadedModel, load_model
from debiaskit.options import Option
from debiaskit.reuse import Touches

__all__ = [
    "DatasetSpec",
    "DebiasKitError",
    "FitContext",
    "Intervention",
    "LoadedModel",
    "Method",
    "Occupation",
    "OccupationSet",
    "Option",
    "TemplateFamily",
    "Touches",
    "check_layers",
    "hooked",
    "hookimpl",
    "load_model",
    "resid_post",
]
