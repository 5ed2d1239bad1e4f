"""cda: the training set is two-sided (every sentence beside its counterfactual, and the swap is an involution on
the word list), training lowers the loss, the weights come back bit for bit, and a second fit loads the cache."""

from __future__ import annotations

import pytest
import torch

from debiaskit import DebiasKitError, FitContext
from debiaskit.plugins.cda import CounterfactualDataAugmentation, training_sequences
from debiaskit.word_lists import gender_swaps

CORPUS = """She told her brother that the weather would turn before the evening came.

The king and his son rode out to meet the queen at the river crossing.

He said that his mother had written to him about the farm and the horses.

The girl asked whether the boy had seen the lady who lived by the mill.

Nobody could say how long the road would stay open after the rain.
"""
QUICK = {"steps": 6, "batch_size": 4, "lr": 3e-3}


@pytest.fixture
def corpus(tmp_path, monkeypatch):
    monkeypatch.setenv("DEBIASKIT_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "corpus.txt"
    path.write_text(CORPUS * 3, encoding="utf-8")
    return str(path)


def test_the_training_set_is_two_sided_and_the_swap_an_involution(tiny_lm):
    swaps = gender_swaps()
    for word in swaps.words():  # pairs swap back; a one-way word lands on a word that swaps back to its partner
        assert swaps.swap(swaps.swap(swaps.swap(word))) == swaps.swap(word)
    originals = ["She told her niece.", "The prince and his bride rode out."]
    sequences = training_sequences(tiny_lm, originals, swaps, max_tokens=64, seed=0)
    texts = [tiny_lm.tokenizer.decode(sequence[1:]) for sequence in sequences]
    assert sorted(texts) == sorted(["She told her niece.", "He told his nephew.",
                                    "The prince and his bride rode out.", "The princess and her groom rode out."])
    for first, second in zip(texts[::2], texts[1::2]):  # each sentence sits beside its own counterfactual
        assert swaps.swap(first) == second


def test_training_lowers_the_loss_and_the_weights_come_back_bit_for_bit(tiny_lm, corpus):
    before = {name: parameter.detach().clone() for name, parameter in tiny_lm.model.named_parameters()}
    method = CounterfactualDataAugmentation(corpus=corpus, **QUICK)
    method.fit(FitContext(tiny_lm, (), None, seed=0))
    report = method.details()
    assert report["steps"] == 6 and report["sequences"] == 24 and report["tokens"] > 200 and not report["cached"]
    assert report["loss_last"] < report["loss_first"]
    parameters = dict(tiny_lm.model.named_parameters())
    assert all(torch.equal(parameters[name], value) for name, value in before.items())  # fit restored them
    with pytest.raises(RuntimeError, match="boom"):
        with method.apply(tiny_lm):
            assert all(torch.equal(parameters[name], value) for name, value in method.trained.items())
            assert not torch.equal(parameters["blocks.0.mlp.W_out"], before["blocks.0.mlp.W_out"])
            raise RuntimeError("boom")
    assert all(torch.equal(parameters[name], value) for name, value in before.items())
    assert all(parameter.requires_grad for parameter in parameters.values())


def test_a_second_fit_loads_the_cached_weights_and_other_settings_train_anew(tiny_lm, corpus):
    first = CounterfactualDataAugmentation(corpus=corpus, **QUICK)
    first.fit(FitContext(tiny_lm, (), None, seed=0))
    again = CounterfactualDataAugmentation(corpus=corpus, **QUICK)
    again.fit(FitContext(tiny_lm, (), None, seed=0))
    assert again.details()["cached"] and again.details()["loss_last"] == first.details()["loss_last"]
    assert all(torch.equal(again.trained[name], value) for name, value in first.trained.items())
    other = CounterfactualDataAugmentation(corpus=corpus, **{**QUICK, "lr": 1e-3})
    other.fit(FitContext(tiny_lm, (), None, seed=0))
    assert not other.details()["cached"]


def test_too_small_or_missing_corpus_is_refused(tiny_lm, corpus, tmp_path):
    with pytest.raises(DebiasKitError, match="cda needs 200 corpus sentences"):
        CounterfactualDataAugmentation(corpus=corpus, steps=50, batch_size=8).fit(FitContext(tiny_lm, (), None, 0))
    with pytest.raises(DebiasKitError, match="cda.corpus: .*absent.txt is not a text file"):
        CounterfactualDataAugmentation(corpus=str(tmp_path / "absent.txt")).check(tiny_lm)
