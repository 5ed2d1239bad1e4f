"""`debiaskit lm-eval`: lm-evaluation-harness tasks with each method applied; lm-eval's table per method."""

from __future__ import annotations

import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import click

from debiaskit.commands.support import (
    data_options,
    host_of,
    load_data,
    method_options_option,
    model_options,
    package_versions,
    plan_methods,
    rerun_command,
    usage_errors,
)
from debiaskit.compare import BASELINE, check_methods
from debiaskit.errors import DebiasKitError
from debiaskit.evaluator import DEFAULT_BATCH_SIZE
from debiaskit.generation import fitted_method
from debiaskit.model import load_model
from debiaskit.run_dir import check_writable, write_json

OUT_FILE = "lm_eval.json"  # the file written when --out is a folder


@click.command("lm-eval")
@click.option("-m", "--method", "methods", multiple=True,
              help=f"Method to apply (repeatable); the baseline {BASELINE} always runs first. "
                   f"Default: {BASELINE} only.")
@method_options_option()
@click.option("--tasks", required=True,
              help="Comma-separated lm-eval task names (glob patterns and task YAML paths too), e.g. "
                   "crows_pairs_english_gender,hellaswag; `lm-eval ls tasks` lists them.")
@click.option("--limit", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Documents per task (a number below 1 is a fraction of each task). Default: all.")
@click.option("--include-path", "include_paths", multiple=True, type=click.Path(path_type=Path),
              help="A folder of your own lm-eval task YAMLs (repeatable).")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help=f"Write lm-eval's results per method as JSON: a .json file, or a folder (as {OUT_FILE}).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seeds the methods' fit and sampled generation (lm-eval's few-shot seeds keep its defaults).")
@click.option("--batch-size", type=click.IntRange(min=1), default=DEFAULT_BATCH_SIZE, show_default=True)
@model_options
@data_options(dataset_help="Jobs the methods are fitted on: all of them, as lm-eval tasks have no held-out job "
                           "split.")
@click.pass_context
def lm_eval_command(context: click.Context, methods: tuple[str, ...], assignments: tuple[str, ...], tasks: str,
                    limit: float | None, include_paths: tuple[Path, ...], out: Path | None, seed: int,
                    batch_size: int, model: str, device: str, dtype: str, dataset: str, template_family: str) -> None:
    """Run lm-evaluation-harness tasks with each method applied and print lm-eval's table per method.

    Each method is fitted once on all jobs of --dataset (lm-eval tasks have no held-out job split; a method that
    does not learn from jobs is fitted on none) and applied while lm-eval scores the model: its hooks and its logits
    transform are honoured in every log-likelihood and generation. With hub access any lm-eval task runs; offline,
    give task YAMLs whose data are local files (dataset_path: csv with dataset_kwargs: {data_files: FILE}).
    """
    host = host_of(context)
    with usage_errors():
        plan = plan_methods(host, methods or (BASELINE,), assignments)
        occupations, family = load_data(host, dataset, template_family)
        bridge = _bridge()
        manager = bridge.task_manager(include_paths)
        task_names = bridge.check_tasks(manager, [name.strip() for name in tasks.split(",") if name.strip()])
        out_file = _out_file(out)
        lm = load_model(model, device=device, dtype=dtype)
        check_methods(lm, plan)
        document: dict[str, Any] = {
            "command": rerun_command(context), "model": model, "device": str(lm.device), "dtype": dtype,
            "tasks": task_names, "limit": limit, "seed": seed, "dataset": dataset, "templates": template_family,
            "versions": {**package_versions(), "lm-eval": version("lm-eval")}, "methods": [],
        }
        for name, method_class, given in plan:
            started = time.perf_counter()
            method = fitted_method(lm, method_class, given, occupations.occupations, family, seed)
            with method.apply(lm) as intervention:
                results = bridge.evaluate_applied(lm, intervention.logits_transform, task_names, manager, limit,
                                                  batch_size, seed)
            click.echo(f"{name}\n{bridge.results_table(results)}")
            document["methods"].append({
                "method": name, "options": dict(given),
                "fitted_on": f"all jobs of {dataset}" if method.uses_jobs() else "no jobs",
                "seconds": round(time.perf_counter() - started, 2), "lm_eval": bridge.jsonable_results(results)})
            if out_file is not None:
                write_json(out_file, document)
    if out_file is not None:
        click.echo(f"debiaskit: lm-eval results written to {out_file}", err=True)


def _bridge() -> Any:
    try:
        from debiaskit import lm_eval_bridge
    except ImportError as error:
        raise DebiasKitError(f"debiaskit lm-eval needs lm-evaluation-harness ({error}); install it with "
                             "pip install 'debiaskit[lm-eval]'") from None
    return lm_eval_bridge


def _out_file(out: Path | None) -> Path | None:
    """The JSON file --out names (a .json path, or OUT_FILE in a folder), checked writable before the model loads."""
    if out is None:
        return None
    target = out if out.suffix == ".json" else out / OUT_FILE
    check_writable(target.parent)
    return target

