"""`debiaskit sweep`: the settings of a method's knob (or grid of knobs), their matched-cost table, and with
`--dev` the setting chosen on dev jobs, scored on the reported ones."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click

from debiaskit.commands.support import (
    batch_size_option,
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
from debiaskit.compare import BASELINE, DEFAULT_FOLDS, Comparer, Comparison, check_methods
from debiaskit.data import OccupationSet, TemplateFamily
from debiaskit.errors import DebiasKitError
from debiaskit.model import LoadedModel, load_model
from debiaskit.plugin_host import PluginHost
from debiaskit.professions import Profession, professions_from_option
from debiaskit.ray_executor import Bench, ModelWork, Pool, ray_session, run_on_ray
from debiaskit.report import write_report
from debiaskit.run_dir import SWEEP_FILE, write_json
from debiaskit.sweep import (
    DEFAULT_BUDGETS,
    DEFAULT_KEEP,
    SweepPlan,
    check_plan,
    choose_setting,
    matched_cost_rows,
    parse_budgets,
    parse_knob,
    run_sweep,
    sweep_cells,
    sweep_point,
)
from debiaskit.tables import label_of, render


@click.command("sweep")
@click.option("-m", "--method", "methods", multiple=True, required=True, help="Method to sweep (repeatable).")
@click.option("--knob", "knobs", multiple=True,
              help="key=v1,v2,... (method.key=... with several methods; ';' between values of a list option, "
                   "quoted for the shell: 'leace.layers=4;8'); at least one per method swept, two or more of one "
                   "method give their grid (`debiaskit methods` marks each method's strength knob).")
@click.option("--budget", "budgets", default=",".join(map(str, DEFAULT_BUDGETS)), show_default=True,
              help="kl budgets (nats) of the matched-cost table, comma-separated; --dev chooses within the first.")
@click.option("--keep", type=click.FloatRange(min=0), default=DEFAULT_KEEP, show_default=True,
              help="Retention floor: the matched-cost table also reports each budget among settings with "
                   "definitional_retained >= this, and --dev chooses only among them.")
@click.option("--dev", "dev_dataset", default=None,
              help="Choose each method's setting on these jobs (e.g. dev, disjoint from occupations40) and report the "
                   "chosen setting's row on --dataset.")
@model_options
@data_options()
@method_options_option("Fixed method option, method.key=value (repeatable).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help=f"Write {SWEEP_FILE} and the report here (a `compare --out` folder keeps its files).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--folds", type=int, default=DEFAULT_FOLDS, show_default=True)
@click.option("--heldout-templates", type=click.IntRange(min=0), default=0, show_default=True)
@batch_size_option
@professions_option
@click.option("--force", is_flag=True, help=f"Replace the {SWEEP_FILE} an --out folder already holds.")
@executor_options
@click.pass_context
def sweep_command(context: click.Context, methods: tuple[str, ...], knobs: tuple[str, ...], budgets: str, keep: float,
                  dev_dataset: str | None, model: str, device: str, dtype: str, dataset: str, template_family: str,
                  assignments: tuple[str, ...], out: Path | None, seed: int, folds: int, heldout_templates: int,
                  batch_size: int, professions: str, force: bool, executor: str, address: str, workers: int,
                  gpus_per_worker: float) -> None:
    """Score each setting of a method's knob (or grid of knobs), print its points and the matched-cost table (gap
    reduction at each kl budget on the method's frontier, also among settings that keep definitional gender, and the
    area under the frontier). With --dev, settings are scored on the dev jobs and the chosen one on --dataset."""
    host = host_of(context)
    with usage_errors():
        plan = plan_methods(host, methods, assignments)
        swept = [name for name, _, _ in plan if name != BASELINE]
        if not swept:
            raise DebiasKitError(f"nothing to sweep: name a method other than {BASELINE!r} with -m, "
                                 "e.g. -m leace --knob blend=0.5,1")
        chosen: dict[str, list[tuple[str, list[str]]]] = {}
        for text in knobs:
            method, key, values = parse_knob(text, swept)
            if any(key == known for known, _ in chosen.get(method, [])):
                raise DebiasKitError(f"--knob {text!r}: {method}.{key} is given twice; "
                                     "give its values once, comma-separated")
            chosen.setdefault(method, []).append((key, values))
        missing = [name for name in swept if name not in chosen]
        if missing:
            knob = host.methods.get("method", missing[0]).strength_knob
            hint = (f"e.g. --knob {missing[0]}.{knob}=..." if knob
                    else f"{missing[0]} declares no strength knob; name an option")
            raise DebiasKitError(f"no --knob for {missing[0]!r}; {hint}")
        budget_values = parse_budgets(budgets)
        swept_plan = [(name, cls, given, chosen[name]) for name, cls, given in plan if name != BASELINE]
        occupations, family = load_data(host, dataset, template_family)
        dev_occupations = load_data(host, dev_dataset, template_family)[0] if dev_dataset else None
        check_plan(swept_plan, [occupations] + ([dev_occupations] if dev_occupations else []), folds, seed)
        profession_list = professions_from_option(professions)
        if out is not None:
            _claim(context, out, force)
        settings = {"seed": seed, "n_folds": folds, "batch_size": batch_size, "heldout_templates": heldout_templates}
        scored_on = dev_occupations or occupations
        if executor == "ray":
            pool = ray_pool(context, address, workers, gpus_per_worker)
            with ray_session(pool):  # which sends stdout to stderr while it runs: the tables are printed after it
                points, comparison = _sweep_on_ray(Bench(model, device, dtype, scored_on, family, settings,
                                                         profession_list), swept_plan, pool)
                picked = _score_chosen_on_ray(Bench(model, device, dtype, occupations, family, settings,
                                                    profession_list), swept_plan, points, budget_values[0], keep,
                                              pool) if dev_occupations and comparison.runs[0].ok else []
            header, baseline, matched, frontiers = _print_tables(comparison, points, budget_values, keep)
        else:
            lm = load_model(model, device=device, dtype=dtype)
            check_methods(lm, [cell[:3] for cell in sweep_cells(swept_plan)])  # on Ray, each actor does
            comparer = Comparer(lm, scored_on, family, professions=profession_list, **settings)
            points = run_sweep(comparer, swept_plan, host.methods.get("method", BASELINE))
            header, baseline, matched, frontiers = _print_tables(comparer.comparison, points, budget_values, keep)
            picked = _score_chosen(lm, host, occupations, family, swept_plan, points, budget_values[0], keep,
                                   settings, profession_list) if dev_occupations else []
    if picked:
        click.echo(f"chosen on {dev_dataset} (kl <= {budget_values[0]:g}, definitional_retained >= {keep:g}), "
                   f"scored on {dataset}:")
        click.echo(render(header, picked, "table").split("\n", 1)[1], nl=False)
    unsaved = ""
    if out is not None:
        sweep = {**header, "command": rerun_command(context), "versions": package_versions(),
                 "budgets": list(budget_values), "keep": keep, "baseline_gap": baseline["stereotype_gap"],
                 "baseline_kl": baseline["kl"], "points": points, "frontiers": frontiers, "matched": matched,
                 "dev": dev_dataset, "scored_dataset": dataset, "chosen": picked}
        try:
            write_json(out / SWEEP_FILE, sweep)
        except OSError as error:
            unsaved = (f"cannot save the sweep to {out / SWEEP_FILE} ({error.strerror or error}); the tables above "
                       "hold it")
        else:
            with usage_errors():
                click.echo(f"debiaskit: sweep of {label_of(header)} written; report at {write_report(out)}", err=True)
    failed = [f"{p['method']} {p['value']}" for p in points if p.get("status") != "ok"] + [
        p["method"] for p in picked if p.get("status") != "ok"]
    if failed:
        click.echo(f"debiaskit: {len(failed)} setting(s) failed or chose nothing: {', '.join(failed)}", err=True)
    if unsaved:
        click.echo(f"debiaskit: {unsaved}", err=True)
    if failed or unsaved:
        context.exit(1)


def _print_tables(comparison: Comparison, points: list[dict[str, Any]], budgets: Sequence[float],
                  keep: float) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    """Print the sweep's points and its matched-cost table; (header, baseline row, matched rows, frontiers)."""
    baseline = comparison.runs[0].row
    if baseline.get("status") != "ok":
        raise click.ClickException(f"the baseline failed: {baseline.get('error')}")
    matched, frontiers = matched_cost_rows(points, baseline["stereotype_gap"], budgets, keep)
    header = comparison.header()
    click.echo(render(header, points, "table"), nl=False)
    click.echo(render(header, matched, "table").split("\n", 1)[1], nl=False)
    return header, baseline, matched, frontiers


