"""Stereotypical against factual gender: the profession regression of DAMA.

Limisiewicz, Mareček, Musil 2024, "Debiasing Algorithm through Model Adaptation" (ICLR), §2.2: on the professions
of Bolukbasi et al. 2016 (`debiaswe/professions.json`: each with a definitional score f and a stereotypical score s
in [-1, 1], positive = male), score each profession p with the pronoun templates,

    y_p = mean over templates of P_male - P_female,

and fit y = a_s * s + a_f * f + b by least squares. a_s is how much the stereotype moves the pronoun, a_f how much
the profession's own gender does ("actress", "waiter"), b the model's overall lean. Debiasing means a_s toward 0
with a_f kept:

    stereotype_retained = a_s / a_s(none)        factual_retained = a_f / a_f(none)

both on the professions the method is scored on (a profession it is fitted on, a fit word or a training job, is
left out of its regression and of the baseline's it is divided by). Intervals: a paired bootstrap over professions
(the same resample for the baseline and the method), percentile intervals as in `bootstrap`.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from debiaskit.bootstrap import DEFAULT_LEVEL, percentile_interval
from debiaskit.data import TemplateFamily
from debiaskit.errors import DebiasKitError

PROFESSIONS_FILE = Path("debiaswe") / "professions.json"
# Templates per profession, spread over the scored templates (the first and the last): 320 x 2 = 640 prompts, about as
# many as the 680 job prompts. On SmolLM2 (1000 resamples over professions) a_s(none) is 0.087 [0.063, 0.110] with 2
# templates, 0.095 [0.070, 0.120] with 4 and 0.120 [0.091, 0.147] with all 17: the interval is about half of a_s
# wide whatever the templates, since its width comes from the 320 professions, so 2 buy nearly all the precision.
# Which templates changes a_s itself (0.087 to 0.131 over the subsets of 2, 3, 4, 6 and 17 tried), so only ratios on
# the same templates compare: the baseline and a method always share them.
PROFESSION_TEMPLATES = 2
COEFFICIENTS = ("a_s", "a_f", "b")


@dataclass(frozen=True)
class Profession:
    name: str  # underscores of the source file read as spaces
    definitional: float  # f in [-1, 1], positive = male by definition ("actor"), negative = female ("actress")
    stereotypical: float  # s in [-1, 1], positive = male-stereotyped ("carpenter")


def shared_data_dir() -> Path | None:
    """`$DEBIASKIT_SHARED_DATA`, else the `shared/data` folder beside a checkout; None when neither exists."""
    given = os.environ.get("DEBIASKIT_SHARED_DATA")
    candidate = Path(given) if given else Path(__file__).resolve().parents[2] / "shared" / "data"
    return candidate if candidate.is_dir() else None


def default_professions_path() -> Path | None:
    found = shared_data_dir()
    return found / PROFESSIONS_FILE if found is not None and (found / PROFESSIONS_FILE).is_file() else None


def professions_from_option(value: str) -> tuple[Profession, ...]:
    """`--professions`: `auto` (the shared copy when there is one, else none, said on stderr), `none`, or a file."""
    if value == "none":
        return ()
    if value == "auto":
        found = default_professions_path()
        if found is None:
            print("debiaskit: no professions.json found (looked in $DEBIASKIT_SHARED_DATA and shared/data beside the "
                  "checkout); the a_s/a_f regression columns are left out. Pass --professions FILE to add them.",
                  file=sys.stderr)
            return ()
        return load_professions(found)
    return load_professions(Path(value))


def load_professions(path: Path) -> tuple[Profession, ...]:
    """Read a JSON list of [profession, definitional, stereotypical]; any bad entry is an error naming it."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DebiasKitError(f"cannot read professions from {path}: {error}; expected Bolukbasi et al.'s "
                             "professions.json, a JSON list of [name, definitional, stereotypical]") from None
    if not isinstance(raw, list) or len(raw) < 4:
        raise DebiasKitError(f"{path}: expected a JSON list of at least 4 [name, definitional, stereotypical] entries")
    professions = []
    for index, entry in enumerate(raw):
        try:
            name, definitional, stereotypical = entry
            profession = Profession(str(name).replace("_", " ").strip(), float(definitional), float(stereotypical))
        except (TypeError, ValueError):
            raise DebiasKitError(f"{path}: entry {index} is {entry!r}; expected [name, definitional, stereotypical] "
                                 "with both scores numbers in [-1, 1]") from None
        if not profession.name or not all(-1.0 <= v <= 1.0
                                          for v in (profession.definitional, profession.stereotypical)):
            raise DebiasKitError(f"{path}: entry {index} ({entry!r}) needs a name and scores in [-1, 1]")
        professions.append(profession)
    return tuple(professions)


