"""sae-ablation and sae-splice: exactness of the splice, what an ablation may touch, SAE/model mismatches, hook cleanup,
and the latent-selection rules; tiny random SAEs on the tiny model, one check with the shipped SAE on SmolLM2."""

from __future__ import annotations

import pytest
import torch

from debiaskit import DebiasKitError, FitContext
from debiaskit.data import TemplateFamily
from debiaskit.plugins.sae_ablation import SAELatentAblation, SAESplice, splice_hook
from debiaskit.sae.latents import LatentStats, select_by_counts, select_top
from debiaskit.sae.source import load_sae
from debiaskit.word_lists import gendered_words

HOOK = "blocks.1.hook_resid_post"
FAMILY = TemplateFamily("t", "test", ("The {job} said that", "Yesterday the {job} told us that"), ("he",), ("she",))
TEXTS = ["The nurse said that", "Yesterday the carpenter told us that it", "A"]


def save_tiny_sae(directory, d_in=64, hook_name=HOOK, seed=0):
    """A random TopK SAE in SAELens disk format (d_sae 256, k 8) with a nonzero decoder bias."""
    from sae_lens import TopKSAE, TopKSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    torch.manual_seed(seed)
    metadata = SAEMetadata(hook_name=hook_name, model_name="tiny-llama")
    sae = TopKSAE(TopKSAEConfig(d_in=d_in, d_sae=256, k=8, metadata=metadata))
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.1)
        sae.b_dec.normal_(0, 0.1)
    sae.save_model(directory)
    return str(directory)


@pytest.fixture
def tiny_sae(tmp_path):
    return save_tiny_sae(tmp_path / "sae")


def logits(lm, texts=TEXTS):
    batch = lm.make_batch([lm.encode(text) for text in texts])
    with torch.no_grad():
        return lm.run(batch)


def fitted(lm, method, jobs=()):
    method.fit(FitContext(lm, tuple(jobs), FAMILY, seed=0))
    return method


def no_hooks_left(lm):
    return all(not hook_point._forward_hooks for hook_point in lm.model.hook_dict.values())


@pytest.mark.parametrize("factor", [1.0, 0.3])
def test_error_term_splice_with_nothing_changed_reproduces_the_model_exactly(tiny_lm, tiny_sae, factor):
    base = logits(tiny_lm)
    method = fitted(tiny_lm, SAELatentAblation(sae=tiny_sae, factor=factor))
    if factor != 1.0:
        method.latents = []  # nothing chosen: no latent is touched
    with method.apply(tiny_lm):
        assert torch.equal(logits(tiny_lm), base)


@torch.no_grad()
def test_ablation_changes_only_chosen_latents_at_editable_positions(tiny_lm, tiny_sae):
    loaded = load_sae(tiny_sae, tiny_lm)
    batch = tiny_lm.make_batch([tiny_lm.encode(text) for text in TEXTS])
    torch.manual_seed(1)
    activation = torch.randn(*batch.tokens.shape, 64) * 3
    chosen = loaded.sae.encode(activation[:, -1]).gt(0).sum(0).topk(3).indices.tolist()  # active at the last column
    tiny_lm.running = batch
    try:
        for positions in ("all", "last"):
            edited = splice_hook(tiny_lm, loaded.sae, chosen, 0.0, positions, error_term=True)(activation.clone(), None)
            where = batch.editable.clone()
            if positions == "last":
                where[:, :-1] = False
            assert torch.equal(edited[~where], activation[~where])  # anchor, padding (and earlier columns) exact
            acts = loaded.sae.encode(activation[where])
            expected = activation[where] - acts[:, chosen] @ loaded.sae.W_dec[chosen]  # factor 0: remove their share
            assert torch.allclose(edited[where], expected, atol=1e-5)
            assert (acts[:, chosen] > 0).any()  # the check above was not vacuous
    finally:
        tiny_lm.running = None


def test_splice_without_error_term_replaces_editable_positions_by_the_reconstruction(tiny_lm, tiny_sae):
    base = logits(tiny_lm)
    splice = fitted(tiny_lm, SAESplice(sae=tiny_sae))
    with splice.apply(tiny_lm):
        spliced = logits(tiny_lm)
    seed_mode = fitted(tiny_lm, SAELatentAblation(sae=tiny_sae, factor=1.0, error_term=False))
    with seed_mode.apply(tiny_lm):
        assert torch.equal(logits(tiny_lm), spliced)  # factor 1 without the error term is the bare splice
    batch = tiny_lm.make_batch([tiny_lm.encode(text) for text in TEXTS])
    assert not torch.allclose(spliced[batch.editable], base[batch.editable], atol=1e-3)
    assert torch.equal(spliced[:, :1][batch.editable[:, :1]], base[:, :1][batch.editable[:, :1]])


