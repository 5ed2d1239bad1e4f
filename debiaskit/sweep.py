"""Matched-cost comparison: sweep a method's strength knob, and compare methods at equal cost on their frontiers.

Each setting is scored like a `compare` row. On the plane (kl, |stereotype_gap|), with the baseline at (0, |gap_none|)
(no intervention costs nothing), a method's frontier is its Pareto set: the settings no other setting beats on both
(lower or equal kl and strictly lower |gap|), joined by straight lines and flat after its costliest point (a larger
budget can always buy that setting). From the frontier f(kl):

  gap_reduction_pct at budget b = 100 * (|gap_none| - f(b)) / |gap_none|
  frontier_area                 = (1 / K) * integral_0^K f(kl) dkl, K the largest budget: the mean |gap| left over
                                  budgets 0..K (lower is better; a method that removes the gap for free scores 0)

A method can buy gap reduction by erasing gender. So the table also gives, at each budget, the reduction on the
frontier of the settings that keep definitional_retained >= R (`--keep`, default 0.9), and `sweep --dev DATASET`
chooses each method's setting on dev jobs, the one with the largest gap reduction among those with kl <= the first
budget and definitional_retained >= R, and scores that setting on the reported jobs. Only the jobs (and with them
the folds and the professions each fold scores) differ between the two: the control nouns and the neutral and
gendered texts are the same, so a setting's kl and definitional_retained on the reported jobs are close to its dev
values by construction. Two knobs of one method are swept over their grid.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from debiaskit.compare import BASELINE, Comparer, check_folds
from debiaskit.data import OccupationSet
from debiaskit.errors import DebiasKitError
from debiaskit.method import Method
from debiaskit.options import resolve_settings

DEFAULT_BUDGETS = (0.02, 0.05)
DEFAULT_KEEP = 0.9


def parse_seeds(text: str) -> tuple[int, ...]:
    """"1,2" -> (1, 2); "" -> ()."""
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise DebiasKitError(f"--seeds {text!r}: expected comma-separated integers, e.g. 1,2") from None


def parse_budgets(text: str) -> tuple[float, ...]:
    try:
        budgets = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        budgets = ()
    if not budgets or any(not np.isfinite(b) or b <= 0 for b in budgets):
        raise DebiasKitError(f"--budget {text!r}: expected comma-separated kl values above 0 (nats), e.g. 0.02,0.05")
    return budgets


def parse_knob(text: str, methods: Sequence[str]) -> tuple[str, str, list[str]]:
    """`key=v1,v2` (one method swept) or `method.key=v1,v2` -> (method, key, raw values). Values of a list-valued
    option (e.g. LEACE layers) are separated by ';' instead: `leace.layers=4;8;4,8`."""
    target, equals, values = text.partition("=")
    method, dot, key = target.strip().rpartition(".")
    if not dot:
        if len(methods) != 1:
            raise DebiasKitError(f"--knob {text!r}: with several methods name the method, "
                                 "e.g. --knob leace.blend=0.5,1")
        method, key = methods[0], target.strip()
    raw = [v.strip() for v in values.split(";" if ";" in values else ",") if v.strip()]
    if not equals or not key or not raw:
        raise DebiasKitError(f"--knob {text!r}: expected key=v1,v2,... (or method.key=v1,v2,...), "
                             "e.g. factor=0,0.3,0.6")
    if method not in methods:
        raise DebiasKitError(f"--knob {text!r}: {method!r} is not among the methods swept ({', '.join(methods)})")
    return method, key, raw


def pareto_frontier(kl: Sequence[float], gap: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """(kl, |gap|) of the points no other point beats, by increasing kl."""
    points = sorted(zip(np.asarray(kl, dtype=float), np.abs(np.asarray(gap, dtype=float))), key=lambda p: (p[0], p[1]))
    kept: list[tuple[float, float]] = []
    for cost, remaining in points:
        if np.isfinite(cost) and np.isfinite(remaining) and (not kept or remaining < kept[-1][1]):
            kept.append((cost, remaining))
    return np.array([p[0] for p in kept]), np.array([p[1] for p in kept])


def gap_at_budget(frontier_kl: np.ndarray, frontier_gap: np.ndarray, budget: float) -> float:
    """|gap| on the frontier at `budget`: linear between frontier points, flat after the last one."""
    return float(np.interp(budget, frontier_kl, frontier_gap))


def frontier_area(frontier_kl: np.ndarray, frontier_gap: np.ndarray, kl_max: float) -> float:
    """Mean of the frontier's |gap| over kl in [0, kl_max] (the area under it divided by kl_max)."""
    knots = np.unique(np.concatenate([[0.0, kl_max], frontier_kl[frontier_kl < kl_max]]))
    values = np.interp(knots, frontier_kl, frontier_gap)
    return float(np.sum((values[1:] + values[:-1]) / 2 * np.diff(knots)) / kl_max)


