"""Reading the model's activation at a hook point: its width, how far to run the model, and batch by batch."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from debiaskit.method import hooked
from debiaskit.model import LoadedModel

BATCH_SIZE = 16


def activation_width(lm: LoadedModel, hook_name: str) -> int:
    """The width of the activation at `hook_name` (heads flattened), read from a short forward pass."""
    seen: dict[str, int] = {}

    def record(activation: torch.Tensor, hook: Any) -> None:
        seen["width"] = math.prod(activation.shape[2:])

    with torch.no_grad(), hooked(lm, [(hook_name, record)]):
        lm.model(torch.tensor([lm.encode("the")], device=lm.device))
    return seen["width"]


def stop_layer(hook_name: str) -> int | None:
    """Run only up to the block that holds `hook_name` (blocks.L.*); None for hooks outside the blocks."""
    parts = hook_name.split(".")
    return int(parts[1]) + 1 if len(parts) > 2 and parts[0] == "blocks" and parts[1].isdigit() else None


def hook_activations(lm: LoadedModel, hook_name: str, sequences: Sequence[Sequence[int]]
                     ) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """(index of the batch's first sequence, activation [batch, pos, ...], editable positions [batch, pos]) per
    batch, running the model only as far as `hook_name`."""
    for start in range(0, len(sequences), BATCH_SIZE):
        batch = lm.make_batch(sequences[start:start + BATCH_SIZE])
        seen: dict[str, torch.Tensor] = {}

        def read(activation: torch.Tensor, hook: Any) -> None:
            seen["x"] = activation.detach()  # noqa: B023 - called in-loop

        with hooked(lm, [(hook_name, read)]):
            lm.run(batch, stop_at_layer=stop_layer(hook_name))
        yield start, seen["x"], lm.editable_mask(seen["x"])[..., 0]
