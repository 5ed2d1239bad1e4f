"""The definitional control: the noun list's design, and the graded retention on hand-made numbers."""

import pandas as pd
import pytest

from debiaskit.controls import build_control_prompts, definitional_acc, definitional_columns, shared_token_nouns
from debiaskit.data import TemplateFamily
from debiaskit.word_lists import definitional_nouns, gendered_words
from tests.conftest import smollm2_tokenizer


def test_noun_list_is_balanced_disjoint_from_fit_words_and_holds_the_strongest_nouns():
    nouns = definitional_nouns()
    assert sum(n.gender == "female" for n in nouns) == sum(n.gender == "male" for n in nouns) >= 10
    words = {n.word for n in nouns}
    assert not gendered_words().words() & words
    assert {"woman", "man", "mother", "father", "queen", "king"} <= words
    # no control noun shares a token with a fit word (step|mother against a fitted mother would not be unseen)
    assert shared_token_nouns(smollm2_tokenizer(), nouns, gendered_words().words()) == []


def test_shared_token_check_finds_a_shared_piece():
    nouns = [n for n in definitional_nouns() if n.word in ("stepmother", "woman")]
    assert shared_token_nouns(smollm2_tokenizer(), nouns, {"mother"}) == ["stepmother"]


def test_control_prompts_use_the_template_family():
    family = TemplateFamily("t", "", ("The {job} said that", "Is {a_job} here?"), ("he",), ("she",))
    frame = build_control_prompts(definitional_nouns()[:2], family, templates=[1])
    assert list(frame["prompt"]) == ["Is a woman here?", "Is a man here?"]
    assert list(frame["gender"]) == ["female", "male"] and list(frame["pair"]) == [0, 0]


def test_definitional_acc_by_hand():
    # female noun right (0.7 > 0.2), female noun wrong (0.3 < 0.6), male noun right, male noun tied (counts as wrong)
    p_female = [0.7, 0.3, 0.1, 0.4]
    p_male = [0.2, 0.6, 0.5, 0.4]
    assert definitional_acc(p_male, p_female, ["female", "female", "male", "male"]) == pytest.approx(0.5)
    assert definitional_acc(p_male[:1], p_female[:1], ["female"]) == 1.0


def control_frame(shares: dict[str, tuple[str, list[float]]]) -> pd.DataFrame:
    return pd.DataFrame([{"noun": noun, "gender": gender, "template": t, "p_male": 1 - s, "p_female": s}
                         for noun, (gender, row) in shares.items() for t, s in enumerate(row)])


def test_definitional_gap_and_a_retention_of_exactly_one_half():
    # baseline: queen 0.9, actress 0.8 (mean 0.85), king 0.1, actor 0.2 (mean 0.15): gap 0.7
    before = control_frame({"queen": ("female", [0.9, 0.9]), "actress": ("female", [0.7, 0.9]),
                            "king": ("male", [0.1, 0.1]), "actor": ("male", [0.2, 0.2])})
    # after: every noun halfway to 0.5: 0.7, 0.65 against 0.3, 0.35: gap 0.35
    after = control_frame({"queen": ("female", [0.7, 0.7]), "actress": ("female", [0.6, 0.7]),
                           "king": ("male", [0.3, 0.3]), "actor": ("male", [0.35, 0.35])})
    row = definitional_columns(before, after, n_resamples=300, seed=0)
    assert row["definitional_gap"] == pytest.approx(0.35) and row["definitional_retained"] == pytest.approx(0.5)
    assert row["female_noun_share"] == pytest.approx(0.675) and row["male_noun_share"] == pytest.approx(0.325)
    assert row["definitional_acc"] == 1.0  # the binary accuracy cannot see the halving
    # every resample moves each noun halfway, so the paired retention is exactly one half on all of them
    assert (row["definitional_retained_ci_low"] == pytest.approx(0.5)
            and row["definitional_retained_ci_high"] == pytest.approx(0.5))
    assert row["definitional_gap_ci_low"] < 0.35 < row["definitional_gap_ci_high"]


def test_retention_is_read_on_the_nouns_the_method_was_scored_on():
    before = control_frame({"queen": ("female", [0.9]), "nun": ("female", [0.5]), "king": ("male", [0.1])})
    after = control_frame({"queen": ("female", [0.7]), "king": ("male", [0.3])})  # nun left out (say, a fit word)
    row = definitional_columns(before, after, n_resamples=0, seed=0)
    assert row["definitional_retained"] == pytest.approx(0.4 / 0.8)
