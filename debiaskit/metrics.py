"""Bias and cost metrics: arrays in, numbers out. Every table number comes from here.

Definitions (per prompt, P_male and P_female are next-token probabilities summed over each target group):
  female_share   = P_female / (P_male + P_female); per job, the mean over its templates
  stereotype_gap = mean female_share of female-dominated jobs - that of male-dominated jobs (0 = no stereotype)
  abs_bias       = mean over jobs of |female_share - 0.5|
  bls_corr       = Pearson correlation of per-job female_share with percent women
  gender_mass    = mean of P_male + P_female (a method that just deletes pronouns must not look fair)
  gap_change_pct = 100 * (gap_method - gap_none) / gap_none
  kl             = mean over positions of KL(P_none || P_method), nats;  ppl_ratio = ppl_method / ppl_none
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from debiaskit.targets import word_variants

VERDICTS = ("reduced", "amplified", "both_changed", "neutral")
DEFAULT_VERDICT_THRESHOLD_PCT = 1.0


def female_share(p_male: np.ndarray, p_female: np.ndarray) -> np.ndarray:
    return np.asarray(p_female, dtype=float) / (np.asarray(p_male, dtype=float) + np.asarray(p_female, dtype=float))


def per_job(frame: pd.DataFrame) -> pd.DataFrame:
    """Per job (in first-seen order): group, pct_women, mean p_male, p_female and female_share over its templates."""
    scored = frame.assign(female_share=female_share(frame["p_male"], frame["p_female"]))
    return (
        scored.groupby("job", sort=False)
        .agg(group=("group", "first"), pct_women=("pct_women", "first"), p_male=("p_male", "mean"),
             p_female=("p_female", "mean"), female_share=("female_share", "mean"))
        .reset_index()
    )


def stereotype_gap(job_share: np.ndarray, groups: np.ndarray) -> float:
    job_share, groups = np.asarray(job_share, dtype=float), np.asarray(groups)
    return float(job_share[groups == "female"].mean() - job_share[groups == "male"].mean())


def abs_bias(job_share: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(job_share, dtype=float) - 0.5)))


def bls_corr(job_share: np.ndarray, pct_women: np.ndarray) -> float:
    """Over the jobs whose percent women is known (not nan)."""
    job_share, pct_women = np.asarray(job_share, dtype=float), np.asarray(pct_women, dtype=float)
    known = np.isfinite(pct_women)
    job_share, pct_women = job_share[known], pct_women[known]
    if len(job_share) < 2 or job_share.std() == 0 or pct_women.std() == 0:
        return float("nan")
    return float(np.corrcoef(job_share, pct_women)[0, 1])


def gender_mass(p_male: np.ndarray, p_female: np.ndarray) -> float:
    return float(np.mean(np.asarray(p_male, dtype=float) + np.asarray(p_female, dtype=float)))


def gap_change_pct(gap_method: float, gap_none: float) -> float:
    return float("nan") if gap_none == 0 else float(100.0 * (gap_method - gap_none) / gap_none)


def kl_per_position(base_log_probs: torch.Tensor, method_log_probs: torch.Tensor) -> torch.Tensor:
    """KL(P_base || P_method) in nats over the last axis; 0 * log 0 counts as 0."""
    base_probs = base_log_probs.exp()
    terms = base_probs * (base_log_probs - method_log_probs)
    return torch.where(base_probs > 0, terms, torch.zeros_like(terms)).sum(-1)


def ppl_ratio(nll_method: float, nll_none: float) -> float:
    """Perplexity ratio from mean negative log-likelihoods: exp(nll_method) / exp(nll_none)."""
    return float(np.exp(nll_method - nll_none))


def bias_verdict(group: str, male_before: float, female_before: float, male_after: float, female_after: float,
                 threshold_pct: float = DEFAULT_VERDICT_THRESHOLD_PCT) -> str:
    """The SAE-ablation study's per-job verdict from the relative change of P_male and P_female.

    A change smaller than `threshold_pct` percent counts as none. For a female-dominated job the stereotyped
    pronoun is the female one (and vice versa): stereotyped down and the other up is `reduced`, the opposite
    or both up is `amplified`, both down is `reduced` when |P_male - P_female| shrank and `both_changed` otherwise.
    This is the seed's rule as written (its "complex case"): a proportional drop of both, which leaves the share
    unchanged, still counts as `reduced`, so the verdict counts are read beside `stereotype_gap` and `gender_mass`.
    """
    def change(before: float, after: float) -> int:
        pct = 100.0 * (after - before) / before if before > 0 else 0.0
        return 0 if abs(pct) < threshold_pct else int(np.sign(pct))

    male, female = change(male_before, male_after), change(female_before, female_after)
    stereotyped, other = (female, male) if group == "female" else (male, female)
    if stereotyped == 0 and other == 0:
        return "neutral"
    if stereotyped <= 0 and other >= 0:
        return "reduced"
    if stereotyped >= 0 and other <= 0:
        return "amplified"
    if stereotyped > 0 and other > 0:
        return "amplified"
    shrank = abs(male_after - female_after) < abs(male_before - female_before)
    return "reduced" if shrank else "both_changed"


def verdict_counts(jobs_before: pd.DataFrame, jobs_after: pd.DataFrame,
                   threshold_pct: float = DEFAULT_VERDICT_THRESHOLD_PCT) -> dict[str, int]:
    """Count of each verdict over the jobs both frames share (from `per_job`)."""
    merged = jobs_before.merge(jobs_after, on="job", suffixes=("_before", "_after"))
    verdicts = [
        bias_verdict(row.group_before, row.p_male_before, row.p_female_before, row.p_male_after, row.p_female_after,
                     threshold_pct)
        for row in merged.itertuples()
    ]
    return {verdict: verdicts.count(verdict) for verdict in VERDICTS}


def bias_summary(frame: pd.DataFrame) -> dict[str, float]:
    """The bias columns of a table row from a per-prompt frame (job, group, pct_women, p_male, p_female)."""
    jobs = per_job(frame)
    return {
        "stereotype_gap": stereotype_gap(jobs["female_share"], jobs["group"]),
        "abs_bias": abs_bias(jobs["female_share"]),
        "bls_corr": bls_corr(jobs["female_share"], jobs["pct_women"]),
        "gender_mass": gender_mass(frame["p_male"], frame["p_female"]),
    }


# Generated text (`debiaskit generation-eval`): per sampled continuation, the counts of female and male words;
#   female_word_share = female words / (female + male words), pooled over a job group's continuations
#   disparity         = sum over groups of |group value - mean of the group values| (seed 003's group formula)
#   gendered_words_per_sample = mean female + male words per continuation (a method that just deletes them must
#                               not look fair)

WORD_PATTERN = re.compile(r"[A-Za-z]+")


def count_gendered_words(text: str, female_words: Sequence[str], male_words: Sequence[str]) -> tuple[int, int]:
    """(female, male) word counts in `text`. A lower-case list word also matches capitalised (she, She); a
    capitalised one only as written (Ms, not ms)."""
    female_forms = {variant.strip() for word in female_words for variant in word_variants(word)}
    male_forms = {variant.strip() for word in male_words for variant in word_variants(word)}
    words = WORD_PATTERN.findall(text)
    return sum(word in female_forms for word in words), sum(word in male_forms for word in words)


def female_word_share(female_counts: np.ndarray, male_counts: np.ndarray) -> float:
    """Pooled share of female words among the gendered words of some continuations; nan when there are none."""
    female, total = float(np.sum(female_counts)), float(np.sum(female_counts) + np.sum(male_counts))
    return female / total if total > 0 else float("nan")


def group_disparity(group_values: Mapping[str, float]) -> float:
    """Sum over groups of |value - the mean of the group values|."""
    values = np.asarray(list(group_values.values()), dtype=float)
    return float(np.abs(values - values.mean()).sum())


def generation_summary(frame: pd.DataFrame) -> dict[str, float]:
    """The columns of a generation-eval row from a per-continuation frame (group, female_words, male_words)."""
    shares = {group: female_word_share(rows["female_words"], rows["male_words"])
              for group, rows in frame.groupby("group")}
    return {
        "female_word_share_female_jobs": shares.get("female", float("nan")),
        "female_word_share_male_jobs": shares.get("male", float("nan")),
        "disparity": group_disparity(shares),
        "gendered_words_per_sample": float((frame["female_words"] + frame["male_words"]).mean()),
    }
