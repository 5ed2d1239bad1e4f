"""The definitional control: removing a stereotype must not remove the meaning of "queen".

Nouns whose gender is part of their meaning (datasets/definitional_nouns.json, balanced [female, male] pairs) go into
the same templates as the jobs ("The queen said that"). The control and the words methods fit on
(gendered_words.json) are a fixed disjoint split, made once for the project rather than per fold: no control noun is
a fit word or shares a token with one (SmolLM2's tokenizer, leading-space form; a run on another tokenizer lists
any overlap in its header), the strongest nouns (woman/man, mother/father, queen/king) are controls, and both sides
are clearly gendered at baseline (female nouns' female share >= 0.85, male nouns' <= 0.25 on SmolLM2). Per noun,
female_share = P_female / (P_male + P_female), averaged over its templates:

  definitional_acc      = share of control prompts with P_<noun's gender> > P_<other gender> (binary, kept)
  female_noun_share     = mean female_share of the female nouns; male_noun_share likewise
  definitional_gap      = female_noun_share - male_noun_share (how far the nouns' own gender moves the pronoun)
  definitional_retained = definitional_gap / definitional_gap(none): 1 = meaning kept, 0 = gender erased

Intervals: the paired bootstrap of `bootstrap` with nouns in place of jobs (resampled within each gender) and,
independently, templates.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from debiaskit.bootstrap import (
    DEFAULT_LEVEL,
    Resamples,
    draw_resamples,
    percentile_interval,
    resampled_group_means,
    share_matrix,
)
from debiaskit.data import TemplateFamily
from debiaskit.errors import DebiasKitError
from debiaskit.metrics import female_share, stereotype_gap
from debiaskit.word_lists import DefinitionalNoun


def shared_token_nouns(tokenizer: Any, nouns: Sequence[DefinitionalNoun], fit_words: set[str]) -> list[str]:
    """Control nouns that share a token (leading-space form, case and the space ignored) with a fit word."""
    def pieces(word: str) -> set[str]:
        ids = tokenizer(f" {word}", add_special_tokens=False)["input_ids"]
        return {tokenizer.decode([token]).strip().lower() for token in ids} - {""}

    fitted = set().union(*(pieces(word) for word in fit_words)) if fit_words else set()
    return [noun.word for noun in nouns if pieces(noun.word) & fitted]


def build_control_prompts(nouns: Sequence[DefinitionalNoun], family: TemplateFamily,
                          templates: Sequence[int] | None = None) -> pd.DataFrame:
    """One row per (noun, template): noun, gender, pair, template (its index in the family), prompt."""
    indices = range(len(family.templates)) if templates is None else templates
    return pd.DataFrame(
        [
            {"noun": noun.word, "gender": noun.gender, "pair": noun.pair, "template": index,
             "prompt": family.prompt(family.templates[index], noun.word)}
            for noun in nouns
            for index in indices
        ]
    )


def definitional_acc(p_male: np.ndarray, p_female: np.ndarray, gender: np.ndarray) -> float:
    """Share of prompts where the noun's own pronoun group is strictly more probable (a tie counts as wrong)."""
    p_male, p_female, gender = np.asarray(p_male, dtype=float), np.asarray(p_female, dtype=float), np.asarray(gender)
    if len(gender) == 0:
        return float("nan")
    correct = np.where(gender == "female", p_female > p_male, p_male > p_female)
    return float(correct.mean())


def noun_shares(control: pd.DataFrame) -> pd.DataFrame:
    """Per noun: gender and female_share averaged over its templates."""
    return (control.assign(female_share=female_share(control["p_male"], control["p_female"]))
            .groupby("noun", sort=True).agg(gender=("gender", "first"), female_share=("female_share", "mean"))
            .reset_index())


def definitional_columns(baseline: pd.DataFrame, method: pd.DataFrame, n_resamples: int, seed: int,
                         level: float = DEFAULT_LEVEL) -> dict[str, Any]:
    """The row's control columns from scored control frames (noun, gender, template, p_male, p_female); the
    baseline is read on the nouns the method was scored on, and the intervals (with `n_resamples` > 0) are paired."""
    baseline = baseline[baseline["noun"].isin(set(method["noun"]))]
    if set(zip(method["noun"], method["template"])) != set(zip(baseline["noun"], baseline["template"])):
        raise DebiasKitError("the baseline and the method were scored on different control prompts; a retention needs "
                             "both on the same nouns and templates")
    nouns, before = noun_shares(method), noun_shares(baseline)
    female = float(nouns.loc[nouns["gender"] == "female", "female_share"].mean())
    male = float(nouns.loc[nouns["gender"] == "male", "female_share"].mean())
    gap = stereotype_gap(nouns["female_share"], nouns["gender"])
    gap_none = stereotype_gap(before["female_share"], before["gender"])
    row: dict[str, Any] = {
        "definitional_acc": definitional_acc(method["p_male"], method["p_female"], method["gender"]),
        "definitional_gap": gap, "definitional_retained": gap / gap_none if gap_none else float("nan"),
        "female_noun_share": female, "male_noun_share": male,
    }
    if n_resamples:
        base_share, groups, _, _ = share_matrix(baseline, item="noun", group="gender")
        method_share, _, _, _ = share_matrix(method, item="noun", group="gender")
        resamples: Resamples = draw_resamples(groups, base_share.shape[1], n_resamples, seed)
        base_means = resampled_group_means(base_share, groups, resamples)
        means = resampled_group_means(method_share, groups, resamples)
        gaps, base_gaps = means["female"] - means["male"], base_means["female"] - base_means["male"]
        with np.errstate(divide="ignore", invalid="ignore"):
            samples = {"definitional_gap": gaps, "definitional_retained": gaps / base_gaps,
                       "female_noun_share": means["female"], "male_noun_share": means["male"]}
        for name, values in samples.items():
            row[f"{name}_ci_low"], row[f"{name}_ci_high"] = percentile_interval(values, level)
    return row
