"""The options every command that loads a model takes (`--model`, `--device`, `--dtype`), defined once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from debiaskit.model import DEVICE_CHOICES, DTYPES, EMBEDDED_MODEL

MODEL_HELP = "'smollm2' (embedded), a local Llama-architecture Hugging Face folder, or a TransformerLens model name."
DEVICE_HELP = "auto: cuda when torch sees a GPU, else cpu."

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def stacked(*options: Decorator) -> Decorator:
    """One decorator applying `options` so that `--help` lists them in the order given."""
    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


# --model, --device and --dtype; the command receives them as `model`, `device` and `dtype`
model_options = stacked(
    click.option("--model", default=EMBEDDED_MODEL, show_default=True, help=MODEL_HELP),
    click.option("--device", type=click.Choice(DEVICE_CHOICES), default="auto", show_default=True, help=DEVICE_HELP),
    click.option("--dtype", type=click.Choice(list(DTYPES)), default="float32", show_default=True,
                 help="Precision the model runs in."),
)


professions_option = click.option(
    "--professions", default="auto", show_default=True,
    help="Bolukbasi et al.'s professions.json for the stereotype/factual regression (a_s, a_f): a file, `auto` "
         "(debiaswe/professions.json under $DEBIASKIT_SHARED_DATA or the shared/data folder beside a checkout) or `none`.")
