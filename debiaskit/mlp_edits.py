"""Temporary edits of MLP output weights, and the MLP keys and outputs they act on.

LSDM and DAMA both change blocks.L.mlp.W_out (TransformerLens row vectors: the MLP writes k W_out + b_out, the key
k = blocks.L.mlp.hook_post) and both keep the anchor token's output as it was. What they share lives here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

from debiaskit.concepts import LabelledText, read_at_positions
from debiaskit.model import LoadedModel
from debiaskit.reuse import Touches


@contextmanager
def edited_weights(lm: LoadedModel, edits: dict[int, torch.Tensor]) -> Iterator[None]:
    """W_out += D per layer for the block's duration; the saved originals are copied back on every exit path."""
    saved = {layer: lm.model.blocks[layer].mlp.W_out.detach().clone() for layer in edits}
    try:
        with torch.no_grad():
            for layer, edit in edits.items():
                weight = lm.model.blocks[layer].mlp.W_out
                weight.add_(edit.to(weight.device, weight.dtype))
        yield
    finally:
        with torch.no_grad():
            for layer, original in saved.items():
                lm.model.blocks[layer].mlp.W_out.copy_(original)


def edits_touch(edits: dict[int, torch.Tensor]) -> Touches:
    """What `edited_weights(lm, edits)` touches: W_out of each edited block."""
    return Touches(weights=tuple(f"blocks.{layer}.mlp.W_out" for layer in edits))


def read_mlp(lm: LoadedModel, examples: Sequence[LabelledText], layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(keys [n, d_mlp], outputs [n, d_model]) of block `layer`'s MLP at every example position, float64 on the CPU."""
    key_hook, output_hook = f"blocks.{layer}.mlp.hook_post", f"blocks.{layer}.hook_mlp_out"
    read = read_at_positions(lm, examples, [key_hook, output_hook], stop_at_layer=layer + 1)
    return read[key_hook], read[output_hook]


def anchor_key(lm: LoadedModel, layer: int) -> torch.Tensor | None:
    """The anchor token's key [d_mlp] at block `layer` (one vector: the first position sees only itself), or None
    for a model without an anchor token."""
    if lm.anchor_token_id is None:
        return None
    return read_mlp(lm, [LabelledText(tuple(lm.encode("")), (0,), 0, "anchor")], layer)[0][0]


def keep_anchor(edit: torch.Tensor, metric: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
    """The edit D' [d_mlp, d_model] nearest `edit` D in the norm tr(X^T A X) (A = `metric`, positive definite) with
    a D' = 0 for the anchor key a: by Lagrange multipliers, D' = D - A^-1 a^T (a A^-1 a^T)^-1 a D."""
    a = anchor.to(edit.dtype).reshape(1, -1)
    inverse_a = torch.linalg.solve(metric.to(edit.dtype), a.T)  # A^-1 a^T [d_mlp, 1]
    return edit - inverse_a @ torch.linalg.solve(a @ inverse_a, a @ edit)


def relative_norm(part: torch.Tensor, whole: torch.Tensor) -> float:
    return float(part.norm() / whole.norm().clamp_min(1e-12))
