"""`debiaskit compare`: every method on the same prompts, one row each, baseline first."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from debiaskit.benchmark_sets import BenchmarkSets, parse_benchmarks
from debiaskit.bootstrap import DEFAULT_RESAMPLES
from debiaskit.commands.support import (
    batch_size_option,
    data_options,
    executor_options,
    host_of,
    load_data,
    lock_out_dir,
    method_options_option,
    models_options,
    package_versions,
    plan_methods,
    professions_option,
    ray_pool,
    rerun_command,
    usage_errors,
)
from debiaskit.compare import DEFAULT_FOLDS, Comparison, MethodRun, check_folds, check_methods, run_comparison
from debiaskit.data import template_split
from debiaskit.errors import DebiasKitError
from debiaskit.model import load_model
from debiaskit.professions import professions_from_option
from debiaskit.ray_executor import Bench, ModelWork, run_on_ray
from debiaskit.report import write_models_report, write_report
from debiaskit.resume import PreviousRun, check_resumable, data_fingerprint, resume_command, resume_option_callback
from debiaskit.run_dir import SUMMARY_FILE, check_writable, clear_run, holds_run, per_model_runs, write_run
from debiaskit.sweep import parse_seeds
from debiaskit.tables import FORMATS, headline_table, render, row_label


@click.command("compare")
@click.option("-m", "--method", "methods", multiple=True,
              help="Method to run (repeatable). Default: all registered. NAME@LABEL runs NAME again as its own row "
                   "with its own options (-o NAME@LABEL.key=value).")
@models_options
@data_options()
@method_options_option()
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write per-prompt results, summary and manifest here.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--folds", type=int, default=DEFAULT_FOLDS, show_default=True, help="k of the k-fold split over jobs.")
@click.option("--in-sample", is_flag=True,
              help="Fit job-fitted methods on all jobs and score the same jobs (labelled in-sample).")
@batch_size_option
@click.option("--bootstrap", type=click.IntRange(min=0), default=DEFAULT_RESAMPLES, show_default=True,
              help="Paired bootstrap resamples over jobs and templates for the intervals (0 = no intervals).")
@click.option("--seeds", default=None, help="Comma-separated further seeds: methods with a random step are rerun with "
              "each and the spread (sd) is reported, e.g. 1,2.")
@click.option("--heldout-templates", type=click.IntRange(min=0), default=0, show_default=True,
              help="Fit on the other templates and score only on this many (drawn with --seed); 0 = all templates.")
@professions_option
@click.option("--benchmarks", "benchmark_names", default="none", show_default=True,
              help="Also score the field's benchmarks in every row, with each method applied as for the prompts: "
                   "crows (CrowS-Pairs, gender), winogender, all, or none; read from the shared data folder "
                   "($DEBIASKIT_SHARED_DATA). Off by default: together they roughly triple a run's time.")
@click.option("--resume", type=click.Path(exists=True, file_okay=False, path_type=Path), is_eager=True,
              callback=resume_option_callback, help="Finish the run an interrupted --out DIR holds, with its recorded "
              "settings; methods already scored there are kept, not run again.")
@click.option("--force", is_flag=True, help="Replace the run an --out folder already holds (its files are removed).")
@executor_options
@click.pass_context
def compare_command(context: click.Context, methods: tuple[str, ...], models: tuple[str, ...], device: str,
                    dtype: str, dataset: str, template_family: str, assignments: tuple[str, ...], fmt: str,
                    out: Path | None, seed: int, folds: int, in_sample: bool, batch_size: int, bootstrap: int,
                    seeds: str | None, heldout_templates: int, professions: str, benchmark_names: str,
                    resume: Path | None, force: bool, executor: str, address: str, workers: int,
                    gpus_per_worker: float) -> None:
    """Score methods side by side on the same prompts and print one row per method (baseline first); with several
    --model, one row per model and method."""
    models = tuple(dict.fromkeys(models))  # a model given twice is scored once
    try:
        _compare(context, methods, models, device, dtype, dataset, template_family, assignments, fmt, out, seed,
                 folds, in_sample, batch_size, bootstrap, seeds, heldout_templates, professions, benchmark_names,
                 force, executor, address, workers, gpus_per_worker)
    except KeyboardInterrupt:
        _report_interrupt(context, out, models)


@dataclass
class ModelRun:
    """One model's part of the run: where it is written, its manifest, and what could not be saved."""

    model: str
    out: Path | None
    manifest: dict[str, Any] = field(default_factory=dict)
    unsaved: list[OSError] = field(default_factory=list)

    def save(self, comparison: Comparison, _: MethodRun) -> None:
        """Write the run so far (each finished row at once, so that --resume can finish it)."""
        if self.out is None or self.unsaved:
            return
        try:
            write_run(self.out, comparison.header(), comparison.rows(), comparison.result_frames(), self.manifest)
        except OSError as error:  # the run goes on; the table is printed and the exit code says what was lost
            self.unsaved.append(error)
            click.echo(f"debiaskit: cannot save to {self.out} ({error.strerror or error}); the run goes on, its "
                       "table is printed at the end, and nothing more is saved", err=True)


