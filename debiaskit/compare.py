"""Run methods side by side: fit (per fold when a method learns from jobs), apply, score, summarise.

The baseline `none` is always scored first; every other row is measured against it. A method that raises
gets a failed row with its error, the model's hooks are cleared, and the next method runs as if alone.
"""

from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from debiaskit.benchmark_sets import BenchmarkSets
from debiaskit.bootstrap import paired_intervals
from debiaskit.containment import Interrupts, remove_torch_hooks, torch_hooks, weight_fingerprint
from debiaskit.controls import build_control_prompts, definitional_columns, shared_token_nouns
from debiaskit.data import Occupation, OccupationSet, TemplateFamily, head_noun, job_folds, spread, template_split
from debiaskit.errors import DebiasKitError
from debiaskit.evaluator import DEFAULT_BATCH_SIZE, NeutralCost, NeutralText, build_prompts, score_prompts
from debiaskit.gendered_text import GenderedCost, GenderedText
from debiaskit.method import FitContext, Intervention, Method
from debiaskit.metrics import bias_summary, gap_change_pct, per_job, ppl_ratio, verdict_counts
from debiaskit.model import LoadedModel
from debiaskit.professions import (
    PROFESSION_TEMPLATES,
    Profession,
    build_profession_prompts,
    profession_scores,
    regression_columns,
)
from debiaskit.reuse import KeptResiduals, check_declared, first_touched_block
from debiaskit.run_dir import OPTIONAL_RESULTS, RESULT_FILES
from debiaskit.targets import TargetTokens, pronoun_targets, target_tokens
from debiaskit.word_lists import definitional_nouns, gendered_words

BASELINE = "none"
Split = tuple[int, tuple[Occupation, ...], set[str]]  # (fold, -1 when not split; training jobs; scored job names)
DEFAULT_FOLDS = 5
SEED_SPREAD_COLUMNS = ("stereotype_gap", "gap_change_pct", "definitional_acc", "definitional_retained",
                       "stereotype_retained", "factual_retained", "kl", "kl_gendered", "agreement_acc",
                       "agreement_share")


class ResultFrames:
    """A method's scored sets, keyed as `run_dir.RESULT_FILES`: what each row was computed from."""

    results: dict[str, pd.DataFrame]

    @property
    def frame(self) -> pd.DataFrame | None:
        return self.results.get("prompts")  # the occupation prompts

    @property
    def control(self) -> pd.DataFrame | None:
        return self.results.get("controls")  # the definitional control prompts

    @property
    def professions(self) -> pd.DataFrame | None:
        return self.results.get("professions")  # the profession prompts of the stereotype/factual regression

    @property
    def crows(self) -> pd.DataFrame | None:
        return self.results.get("crows")  # CrowS-Pairs' gender pairs (with --benchmarks crows)

    @property
    def winogender(self) -> pd.DataFrame | None:
        return self.results.get("winogender")  # WinoGender's sentences (with --benchmarks winogender)


@dataclass
class MethodRun(ResultFrames):
    """One method's outcome: its table row, and its scored sets when it succeeded."""

    row: dict[str, Any]
    results: dict[str, pd.DataFrame] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.row["status"] == "ok"


def failed_run(name: str, message: str) -> MethodRun:
    """A failed method's row: its name, status and error, and no scored sets."""
    return MethodRun({"method": name, "status": "failed", "error": message})


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
    selectivity: dict[str, Any] = field(default_factory=dict)  # what the control and the regression were scored on

    def rows(self) -> list[dict[str, Any]]:
        return [run.row for run in self.runs]

    def frame(self) -> pd.DataFrame:
        return self._rows_of("prompts")

    def result_frames(self) -> dict[str, pd.DataFrame]:
        """Per kind of scored set (`run_dir.RESULT_FILES`), every method's rows; empty when no method has it, and
        left out then when the kind is optional (the benchmarks)."""
        return {kind: self._rows_of(kind) for kind in RESULT_FILES
                if kind not in OPTIONAL_RESULTS or any(kind in run.results for run in self.runs)}

    def _rows_of(self, kind: str) -> pd.DataFrame:
        frames = [run.results[kind] for run in self.runs if kind in run.results]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def header(self) -> dict[str, Any]:
        return {"model": self.model, "dataset": self.dataset, "templates": self.templates, "device": self.device,
                "seed": self.seed, "folds": self.n_folds,
                "protocol": "in-sample" if self.in_sample else "held-out jobs",
                "heldout_templates": list(self.heldout_templates), "bootstrap": self.bootstrap,
                "seeds": list(self.seeds),
                "skipped_target_variants": list(self.targets.skipped_variants), **self.selectivity}


