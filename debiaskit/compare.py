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
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import torch

from debiaskit.bootstrap import paired_intervals
from debiaskit.controls import build_control_prompts, definitional_acc, definitional_nouns
from debiaskit.errors import DebiasKitError
from debiaskit.data import Occupation, OccupationSet, TemplateFamily, job_folds, template_split
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
    control: pd.DataFrame | None = None  # the definitional control prompts, scored with the method applied

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
    heldout_templates: tuple[int, ...] = ()  # template indices scored (and not fitted on) when templates are held out
    bootstrap: int = 0
    seeds: tuple[int, ...] = ()

    def rows(self) -> list[dict[str, Any]]:
        return [run.row for run in self.runs]

    def frame(self) -> pd.DataFrame:
        frames = [run.frame for run in self.runs if run.frame is not None]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def header(self) -> dict[str, Any]:
        return {"model": self.model, "dataset": self.dataset, "templates": self.templates, "device": self.device,
                "seed": self.seed, "folds": self.n_folds, "protocol": "in-sample" if self.in_sample else "held-out jobs",
                "heldout_templates": list(self.heldout_templates), "bootstrap": self.bootstrap, "seeds": list(self.seeds),
                "skipped_target_variants": list(self.targets.skipped_variants)}

    def control_frame(self) -> pd.DataFrame:
        frames = [run.control for run in self.runs if run.control is not None]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


