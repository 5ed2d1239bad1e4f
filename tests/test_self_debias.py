"""self-debias: the decay formula on a distribution worked out by hand, and the prefixed forward aligned with the
batch's own columns."""

from __future__ import annotations

import math

import torch

from debiaskit.plugins.self_debias import SelfDebias, prefixed_logits, self_debiased_log_probs


def test_the_decay_formula_by_hand():
    plain = torch.tensor([0.5, 0.3, 0.2]).log()
    prefixed = torch.tensor([0.3, 0.5, 0.2]).log()
    # delta = (-0.2, +0.2, 0): only the second word is boosted by the prefix.
    # lambda 50: exp(-10) = 4.5e-5 < epsilon, so alpha = (1, 0.01, 1); p~ = (0.5, 0.003, 0.2) / 0.703
    paper = self_debiased_log_probs(plain, prefixed, decay=50.0, epsilon=0.01).exp()
    torch.testing.assert_close(paper, torch.tensor([0.5, 0.003, 0.2]) / 0.703)
    # lambda 5: alpha = exp(-1) = 0.3679 for the second word; p~ = (0.5, 0.1104, 0.2) / 0.8104
    mild = self_debiased_log_probs(plain, prefixed, decay=5.0, epsilon=0.01).exp()
    torch.testing.assert_close(mild, torch.tensor([0.5, 0.3 * math.exp(-1), 0.2]) / (0.7 + 0.3 * math.exp(-1)))
    # the same text with and without the prefix: nothing changes
    torch.testing.assert_close(self_debiased_log_probs(plain, plain, 50.0, 0.01), plain)


def test_the_prefixed_forward_is_aligned_with_each_rows_columns(tiny_lm):
    prefix = tiny_lm.tokenizer("Beware: ", add_special_tokens=False)["input_ids"]
    texts = ["The nurse said that", "A long sentence about the carpenter went on and"]
    batch = tiny_lm.make_batch([tiny_lm.encode(text) for text in texts], score_every_position=True)
    with torch.no_grad():
        aligned = prefixed_logits(tiny_lm, batch, prefix, batch.tokens.shape[1])
        for row, text in enumerate(texts):
            own = tiny_lm.encode(text)
            alone = tiny_lm.run(tiny_lm.make_batch([own[:1] + prefix + own[1:]]))[0]
            # the row's real columns predict the same next tokens as the prefixed text's last len(own) positions
            torch.testing.assert_close(aligned[row, -len(own):], alone[-len(own):], rtol=1e-4, atol=1e-4)


def test_applied_it_transforms_the_logits_and_installs_no_hook(tiny_lm):
    batch = tiny_lm.make_batch([tiny_lm.encode("The nurse said that")], score_every_position=True)
    with torch.no_grad():
        logits = tiny_lm.run(batch)
        with SelfDebias(prefix="").apply(tiny_lm) as intervention:  # no prefix: p(w | y, x) = p(w | x)
            unchanged = intervention.logits_transform(logits, batch)
        with SelfDebias().apply(tiny_lm) as intervention:
            debiased = intervention.logits_transform(logits, batch)
    assert not any(hook.fwd_hooks for hook in tiny_lm.model.hook_dict.values())
    torch.testing.assert_close(unchanged, torch.log_softmax(logits, -1), rtol=1e-5, atol=1e-5)
    assert (debiased.exp().sum(-1) - 1).abs().max() < 1e-4
    assert (debiased - torch.log_softmax(logits, -1)).abs().max() > 1e-3
