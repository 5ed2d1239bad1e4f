"""logit-rebalance: the formula against hand-computed numbers, its invariants, the token groups, and the real gap."""

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from debiaskit import DebiasKitError, FitContext
from debiaskit.evaluator import build_prompts, score_prompts
from debiaskit.metrics import bias_summary
from debiaskit.plugin_host import load_plugins
from debiaskit.plugins.logit_rebalance import (
    LogitRebalance,
    Rebalancer,
    counter_balanced_female_target,
    gendered_token_groups,
    rebalance,
)
from debiaskit.targets import target_tokens
from debiaskit.word_lists import read_gendered_word_lists

FEMALE, MALE = torch.tensor([0, 1]), torch.tensor([2, 3])  # tokens 4 and 5 are not gendered
# F = 0.2, M = 0.5, T = 0.7; the +3 shows only ratios matter (Z cancels)
HAND_PROBS = torch.tensor([0.1, 0.1, 0.3, 0.2, 0.2, 0.1], dtype=torch.float64)
HAND_LOGITS = (HAND_PROBS.log() + 3).reshape(1, 1, 6)


def balanced_probs(logits, strength, female_target=0.5):
    target = torch.full(logits.shape[:-1], female_target, dtype=torch.float64)
    return torch.softmax(rebalance(logits, FEMALE, MALE, strength, target).double(), -1).reshape(-1, logits.shape[-1])


@pytest.mark.parametrize("strength, expected", [
    # F' = M' = 0.35: female tokens x 0.35/0.2 = 1.75, male x 0.35/0.5 = 0.7
    (1.0, [0.175, 0.175, 0.21, 0.14, 0.2, 0.1]),
    # F' = 0.5*0.2 + 0.5*0.35 = 0.275 (x 1.375), M' = 0.5*0.5 + 0.5*0.35 = 0.425 (x 0.85)
    (0.5, [0.1375, 0.1375, 0.255, 0.17, 0.2, 0.1]),
    (0.0, [0.1, 0.1, 0.3, 0.2, 0.2, 0.1]),
])
def test_rebalanced_probabilities_equal_hand_computed_ones(strength, expected):
    assert balanced_probs(HAND_LOGITS, strength)[0].tolist() == pytest.approx(expected, abs=1e-12)


def test_strength_zero_is_the_identity():
    logits = torch.randn(3, 5, 6)
    assert torch.equal(rebalance(logits, FEMALE, MALE, 0.0, torch.full((3, 5), 0.5, dtype=torch.float64)), logits)


@pytest.mark.parametrize("strength", [0.3, 1.0])
def test_total_gendered_mass_and_every_other_token_are_preserved(strength):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 7, 6, generator=generator) * 4  # float32, as the model gives them
    before = torch.softmax(logits.double(), -1)
    after = torch.softmax(rebalance(logits, FEMALE, MALE, strength,
                                    torch.full((4, 7), 0.5, dtype=torch.float64)).double(), -1)
    assert torch.allclose(after[..., 4:], before[..., 4:], atol=1e-6)
    assert torch.allclose(after[..., :4].sum(-1), before[..., :4].sum(-1), atol=1e-6)
    if strength == 1.0:
        assert torch.allclose(after[..., :2].sum(-1), after[..., 2:4].sum(-1), atol=1e-6)


def test_tiny_probabilities_are_balanced_without_overflow():
    # male tokens at e^-300 relative: beyond float32's range once exponentiated; log-space keeps it exact
    logits = torch.tensor([[[0.0, 0.0, -300.0, -250.0, 5.0, 3.0]]])
    log_probs = torch.log_softmax(rebalance(logits, FEMALE, MALE, 1.0,
                                            torch.full((1, 1), 0.5, dtype=torch.float64)).double(), -1)[0, 0]
    assert torch.isfinite(log_probs).all()
    assert torch.logsumexp(log_probs[:2], 0).item() == pytest.approx(torch.logsumexp(log_probs[2:4], 0).item(),
                                                                     abs=1e-6)
    assert log_probs[4:].tolist() == pytest.approx(torch.log_softmax(logits.double(), -1)[0, 0, 4:].tolist(), abs=1e-6)


def test_a_group_with_no_probability_leaves_the_position_unchanged():
    logits = torch.tensor([[[-math.inf, -math.inf, 1.0, 0.0, 2.0, 1.0]]])
    assert torch.equal(rebalance(logits, FEMALE, MALE, 1.0, torch.full((1, 1), 0.5, dtype=torch.float64)), logits)


def test_counter_balance_target_mirrors_the_gendered_tokens_generated_so_far():
    tokens = torch.tensor([[5, 2, 0, 3, 1]])  # other, male (prompt) | female, male, female (generated)
    generated = torch.tensor([[False, False, True, True, True]])
    # (m + 1) / (f + m + 2) over generated tokens only: 1/2, 1/2 (the prompt's male token is not counted),
    # 1/3 after one female, 2/4 after one of each, 2/5 after two female and one male
    target = counter_balanced_female_target(tokens, generated, FEMALE, MALE)[0]
    assert target.tolist() == pytest.approx([0.5, 0.5, 1 / 3, 0.5, 0.4])
    logits = HAND_LOGITS.expand(1, 5, 6).float()
    batch = SimpleNamespace(tokens=tokens, generated=generated)
    probs = torch.softmax(Rebalancer(FEMALE, MALE, 1.0, counter_balance=True)(logits, batch).double(), -1)[0]
    # at position 2, F' = 1/3 * 0.7 shared equally by the two female tokens
    assert probs[2, :2].tolist() == pytest.approx([0.7 / 6, 0.7 / 6], abs=1e-6)
    assert probs[:, :4].sum(-1).tolist() == pytest.approx([0.7] * 5, abs=1e-6)