class Comparer:
    """Holds what every method's scoring shares: prompts, targets, the neutral text and the baseline."""

    def __init__(self, lm: LoadedModel, occupations: OccupationSet, family: TemplateFamily, seed: int = 0,
                 n_folds: int = DEFAULT_FOLDS, in_sample: bool = False, batch_size: int = DEFAULT_BATCH_SIZE,
                 bootstrap: int = 0, seeds: Sequence[int] = (), heldout_templates: int = 0) -> None:
        """`bootstrap`: resamples for the intervals (0 = none); `seeds`: further seeds a method with a random step
        is rerun with (its spread is reported); `heldout_templates`: fit on the other templates, score on these many."""
        self.lm, self.occupations, self.family = lm, occupations, family
        self.seed, self.in_sample, self.batch_size = seed, in_sample, batch_size
        self.n_folds, self.bootstrap = n_folds, bootstrap
        self.extra_seeds = tuple(s for s in dict.fromkeys(seeds) if s != seed)
        self.fit_family, scored_templates = template_split(family, heldout_templates, seed)
        self.targets = target_tokens(lm.tokenizer, family)
        self.prompts = build_prompts(occupations.occupations, family, scored_templates)
        self.control_prompts = build_control_prompts(definitional_nouns(), family, scored_templates)
        self.neutral = NeutralText(lm)
        self.comparison = Comparison(lm.name, occupations.name, family.name, str(lm.device), seed, n_folds, in_sample, self.targets,
                                     heldout_templates=tuple(scored_templates) if heldout_templates else (),
                                     bootstrap=bootstrap, seeds=(seed, *self.extra_seeds) if self.extra_seeds else ())
        self._baseline_cost: NeutralCost | None = None
        self._baseline_frame: pd.DataFrame | None = None
        self._weights = weight_fingerprint(lm)
        self._weights_changed_by: str | None = None  # a method that left the weights changed: nothing after is scored

    @cached_property
    def folds(self) -> list[tuple[tuple[Occupation, ...], tuple[Occupation, ...]]]:
        """The k-fold split over jobs, made when a method first learns from jobs (a data set too small for
        --folds is an error only then)."""
        return job_folds(self.occupations.occupations, self.n_folds, self.seed)

    def run(self, name: str, method_class: type[Method], given: Mapping[str, Any]) -> MethodRun:
        """Score one method and append its row; errors become a failed row, never an exception."""
        started = time.perf_counter()
        try:
            if self._baseline_frame is None and name != BASELINE:
                raise RuntimeError(f"the baseline {BASELINE!r} must be scored before {name!r}")
            if self._weights_changed_by is not None:
                raise DebiasKitError(f"not scored: method {self._weights_changed_by} left the model's weights changed; "
                                     f"run {name} without it")
            method = method_class(**dict(given))
            frame, control, cost, details, protocol = self._score(name, method, self.seed)
            row = self._row(name, frame, control, cost, details, protocol)
            if self.extra_seeds and (method.random_fit or method.uses_jobs()):
                row.update(self._seed_spread(name, method_class, given, row))
            result = MethodRun(row, frame, control)
        except Exception as error:  # contained: the other methods still run
            self.lm.model.reset_hooks(including_permanent=True)
            print(f"debiaskit: method {name} failed: {type(error).__name__}: {error}", file=sys.stderr)
            if not isinstance(error, DebiasKitError):
                traceback.print_exc(file=sys.stderr)
            result = MethodRun({"method": name, "status": "failed", "error": f"{type(error).__name__}: {error}"})
        finally:
            self.lm.model.reset_hooks(including_permanent=True)
        if self._weights_changed_by is None and not torch.equal(weight_fingerprint(self.lm), self._weights):
            self._weights_changed_by = name
            message = f"{name} changed the model's weights and did not restore them; later methods are not scored"
            print(f"debiaskit: {message}", file=sys.stderr)
            result = MethodRun({"method": name, "status": "failed", "error": f"DebiasKitError: {message}"})
        result.row["seconds"] = round(time.perf_counter() - started, 2)
        self.comparison.runs.append(result)
        return result

    def restore(self, run: MethodRun) -> None:
        """Take a finished method's results as they were computed (the baseline's become the reference again)."""
        if run.row["method"] == BASELINE:
            self._baseline_frame = run.frame
        self.comparison.runs.append(run)

    def _score(self, name: str, method: Method, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, NeutralCost, dict[str, Any], str]:
        if self._baseline_cost is None:
            self._baseline_cost = self.neutral.record_baseline()
        if method.uses_jobs() and not self.in_sample:
            folds = self.folds if seed == self.seed else job_folds(self.occupations.occupations, self.n_folds, seed)
            splits = [(fold, train, {job.name for job in held}) for fold, (train, held) in enumerate(folds)]
            protocol = f"held-out ({len(folds)}-fold over jobs)"
        else:
            all_jobs = self.occupations.occupations
            splits = [(-1, all_jobs, {job.name for job in all_jobs})]
            protocol = "in-sample" if method.uses_jobs() else "not fitted on jobs"
        if self.comparison.heldout_templates:
            protocol += f", held-out templates ({len(self.comparison.heldout_templates)} of {len(self.family.templates)})"
        frames, controls, costs, details = [], [], [], []
        for fold, train_jobs, scored_jobs in splits:
            method.fit(FitContext(self.lm, tuple(train_jobs), self.fit_family, seed))
            prompts = self.prompts[self.prompts["job"].isin(scored_jobs)]
            with method.apply(self.lm) as intervention:
                transform = intervention.logits_transform
                label = f"{name}" + (f" fold {fold + 1}/{len(splits)}" if fold >= 0 else "")
                p_male, p_female = score_prompts(self.lm, list(prompts["prompt"]), self.targets, transform, self.batch_size, label)
                # the control nouns are never among the jobs, so every fold's fit is scored on all of them
                c_male, c_female = score_prompts(self.lm, list(self.control_prompts["prompt"]), self.targets, transform,
                                                 self.batch_size, f"{label} control")
                costs.append(self.neutral.cost(transform))
            frames.append(prompts.assign(method=name, fold=fold, p_male=p_male, p_female=p_female))
            controls.append(self.control_prompts.assign(method=name, fold=fold, seed=seed, p_male=c_male, p_female=c_female))
            details.append(method.details())
        frame = pd.concat(frames).sort_index()
        cost = NeutralCost(kl=float(np.mean([c.kl for c in costs])), nll=float(np.mean([c.nll for c in costs])))
        return frame, pd.concat(controls, ignore_index=True), cost, _merge_details(details), protocol

    def _seed_spread(self, name: str, method_class: type[Method], given: Mapping[str, Any], row: dict[str, Any]) -> dict[str, Any]:
        """Rerun a method with a random step under each further seed; the row keeps the first seed's numbers and
        gains the standard deviation (ddof 1) of the headline numbers over all seeds."""
        columns = ("stereotype_gap", "gap_change_pct", "definitional_acc", "kl")
        values = {column: [row[column]] for column in columns}
        for seed in self.extra_seeds:
            frame, control, cost, _, _ = self._score(f"{name} seed {seed}", method_class(**dict(given)), seed)
            self.lm.model.reset_hooks(including_permanent=True)
            again = self._row(name, frame, control, cost, {}, "", with_intervals=False)
            for column in columns:
                values[column].append(again[column])
        spread = {f"{column}_sd": float(np.std(found, ddof=1)) for column, found in values.items()}
        return {"seeds": ",".join(str(s) for s in (self.seed, *self.extra_seeds)), **spread}

    def _row(self, name: str, frame: pd.DataFrame, control: pd.DataFrame, cost: NeutralCost, details: dict[str, Any],
             protocol: str, with_intervals: bool = True) -> dict[str, Any]:
        if name == BASELINE:
            self._baseline_frame = frame
        assert self._baseline_frame is not None and self._baseline_cost is not None
        summary = bias_summary(frame)
        baseline_gap = bias_summary(self._baseline_frame)["stereotype_gap"]
        row: dict[str, Any] = {"method": name, "status": "ok", "error": None, "protocol": protocol, **summary,
                               "gap_change_pct": gap_change_pct(summary["stereotype_gap"], baseline_gap),
                               "definitional_acc": definitional_acc(control["p_male"], control["p_female"], control["gender"]),
                               "kl": cost.kl, "ppl_ratio": ppl_ratio(cost.nll, self._baseline_cost.nll)}
        if self.bootstrap and with_intervals:
            row.update(paired_intervals(self._baseline_frame, frame, self.bootstrap, self.seed))
            if name == BASELINE:
                row["within_noise"] = None  # the baseline against itself: no change to judge
        row.update(verdict_counts(per_job(self._baseline_frame), per_job(frame)))
        row.update(details)
        return row


