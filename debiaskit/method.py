"""The method contract: every debiasing method is a `Method` subclass that a plugin registers.

A method is created from its options, fitted once (`fit`), and applied for exactly the duration of an
evaluation (`apply`, a context manager). While applied it may
  * hook activations (`hooked` below installs TransformerLens hooks and always removes them),
  * transform next-token logits (the `Intervention` it yields; a transform may run the model again itself, on
    tokens of its own built from the batch, as Self-Debias runs the prefixed text: `LoadedModel.run` is free
    whenever a transform is called), and/or
  * edit weights temporarily (restore them in a `finally`).
The host scores every method with the same evaluator and metrics; no method computes its own headline number.
A method that says what it touches (`touches`) is scored faster: the host starts its forward above it
(`debiaskit.reuse`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from debiaskit.errors import DebiasKitError
from debiaskit.options import Option, resolve_settings
from debiaskit.reuse import Touches

if TYPE_CHECKING:
    from debiaskit.data import Occupation, TemplateFamily
    from debiaskit.model import Batch, LoadedModel

# (logits [batch, pos, vocab], batch) -> logits; logits[:, i] predicts the token after batch.tokens[:, : i + 1]
LogitsTransform = Callable[[torch.Tensor, "Batch"], torch.Tensor]
ActivationHook = tuple[str, Callable[..., Any]]  # (hook point name, TransformerLens hook function)


@dataclass(frozen=True)
class Intervention:
    """What an applied method asks of the evaluator beyond the hooks it installed itself."""

    logits_transform: LogitsTransform | None = None


@dataclass(frozen=True)
class FitContext:
    """What a method may learn from: the model, the jobs of the training split, and the prompt family."""

    model: LoadedModel
    train_jobs: tuple[Occupation, ...]
    templates: TemplateFamily
    seed: int


class Method:
    """Base class of a debiasing method. Subclasses set the class attributes and override what they need."""

    name: ClassVar[str]
    description: ClassVar[str]
    options: ClassVar[tuple[Option, ...]] = ()
    strength_knob: ClassVar[str | None] = None  # the option that sets how hard the method pushes
    # fit draws on FitContext.seed (a seeded split, an initialisation): rerun over --seeds
    random_fit: ClassVar[bool] = False

    def __init__(self, **given: Any) -> None:
        self.settings: dict[str, Any] = resolve_settings(self.name, self.options, given)

    def uses_jobs(self) -> bool:
        """True when `fit` learns from occupation prompts: the host then fits per fold and scores held-out jobs.
        When False, `FitContext.train_jobs` is empty."""
        return False

    def fitted_words(self) -> frozenset[str]:
        """Words whose own text `fit` learns from (e.g. gendered word pairs). A profession or control noun among
        them is left out of this method's selectivity scores, as a training job is: it would measure the fit."""
        return frozenset()

    def check(self, lm: LoadedModel) -> None:
        """Raise DebiasKitError when these settings cannot work on `lm` (a layer or hook point it lacks, an SAE of
        another width). The host calls it for every method before scoring any, so bad input stops the run at once.
        The default checks nothing."""

    def fit(self, context: FitContext) -> None:
        """Learn whatever the method needs. The default learns nothing."""

    @contextmanager
    def apply(self, lm: LoadedModel) -> Iterator[Intervention]:
        """Change the model for the duration of the `with` block. The default changes nothing."""
        yield Intervention()

    def touches(self, lm: LoadedModel) -> Touches | None:
        """What the fitted method's `apply` changes: the hook points it hooks and the weights it edits (a logits
        transform needs no mention). The host then reuses the baseline's residual stream below the lowest of them,
        checks that no other hook point is hooked, and may run a prompt's beginning and its rest as two passes
        (`debiaskit.shared_prefixes`), so a declared hook edits position by position, telling positions apart by
        `LoadedModel.editable_mask`, `scored_mask` and `running_tokens`. None (the default): unknown, so the full
        forward runs."""
        return None

    def details(self) -> dict[str, Any]:
        """Extra columns for this method's table row (e.g. how many latents were chosen)."""
        return {}


def resid_post(layer: int) -> str:
    """The hook point of the residual stream after block `layer`, where the residual-stream methods read and edit."""
    return f"blocks.{layer}.hook_resid_post"


def check_layers(lm: LoadedModel, layers: Sequence[int], option: str) -> None:
    """Raise DebiasKitError when a layer of `layers` (the value of `option`, e.g. leace.layers) is not a block
    of `lm`."""
    bad = [layer for layer in layers if not 0 <= layer < lm.n_layers]
    if bad:
        raise DebiasKitError(f"option {option} has {bad[0]}; {lm.name} has blocks 0 to {lm.n_layers - 1}")


@contextmanager
def hooked(lm: LoadedModel, hooks: Sequence[ActivationHook]) -> Iterator[None]:
    """Install forward hooks for the block's duration; they are removed on every exit path."""
    unknown = [name for name, _ in hooks if name not in lm.model.hook_dict]
    if unknown:
        raise DebiasKitError(f"hook point {unknown[0]!r} does not exist in {lm.name}; e.g. blocks.0.hook_resid_post")
    with lm.model.hooks(fwd_hooks=list(hooks), reset_hooks_end=True):
        yield



@contextmanager
def model_gradients(lm: LoadedModel, learn_weights: bool) -> Iterator[None]:
    """Gradients on for the block's duration (also when the caller turned them off), with every parameter of `lm`
    learning (`learn_weights`) or frozen, as a method that trains the model or only its own tensors needs; each
    parameter's requires_grad flag is restored on every exit path."""
    flags = [(parameter, parameter.requires_grad) for parameter in lm.model.parameters()]
    try:
        for parameter, _ in flags:
            parameter.requires_grad_(learn_weights)
        with torch.enable_grad():
            yield
    finally:
        for parameter, flag in flags:
            parameter.requires_grad_(flag)