def build_profession_prompts(professions: Sequence[Profession], family: TemplateFamily,
                             templates: Sequence[int]) -> pd.DataFrame:
    """One row per (profession, template): profession, definitional, stereotypical, template, prompt."""
    return pd.DataFrame([
        {"profession": p.name, "definitional": p.definitional, "stereotypical": p.stereotypical, "template": index,
         "prompt": family.prompt(family.templates[index], p.name)}
        for p in professions for index in templates
    ])


def profession_scores(frame: pd.DataFrame) -> pd.DataFrame:
    """Per profession (sorted by name): s, f and y = mean over its templates of P_male - P_female."""
    return (frame.assign(y=frame["p_male"] - frame["p_female"])
            .groupby("profession", sort=True)
            .agg(stereotypical=("stereotypical", "first"), definitional=("definitional", "first"), y=("y", "mean"))
            .reset_index())


def _design(stereotypical: np.ndarray, definitional: np.ndarray) -> np.ndarray:
    return np.column_stack([stereotypical, definitional, np.ones(len(stereotypical))])  # [n, 3]: s, f, 1


def _weighted_fits(design: np.ndarray, y: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per row of `counts` (times each profession is drawn; all ones = the plain fit), the least-squares a_s, a_f, b
    of y = a_s s + a_f f + b [rows, 3]; nan where the draw cannot separate s from f (too few distinct professions)."""
    gram = np.einsum("rn,ni,nj->rij", counts, design, design)
    moments = np.einsum("rn,ni,n->ri", counts, design, y)
    fits = np.full((len(counts), design.shape[1]), np.nan)
    solvable = np.linalg.cond(gram) < 1e12
    fits[solvable] = np.linalg.solve(gram[solvable], moments[solvable][..., None])[..., 0]
    return fits


def regression_columns(baseline: pd.DataFrame, method: pd.DataFrame, n_resamples: int, seed: int,
                       level: float = DEFAULT_LEVEL) -> dict[str, Any]:
    """The row's regression columns from `profession_scores` frames of the baseline and the method: the method's
    a_s, a_f, b and their retention against the baseline on the same professions, with intervals when
    `n_resamples` > 0."""
    unseen = set(method["profession"]) - set(baseline["profession"])
    if unseen:
        raise DebiasKitError(f"the baseline was not scored on profession {sorted(unseen)[0]!r}; a retention needs both "
                             "on the same professions")
    merged = baseline.merge(method, on=["profession", "stereotypical", "definitional"], suffixes=("_none", "_method"))
    design = _design(merged["stereotypical"].to_numpy(float), merged["definitional"].to_numpy(float))
    base_y, method_y = merged["y_none"].to_numpy(float), merged["y_method"].to_numpy(float)
    ones = np.ones((1, len(merged)))
    base_fit, method_fit = _weighted_fits(design, base_y, ones)[0], _weighted_fits(design, method_y, ones)[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        row: dict[str, Any] = {**dict(zip(COEFFICIENTS, map(float, method_fit))),
                               "stereotype_retained": float(method_fit[0] / base_fit[0]),
                               "factual_retained": float(method_fit[1] / base_fit[1]),
                               "professions_scored": len(merged)}
    if n_resamples:
        rng = np.random.default_rng(seed)
        counts = np.zeros((n_resamples, len(merged)))
        np.add.at(counts, (np.arange(n_resamples)[:, None],
                           rng.integers(0, len(merged), (n_resamples, len(merged)))), 1.0)
        base_fits, method_fits = _weighted_fits(design, base_y, counts), _weighted_fits(design, method_y, counts)
        with np.errstate(divide="ignore", invalid="ignore"):
            samples = {**{name: method_fits[:, i] for i, name in enumerate(COEFFICIENTS)},
                       "stereotype_retained": method_fits[:, 0] / base_fits[:, 0],
                       "factual_retained": method_fits[:, 1] / base_fits[:, 1]}
        for name, values in samples.items():
            row[f"{name}_ci_low"], row[f"{name}_ci_high"] = percentile_interval(values, level)
    return row