def record_device(run: ModelRun, device: str, previous: PreviousRun | None, context: click.Context) -> None:
    """The model of `run` is loaded on `device`: record it in the manifest, and when resuming, refuse a run that would
    not compute what the previous one did (the device, the data on disk)."""
    run.manifest["device"] = device
    if previous is not None:
        check_resumable(previous, context.params, context.find_root().params.get("plugins_dir"), context.command,
                        run.manifest)


def model_folders(out: Path | None, models: tuple[str, ...]) -> list[Path | None]:
    """Where each model's run is written: `out` itself for one model, else a folder per model inside it, named after
    the model (a local folder's name; a hub name with '/' as '--')."""
    if out is None or len(models) == 1:
        return [out] * len(models)
    names = [Path(model).name if Path(model).is_dir() else model.replace("/", "--") for model in models]
    clashing = sorted({name for name in names if names.count(name) > 1})
    if clashing:
        raise DebiasKitError(f"two --model values would both be written to {out / clashing[0]}; pass each model "
                             "once, or copy one model folder to another name")
    return [out / name for name in names]


def _compare(context: click.Context, methods: tuple[str, ...], models: tuple[str, ...], device: str, dtype: str,
             dataset: str, template_family: str, assignments: tuple[str, ...], fmt: str, out: Path | None, seed: int,
             folds: int, in_sample: bool, batch_size: int, bootstrap: int, seeds: str | None, heldout_templates: int,
             professions: str, benchmark_names: str, force: bool, executor: str, address: str, workers: int,
             gpus_per_worker: float) -> None:
    host = host_of(context)
    plugins_dir = context.find_root().params.get("plugins_dir")
    previous = context.meta.get("previous_run")
    with usage_errors():
        if previous is not None and force:
            raise DebiasKitError("--resume finishes the run in its folder and --force replaces it; pass one of them")
        if previous is not None:
            check_resumable(previous, context.params, plugins_dir, context.command)
        plan = plan_methods(host, methods, assignments)
        occupations, family = load_data(host, dataset, template_family)
        extra_seeds = parse_seeds(seeds or "")
        template_split(family, heldout_templates, seed)  # checked before the model loads
        check_folds(occupations, plan, folds, seed, in_sample)
        profession_list = professions_from_option(professions)
        benchmarks = BenchmarkSets.load(parse_benchmarks(benchmark_names))
        runs = [ModelRun(model, folder) for model, folder in zip(models, model_folders(out, models))]
        if out is not None:
            _claim(context, out, [run.out for run in runs], replace=force, resuming=previous is not None)
        loaded = None
        for run in runs:  # locally, every model is loaded and checked before any is scored; on Ray, by its actors
            replaced = {"models": (run.model,), "out": run.out} if len(runs) > 1 else {}
            run.manifest = {
                "command": rerun_command(context, replaced=replaced), "model": run.model, "device": None,
                "dtype": dtype, "dataset": dataset, "templates": template_family, "seed": seed, "folds": folds,
                "in_sample": in_sample, "batch_size": batch_size, "bootstrap": bootstrap, "seeds": list(extra_seeds),
                "heldout_templates": heldout_templates,
                "methods": [{"method": name, "options": given} for name, _, given in plan],
                "benchmarks": list(benchmarks.names()), "versions": package_versions(),
                "data_sha256": data_fingerprint(occupations, family, profession_list, benchmarks.fingerprint()),
            }
            if executor == "local":
                loaded = load_model(run.model, device=device, dtype=dtype)
                record_device(run, str(loaded.device), previous, context)
                check_methods(loaded, plan)
    settings = {"seed": seed, "n_folds": folds, "in_sample": in_sample, "batch_size": batch_size,
                "bootstrap": bootstrap, "seeds": extra_seeds, "heldout_templates": heldout_templates}
    finished = previous.finished if previous is not None else ()
    with usage_errors():
        if executor == "ray":  # each model's first actor checks it and says which device it is on
            work = [ModelWork(Bench(run.model, device, dtype, occupations, family, settings, profession_list,
                                    benchmarks), [(name, given) for name, _, given in plan], run.save, finished,
                              lambda header, run=run: record_device(run, header.device, previous, context))
                    for run in runs]
            comparisons = run_on_ray(work, ray_pool(context, address, workers, gpus_per_worker))
        else:
            comparisons = []
            for run in runs:
                lm = loaded if run is runs[-1] else load_model(run.model, device=device, dtype=dtype)
                comparisons.append(run_comparison(lm, occupations, family, plan, on_result=run.save,
                                                  finished=finished, professions=profession_list,
                                                  benchmarks=benchmarks, **settings))
    header, rows = comparisons[0].header(), comparisons[0].rows()
    if len(runs) > 1:
        header = {**header, "model": ", ".join(models)}
        rows = [{"model": run.model, **row} for run, comparison in zip(runs, comparisons) for row in comparison.rows()]
    if fmt == "table":
        click.echo(headline_table(header, rows), nl=False)
    else:
        click.echo(render(header, rows, fmt), nl=False)
    failed = [row_label(row) for row in rows if row.get("status") != "ok"]
    if failed:
        click.echo(f"debiaskit: {len(failed)} method(s) failed: {', '.join(failed)}", err=True)
    unsaved: list[Exception] = [error for run in runs for error in run.unsaved]
    if out is not None and not unsaved:
        try:
            reports = [write_report(folder) for folder in (run.out for run in runs) if folder is not None]
            report = write_models_report(out, [run.out for run in runs if run.out]) if len(runs) > 1 else reports[0]
            click.echo(f"debiaskit: report written to {report}", err=True)
        except DebiasKitError as error:  # the runs are saved; their report could not be written
            unsaved.append(error)
    if unsaved:
        where = getattr(unsaved[0], "filename", None) or out
        click.echo(f"debiaskit: {out} is incomplete: {getattr(unsaved[0], 'strerror', None) or unsaved[0]} "
                   f"({where}); the table above holds every method", err=True)
    if failed or unsaved:
        context.exit(1)


