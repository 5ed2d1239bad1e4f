"""Run methods side by side: fit (per fold when a method learns from jobs), apply, score, summarise.

The baseline `none` is always scored first; every other row is measured against it. A method that raises
gets a failed row with its error, the model's hooks are cleared, and the next method runs as if alone.
"""

from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from debiaskit.errors import DebiasKitError
from debiaskit.data import OccupationSet, TemplateFamily, job_folds
from debiaskit.evaluator import DEFAULT_BATCH_SIZE, NeutralCost, NeutralText, build_prompts, score_prompts
from debiaskit.method import FitContext, Method
from debiaskit.metrics import bias_summary, gap_change_pct, per_job, ppl_ratio, verdict_counts
from debiaskit.model import LoadedModel
from debiaskit.targets import TargetTokens, target_tokens

BASELINE = "none"
DEFAULT_FOLDS = 5


@dataclass
class MethodRun:
    """One method's outcome: its table row, and its per-prompt frame when it succeeded."""

    row: dict[str, Any]
    frame: pd.DataFrame | None = None

    @property
    def ok(self) -> bool:
        return self.row["status"] == "ok"


@dataclass
class Comparison:
    model: str
    dataset: str
    templates: str
    device: str
    seed: int
    n_folds: int
    in_sample: bool
    targets: TargetTokens
    runs: list[MethodRun] = field(default_factory=list)

    def rows(self) -> list[dict[str, Any]]:
        return [run.row for run in self.runs]

    def frame(self) -> pd.DataFrame:
        frames = [run.frame for run in self.runs if run.frame is not None]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def header(self) -> dict[str, Any]:
        return {"model": self.model, "dataset": self.dataset, "templates": self.templates, "device": self.device,
                "seed": self.seed, "folds": self.n_folds, "protocol": "in-sample" if self.in_sample else "held-out jobs",
                "skipped_target_variants": list(self.targets.skipped_variants)}


