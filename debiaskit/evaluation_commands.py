"""The `sweep` and `report` commands (registered on the `debiaskit` group in cli.py)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from debiaskit.cli import UserError, _host, _load_data, _plan_methods, _rerun_command, _versions
from debiaskit.compare import BASELINE, DEFAULT_FOLDS, Comparer
from debiaskit.errors import DebiasKitError
from debiaskit.evaluator import DEFAULT_BATCH_SIZE
from debiaskit.command_options import model_options
from debiaskit.model import load_model
from debiaskit.report import SWEEP_FILE, label_of, write_report
from debiaskit.reporting import _jsonable, atomic_write_text, check_writable, render
from debiaskit.sweep import DEFAULT_BUDGETS, matched_cost_rows, parse_budgets, parse_knob, run_sweep


@click.command("sweep")
@click.option("-m", "--method", "methods", multiple=True, required=True, help="Method to sweep (repeatable).")
@click.option("--knob", "knobs", multiple=True,
              help="key=v1,v2,... (method.key=... with several methods; ';' between values of a list option, quoted for the shell: 'leace.layers=4;8'); "
                   "one per method swept (`debiaskit methods` marks each method's strength knob).")
@click.option("--budget", "budgets", default=",".join(map(str, DEFAULT_BUDGETS)), show_default=True,
              help="kl budgets (nats) of the matched-cost table, comma-separated.")
@model_options
@click.option("--dataset", default="occupations40", show_default=True)
@click.option("--templates", "template_family", default="pronoun", show_default=True)
@click.option("-o", "--option", "assignments", multiple=True, help="Fixed method option, method.key=value (repeatable).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help=f"Write {SWEEP_FILE} and the report here (a `compare --out` folder keeps its files).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--folds", type=int, default=DEFAULT_FOLDS, show_default=True)
@click.option("--heldout-templates", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=DEFAULT_BATCH_SIZE, show_default=True)
@click.pass_context
def sweep_command(context: click.Context, methods: tuple[str, ...], knobs: tuple[str, ...], budgets: str, model: str,
                  device: str, dtype: str, dataset: str, template_family: str, assignments: tuple[str, ...],
                  out: Path | None, seed: int, folds: int, heldout_templates: int, batch_size: int) -> None:
    """Score each setting of a method's knob, print its points and the matched-cost table (gap reduction at each kl
    budget on the method's frontier, and the area under the frontier)."""
    host = _host(context)
    try:
        plan = _plan_methods(host, methods, assignments)
        swept = [name for name, _, _ in plan if name != BASELINE]
        chosen = {}
        for text in knobs:
            method, key, values = parse_knob(text, swept)
            chosen[method] = (key, values)
        missing = [name for name in swept if name not in chosen]
        if missing:
            knob = host.methods.get("method", missing[0]).strength_knob
            hint = f"e.g. --knob {missing[0]}.{knob}=..." if knob else f"{missing[0]} declares no strength knob; name an option"
            raise DebiasKitError(f"no --knob for {missing[0]!r}; {hint}")
        budget_values = parse_budgets(budgets)
        occupations, family = _load_data(host, dataset, template_family)
        if out is not None:
            check_writable(out)
        lm = load_model(model, device=device, dtype=dtype)
        comparer = Comparer(lm, occupations, family, seed, folds, batch_size=batch_size, heldout_templates=heldout_templates)
        points = run_sweep(comparer, [(name, cls, given, *chosen[name]) for name, cls, given in plan if name != BASELINE],
                           host.methods.get("method", BASELINE))
    except DebiasKitError as error:
        raise UserError(str(error)) from None
    baseline = comparer.comparison.runs[0].row
    if baseline.get("status") != "ok":
        raise click.ClickException(f"the baseline failed: {baseline.get('error')}")
    matched, frontiers = matched_cost_rows(points, baseline["stereotype_gap"], budget_values)
    header = comparer.comparison.header()
    click.echo(render(header, points, "table"), nl=False)
    click.echo(render(header, matched, "table").split("\n", 1)[1], nl=False)
    if out is not None:
        sweep = {**header, "command": _rerun_command(context), "versions": _versions(), "budgets": list(budget_values),
                 "baseline_gap": baseline["stereotype_gap"], "baseline_kl": baseline["kl"], "points": points,
                 "frontiers": frontiers, "matched": matched}
        atomic_write_text(out / SWEEP_FILE, json.dumps(_jsonable(sweep), indent=2) + "\n")
        click.echo(f"debiaskit: sweep of {label_of(header)} written; report at {write_report(out)}", err=True)


@click.command("report")
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
def report_command(run_dir: Path) -> None:
    """Write report.md, table.tex, figures/*.png and a self-contained report.html from a `compare --out` or
    `sweep --out` folder."""
    try:
        click.echo(write_report(run_dir))
    except DebiasKitError as error:
        raise UserError(str(error)) from None