def test_sae_that_does_not_fit_the_model_is_a_clear_error(tiny_lm, tmp_path):
    narrow = save_tiny_sae(tmp_path / "narrow", d_in=32)
    with pytest.raises(DebiasKitError, match=r"d_in=32.*tiny-llama has width 64"):
        load_sae(narrow, tiny_lm)
    elsewhere = save_tiny_sae(tmp_path / "deep", hook_name="blocks.7.hook_resid_post")
    with pytest.raises(DebiasKitError, match=r"'blocks.7.hook_resid_post'.*tiny-llama does not have"):
        load_sae(elsewhere, tiny_lm)
    with pytest.raises(DebiasKitError, match="trained for smollm2, not tiny-llama"):
        load_sae("embedded", tiny_lm)
    with pytest.raises(DebiasKitError, match="cfg.json is missing"):
        load_sae(str(tmp_path), tiny_lm)
    with pytest.raises(DebiasKitError, match="RELEASE/SAE_ID"):
        load_sae("no-such-release/blocks.0", tiny_lm)


def test_hooks_are_removed_even_when_the_body_raises(tiny_lm, tiny_sae):
    base = logits(tiny_lm)
    method = fitted(tiny_lm, SAELatentAblation(sae=tiny_sae, factor=0.0))
    with pytest.raises(RuntimeError, match="boom"):
        with method.apply(tiny_lm):
            assert not no_hooks_left(tiny_lm)
            raise RuntimeError("boom")
    assert no_hooks_left(tiny_lm)
    assert torch.equal(logits(tiny_lm), base)


def test_contrast_selection_fits_on_gendered_words_only(tiny_lm, tiny_sae):
    method = fitted(tiny_lm, SAELatentAblation(sae=tiny_sae, n_latents=5))
    assert not method.uses_jobs()
    assert len(method.latents) == 5 and method.details()["n_latents"] == 5
    n_words = len(gendered_words().fit_pairs)
    assert (method.stats.n_male, method.stats.n_female) == (n_words, n_words)
    differences = method.stats.difference[method.latents].abs()
    assert differences.min() >= method.stats.difference.abs().sort(descending=True).values[4]


def test_seed_and_topk_selection_fit_on_training_jobs(tiny_lm, tiny_sae):
    from debiaskit.data import Occupation

    jobs = [Occupation("nurse", "female", 90), Occupation("secretary", "female", 92), Occupation("pilot", "male", 5),
            Occupation("roofer", "male", 3)]
    for selection in ("seed", "topk"):
        method = fitted(tiny_lm, SAELatentAblation(sae=tiny_sae, selection=selection, threshold=0.0), jobs)
        assert method.uses_jobs() and (method.stats.n_male, method.stats.n_female) == (2, 2)
        assert isinstance(method.details()["latents"], str)


def test_seed_count_rule_scales_with_group_size():
    def stats(male_active, female_active, n=20):
        male = torch.zeros(n, 3)
        female = torch.zeros(n, 3)
        for latent, (m, f) in enumerate(zip(male_active, female_active)):
            male[:m, latent] = 1.0
            female[:f, latent] = 1.0
        return LatentStats.of(male, female, threshold=0.2)

    # 20 jobs a group: strong >= 8, rare <= 3 (the seed's numbers)
    assert select_by_counts(stats([8, 10, 0], [3, 4, 9])) == [2, 0]  # latent 1 is too common among female jobs
    # 16 jobs a group (a 5-fold training split): strong >= ceil(6.4) = 7, rare <= floor(2.4) = 2
    assert select_by_counts(stats([7, 6, 7], [2, 0, 3], n=16)) == [0]


def test_topk_keeps_largest_absolute_differences_and_never_a_zero_one():
    stats = LatentStats.of(torch.tensor([[1.0, 0.0, 0.5, 0.0]]), torch.tensor([[0.0, 2.0, 0.4, 0.0]]), 0.2)
    assert select_top(stats, 2) == [1, 0]
    assert select_top(stats, 10) == [1, 0, 2]


def test_bad_options_are_refused():
    with pytest.raises(DebiasKitError, match="factor got -1.0"):
        SAELatentAblation(factor=-1)
    with pytest.raises(DebiasKitError, match="accepted: contrast, seed, topk"):
        SAELatentAblation(selection="best")


@pytest.mark.model
def test_shipped_sae_on_smollm2(smollm2):
    texts = ["The nurse said that", "The carpenter yelled that"]
    base = logits(smollm2, texts)
    method = fitted(smollm2, SAELatentAblation(factor=0.0))
    assert method.details()["n_latents"] == 10 and method.details()["sae"].startswith("embedded")
    with method.apply(smollm2):
        ablated = logits(smollm2, texts)
    method.latents = []
    with method.apply(smollm2):
        assert torch.equal(logits(smollm2, texts), base)
    assert no_hooks_left(smollm2)
    # zeroing the gender latents narrows the he/she preference gap between a female- and a male-dominated job
    he, she = (smollm2.tokenizer(f" {word}", add_special_tokens=False)["input_ids"][0] for word in ("he", "she"))
    gap = lambda out: float((out[:, -1, she] - out[:, -1, he]).diff().abs())  # noqa: E731
    assert gap(ablated) < gap(base)
