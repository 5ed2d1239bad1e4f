"""The paired bootstrap over jobs and templates, checked against distributions worked out by hand."""

import numpy as np
import pandas as pd
import pytest

from debiaskit.bootstrap import (
    Resamples,
    draw_resamples,
    paired_intervals,
    percentile_interval,
    resampled_gaps,
    share_matrix,
)
from debiaskit.errors import DebiasKitError
from debiaskit.metrics import bias_summary


def prompt_frame(shares: dict[str, tuple[str, list[float]]]) -> pd.DataFrame:
    """Per-prompt rows whose female_share is the given number: p_female = share, p_male = 1 - share."""
    return pd.DataFrame([{"job": job, "group": group, "pct_women": 50.0, "template": t, "p_male": 1 - s, "p_female": s}
                         for job, (group, row) in shares.items() for t, s in enumerate(row)])


THREE_JOBS = {"a": ("female", [0.8, 0.6]), "b": ("male", [0.2, 0.4]), "c": ("male", [0.1, 0.3])}


def test_resampled_gap_by_hand():
    share, groups, jobs, templates = share_matrix(prompt_frame(THREE_JOBS))
    assert jobs == ["a", "b", "c"] and templates == [0, 1] and list(groups) == ["female", "male", "male"]
    resamples = Resamples(job_counts=np.array([[1, 1, 1], [1, 2, 0], [1, 0, 2]], dtype=float),
                          template_weights=np.array([[0.5, 0.5], [1.0, 0.0], [0.0, 1.0]]))
    # identity: 0.7 - (0.3 + 0.2) / 2;  b twice in template 0: 0.8 - 0.2;  c twice in template 1: 0.6 - 0.3
    np.testing.assert_allclose(resampled_gaps(share, groups, resamples), [0.45, 0.6, 0.3])
    assert bias_summary(prompt_frame(THREE_JOBS))["stereotype_gap"] == pytest.approx(0.45)


def test_resamples_are_stratified_and_reproducible():
    groups = np.array(["female"] * 3 + ["male"] * 5)
    first = draw_resamples(groups, 4, 50, seed=7)
    np.testing.assert_array_equal(first.job_counts[:, :3].sum(1), 3)
    np.testing.assert_array_equal(first.job_counts[:, 3:].sum(1), 5)
    np.testing.assert_allclose(first.template_weights.sum(1), 1.0)
    again = draw_resamples(groups, 4, 50, seed=7)
    np.testing.assert_array_equal(first.job_counts, again.job_counts)
    assert not np.array_equal(first.job_counts, draw_resamples(groups, 4, 50, seed=8).job_counts)


def test_percentile_interval():
    assert percentile_interval(np.arange(101), level=0.9) == pytest.approx((5.0, 95.0))


# One job per group and two templates: only the templates vary. The baseline's per-template gaps are 0.6 and 0.4,
# so a resample's gap is 0.6 (both draws template 0, p = 1/4), 0.5 (one of each, p = 1/2) or 0.4 (p = 1/4).
BASELINE = {"nurse": ("female", [0.9, 0.5]), "pilot": ("male", [0.3, 0.1])}


def test_paired_interval_by_hand():
    # method gaps per template 0.3 and 0.1: changes -50 % (t0, t0), -60 % (mixed: 0.2 vs 0.5), -75 % (t1, t1)
    method = {"nurse": ("female", [0.7, 0.5]), "pilot": ("male", [0.4, 0.4])}
    result = paired_intervals(prompt_frame(BASELINE), prompt_frame(method), n_resamples=2000, seed=0)
    assert (result["gap_ci_low"], result["gap_ci_high"]) == pytest.approx((0.1, 0.3))
    # unpaired, the extremes would be (0.1 - 0.6) / 0.6 = -83 % and (0.3 - 0.4) / 0.4 = -25 %
    assert (result["change_ci_low"], result["change_ci_high"]) == pytest.approx((-75.0, -50.0))
    assert result["within_noise"] is False


def test_change_that_flips_sign_is_within_noise():
    # method gaps 0.66 (+10 %) and 0.36 (-10 %): the mixed resample is 0.51 vs 0.5 (+2 %)
    method = {"nurse": ("female", [0.96, 0.46]), "pilot": ("male", [0.3, 0.1])}
    result = paired_intervals(prompt_frame(BASELINE), prompt_frame(method), n_resamples=2000, seed=0)
    assert (result["change_ci_low"], result["change_ci_high"]) == pytest.approx((-10.0, 10.0))
    assert result["within_noise"] is True


def test_mismatched_prompts_are_refused():
    with pytest.raises(DebiasKitError, match="same jobs and templates"):
        paired_intervals(prompt_frame(BASELINE), prompt_frame(THREE_JOBS), n_resamples=10, seed=0)
    with pytest.raises(DebiasKitError, match="at least 1"):
        draw_resamples(np.array(["female", "male"]), 2, 0, seed=0)