def _sweep_on_ray(bench: Bench, plan: SweepPlan, pool: Pool) -> tuple[list[dict[str, Any]], Comparison]:
    """Each setting a cell on the Ray pool: the sweep's points and the comparison they came from."""
    cells = sweep_cells(plan)
    [comparison] = run_on_ray([ModelWork(bench, [(BASELINE, {}), *((name, options) for name, _, options, _ in cells)])],
                              pool)
    return [sweep_point(cell, run.row) for cell, run in zip(cells, comparison.runs[1:])], comparison


# per swept method, its chosen dev point, or the row saying that no setting qualifies
Choices = list[tuple[str, Any, dict[str, Any], dict[str, Any]]]


def _choices(plan: SweepPlan, points: Sequence[dict[str, Any]], budget: float, keep: float) -> Choices:
    """(name, class, options with the chosen setting, the dev point) per method; the point is a row with the status
    'no setting qualifies' where none does."""
    choices = []
    for name, method_class, given, _ in plan:
        best = choose_setting(points, name, budget, keep)
        if best is None:
            within = [p for p in points if p["method"] == name and p.get("status") == "ok" and p["kl"] <= budget]
            keeps = max(within, key=lambda p: p.get("definitional_retained", float("-inf")), default=None)
            closest = (f"; the most retained within the budget: {keeps['knob']}={keeps['value']} "
                       f"({keeps['definitional_retained']:.2f})") if keeps is not None else ""
            choices.append((name, method_class, {}, {
                "method": name, "status": "no setting qualifies",
                "error": f"no dev setting has kl <= {budget:g} and definitional_retained >= {keep:g}{closest}"}))
            continue
        print(f"debiaskit: {name}: chose {best['knob']}={best['value']} on dev (gap change "
              f"{best.get('gap_change_pct'):.1f}%); scoring it", file=sys.stderr)
        choices.append((name, method_class, {**given, **best["setting"]}, dict(best)))
    return choices