def matched_cost_rows(points: Sequence[Mapping[str, Any]], baseline_gap: float, budgets: Sequence[float],
                      keep: float = DEFAULT_KEEP) -> tuple[list[dict[str, Any]], dict[str, list[list[float]]]]:
    """One row per swept method (gap reduction at each budget, also among the settings that keep
    definitional_retained >= `keep`, and the frontier area) and each method's frontier points. Failed settings are
    left out of every frontier."""
    rows, frontiers = [], {}

    def reduction(left: float) -> float:
        return 100.0 * (abs(baseline_gap) - left) / abs(baseline_gap) if baseline_gap else float("nan")

    for method in dict.fromkeys(p["method"] for p in points):
        mine = [p for p in points if p["method"] == method and p.get("status") == "ok"]
        kept = [p for p in mine if p.get("definitional_retained", float("nan")) >= keep]
        kl, gap = pareto_frontier([0.0, *(p["kl"] for p in mine)], [baseline_gap, *(p["stereotype_gap"] for p in mine)])
        kept_kl, kept_gap = pareto_frontier([0.0, *(p["kl"] for p in kept)],
                                            [baseline_gap, *(p["stereotype_gap"] for p in kept)])
        frontiers[method] = [[float(a), float(b)] for a, b in zip(kl, gap)]
        row: dict[str, Any] = {"method": method, "settings": len(mine), "frontier_points": len(kl) - 1,
                               "settings_kept": len(kept)}
        for budget in budgets:
            left = gap_at_budget(kl, gap, budget)
            row[f"gap_at_kl_{budget:g}"] = left
            row[f"gap_reduction_pct_at_kl_{budget:g}"] = reduction(left)
            row[f"gap_reduction_pct_at_kl_{budget:g}_keep_{keep:g}"] = reduction(
                gap_at_budget(kept_kl, kept_gap, budget))
        row["frontier_area"] = frontier_area(kl, gap, max(budgets))
        rows.append(row)
    return rows, frontiers


def choose_setting(points: Sequence[Mapping[str, Any]], method: str, budget: float,
                   keep: float) -> Mapping[str, Any] | None:
    """The point of `method` with the smallest |stereotype_gap| among its ok settings with kl <= `budget` and
    definitional_retained >= `keep` (the first such on a tie), or None when no setting qualifies."""
    allowed = [p for p in points if p["method"] == method and p.get("status") == "ok" and p["kl"] <= budget
               and p.get("definitional_retained", float("nan")) >= keep]
    return min(allowed, key=lambda p: abs(p["stereotype_gap"]), default=None)


def setting_grid(knobs: Sequence[tuple[str, Sequence[str]]]) -> list[dict[str, str]]:
    """Every combination of the knobs' raw values, the first knob varying slowest."""
    return [dict(zip((key for key, _ in knobs), values)) for values in itertools.product(*(raw for _, raw in knobs))]


# name, class, options, knobs
SweepPlan = Sequence[tuple[str, type[Method], Mapping[str, Any], Sequence[tuple[str, Sequence[str]]]]]
# one setting of a sweep: row name, class, options with the setting, the setting (knob -> raw value)
SweepCell = tuple[str, type[Method], dict[str, Any], dict[str, str]]


def sweep_cells(plan: SweepPlan) -> list[SweepCell]:
    """Each setting of each method's knob grid, in the order the sweep scores them."""
    return [(name, method_class, {**given, **setting}, setting)
            for name, method_class, given, knobs in plan for setting in setting_grid(knobs)]


def check_plan(plan: SweepPlan, scored: Sequence[OccupationSet] = (), n_folds: int = 2, seed: int = 0) -> None:
    """Every setting of every grid resolves (known options, values of the right type and range), and each job set
    in `scored` splits into `n_folds` for the settings that learn from jobs: said before the model loads."""
    cells = sweep_cells(plan)
    for _, method_class, options, _ in cells:
        method_class(**options)
    for occupations in scored:
        check_folds(occupations, [cell[:3] for cell in cells], n_folds, seed, in_sample=False)


def sweep_point(cell: SweepCell, row: Mapping[str, Any]) -> dict[str, Any]:
    """A setting's row of the sweep: its compare row with `knob` (the knob names, comma-separated) and `value` (their
    values, space-separated)."""
    name, method_class, _, setting = cell
    typed = resolve_settings(name, method_class.options, setting)
    values = [",".join(map(str, typed[key])) if isinstance(typed[key], tuple) else typed[key] for key in setting]
    value = values[0] if len(values) == 1 else " ".join(map(str, values))
    return {"method": name, "knob": ",".join(setting), "value": value, "setting": dict(setting),
            **{k: v for k, v in row.items() if k != "method"}}


def run_sweep(comparer: Comparer, plan: SweepPlan, baseline_class: type[Method]) -> list[dict[str, Any]]:
    """Score the baseline, then each setting of each method's knob grid; one `sweep_point` per setting."""
    check_plan(plan)
    comparer.run(BASELINE, baseline_class, {})
    rows = []
    for cell in sweep_cells(plan):
        name, method_class, options, setting = cell
        described = " ".join(f"{key}={raw}" for key, raw in setting.items())
        print(f"debiaskit: sweep {name} {described}", file=sys.stderr)
        rows.append(sweep_point(cell, comparer.run(name, method_class, options).row))
    return rows