class Comparer:
    """Holds what every method's scoring shares: prompts, targets, the neutral text and the baseline."""

    def __init__(self, lm: LoadedModel, occupations: OccupationSet, family: TemplateFamily, seed: int = 0,
                 n_folds: int = DEFAULT_FOLDS, in_sample: bool = False, batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        self.lm, self.occupations, self.family = lm, occupations, family
        self.seed, self.in_sample, self.batch_size = seed, in_sample, batch_size
        self.folds = job_folds(occupations.occupations, n_folds, seed)
        self.targets = target_tokens(lm.tokenizer, family)
        self.prompts = build_prompts(occupations.occupations, family)
        self.neutral = NeutralText(lm)
        self.comparison = Comparison(lm.name, occupations.name, family.name, str(lm.device), seed, n_folds, in_sample, self.targets)
        self._baseline_cost: NeutralCost | None = None
        self._baseline_frame: pd.DataFrame | None = None

    def run(self, name: str, method_class: type[Method], given: Mapping[str, Any]) -> MethodRun:
        """Score one method and append its row; errors become a failed row, never an exception."""
        started = time.perf_counter()
        try:
            if self._baseline_frame is None and name != BASELINE:
                raise RuntimeError(f"the baseline {BASELINE!r} must be scored before {name!r}")
            method = method_class(**dict(given))
            frame, cost, details, protocol = self._score(name, method)
            row = self._row(name, frame, cost, details, protocol)
            result = MethodRun(row, frame)
        except Exception as error:  # contained: the other methods still run
            self.lm.model.reset_hooks(including_permanent=True)
            print(f"debiaskit: method {name} failed: {type(error).__name__}: {error}", file=sys.stderr)
            if not isinstance(error, DebiasKitError):
                traceback.print_exc(file=sys.stderr)
            result = MethodRun({"method": name, "status": "failed", "error": f"{type(error).__name__}: {error}"})
        finally:
            self.lm.model.reset_hooks(including_permanent=True)
        result.row["seconds"] = round(time.perf_counter() - started, 2)
        self.comparison.runs.append(result)
        return result

    def _score(self, name: str, method: Method) -> tuple[pd.DataFrame, NeutralCost, dict[str, Any], str]:
        if self._baseline_cost is None:
            self._baseline_cost = self.neutral.record_baseline()
        if method.uses_jobs() and not self.in_sample:
            splits = [(fold, train, {job.name for job in held}) for fold, (train, held) in enumerate(self.folds)]
            protocol = f"held-out ({len(self.folds)}-fold over jobs)"
        else:
            all_jobs = self.occupations.occupations
            splits = [(-1, all_jobs, {job.name for job in all_jobs})]
            protocol = "in-sample" if method.uses_jobs() else "not fitted on jobs"
        frames, costs, details = [], [], []
        for fold, train_jobs, scored_jobs in splits:
            method.fit(FitContext(self.lm, tuple(train_jobs), self.family, self.seed))
            prompts = self.prompts[self.prompts["job"].isin(scored_jobs)]
            with method.apply(self.lm) as intervention:
                transform = intervention.logits_transform
                label = f"{name}" + (f" fold {fold + 1}/{len(splits)}" if fold >= 0 else "")
                p_male, p_female = score_prompts(self.lm, list(prompts["prompt"]), self.targets, transform, self.batch_size, label)
                costs.append(self.neutral.cost(transform))
            frames.append(prompts.assign(method=name, fold=fold, p_male=p_male, p_female=p_female))
            details.append(method.details())
        frame = pd.concat(frames).sort_index()
        cost = NeutralCost(kl=float(np.mean([c.kl for c in costs])), nll=float(np.mean([c.nll for c in costs])))
        return frame, cost, _merge_details(details), protocol

    def _row(self, name: str, frame: pd.DataFrame, cost: NeutralCost, details: dict[str, Any], protocol: str) -> dict[str, Any]:
        if name == BASELINE:
            self._baseline_frame = frame
        assert self._baseline_frame is not None and self._baseline_cost is not None
        summary = bias_summary(frame)
        baseline_gap = bias_summary(self._baseline_frame)["stereotype_gap"]
        row: dict[str, Any] = {"method": name, "status": "ok", "error": None, "protocol": protocol, **summary,
                               "gap_change_pct": gap_change_pct(summary["stereotype_gap"], baseline_gap),
                               "kl": cost.kl, "ppl_ratio": ppl_ratio(cost.nll, self._baseline_cost.nll)}
        row.update(verdict_counts(per_job(self._baseline_frame), per_job(frame)))
        row.update(details)
        return row


def run_comparison(lm: LoadedModel, occupations: OccupationSet, family: TemplateFamily,
                   methods: Sequence[tuple[str, type[Method], Mapping[str, Any]]], seed: int = 0,
                   n_folds: int = DEFAULT_FOLDS, in_sample: bool = False, batch_size: int = DEFAULT_BATCH_SIZE,
                   on_result: Callable[[Comparison, MethodRun], None] | None = None) -> Comparison:
    """Score `methods` (name, class, options); the baseline runs first whether or not it is listed."""
    comparer = Comparer(lm, occupations, family, seed, n_folds, in_sample, batch_size)
    names = [name for name, _, _ in methods]
    if BASELINE not in names:
        raise ValueError(f"run_comparison needs the {BASELINE!r} method among `methods`")
    ordered = sorted(methods, key=lambda m: m[0] != BASELINE)
    for name, method_class, given in ordered:
        result = comparer.run(name, method_class, given)
        if on_result is not None:
            on_result(comparer.comparison, result)
    return comparer.comparison


def _merge_details(details: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One fold's details as they are; over folds, numbers are averaged and anything else kept per fold."""
    if len(details) == 1:
        return dict(details[0])
    merged: dict[str, Any] = {}
    for key in dict.fromkeys(k for d in details for k in d):
        values = [d.get(key) for d in details]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        merged[key] = float(np.mean(values)) if numeric else values
    return merged