def _claim(context: click.Context, out: Path, folders: list[Path | None], replace: bool, resuming: bool) -> None:
    """Make `out` this run's, for as long as the command runs: writable, locked against a second writer, and with
    no other run in the folders the models' runs go to (one that holds a run is refused, or cleared with --force)."""
    lock_out_dir(context, out)
    if resuming:
        return
    # a run of several models and a one-model run in the same folder would each take the other's report
    beside = [out] if len(folders) > 1 else [out / name for name in per_model_runs(out)]
    held = list(dict.fromkeys(folder for folder in [*beside, *folders] if folder is not None and holds_run(folder)))
    if held and not replace:
        plugins_dir = context.find_root().params.get("plugins_dir")
        finish = " and ".join(f"`{resume_command(folder, plugins_dir)}`" for folder in held)
        raise DebiasKitError(f"{held[0]} already holds a run; finish it with {finish}, replace it with --force, or "
                             "pass another --out")
    for folder in held:
        clear_run(folder)
    for folder in folders:
        if folder is not None and folder != out:
            check_writable(folder)


def _report_interrupt(context: click.Context, out: Path | None, models: tuple[str, ...]) -> None:
    """Ctrl-C: say where the finished methods are and how to finish the rest, and exit 130 (128 + SIGINT)."""
    try:
        folders = [folder for folder in model_folders(out, models) if folder is not None]
    except DebiasKitError:  # interrupted before the models' folders were checked: none was written
        folders = []
    plugins_dir = context.find_root().params.get("plugins_dir")
    saved = {folder for folder in folders if (folder / SUMMARY_FILE).is_file()}
    if saved:
        commands = [resume_command(folder, plugins_dir) if folder in saved
                    else rerun_command(context, replaced={"models": (model,), "out": folder})
                    for model, folder in zip(models, folders)]
        click.echo(f"debiaskit: interrupted; the methods that finished are saved in {out}. Finish the rest with:\n"
                   + "\n".join(f"  {command}" for command in commands), err=True)
    elif out is not None:
        click.echo(f"debiaskit: interrupted before any method finished; nothing is saved in {out}. Run the same "
                   "command again to start over", err=True)
    else:
        click.echo("debiaskit: interrupted; nothing was saved (no --out). Run with --out DIR to keep each finished "
                   "method and resume with --resume DIR", err=True)
    context.exit(130)
