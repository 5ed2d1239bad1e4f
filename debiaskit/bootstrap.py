"""Paired bootstrap intervals over jobs and templates for `stereotype_gap` and `gap_change_pct`.

The prompts are a crossed design (every job in every template), so both are resampled: each resample draws the
jobs of each group with replacement (stratified, so a resample always has both groups and their sizes) and,
independently, the templates with replacement. On the share matrix S[job, template] a resample is a count per job
c_j and a weight per template w_t (times drawn / templates), and

  gap = sum_j s_j * c_j * (S w)_j,   s_j = 1 / n_female for a female-dominated job, -1 / n_male for a male one

which is `metrics.stereotype_gap` when every c_j = 1 and w_t = 1 / n_templates. Paired: the baseline and a method
are evaluated on the same resamples, so the interval of the change excludes the prompt-sampling noise they share.
Intervals are percentile intervals (Efron & Tibshirani 1993, ch. 13). A change whose interval contains 0 is
flagged `within_noise`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from debiaskit.errors import DebiasKitError
from debiaskit.metrics import female_share

DEFAULT_LEVEL = 0.95
DEFAULT_RESAMPLES = 1000


@dataclass(frozen=True)
class Resamples:
    job_counts: np.ndarray  # [resamples, jobs]: times each job is drawn
    template_weights: np.ndarray  # [resamples, templates]: times each template is drawn / number of templates


def draw_resamples(groups: np.ndarray, n_templates: int, n_resamples: int, seed: int) -> Resamples:
    groups = np.asarray(groups)
    if n_resamples < 1:
        raise DebiasKitError(f"--bootstrap {n_resamples}: the number of resamples must be at least 1 (e.g. 1000)")
    rng = np.random.default_rng(seed)
    counts = np.zeros((n_resamples, len(groups)))
    for group in ("female", "male"):
        members = np.flatnonzero(groups == group)
        drawn = rng.integers(0, len(members), size=(n_resamples, len(members)))
        np.add.at(counts, (np.arange(n_resamples)[:, None], members[drawn]), 1.0)
    drawn_templates = rng.integers(0, n_templates, size=(n_resamples, n_templates))
    weights = np.zeros((n_resamples, n_templates))
    np.add.at(weights, (np.arange(n_resamples)[:, None], drawn_templates), 1.0 / n_templates)
    return Resamples(counts, weights)


def share_matrix(frame: pd.DataFrame, item: str = "job",
                 group: str = "group") -> tuple[np.ndarray, np.ndarray, list[str], list[int]]:
    """(S [items, templates] of female_share, group per item, item names, template indices) from a per-prompt frame;
    the items are jobs grouped by who dominates them, or control nouns grouped by their gender."""
    scored = frame.assign(female_share=female_share(frame["p_male"], frame["p_female"]))
    pivot = scored.pivot_table(index=item, columns="template", values="female_share", aggfunc="mean", sort=True)
    if pivot.isna().any().any():
        raise DebiasKitError(f"the bootstrap needs every {item} scored in every template; some ({item}, template) "
                             "prompts are missing")
    groups = scored.groupby(item)[group].first().reindex(pivot.index).to_numpy()
    return pivot.to_numpy(dtype=float), groups, list(pivot.index), list(pivot.columns)


def resampled_group_means(share: np.ndarray, groups: np.ndarray, resamples: Resamples) -> dict[str, np.ndarray]:
    """Per group, the mean share of its items on each resample: {group: [resamples]}."""
    groups = np.asarray(groups)
    item_means = resamples.template_weights @ share.T  # [resamples, items]: each item's share over the drawn templates
    means = {}
    for group in ("female", "male"):
        member = (groups == group).astype(float)
        means[group] = (resamples.job_counts * item_means * member).sum(axis=1) / max(member.sum(), 1.0)
    return means


def resampled_gaps(share: np.ndarray, groups: np.ndarray, resamples: Resamples) -> np.ndarray:
    """stereotype_gap on each resample: [resamples]."""
    means = resampled_group_means(share, groups, resamples)
    return means["female"] - means["male"]


def percentile_interval(samples: np.ndarray, level: float = DEFAULT_LEVEL) -> tuple[float, float]:
    samples = np.asarray(samples, dtype=float)
    samples = samples[np.isfinite(samples)]
    if len(samples) == 0:
        return float("nan"), float("nan")
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(samples, [tail, 1.0 - tail])
    return float(low), float(high)


def paired_intervals(baseline: pd.DataFrame, method: pd.DataFrame, n_resamples: int, seed: int,
                     level: float = DEFAULT_LEVEL) -> dict[str, Any]:
    """Table columns: the interval of the method's stereotype_gap, of its gap_change_pct against the baseline, and
    `within_noise` (the change's interval contains 0). Both frames must hold the same (job, template) prompts."""
    base_share, groups, base_jobs, base_templates = share_matrix(baseline)
    method_share, _, method_jobs, method_templates = share_matrix(method)
    if base_jobs != method_jobs or base_templates != method_templates:
        raise DebiasKitError("a paired bootstrap needs the baseline and the method scored on the same jobs and "
                             "templates")
    resamples = draw_resamples(groups, len(base_templates), n_resamples, seed)
    base_gaps = resampled_gaps(base_share, groups, resamples)
    method_gaps = resampled_gaps(method_share, groups, resamples)
    with np.errstate(divide="ignore", invalid="ignore"):
        changes = 100.0 * (method_gaps - base_gaps) / base_gaps
    gap_low, gap_high = percentile_interval(method_gaps, level)
    change_low, change_high = percentile_interval(changes, level)
    return {"gap_ci_low": gap_low, "gap_ci_high": gap_high, "change_ci_low": change_low, "change_ci_high": change_high,
            "within_noise": bool(change_low <= 0.0 <= change_high) if np.isfinite(change_low) else None}