def weight_fingerprint(lm: LoadedModel) -> torch.Tensor:
    """Per parameter, its float64 sum and sum of squares: equal after a bit-exact restore, changed by any edit
    that is left in place (checked after every method; the host keeps no copy of the weights to restore from)."""
    with torch.no_grad():
        return torch.stack([torch.stack([p.double().sum(), p.double().square().sum()]).cpu()
                            for p in lm.model.parameters()])


def run_comparison(lm: LoadedModel, occupations: OccupationSet, family: TemplateFamily,
                   methods: Sequence[tuple[str, type[Method], Mapping[str, Any]]], seed: int = 0,
                   n_folds: int = DEFAULT_FOLDS, in_sample: bool = False, batch_size: int = DEFAULT_BATCH_SIZE,
                   on_result: Callable[[Comparison, MethodRun], None] | None = None, bootstrap: int = 0,
                   seeds: Sequence[int] = (), heldout_templates: int = 0, finished: Sequence[MethodRun] = ()) -> Comparison:
    """Score `methods` (name, class, options); the baseline runs first whether or not it is listed. A method among
    `finished` (read back by `compare --resume`) keeps its results and is not run again."""
    comparer = Comparer(lm, occupations, family, seed, n_folds, in_sample, batch_size, bootstrap, seeds, heldout_templates)
    names = [name for name, _, _ in methods]
    if BASELINE not in names:
        raise ValueError(f"run_comparison needs the {BASELINE!r} method among `methods`")
    ordered = sorted(methods, key=lambda m: m[0] != BASELINE)
    done = {run.row["method"]: run for run in finished}
    for name, method_class, given in ordered:
        if name in done:
            comparer.restore(done[name])
            continue
        result = comparer.run(name, method_class, given)
        if on_result is not None:
            on_result(comparer.comparison, result)
    return comparer.comparison


def check_methods(lm: LoadedModel, methods: Sequence[tuple[str, type[Method], Mapping[str, Any]]]) -> None:
    """Build every method and let it check `lm` before anything is scored: bad input (an SAE made for another model,
    a layer the model lacks, an option out of range) is a DebiasKitError now, not a failed row after hours of work.
    Any other exception is a plugin bug, left for that method's own row to report."""
    for name, method_class, given in methods:
        try:
            method = method_class(**dict(given))  # a DebiasKitError (an option out of range) propagates as it is
        except DebiasKitError:
            raise
        except Exception:  # noqa: BLE001 - contained when the method runs
            continue
        try:
            method.check(lm)
        except DebiasKitError as error:
            raise DebiasKitError(f"method {name} cannot run on {lm.name}: {error}") from None
        except Exception:  # noqa: BLE001 - contained when the method runs
            continue


def check_folds(occupations: OccupationSet, methods: Sequence[tuple[str, type[Method], Mapping[str, Any]]],
                n_folds: int, seed: int, in_sample: bool) -> None:
    """Raise DebiasKitError when a method that learns from jobs will be scored on held-out folds and the data set
    cannot be split into `n_folds`; a run with no such method never splits the jobs, so any --folds is fine."""
    if in_sample or not any(_learns_from_jobs(method_class, given) for _, method_class, given in methods):
        return
    job_folds(occupations.occupations, n_folds, seed)


def _learns_from_jobs(method_class: type[Method], given: Mapping[str, Any]) -> bool:
    try:
        return method_class(**dict(given)).uses_jobs()
    except DebiasKitError:
        raise  # an option out of range: bad input, said before the model loads
    except Exception:  # noqa: BLE001 - a plugin bug, reported in the method's own row
        return False


def _merge_details(details: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One fold's details as they are; over folds, a value every fold shares is kept once, other numbers are
    averaged and anything else is kept per fold."""
    if len(details) == 1:
        return dict(details[0])
    merged: dict[str, Any] = {}
    for key in dict.fromkeys(k for d in details for k in d):
        values = [d.get(key) for d in details]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        if all(v == values[0] for v in values):
            merged[key] = values[0]
        else:
            merged[key] = float(np.mean(values)) if numeric else values
    return merged

