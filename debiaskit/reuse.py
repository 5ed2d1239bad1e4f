"""Reuse what a method cannot change: the baseline's residual stream below the first block the method touches.

A method declares what it touches (`Method.touches`: the hook points it hooks, the weights it edits). Nothing it
touches lies below block L = the lowest block among them, so the residual stream entering block L is the baseline's
for every token sequence, and the forward can start there (TransformerLens `start_at_layer`). A method that touches
nothing in the blocks (a logits transform, the baseline itself) starts at L = n_layers: only the final norm and the
unembedding run. A method that declares nothing, or touches the embedding, gets the full forward.

The residuals are kept per token sequence (padding left out), so a batch of any composition (a fold's held-out jobs,
the neutral text's chunks) reuses them: the first method that starts at L computes them in its own forward (run to L,
kept, run on from L: the same operations as the full forward) and every later one reads them. A padding position,
which no real position attends to, enters block L as zeros.

With no logits transform, prompts are unembedded at the last position only, the one the evaluator reads, and the
beginnings a batch's prompts share run once (`debiaskit.shared_prefixes`). A fit that edits layers bottom-up reads
its upper layers the same way, from residuals kept with its lower edits applied (`BottomUpReads`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from debiaskit.errors import DebiasKitError
from debiaskit.shared_prefixes import shared_prefix_logits

if TYPE_CHECKING:
    from debiaskit.model import Batch, LoadedModel


@dataclass(frozen=True)
class Touches:
    """What an applied method changes in the model, so the host can start its forward above it."""

    hook_points: tuple[str, ...] = ()  # TransformerLens hook points it hooks, e.g. blocks.8.hook_resid_post
    weights: tuple[str, ...] = ()  # parameter names (as in model.named_parameters()) it edits, e.g. blocks.21.mlp.W_out


def block_of(name: str, n_layers: int) -> int:
    """The block a hook point or parameter lies in: n_layers for the final norm and the unembedding, 0 for the
    embedding and any name outside the blocks (which leaves nothing to reuse)."""
    parts = name.split(".")
    if parts[0] == "blocks" and len(parts) > 1 and parts[1].isdigit():
        return int(parts[1])
    return n_layers if parts[0] in ("ln_final", "unembed") or name == "hook_unembed" else 0


def first_touched_block(lm: LoadedModel, touches: Touches | None) -> int:
    """The block the forward starts at for a method that touches `touches` (0, the full forward, when undeclared)."""
    if touches is None:
        return 0
    return min((block_of(name, lm.n_layers) for name in (*touches.hook_points, *touches.weights)),
               default=lm.n_layers)


def hooked_points(lm: LoadedModel) -> set[str]:
    """The TransformerLens hook points that have a forward hook now."""
    return {name for name, point in lm.model.hook_dict.items() if point.fwd_hooks}


def check_declared(lm: LoadedModel, method: str, touches: Touches) -> None:
    """Raise DebiasKitError when an applied method hooks a point it did not declare: its reused forward would skip
    that hook."""
    undeclared = sorted(hooked_points(lm) - set(touches.hook_points))
    if undeclared:
        raise DebiasKitError(f"method {method} hooks {', '.join(undeclared)} but its touches() declares "
                             f"{', '.join(touches.hook_points) or 'no hook point'}; declare every hook point it "
                             "hooks (or return None from touches() for the full forward)")


class KeptResiduals:
    """Per block L, the residual stream [len, d_model] entering block L, per token sequence, as first computed: the
    baseline's, for the host; the model's with the edits below L applied, for a fit that edits bottom-up
    (`BottomUpReads`)."""

    def __init__(self) -> None:
        self._by_block: dict[int, dict[tuple[int, ...], torch.Tensor]] = {}
        self.batches_read: Counter[int] = Counter()  # per block, the batches that started from kept residuals

    def read(self, block: int, keys: Sequence[tuple[int, ...]], width: int) -> torch.Tensor | None:
        """The left-padded residual [batch, width, d_model] of these sequences (zeros on padding), or None when
        any of them is not kept yet."""
        rows = self.kept_rows(block, keys)
        if rows is None:
            return None
        first = rows[0]
        residual = first.new_zeros((len(rows), width, first.shape[-1]))
        for index, row in enumerate(rows):
            residual[index, width - row.shape[0]:] = row
        return residual

    def keep(self, block: int, keys: Sequence[tuple[int, ...]], residual: torch.Tensor) -> None:
        """Keep the rows of a left-padded residual [batch, width, d_model], row i for sequence keys[i]."""
        for index, key in enumerate(keys):
            self.keep_rows(block, key, residual[index, residual.shape[1] - len(key):])

    def keep_rows(self, block: int, key: tuple[int, ...], rows: torch.Tensor) -> None:
        """Keep one sequence's residual [len, d_model] entering `block`."""
        self._by_block.setdefault(block, {})[key] = rows.clone()

    def kept_rows(self, block: int, keys: Sequence[tuple[int, ...]]) -> list[torch.Tensor] | None:
        """Each sequence's kept residual [len, d_model] entering `block`, or None when any of them is not kept yet."""
        kept = self._by_block.get(block, {})
        rows = [kept.get(key) for key in keys]
        if any(row is None for row in rows):
            return None
        self.batches_read[block] += 1
        return rows  # type: ignore[return-value]

    @contextmanager
    def reused(self, lm: LoadedModel, block: int, last_position_only: bool) -> Iterator[None]:
        """For the block's duration, `lm.run` starts at `block` (0: the full forward) and, when
        `last_position_only`, unembeds only the last position of a batch that reads no other."""
        previous, lm.reuse = lm.reuse, Reuse(self, block, last_position_only)
        try:
            yield
        finally:
            lm.reuse = previous