def _chosen_row(best: Mapping[str, Any], row: Mapping[str, Any]) -> dict[str, Any]:
    """The chosen setting's row on the reported jobs, with its dev figures beside."""
    return {"method": best["method"], "knob": best["knob"], "value": best["value"],
            "dev_gap_change_pct": best.get("gap_change_pct"), "dev_kl": best["kl"],
            "dev_definitional_retained": best.get("definitional_retained"),
            **{k: v for k, v in row.items() if k != "method"}}


def _score_chosen(lm: LoadedModel, host: PluginHost, occupations: OccupationSet, family: TemplateFamily,
                  plan: SweepPlan, points: Sequence[dict[str, Any]], budget: float, keep: float,
                  settings: Mapping[str, Any], professions: Sequence[Profession]) -> list[dict[str, Any]]:
    """Each method's setting chosen on the dev points, scored as a compare row on the reported jobs."""
    comparer = Comparer(lm, occupations, family, professions=professions, **settings)
    comparer.run(BASELINE, host.methods.get("method", BASELINE), {})
    return [_chosen_row(best, comparer.run(name, method_class, options).row) if "knob" in best else best
            for name, method_class, options, best in _choices(plan, points, budget, keep)]


def _score_chosen_on_ray(bench: Bench, plan: SweepPlan, points: Sequence[dict[str, Any]], budget: float,
                         keep: float, pool: Pool) -> list[dict[str, Any]]:
    """`_score_chosen`, each chosen setting a cell on the Ray pool."""
    choices = _choices(plan, points, budget, keep)
    chosen = [(name, options, best) for name, _, options, best in choices if "knob" in best]
    cells = [(BASELINE, {}), *((name, options) for name, options, _ in chosen)]
    runs = iter(run_on_ray([ModelWork(bench, cells)], pool)[0].runs[1:] if chosen else ())
    return [_chosen_row(best, next(runs).row) if "knob" in best else best for _, _, _, best in choices]


def _claim(context: click.Context, out: Path, replace: bool) -> None:
    """`out` is this sweep's while it runs: writable, locked against a second writer, and holding no other sweep (a
    `compare --out` folder keeps its files)."""
    lock_out_dir(context, out)
    if (out / SWEEP_FILE).is_file():
        if not replace:
            raise DebiasKitError(f"{out} already holds a sweep ({SWEEP_FILE}); replace it with --force or pass "
                                 "another --out")
        (out / SWEEP_FILE).unlink()
