"""sentence-debias: the subspace from paired embeddings by hand, the swap list, and the fitted method leaving no
component along the subspace at any position but the anchor."""

from __future__ import annotations

import pytest
import torch

from debiaskit import DebiasKitError, FitContext, resid_post
from debiaskit.concepts import read_at_positions, word_pair_examples
from debiaskit.corpus import gendered_sentences
from debiaskit.plugins.sentence_debias import SentenceDebias, bias_subspace
from debiaskit.word_lists import gender_swaps

CORPUS = ("She said that he would come. The weather was fine all day long today. Her brother and his friend went "
          "to town on Monday. The old prince met the young princess at the gate. Mr. Knightley told Mrs. Weston "
          "the news at dinner. It rained and the river rose over the old stone bridge.")


def test_the_subspace_of_pairs_that_differ_along_one_axis_is_that_axis():
    # e(s_i) = a_i + e0 and e(s_i') = a_i - e0: the deviations from each pair's mean are +-e0 only
    shared = torch.tensor([[0.0, 3.0, 1.0], [0.0, -2.0, 4.0], [0.0, 1.0, -1.0]], dtype=torch.float64)
    axis = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    basis, explained = bias_subspace(shared + axis, shared - axis, components=1)
    torch.testing.assert_close(basis[:, 0].abs(), axis)
    assert explained[0] == pytest.approx(1.0)


def test_the_swap_keeps_casing_and_pairs_swap_back():
    swaps = gender_swaps()
    assert swaps.swap("She told HIM that her son was a Gentleman.") == "He told HER that his son was a Lady."
    # a word between non-letters is a word (Gutenberg's italics), one inside a longer word is not
    assert swaps.swap("Two opinions about _him_, the shepherd said.") == "Two opinions about _her_, the shepherd said."
    for female, male in swaps.pairs:  # on the pairs the swap is an involution
        assert swaps.swap(swaps.swap(female)) == female and swaps.swap(swaps.swap(male)) == male
    sentences = ["The weather was fine all day long today.", "She said that he would come."]
    assert gendered_sentences(sentences, swaps, 5, seed=0) == ["She said that he would come."]


def test_fitted_on_a_real_forward_nothing_is_left_along_the_subspace(tiny_lm, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS, encoding="utf-8")
    method = SentenceDebias(layer=0, components=2, corpus=str(corpus))
    method.fit(FitContext(tiny_lm, (), None, seed=0))
    assert method.details()["sentences"] == 4
    examples = word_pair_examples(tiny_lm, [("queen", "king")], ["The {word} spoke to the nurse."], "all")
    anchored = [type(e)(e.tokens, (0, *e.positions), e.label, e.group) for e in examples]
    anchor = torch.tensor([i == 0 for e in anchored for i in e.positions])
    name = resid_post(0)
    before = read_at_positions(tiny_lm, anchored, [name], stop_at_layer=1)[name]
    with method.apply(tiny_lm):
        after = read_at_positions(tiny_lm, anchored, [name], stop_at_layer=1)[name]
    assert (before[~anchor] @ method.basis).abs().max() > 1e-2
    assert (after[~anchor] @ method.basis).abs().max() < 1e-4
    torch.testing.assert_close(after[anchor], before[anchor], rtol=0, atol=0)


def test_a_missing_corpus_is_refused_with_what_to_pass(tiny_lm, tmp_path):
    method = SentenceDebias(layer=0, corpus=str(tmp_path / "absent.txt"))
    with pytest.raises(DebiasKitError, match="sentence-debias.corpus: .*absent.txt is not a text file"):
        method.fit(FitContext(tiny_lm, (), None, seed=0))
