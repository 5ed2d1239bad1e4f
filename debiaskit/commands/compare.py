"""`debiaskit compare`: every method on the same prompts, one row each, baseline first."""

from __future__ import annotations

from pathlib import Path

import click

from debiaskit.benchmark_sets import BenchmarkSets, parse_benchmarks
from debiaskit.bootstrap import DEFAULT_RESAMPLES
from debiaskit.commands.support import (
    data_options,
    executor_options,
    host_of,
    load_data,
    lock_out_dir,
    method_options_option,
    model_options,
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
from debiaskit.evaluator import DEFAULT_BATCH_SIZE
from debiaskit.model import load_model
from debiaskit.professions import professions_from_option
from debiaskit.ray_executor import Bench, run_on_ray
from debiaskit.report import write_report
from debiaskit.resume import check_resumable, data_fingerprint, resume_command, resume_option_callback
from debiaskit.run_dir import SUMMARY_FILE, clear_run, holds_run, write_run
from debiaskit.sweep import parse_seeds
from debiaskit.tables import FORMATS, headline_table, render


@click.command("compare")
@click.option("-m", "--method", "methods", multiple=True,
              help="Method to run (repeatable). Default: all registered. NAME@LABEL runs NAME again as its own row "
                   "with its own options (-o NAME@LABEL.key=value).")
@model_options
@data_options()
@method_options_option()
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write per-prompt results, summary and manifest here.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--folds", type=int, default=DEFAULT_FOLDS, show_default=True, help="k of the k-fold split over jobs.")
@click.option("--in-sample", is_flag=True,
              help="Fit job-fitted methods on all jobs and score the same jobs (labelled in-sample).")
@click.option("--batch-size", type=click.IntRange(min=1), default=DEFAULT_BATCH_SIZE, show_default=True)
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
def compare_command(context: click.Context, methods: tuple[str, ...], model: str, device: str, dtype: str,
                    dataset: str, template_family: str, assignments: tuple[str, ...], fmt: str, out: Path | None,
                    seed: int, folds: int, in_sample: bool, batch_size: int, bootstrap: int, seeds: str | None,
                    heldout_templates: int, professions: str, benchmark_names: str, resume: Path | None,
                    force: bool, executor: str, address: str, workers: int, gpus_per_worker: float) -> None:
    """Score methods side by side on the same prompts and print one row per method (baseline first)."""
    try:
        _compare(context, methods, model, device, dtype, dataset, template_family, assignments, fmt, out, seed, folds,
                 in_sample, batch_size, bootstrap, seeds, heldout_templates, professions, benchmark_names, force,
                 executor, address, workers, gpus_per_worker)
    except KeyboardInterrupt:
        _report_interrupt(context, out)


def _compare(context: click.Context, methods: tuple[str, ...], model: str, device: str, dtype: str, dataset: str,
             template_family: str, assignments: tuple[str, ...], fmt: str, out: Path | None, seed: int, folds: int,
             in_sample: bool, batch_size: int, bootstrap: int, seeds: str | None, heldout_templates: int,
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
        if out is not None:
            _claim(context, out, replace=force, resuming=previous is not None)
        lm = load_model(model, device=device, dtype=dtype)
        manifest = {
            "command": rerun_command(context), "model": model, "device": str(lm.device), "dtype": dtype,
            "dataset": dataset, "templates": template_family, "seed": seed, "folds": folds, "in_sample": in_sample,
            "batch_size": batch_size, "bootstrap": bootstrap, "seeds": list(extra_seeds),
            "heldout_templates": heldout_templates,
            "methods": [{"method": name, "options": given} for name, _, given in plan],
            "benchmarks": list(benchmarks.names()), "versions": package_versions(),
            "data_sha256": data_fingerprint(occupations, family, profession_list, benchmarks.fingerprint()),
        }
        if previous is not None:
            check_resumable(previous, context.params, plugins_dir, context.command, manifest)
        check_methods(lm, plan)
    unsaved: list[OSError] = []

    def save(comparison: Comparison, _: MethodRun) -> None:
        if out is None or unsaved:
            return
        try:
            write_run(out, comparison.header(), comparison.rows(), comparison.result_frames(), manifest)
        except OSError as error:  # the run goes on; the table is printed and the exit code says what was lost
            unsaved.append(error)
            click.echo(f"debiaskit: cannot save to {out} ({error.strerror or error}); the run goes on, its table is "
                       "printed at the end, and nothing more is saved", err=True)

    settings = {"seed": seed, "n_folds": folds, "in_sample": in_sample, "batch_size": batch_size,
                "bootstrap": bootstrap, "seeds": extra_seeds, "heldout_templates": heldout_templates}
    finished = previous.finished if previous is not None else ()
    with usage_errors():
        if executor == "ray":
            bench = Bench(model, device, dtype, occupations, family, settings, profession_list, benchmarks)
            comparison = run_on_ray(bench, [(name, given) for name, _, given in plan],
                                    ray_pool(context, address, workers, gpus_per_worker), save, finished)
        else:
            comparison = run_comparison(lm, occupations, family, plan, on_result=save, finished=finished,
                                        professions=profession_list, benchmarks=benchmarks, **settings)
    if fmt == "table":
        click.echo(headline_table(comparison.header(), comparison.rows()), nl=False)
    else:
        click.echo(render(comparison.header(), comparison.rows(), fmt), nl=False)
    failed = [run.row["method"] for run in comparison.runs if not run.ok]
    if failed:
        click.echo(f"debiaskit: {len(failed)} method(s) failed: {', '.join(failed)}", err=True)
    if out is not None and not unsaved:
        try:
            click.echo(f"debiaskit: report written to {write_report(out)}", err=True)
        except OSError as error:
            unsaved.append(error)
    if unsaved:
        click.echo(f"debiaskit: {out} is incomplete: {unsaved[0].strerror or unsaved[0]} "
                   f"({getattr(unsaved[0], 'filename', None) or out}); the table above holds every method", err=True)
    if failed or unsaved:
        context.exit(1)


def _claim(context: click.Context, out: Path, replace: bool, resuming: bool) -> None:
    """Make `out` this run's, for as long as the command runs: writable, locked against a second writer, and holding
    no other run (a folder that does is refused, or cleared with --force)."""
    lock_out_dir(context, out)
    if resuming or not holds_run(out):
        return
    if not replace:
        command = resume_command(out, context.find_root().params.get("plugins_dir"))
        raise DebiasKitError(f"{out} already holds a run; finish it with `{command}`, replace it with --force, or "
                             "pass another --out")
    clear_run(out)


def _report_interrupt(context: click.Context, out: Path | None) -> None:
    """Ctrl-C: say where the finished methods are and how to finish the rest, and exit 130 (128 + SIGINT)."""
    if out is not None and (out / SUMMARY_FILE).is_file():
        command = resume_command(out, context.find_root().params.get("plugins_dir"))
        click.echo(f"debiaskit: interrupted; the methods that finished are saved in {out}. Finish the rest with:\n"
                   f"  {command}", err=True)
    elif out is not None:
        click.echo(f"debiaskit: interrupted before any method finished; nothing is saved in {out}. Run the same "
                   "command again to start over", err=True)
    else:
        click.echo("debiaskit: interrupted; nothing was saved (no --out). Run with --out DIR to keep each finished "
                   "method and resume with --resume DIR", err=True)
    context.exit(130)
