"""Prompts run as shared prefixes and their suffixes (debiaskit.shared_prefixes) give the whole prompts' last-position
logits, with a method's position-wise hooks applied, from any start block and from kept residuals."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from sae_lens import HookedSAETransformer
from transformer_lens import HookedTransformerConfig

from debiaskit import hooked
from debiaskit.model import LoadedModel, anchor_token_id
from debiaskit.reuse import KeptResiduals
from debiaskit.shared_prefixes import prefix_lengths, shared_prefix_logits
from tests.conftest import make_tiny_lm, smollm2_tokenizer

PROMPTS = [template.format(job=job) for job in ("nurse", "software developer", "carpenter")
           for template in ("The {job} said that", "The {job} went home because", "The {job} was fired because",
                            "The {job} was promoted because")] + ["A short one"]


def gpt2_like_lm() -> LoadedModel:
    """Absolute position embeddings and LayerNorm, the other way a model places its tokens."""
    tokenizer = smollm2_tokenizer()
    config = HookedTransformerConfig(d_model=64, d_head=16, n_heads=4, d_mlp=128, n_layers=2, n_ctx=64,
                                     d_vocab=len(tokenizer), act_fn="gelu_new", normalization_type="LN", device="cpu",
                                     seed=0)
    model = HookedSAETransformer(config, tokenizer=tokenizer, move_to_device=False).eval()
    return LoadedModel(model=model, tokenizer=tokenizer, name="tiny-gpt2", anchor_token_id=anchor_token_id(tokenizer))


def test_each_row_takes_the_longest_beginning_three_rows_share():
    rows = [(0, 1, 2, 3), (0, 1, 2, 4), (0, 1, 2, 5, 6), (0, 1, 7), (0, 8, 9)]
    assert prefix_lengths(rows) == [3, 3, 3, 2, 1]  # (0, 1, 2) three times; (0, 1) four; (0,) always
    assert prefix_lengths([(0, 1), (0, 1)]) == [1, 1]  # never the whole row
    assert prefix_lengths([(0,), (0, 1)]) is None  # a single token cannot be split


def method_hooks(lm: LoadedModel) -> list[tuple[str, Any]]:
    """Block 1's edits: a shift at every editable position, and a larger one where the prediction is read."""
    shift = torch.randn(lm.model.cfg.d_model, generator=torch.Generator().manual_seed(3))

    def edit(resid: torch.Tensor, hook: Any) -> torch.Tensor:
        return resid + shift * lm.editable_mask(resid) + 3 * shift * lm.scored_mask(resid)

    return [("blocks.1.hook_resid_pre", edit)]


@pytest.mark.parametrize("make_lm", [make_tiny_lm, gpt2_like_lm], ids=["llama", "gpt2-like"])
@pytest.mark.parametrize("block", [0, 1, 2])
def test_shared_prefixes_give_the_whole_prompts_logits(make_lm, block):
    lm = make_lm()
    batch = lm.make_batch([lm.encode(prompt) for prompt in PROMPTS])
    hooks = method_hooks(lm) if block <= 1 else []  # a method starting at block 2 touches nothing in the blocks
    kept = KeptResiduals()
    with torch.no_grad(), hooked(lm, hooks):
        whole = lm.run(batch)[:, -1:]
        for attempt in ("computing the kept residuals", "reading them"):
            with kept.reused(lm, block, last_position_only=True):
                lm.running = batch
                shared = shared_prefix_logits(lm, batch, lm.reuse)
                lm.running = None
            assert shared is not None, attempt
            torch.testing.assert_close(shared, whole, atol=1e-4, rtol=1e-4, msg=attempt)
    if block > 0:
        assert kept.batches_read[block] > 0  # the second attempt started from kept residuals