@dataclass
class Scored(ResultFrames):
    """A method scored on every prompt set (over its folds): per-prompt frames, costs, fitted details."""

    results: dict[str, pd.DataFrame]
    cost: NeutralCost
    gendered: GenderedCost
    details: dict[str, Any]
    protocol: str
    left_out: dict[str, int]  # per kind of scored set, how many of its items this method could not be scored on


class Comparer:
    """Holds what every method's scoring shares: prompts, targets, the neutral text and the baseline."""

    def __init__(self, lm: LoadedModel, occupations: OccupationSet, family: TemplateFamily, seed: int = 0,
                 n_folds: int = DEFAULT_FOLDS, in_sample: bool = False, batch_size: int = DEFAULT_BATCH_SIZE,
                 bootstrap: int = 0, seeds: Sequence[int] = (), heldout_templates: int = 0,
                 professions: Sequence[Profession] = (), benchmarks: BenchmarkSets | None = None,
                 reuse_residuals: bool = True) -> None:
        """`bootstrap`: resamples for the intervals (0 = none); `seeds`: further seeds a method with a random step
        is rerun with (its spread is reported); `heldout_templates`: fit on the other templates, score on these many;
        `professions`: Bolukbasi et al.'s professions for the stereotype/factual regression (none: no such columns);
        `benchmarks`: CrowS-Pairs and WinoGender, scored in every row (none: no such columns);
        `reuse_residuals`: start each declared method's forward above what it touches (`debiaskit.reuse`; False:
        every forward from the embedding, for the benchmark that checks the two agree)."""
        self.lm, self.occupations, self.family = lm, occupations, family
        self.seed, self.in_sample, self.batch_size = seed, in_sample, batch_size
        self.n_folds, self.bootstrap = n_folds, bootstrap
        self.extra_seeds = tuple(s for s in dict.fromkeys(seeds) if s != seed)
        self.fit_family, scored_templates = template_split(family, heldout_templates, seed)
        self.targets = target_tokens(lm.tokenizer, family)
        self.prompts = build_prompts(occupations.occupations, family, scored_templates)
        nouns = definitional_nouns()
        self.control_prompts = build_control_prompts(nouns, family, scored_templates)
        profession_templates = spread(scored_templates, PROFESSION_TEMPLATES)
        self.profession_prompts = (build_profession_prompts(professions, family, profession_templates)
                                   if professions else None)
        self.benchmarks = benchmarks or BenchmarkSets()
        self.neutral = NeutralText(lm)
        self.gendered = GenderedText(lm, pronoun_targets(lm.tokenizer))
        selectivity = {"control_nouns": len(nouns),
                       "control_token_overlap": shared_token_nouns(lm.tokenizer, nouns, gendered_words().words()),
                       "professions": len(professions),
                       "profession_templates": profession_templates if professions else [],
                       "gendered_text_pronouns": self.gendered.n_pronouns,
                       "benchmarks": list(self.benchmarks.names())}
        self.comparison = Comparison(lm.name, occupations.name, family.name, str(lm.device), seed, n_folds, in_sample,
                                     self.targets,
                                     heldout_templates=tuple(scored_templates) if heldout_templates else (),
                                     bootstrap=bootstrap, seeds=(seed, *self.extra_seeds) if self.extra_seeds else (),
                                     selectivity=selectivity)
        self._baseline_cost: NeutralCost | None = None
        self._baseline_gendered: GenderedCost | None = None
        self._baseline: MethodRun | None = None  # the baseline's per-prompt frames, which every row is measured against
        self._weights = weight_fingerprint(lm.model)
        self._torch_hooks = torch_hooks(lm.model)  # whatever was there before any method (normally nothing)
        self._interrupts = Interrupts()
        self._weights_changed_by: str | None = None  # a method that left the weights changed: nothing after is scored
        self.residuals = KeptResiduals() if reuse_residuals else None

    @cached_property
    def folds(self) -> list[tuple[tuple[Occupation, ...], tuple[Occupation, ...]]]:
        """The k-fold split over jobs, made when a method first learns from jobs (a data set too small for
        --folds is an error only then)."""
        return job_folds(self.occupations.occupations, self.n_folds, self.seed)

    def run(self, name: str, method_class: type[Method], given: Mapping[str, Any]) -> MethodRun:
        """Score one method and append its row; errors become a failed row, never an exception (only the user's
        Ctrl-C ends the run)."""
        started = time.perf_counter()
        try:
            with self._interrupts.noted():
                result = self._run(name, method_class, given)
        except (Exception, SystemExit, KeyboardInterrupt) as error:  # contained: the other methods still run
            if self._interrupts.ends_the_run(error):
                raise
            result = self._failed(name, error)
        finally:
            self.lm.model.reset_hooks(including_permanent=True)
        left = torch_hooks(self.lm.model) - self._torch_hooks
        if left:
            remove_torch_hooks(self.lm.model, left)
            sites = ", ".join(sorted({f"{module} {kind.strip('_')}" for module, kind, _ in left}))
            result = self._failed(name, DebiasKitError(
                f"{name} left {len(left)} torch hook(s) on the model ({sites}); the host removed them. A method "
                "removes every hook it adds when apply() ends"))
        if self._weights_changed_by is None and weight_fingerprint(self.lm.model) != self._weights:
            self._weights_changed_by = name
            result = self._failed(name, DebiasKitError(
                f"{name} changed the model's weights and did not restore them; later methods are not scored"))
        result.row["seconds"] = round(time.perf_counter() - started, 2)
        self.comparison.runs.append(result)
        return result

    def _run(self, name: str, method_class: type[Method], given: Mapping[str, Any]) -> MethodRun:
        if self._baseline is None and name != BASELINE:
            raise RuntimeError(f"the baseline {BASELINE!r} must be scored before {name!r}")
        if self._weights_changed_by is not None:
            raise DebiasKitError(f"not scored: method {self._weights_changed_by} left the model's weights changed; "
                                 f"run {name} without it")
        method = method_class(**dict(given))
        scored = self._score(name, method, self.seed)
        if name == BASELINE:
            self._baseline = MethodRun({}, scored.results)
        row = self._row(name, scored)
        if self.extra_seeds and (method.random_fit or method.uses_jobs()):
            row.update(self._seed_spread(name, method_class, given, row))
        return MethodRun(row, scored.results)

    def _failed(self, name: str, error: BaseException) -> MethodRun:
        if isinstance(error, SystemExit):
            message = f"SystemExit: the method called sys.exit({error.code!r}) (a method's failure, not the run's end)"
        elif isinstance(error, KeyboardInterrupt):
            message = "KeyboardInterrupt: raised by the method itself, not by Ctrl-C"
        else:
            message = f"{type(error).__name__}: {error}"
        print(f"debiaskit: method {name} failed: {message}", file=sys.stderr)
        if not isinstance(error, (DebiasKitError, SystemExit)):
            traceback.print_exception(error, file=sys.stderr)
        return failed_run(name, message)

    def restore(self, run: MethodRun) -> None:
        """Take a finished method's results as they were computed (the baseline's become the reference again)."""
        if run.row["method"] == BASELINE:
            self._baseline = run
        self.comparison.runs.append(run)

    def _splits(self, method: Method, seed: int) -> tuple[list[Split], str]:
        """(fold, training jobs, scored job names) per fit, and the protocol that says so."""
        if method.uses_jobs() and not self.in_sample:
            folds = self.folds if seed == self.seed else job_folds(self.occupations.occupations, self.n_folds, seed)
            splits = [(fold, train, {job.name for job in held}) for fold, (train, held) in enumerate(folds)]
            protocol = f"held-out ({len(folds)}-fold over jobs)"
        else:
            all_jobs = self.occupations.occupations
            # a method that does not learn from jobs is given none, so "not fitted on jobs" is enforced, not trusted
            splits = [(-1, all_jobs if method.uses_jobs() else (), {job.name for job in all_jobs})]
            protocol = "in-sample" if method.uses_jobs() else "not fitted on jobs"
        if self.comparison.heldout_templates:
            protocol += (f", held-out templates ({len(self.comparison.heldout_templates)} "
                         f"of {len(self.family.templates)})")
        return splits, protocol

    def _spread_over_folds(self, names: Sequence[str], method: Method, splits: Sequence[Split]
                           ) -> tuple[list[set[str]], int]:
        """Per split, which of `names` (professions, WinoGender occupations) it scores, and how many are left out.
        Over folds each is scored once: one that shares a head noun with jobs ("teacher", "kindergarten teacher")
        by the fold that holds all those jobs out, any other by one fold in turn. Left out: a fit word of the
        method, one whose jobs no single fold holds out, and one like a job the method was fitted on in-sample."""
        left_out = set(method.fitted_words())
        job_heads = {head_noun(job.name) for job in self.occupations.occupations}
        if method.uses_jobs() and self.in_sample:
            left_out |= {name for name in names if head_noun(name) in job_heads}
        if len(splits) > 1:
            holders = {head: {index for index, (_, _, scored) in enumerate(splits)
                              if any(head_noun(job) == head for job in scored)} for head in job_heads}
            left_out |= {name for name in names if len(holders.get(head_noun(name), {0})) > 1}
        kept = [name for name in names if name not in left_out]
        if len(splits) == 1:
            return [set(kept)], len(names) - len(kept)
        held_by = {head: next(iter(folds)) for head, folds in holders.items() if len(folds) == 1}
        others = [name for name in kept if head_noun(name) not in held_by]
        assigned = [{name for name in kept if held_by.get(head_noun(name)) == index} | set(others[index::len(splits)])
                    for index in range(len(splits))]
        return assigned, len(names) - len(kept)

    def _score(self, name: str, method: Method, seed: int) -> Scored:
        if self._baseline_cost is None:  # keeping the final residuals: every method's cost pass reads the same text
            with (self.residuals.reused(self.lm, self.lm.n_layers, last_position_only=False)
                  if self.residuals is not None else nullcontext()):
                self._baseline_cost = self.neutral.record_baseline()
                self._baseline_gendered = self.gendered.record_baseline()
        splits, protocol = self._splits(method, seed)
        profession_names = (list(dict.fromkeys(self.profession_prompts["profession"]))
                            if self.profession_prompts is not None else [])
        profession_sets, professions_left_out = self._spread_over_folds(profession_names, method, splits)
        occupation_sets, occupations_left_out = self._spread_over_folds(self.benchmarks.occupations(), method, splits)
        controls = self.control_prompts[~self.control_prompts["noun"].isin(method.fitted_words())]
        parts: dict[str, list[pd.DataFrame]] = {}
        costs, gendered, details = [], [], []
        for index, (fold, train_jobs, scored_jobs) in enumerate(splits):
            method.fit(FitContext(self.lm, tuple(train_jobs), self.fit_family, seed))
            prompts = self.prompts[self.prompts["job"].isin(scored_jobs)]
            # over folds, each control pair is scored by one fold only (the nouns are never jobs, so any fold may)
            fold_controls = controls if len(splits) == 1 else controls[controls["pair"] % len(splits) == index]
            fold_professions = (self.profession_prompts[self.profession_prompts["profession"]
                                                        .isin(profession_sets[index])]
                                if self.profession_prompts is not None else None)
            with method.apply(self.lm) as intervention, self._reusing(name, method, intervention):
                transform = intervention.logits_transform
                label = f"{name}" + (f" fold {fold + 1}/{len(splits)}" if fold >= 0 else "")

                def scored(frame: pd.DataFrame, part: str, fold=fold, transform=transform, label=label) -> pd.DataFrame:
                    if frame.empty:  # more folds than control pairs: this fold scores none
                        return frame.assign(method=name, fold=fold, p_male=[], p_female=[])
                    p_male, p_female = score_prompts(self.lm, list(frame["prompt"]), self.targets, transform,
                                                     self.batch_size, f"{label}{part}")
                    return frame.assign(method=name, fold=fold, p_male=p_male, p_female=p_female)

                fold_parts = {"prompts": scored(prompts, ""),
                              "controls": scored(fold_controls, " control").assign(seed=seed)}
                if fold_professions is not None:
                    fold_parts["professions"] = scored(fold_professions, " professions")
                benchmark_parts = self.benchmarks.score(self.lm, transform, self.batch_size, index, len(splits),
                                                        occupation_sets[index])
                fold_parts.update({kind: frame.assign(method=name, fold=fold)
                                   for kind, frame in benchmark_parts.items()})
                # over folds, each neutral chunk and gendered passage is scored by one fold only, as the controls
                for text, found in ((self.neutral, costs), (self.gendered, gendered)):
                    if index < len(text.sequences):
                        found.append(text.cost(transform, index, len(splits)))
            for kind, frame in fold_parts.items():
                parts.setdefault(kind, []).append(frame)
            details.append(method.details())
        results = {kind: pd.concat(frames, ignore_index=kind != "prompts") for kind, frames in parts.items()}
        results["prompts"] = results["prompts"].sort_index()
        return Scored(results, NeutralCost.pooled(costs), GenderedCost.pooled(gendered), _merge_details(details),
                      protocol,
                      {"professions": professions_left_out, "winogender": occupations_left_out})

    def _reusing(self, name: str, method: Method, intervention: Intervention) -> AbstractContextManager[None]:
        """While `method` is applied: its forward starts at the lowest block it declares it touches, with the
        baseline's residuals below (the full forward when it declares nothing or added a plain torch hook, which the
        host cannot place), and prompts are unembedded at the last position when no logits transform reads more."""
        touches = method.touches(self.lm) if self.residuals is not None else None
        plain_hooks = {hook for hook in torch_hooks(self.lm.model) - self._torch_hooks
                       if hook[0] not in self.lm.model.hook_dict}  # a TransformerLens hook is a torch hook too
        if touches is None or plain_hooks:
            return nullcontext()
        check_declared(self.lm, name, touches)
        assert self.residuals is not None
        return self.residuals.reused(self.lm, first_touched_block(self.lm, touches),
                                     last_position_only=intervention.logits_transform is None)

    def _seed_spread(self, name: str, method_class: type[Method], given: Mapping[str, Any],
                     row: dict[str, Any]) -> dict[str, Any]:
        """Rerun a method with a random step under each further seed; the row keeps the first seed's numbers and
        gains the standard deviation (ddof 1) of the headline numbers over all seeds."""
        columns = [c for c in SEED_SPREAD_COLUMNS if c in row]
        values = {column: [row[column]] for column in columns}
        for seed in self.extra_seeds:
            scored = self._score(f"{name} seed {seed}", method_class(**dict(given)), seed)
            self.lm.model.reset_hooks(including_permanent=True)
            again = self._row(name, replace(scored, details={}, protocol=""), with_intervals=False)
            for column in columns:
                values[column].append(again[column])
        spread_of = {f"{column}_sd": float(np.std(found, ddof=1)) for column, found in values.items()}
        return {"seeds": ",".join(str(s) for s in (self.seed, *self.extra_seeds)), **spread_of}

    def _row(self, name: str, scored: Scored, with_intervals: bool = True) -> dict[str, Any]:
        baseline = self._baseline
        assert baseline is not None and baseline.frame is not None and baseline.control is not None
        assert self._baseline_cost is not None and self._baseline_gendered is not None
        resamples = self.bootstrap if with_intervals else 0
        summary = bias_summary(scored.frame)
        baseline_gap = bias_summary(baseline.frame)["stereotype_gap"]
        row: dict[str, Any] = {"method": name, "status": "ok", "error": None, "protocol": scored.protocol, **summary,
                               "gap_change_pct": gap_change_pct(summary["stereotype_gap"], baseline_gap)}
        row.update(definitional_columns(baseline.control, scored.control, resamples, self.seed))
        if scored.professions is not None and baseline.professions is not None:
            if set(scored.professions["template"]) != set(baseline.professions["template"]):
                raise DebiasKitError("the baseline's professions were scored on other templates; rerun both together")
            row.update(regression_columns(profession_scores(baseline.professions),
                                          profession_scores(scored.professions), resamples, self.seed))
            row["professions_left_out"] = scored.left_out["professions"]
        if self.benchmarks.names():
            row.update(self.benchmarks.columns(baseline.results, scored.results, scored.left_out["winogender"],
                                               resamples, self.seed))
        row.update({"kl": scored.cost.kl, "ppl_ratio": ppl_ratio(scored.cost.nll, self._baseline_cost.nll),
                    "kl_gendered": scored.gendered.kl, "agreement_acc": scored.gendered.agreement_acc,
                    "agreement_share": scored.gendered.agreement_share})
        if resamples:
            row.update(paired_intervals(baseline.frame, scored.frame, resamples, self.seed))
            if name == BASELINE:
                row["within_noise"] = None  # the baseline against itself: no change to judge
        row.update(verdict_counts(per_job(baseline.frame), per_job(scored.frame)))
        row.update(scored.details)
        return row


def run_comparison(lm: LoadedModel, occupations: OccupationSet, family: TemplateFamily,
                   methods: Sequence[tuple[str, type[Method], Mapping[str, Any]]], seed: int = 0,
                   n_folds: int = DEFAULT_FOLDS, in_sample: bool = False, batch_size: int = DEFAULT_BATCH_SIZE,
                   on_result: Callable[[Comparison, MethodRun], None] | None = None, bootstrap: int = 0,
                   seeds: Sequence[int] = (), heldout_templates: int = 0, finished: Sequence[MethodRun] = (),
                   professions: Sequence[Profession] = (), benchmarks: BenchmarkSets | None = None,
                   reuse_residuals: bool = True) -> Comparison:
    """Score `methods` (name, class, options); the baseline runs first whether or not it is listed. A method among
    `finished` (read back by `compare --resume`) keeps its results and is not run again."""
    comparer = Comparer(lm, occupations, family, seed, n_folds, in_sample, batch_size, bootstrap, seeds,
                        heldout_templates, professions, benchmarks, reuse_residuals)
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

