"""Prompts that begin alike run their common beginning once.

The occupation prompts are 17 templates around each job ("The nurse said that", "The nurse went home because"), and
each begins with the anchor token. When the host scores an applied method on prompts and reads their last position
only (`debiaskit.reuse`), a batch runs in two passes: each distinct beginning (prefix) once, keeping its keys and
values at every block it runs, then each prompt's rest (suffix), attending to its prefix's keys and values
(TransformerLens's key-value cache, the mechanism of cached generation). A row's prefix is the longest beginning it
shares with another row of the batch, or its first token when it shares none, and never the whole row.

In a causal model a prefix's activations do not depend on what follows it, so this is the whole prompt's
computation split in two. A hook sees each position once, in one of the two passes, with that pass's batch as
`LoadedModel.running` (the prefixes': no position scored; the suffixes': no anchor, the last position scored), so a
hook that edits position by position through debiaskit's masks (every built-in method's) edits exactly what it edits
in the whole prompt. That is the contract a method accepts when it declares what it touches (`Method.touches`); one
that declares nothing gets the ordinary full forward.

The residuals entering the first touched block are kept as `debiaskit.reuse` keeps them, per whole prompt (the
prefix's rows, then the suffix's) and per prefix, so a later method reads them whichever way it batches.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from debiaskit.model import Batch, LoadedModel
    from debiaskit.reuse import KeptResiduals, Reuse

# A beginning is run once for the rows it begins when at least this many rows of a batch share it: a prefix shared by
# two costs a row of its own to save the two rows a few tokens. On the 680 occupation prompts (sorted by length, 64
# a batch) 2 others left 2,625 padded tokens (prefixes and suffixes) against 2,776 with 1 other and 4,288 whole.
SHARED_BY = 3


def prefix_lengths(rows: Sequence[tuple[int, ...]]) -> list[int] | None:
    """Per row, the length of its prefix: its longest beginning that at least `SHARED_BY` rows of the batch begin
    with, at least 1 and at most its length - 1; None when a row has a single token (nothing to split)."""
    if any(len(row) < 2 for row in rows):
        return None
    counts = Counter(row[:length] for row in rows for length in range(1, len(row)))
    return [max((length for length in range(1, len(row)) if counts[row[:length]] >= SHARED_BY), default=1)
            for row in rows]


def shared_prefix_logits(lm: LoadedModel, batch: Batch, reuse: Reuse) -> torch.Tensor | None:
    """Last-position logits [batch, 1, vocab] of `batch` run as prefixes and suffixes (module docstring), starting at
    `reuse.block` from kept residuals where they are kept; None when no row can be split."""
    rows = batch.sequences()
    lengths = prefix_lengths(rows)
    if lengths is None:
        return None
    prefixes = list(dict.fromkeys(row[:length] for row, length in zip(rows, lengths)))
    index = {prefix: position for position, prefix in enumerate(prefixes)}
    prefix_of = torch.tensor([index[row[:length]] for row, length in zip(rows, lengths)], device=lm.device)
    suffixes = [row[length:] for row, length in zip(rows, lengths)]
    prefix_batch, suffix_batch = prefix_part(lm, prefixes), suffix_part(lm, suffixes)
    model, block, kept = lm.model, reuse.block, reuse.residuals
    cache = new_cache(lm, len(prefixes))
    suffix_start = kept.kept_rows(block, rows) if block > 0 else None
    prefix_start = kept.read(block, prefixes, prefix_batch.tokens.shape[1]) if block > 0 else None
    running = lm.running
    try:
        lm.running = prefix_batch
        if block == 0 or suffix_start is None or prefix_start is None:  # the prefixes run up to `block` (or through)
            computed = model(prefix_batch.tokens, attention_mask=prefix_batch.attention_mask, padding_side="left",
                             past_kv_cache=cache, stop_at_layer=block or lm.n_layers)
            if block > 0 and prefix_start is None:
                kept.keep(block, prefixes, computed)
            prefix_start = computed
        if 0 < block < lm.n_layers:  # and on from `block`, the method applied, for their keys and values up there
            model(prefix_start, start_at_layer=block, stop_at_layer=lm.n_layers,
                  attention_mask=prefix_batch.attention_mask, padding_side="left", past_kv_cache=cache)
        lm.running = suffix_batch
        attended = gathered_cache(lm, cache, prefix_of, prefix_batch.attention_mask)
        if block == 0:
            residual = model(suffix_batch.tokens, attention_mask=suffix_batch.attention_mask, padding_side="left",
                             past_kv_cache=attended, stop_at_layer=lm.n_layers)
        else:
            if suffix_start is None:
                start = model(suffix_batch.tokens, attention_mask=suffix_batch.attention_mask, padding_side="left",
                              past_kv_cache=attended, stop_at_layer=block)
                keep_whole_rows(kept, block, rows, prefix_batch, prefix_start, prefix_of, start)
            else:
                start = left_padded(suffix_start, suffixes, suffix_batch.tokens.shape[1])
            mask = torch.cat([attended.previous_attention_mask, suffix_batch.attention_mask], dim=1)
            residual = start if block == lm.n_layers else model(
                start, start_at_layer=block, stop_at_layer=lm.n_layers, attention_mask=mask, padding_side="left",
                past_kv_cache=attended)
        return model(residual[:, -1:], start_at_layer=lm.n_layers, attention_mask=suffix_batch.attention_mask[:, -1:],
                     padding_side="left")
    finally:
        lm.running = running


def prefix_part(lm: LoadedModel, prefixes: Sequence[tuple[int, ...]]) -> Batch:
    """The prefixes as a batch: the anchor not editable, no position scored (no prediction is read there)."""
    batch = lm.make_batch(prefixes)
    batch.scored.zero_()
    return batch


def suffix_part(lm: LoadedModel, suffixes: Sequence[tuple[int, ...]]) -> Batch:
    """The suffixes as a batch: every real position editable (the anchor lies in the prefix), the last scored."""
    batch = lm.make_batch(suffixes)
    batch.editable = batch.attention_mask.bool()
    batch.scored = batch.editable & (torch.arange(batch.tokens.shape[1], device=batch.tokens.device)
                                     == batch.tokens.shape[1] - 1)
    return batch


def new_cache(lm: LoadedModel, rows: int):
    from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

    return TransformerLensKeyValueCache.init_cache(lm.model.cfg, lm.device, rows)


def gathered_cache(lm: LoadedModel, cache, prefix_of: torch.Tensor, prefix_mask: torch.Tensor):
    """A frozen cache whose row i holds the keys and values (and padding mask) of row `prefix_of[i]` of `cache`."""
    attended = new_cache(lm, len(prefix_of))
    for entry, source in zip(attended.entries, cache.entries):  # a block that did not run stays empty: none reads it
        entry.past_keys, entry.past_values = source.past_keys[prefix_of], source.past_values[prefix_of]
    attended.previous_attention_mask = prefix_mask[prefix_of].to(attended.previous_attention_mask.dtype)
    attended.freeze()
    return attended


def keep_whole_rows(kept: KeptResiduals, block: int, rows: Sequence[tuple[int, ...]], prefix_batch: Batch,
                    prefix_start: torch.Tensor, prefix_of: torch.Tensor, suffix_start: torch.Tensor) -> None:
    """Keep each whole prompt's residual entering `block`: its prefix's rows, then its suffix's."""
    prefix_width, suffix_width = prefix_batch.tokens.shape[1], suffix_start.shape[1]
    lengths = prefix_batch.attention_mask.sum(1).tolist()
    for row, (tokens, prefix) in enumerate(zip(rows, prefix_of.tolist())):
        prefix_rows = prefix_start[prefix, prefix_width - lengths[prefix]:]
        suffix_rows = suffix_start[row, suffix_width - (len(tokens) - lengths[prefix]):]
        kept.keep_rows(block, tokens, torch.cat([prefix_rows, suffix_rows]))


def left_padded(kept_rows: Sequence[torch.Tensor], suffixes: Sequence[tuple[int, ...]], width: int) -> torch.Tensor:
    """The suffix rows of each kept whole-prompt residual, left-padded with zeros to `width`."""
    first = kept_rows[0]
    start = first.new_zeros((len(kept_rows), width, first.shape[-1]))
    for row, (whole, suffix) in enumerate(zip(kept_rows, suffixes)):
        start[row, width - len(suffix):] = whole[whole.shape[0] - len(suffix):]
    return start