class BottomUpReads:
    """A fit's reads of each edited layer in turn, `layers` ascending, each made with the edits below it applied (by
    the caller: weight edits, hooks). Reads at and above the first layer L0 > 0 start at block L0 from the residuals
    kept the first time: by then every edit below L0 is made and unchanged after, and later edits lie at or above L0,
    inside the blocks these reads run. For LSDM's layers 0, 21, 24, a fold's reads run 1 + 22 + 4 blocks instead of
    1 + 22 + 25."""

    def __init__(self, lm: LoadedModel, layers: Sequence[int]) -> None:
        self.lm, self.kept = lm, KeptResiduals()
        self.start = next((layer for layer in sorted(layers) if layer > 0), 0)

    def at(self, layer: int) -> AbstractContextManager[None]:
        """For the block's duration, reads of `layer` start where they can."""
        return self.kept.reused(self.lm, self.start if layer >= self.start else 0, last_position_only=False)


@dataclass(frozen=True)
class Reuse:
    residuals: KeptResiduals
    block: int
    last_position_only: bool


def reusing_forward(lm: LoadedModel, batch: Batch, reuse: Reuse, stop_at_layer: int | None = None) -> torch.Tensor:
    """Logits [batch, pos, vocab] (or [batch, 1, vocab] at the last position) of `batch`, or with `stop_at_layer` the
    residual stream entering that block, as TransformerLens returns them, starting at `reuse.block` from the kept
    residuals; the first time a sequence is seen there, its residual is computed and kept."""
    model, n_layers = lm.model, lm.n_layers
    mask = batch.attention_mask
    stop = n_layers if stop_at_layer is None else stop_at_layer + (n_layers if stop_at_layer < 0 else 0)
    last_only = stop_at_layer is None and reuse.last_position_only and not bool(batch.scored[:, :-1].any())
    if last_only:
        logits = shared_prefix_logits(lm, batch, reuse)
        if logits is not None:
            return logits
    if reuse.block == 0 or stop < reuse.block or stop == reuse.block < n_layers:  # it stops below what is kept
        if not last_only:
            return model(batch.tokens, attention_mask=mask, padding_side="left", stop_at_layer=stop_at_layer)
        residual = model(batch.tokens, attention_mask=mask, padding_side="left", stop_at_layer=n_layers)
    else:
        keys = batch.sequences()
        start = reuse.residuals.read(reuse.block, keys, batch.tokens.shape[1])
        if start is None:
            start = model(batch.tokens, attention_mask=mask, padding_side="left", stop_at_layer=reuse.block)
            reuse.residuals.keep(reuse.block, keys, start)
        residual = model(start, start_at_layer=reuse.block, stop_at_layer=stop, attention_mask=mask,
                         padding_side="left")
        if stop_at_layer is not None:
            return residual
    if last_only:
        residual = residual[:, -1:]
    # from the last block on: the final norm and the unembedding (and any soft cap), as the full forward ends
    return model(residual, start_at_layer=n_layers, attention_mask=mask[:, -residual.shape[1]:], padding_side="left")