def test_counter_balance_ignores_gendered_words_in_the_prompt(tiny_lm):
    # "The king said that": the prompt's "king" is the user's text; scoring it must aim at 50/50, as without
    # counter_balance, and only a male token the model generates itself moves the target toward female
    family = pronoun_family()
    method = LogitRebalance(counter_balance=True)
    method.fit(FitContext(tiny_lm, (), family, 0))
    prompt = tiny_lm.encode("The king said that")
    he = tiny_lm.tokenizer(" he", add_special_tokens=False)["input_ids"]
    assert len(he) == 1 and he[0] in gendered_token_groups(tiny_lm.tokenizer, read_gendered_word_lists()).male_ids
    plain = LogitRebalance()
    with torch.no_grad(), method.apply(tiny_lm) as counter, plain.apply(tiny_lm) as even:
        scored = tiny_lm.make_batch([prompt])
        logits = tiny_lm.run(scored)
        assert torch.allclose(counter.logits_transform(logits, scored), even.logits_transform(logits, scored))
        said_he = tiny_lm.make_batch([prompt + he], generated_counts=[1])
        logits = tiny_lm.run(said_he)
        probs = torch.softmax(counter.logits_transform(logits, said_he)[0, -1].double(), -1)
    groups = gendered_token_groups(tiny_lm.tokenizer, read_gendered_word_lists())
    female, male = probs[list(groups.female_ids)].sum(), probs[list(groups.male_ids)].sum()
    assert float(female / (female + male)) == pytest.approx(2 / 3, abs=1e-6)  # (m + 1) / (f + m + 2), m = 1


def test_strength_outside_zero_to_one_is_rejected():
    with pytest.raises(DebiasKitError, match="from 0 to 1"):
        LogitRebalance(strength=1.5)


def pronoun_family():
    return load_plugins().templates.get("template family", "pronoun")


def test_groups_hold_every_target_of_the_shipped_families_and_skip_multi_token_words(tiny_lm):
    groups = gendered_token_groups(tiny_lm.tokenizer, read_gendered_word_lists())
    for family in load_plugins().templates.things.values():
        targets = target_tokens(tiny_lm.tokenizer, family)
        assert set(targets.female_ids) <= set(groups.female_ids) and set(targets.male_ids) <= set(groups.male_ids)
    assert not set(groups.female_ids) & set(groups.male_ids)
    assert not set(groups.female_ids + groups.male_ids) & set(tiny_lm.tokenizer.all_special_ids)
    assert "niece" in groups.skipped_words and "she" not in groups.skipped_words  # ' niece' is two tokens
    ms_ids = tiny_lm.tokenizer(" ms", add_special_tokens=False)["input_ids"]  # milliseconds, not the title
    assert len(ms_ids) == 1 and ms_ids[0] not in groups.female_ids


def test_fit_reports_full_target_coverage(tiny_lm):
    method = LogitRebalance()
    method.fit(FitContext(tiny_lm, (), pronoun_family(), 0))
    assert method.details()["targets_outside_groups"] == 0 and method.details()["female_tokens"] > 6


def write_words(tmp_path, female, male):
    path = tmp_path / "words.json"
    path.write_text(json.dumps({"female": female, "male": male}))
    return str(path)


def test_with_only_the_target_words_every_prompt_is_exactly_balanced(tiny_lm, tmp_path):
    family = pronoun_family()
    method = LogitRebalance(words=write_words(tmp_path, ["she", "her", "hers"], ["he", "him", "his"]))
    targets = target_tokens(tiny_lm.tokenizer, family)
    prompts = list(build_prompts([load_plugins().datasets.get("data set", "occupations40").load(None).occupations[0]],
                                 family)["prompt"])
    p_male_before, p_female_before = score_prompts(tiny_lm, prompts, targets, None)
    with method.apply(tiny_lm) as intervention:
        p_male, p_female = score_prompts(tiny_lm, prompts, targets, intervention.logits_transform)
    assert np.allclose(p_male, p_female, atol=1e-7)
    assert np.allclose(p_male + p_female, p_male_before + p_female_before, atol=1e-7)
    assert not np.allclose(p_male_before, p_female_before, atol=1e-4)  # there was something to balance


@pytest.mark.parametrize("female, male, message", [
    (["she"], [], "not a list of words"),
    (["she"], ["She"], "share the token"),
    (["she", "he"], ["he"], "in both"),
])
def test_bad_word_files_say_what_is_expected(tiny_lm, tmp_path, female, male, message):
    with pytest.raises(DebiasKitError, match=message):
        with LogitRebalance(words=write_words(tmp_path, female, male)).apply(tiny_lm):
            pass


@pytest.mark.model
def test_strength_one_closes_the_stereotype_gap_on_smollm2(smollm2):
    family = pronoun_family()
    jobs = load_plugins().datasets.get("data set", "occupations40").load(None)
    subset = jobs.in_group("female")[:4] + jobs.in_group("male")[:4]
    prompts = build_prompts(subset, family)
    targets = target_tokens(smollm2.tokenizer, family)
    p_male, p_female = score_prompts(smollm2, list(prompts["prompt"]), targets, None)
    gap_before = bias_summary(prompts.assign(p_male=p_male, p_female=p_female))["stereotype_gap"]
    with LogitRebalance(strength=1.0).apply(smollm2) as intervention:
        p_male, p_female = score_prompts(smollm2, list(prompts["prompt"]), targets, intervention.logits_transform)
    gap_after = bias_summary(prompts.assign(p_male=p_male, p_female=p_female))["stereotype_gap"]
    assert gap_before > 0.1 and abs(gap_after) < 0.01
