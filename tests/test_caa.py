"""caa: the steering vector is the mean female-minus-male difference, and the applied method adds exactly
coefficient x that vector (or removes its direction) at every position but the anchor."""

from __future__ import annotations

import pytest
import torch

from debiaskit import DebiasKitError, FitContext, resid_post
from debiaskit.concepts import read_at_positions, word_pair_examples
from debiaskit.plugins.caa import ContrastiveActivationAddition
from debiaskit.word_lists import gendered_words


def read_all_positions(lm, layer: int):
    examples = word_pair_examples(lm, [("queen", "king")], ["The {word} spoke to the nurse."], "all")
    anchored = [type(e)(e.tokens, (0, *e.positions), e.label, e.group) for e in examples]
    name = resid_post(layer)
    anchor = torch.tensor([i == 0 for e in anchored for i in e.positions])
    return anchored, anchor, lambda: read_at_positions(lm, anchored, [name], stop_at_layer=layer + 1)[name]


def test_the_vector_is_the_mean_difference_and_add_mode_adds_it(tiny_lm):
    method = ContrastiveActivationAddition(layer=0, mode="add", coefficient=2.0, pairs=2)
    method.fit(FitContext(tiny_lm, (), None, seed=0))
    # by hand: each pair's female word's last token minus the male word's, in every fit context, averaged
    vocabulary = gendered_words()
    differences = []
    for female, male in vocabulary.fit_pairs[:2]:
        for context in vocabulary.fit_contexts:
            f, m = word_pair_examples(tiny_lm, [(female, male)], [context], "word")
            read = read_at_positions(tiny_lm, [f.last_position_only(), m.last_position_only()], [resid_post(0)],
                                     stop_at_layer=1)[resid_post(0)]
            differences.append(read[0] - read[1])
    torch.testing.assert_close(method.vector, torch.stack(differences).mean(0), rtol=1e-5, atol=1e-5)  # batching
    assert method.fitted_words() == {"girl", "boy", "lady", "gentleman"}
    _, anchor, read = read_all_positions(tiny_lm, 0)
    before = read()
    with method.apply(tiny_lm):
        after = read()
    torch.testing.assert_close(after[anchor], before[anchor], rtol=0, atol=0)
    expected = before[~anchor] + 2.0 * method.vector
    torch.testing.assert_close(after[~anchor], expected, rtol=1e-5, atol=1e-5)


def test_project_mode_removes_the_vector_direction(tiny_lm):
    method = ContrastiveActivationAddition(layer=1, mode="project")
    method.fit(FitContext(tiny_lm, (), None, seed=0))
    unit = method.vector / method.vector.norm()
    _, anchor, read = read_all_positions(tiny_lm, 1)
    before = read()
    with method.apply(tiny_lm):
        after = read()
    assert not any(hook.fwd_hooks for hook in tiny_lm.model.hook_dict.values())
    assert (before[~anchor] @ unit).abs().max() > 1e-2
    assert (after[~anchor] @ unit).abs().max() < 1e-4
    torch.testing.assert_close(after[anchor], before[anchor], rtol=0, atol=0)


def test_a_layer_the_model_lacks_is_refused(tiny_lm):
    with pytest.raises(DebiasKitError, match="caa.layer has 5; tiny-llama has blocks 0 to 1"):
        ContrastiveActivationAddition(layer=5).check(tiny_lm)
