"""The stereotype/factual regression of DAMA: coefficients, retention and intervals on numbers worked by hand."""

import json

import numpy as np
import pandas as pd
import pytest

from debiaskit.errors import DebiasKitError
from debiaskit.professions import default_professions_path, load_professions, profession_scores, regression_columns

# s, f of six professions; y = 0.5 s + 0.2 f + 0.1 exactly
S = np.array([0.4, -0.7, 0.0, 0.9, -0.2, 0.6])
F = np.array([0.0, 0.0, 0.8, 0.0, -1.0, 0.3])
Y = 0.5 * S + 0.2 * F + 0.1


def scores(y: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"profession": [f"p{i}" for i in range(len(y))], "stereotypical": S, "definitional": F, "y": y})


def test_regression_recovers_known_coefficients():
    row = regression_columns(scores(Y), scores(Y), n_resamples=0, seed=0)
    assert (row["a_s"], row["a_f"], row["b"]) == pytest.approx((0.5, 0.2, 0.1))


def test_retention_of_exactly_half_and_its_interval():
    # the method halves the stereotype's pull and keeps the factual one: y = 0.25 s + 0.2 f + 0.1
    row = regression_columns(scores(Y), scores(0.25 * S + 0.2 * F + 0.1), n_resamples=200, seed=0)
    assert row["a_s"] == pytest.approx(0.25) and row["a_f"] == pytest.approx(0.2) and row["b"] == pytest.approx(0.1)
    assert row["stereotype_retained"] == pytest.approx(0.5) and row["factual_retained"] == pytest.approx(1.0)
    assert row["professions_scored"] == 6
    # noise-free lines: every resample that can be fitted gives the same coefficients
    assert (row["stereotype_retained_ci_low"] == pytest.approx(0.5)
            and row["stereotype_retained_ci_high"] == pytest.approx(0.5))


def test_retention_is_read_on_the_professions_the_method_was_scored_on():
    baseline_y = Y.copy()
    baseline_y[5] += 0.3  # off the line: a baseline fitted on all six would give another a_s
    method = scores(0.5 * Y).iloc[:5]  # that profession is left out of the method's regression
    row = regression_columns(scores(baseline_y), method, n_resamples=0, seed=0)
    assert row["professions_scored"] == 5 and "a_s_ci_low" not in row
    assert row["stereotype_retained"] == pytest.approx(0.5) and row["factual_retained"] == pytest.approx(0.5)


def test_profession_scores_average_p_male_minus_p_female_over_templates():
    frame = pd.DataFrame({"profession": ["a", "a", "b"], "stereotypical": [0.5, 0.5, -0.5], "definitional": [0, 0, 0],
                          "template": [0, 1, 0], "p_male": [0.6, 0.4, 0.1], "p_female": [0.2, 0.2, 0.3]})
    assert list(profession_scores(frame)["y"]) == pytest.approx([0.3, -0.2])


def test_loading_reads_spaces_and_refuses_bad_entries(tmp_path):
    good = tmp_path / "p.json"
    good.write_text(json.dumps([["adjunct_professor", 0, 0.5], ["actress", -1, 0], ["nurse", 0, -0.9],
                                ["pilot", 0, 0.8]]))
    professions = load_professions(good)
    assert professions[0].name == "adjunct professor" and professions[1].definitional == -1.0
    for text, message in (("[1, 2", "cannot read"),
                          ('[["a", 0, 2], ["b", 0, 0], ["c", 0, 0], ["d", 0, 0]]', r"\[-1, 1\]"),
                          ('[["a", 0], ["b", 0, 0], ["c", 0, 0], ["d", 0, 0]]', "entry 0")):
        bad = tmp_path / "bad.json"
        bad.write_text(text)
        with pytest.raises(DebiasKitError, match=message):
            load_professions(bad)


def test_the_shared_professions_are_bolukbasis_320():
    path = default_professions_path()
    if path is None:
        pytest.skip("no shared/data/debiaswe/professions.json beside this checkout")
    professions = load_professions(path)
    assert len(professions) == 320
    by_name = {p.name: p for p in professions}
    assert (by_name["actress"].definitional == -1.0
            and by_name["nurse"].stereotypical < 0 < by_name["carpenter"].stereotypical)
