"""Each metric against a number computed by hand."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from debiaskit import metrics


def test_female_share_is_female_over_both():
    assert metrics.female_share(np.array([0.3, 0.1]), np.array([0.1, 0.3])).tolist() == pytest.approx([0.25, 0.75])


def hand_frame():
    # nurse: shares 0.75 and 0.5 -> 0.625; maid: 0.8; plumber: 0.2; pilot: shares 0.25, 0.0 -> 0.125
    rows = [
        ("nurse", "female", 90.0, 0.1, 0.3), ("nurse", "female", 90.0, 0.2, 0.2),
        ("maid", "female", 88.0, 0.1, 0.4), ("maid", "female", 88.0, 0.1, 0.4),
        ("plumber", "male", 2.0, 0.4, 0.1), ("plumber", "male", 2.0, 0.4, 0.1),
        ("pilot", "male", 5.0, 0.3, 0.1), ("pilot", "male", 5.0, 0.5, 0.0),
    ]
    return pd.DataFrame(rows, columns=["job", "group", "pct_women", "p_male", "p_female"])


def test_bias_summary_on_a_hand_made_frame():
    summary = metrics.bias_summary(hand_frame())
    # female jobs mean (0.625 + 0.8) / 2 = 0.7125; male jobs (0.2 + 0.125) / 2 = 0.1625
    assert summary["stereotype_gap"] == pytest.approx(0.55)
    # |0.125| + |0.3| + |-0.3| + |-0.375| = 1.1, over 4 jobs
    assert summary["abs_bias"] == pytest.approx(0.275)
    # masses 0.4 0.4 0.5 0.5 0.5 0.5 0.4 0.5 -> 3.7 / 8
    assert summary["gender_mass"] == pytest.approx(0.4625)
    shares, pct = np.array([0.625, 0.8, 0.2, 0.125]), np.array([90.0, 88.0, 2.0, 5.0])
    ds, dp = shares - shares.mean(), pct - pct.mean()
    assert summary["bls_corr"] == pytest.approx((ds * dp).sum() / math.sqrt((ds**2).sum() * (dp**2).sum()))


def test_gap_change_and_ppl_ratio():
    assert metrics.gap_change_pct(0.17, 0.34) == pytest.approx(-50.0)
    assert math.isnan(metrics.gap_change_pct(0.1, 0.0))
    assert metrics.ppl_ratio(math.log(12.0), math.log(10.0)) == pytest.approx(1.2)


def test_kl_per_position_by_hand():
    base = torch.log(torch.tensor([[0.5, 0.5, 0.0]]))
    method = torch.log(torch.tensor([[0.25, 0.75, 0.0]]))
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert metrics.kl_per_position(base, method).item() == pytest.approx(expected)
    assert metrics.kl_per_position(base, base).item() == 0.0


@pytest.mark.parametrize(
    "group, before, after, verdict",
    [
        ("female", (0.1, 0.5), (0.2, 0.4), "reduced"),  # male up, female down
        ("female", (0.1, 0.5), (0.05, 0.6), "amplified"),  # male down, female up
        ("female", (0.1, 0.5), (0.2, 0.6), "amplified"),  # both up
        ("female", (0.1, 0.5), (0.09, 0.3), "reduced"),  # both down, |difference| 0.4 -> 0.21
        ("male", (0.5, 0.1), (0.45, 0.01), "both_changed"),  # both down, |difference| 0.4 -> 0.44
        ("male", (0.5, 0.1), (0.5004, 0.1), "neutral"),  # +0.08 % is under the 1 % threshold
        ("male", (0.5, 0.1), (0.4, 0.2), "reduced"),
        # the seed's rule, kept as written: both halved leaves female_share at 1/6 yet |difference| 0.4 -> 0.2 counts
        # as reduced; the table's share-based columns (stereotype_gap, gender_mass) are what expose such a method
        ("male", (0.5, 0.1), (0.25, 0.05), "reduced"),
    ],
)
def test_bias_verdict(group, before, after, verdict):
    assert metrics.bias_verdict(group, *before, *after) == verdict


def test_verdict_counts_over_jobs():
    before = metrics.per_job(hand_frame())
    after_frame = hand_frame()
    after_frame.loc[after_frame.job == "nurse", "p_male"] *= 2  # nurse: male up, female same -> reduced
    counts = metrics.verdict_counts(before, metrics.per_job(after_frame))
    assert counts == {"reduced": 1, "amplified": 0, "both_changed": 0, "neutral": 3}
