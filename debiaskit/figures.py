"""The report's figures as PNG files: black, greys, markers, hatches and line styles only, so they read in greyscale,
and each is labelled with model, data set, templates and seed."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from debiaskit.tables import label_of

MARKERS = ("s", "^", "D", "v", "o", "P", "X", "*")
LINESTYLES = ("-", "--", "-.", ":")
HATCHES = ("", "//", "..", "xx", "\\\\", "--", "oo", "++")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.prop_cycle": matplotlib.cycler(color=["black"])})
    return plt


def job_share_figure(prompts: pd.DataFrame, header: dict[str, Any], path: Path) -> Path | None:
    """Per method, each job's female share without (open circle) and with the method (filled square) against its
    percent women; a thin line joins a job's two points."""
    from debiaskit.metrics import per_job

    methods = [m for m in dict.fromkeys(prompts["method"]) if m != "none"]
    if "none" not in set(prompts["method"]) or not methods:
        return None
    plt = _pyplot()
    before = per_job(prompts[prompts["method"] == "none"]).set_index("job")
    columns = min(3, len(methods))
    rows = math.ceil(len(methods) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.4 * columns, 3.0 * rows + 0.5), squeeze=False, sharey=True)
    for axis, method in zip(axes.flat, methods):
        after = per_job(prompts[prompts["method"] == method]).set_index("job").reindex(before.index)
        for job in before.index:
            axis.plot([before.at[job, "pct_women"]] * 2,
                      [before.at[job, "female_share"], after.at[job, "female_share"]],
                      color="0.65", linewidth=0.8)
        axis.scatter(before["pct_women"], before["female_share"], facecolors="white", edgecolors="0.35", marker="o",
                     s=22, label="none")
        axis.scatter(after["pct_women"], after["female_share"], color="black", marker="s", s=14, label=method)
        axis.axhline(0.5, color="0.5", linestyle=":", linewidth=0.8)
        axis.set(title=method, xlabel="percent women (BLS)", xlim=(-2, 102), ylim=(-0.02, 1.02))
        axis.legend(loc="upper left", frameon=False, fontsize=7)
    for axis in axes[:, 0]:
        axis.set_ylabel("female share  P_f / (P_m + P_f)")
    for axis in list(axes.flat)[len(methods):]:
        axis.set_visible(False)
    figure.suptitle(f"Per-job female share before and after\n{label_of(header)}", fontsize=9)
    figure.tight_layout()
    return _save(figure, path)


def gap_kl_figure(summary: dict[str, Any], path: Path) -> Path | None:
    """stereotype_gap with its interval and kl (with its seed sd when given) per method."""
    ok = [row for row in summary["methods"] if row.get("status") == "ok"]
    if not ok:
        return None
    plt = _pyplot()
    names = [row["method"] for row in ok]
    positions = range(len(ok))
    figure, (left, right) = plt.subplots(1, 2, figsize=(max(6.5, 1.1 * len(ok) + 3), 3.6))
    for index, row in enumerate(ok):
        low, high = row.get("gap_ci_low"), row.get("gap_ci_high")
        error = ([[row["stereotype_gap"] - low], [high - row["stereotype_gap"]]]
                 if low is not None and high is not None else None)
        left.errorbar([index], [row["stereotype_gap"]], yerr=error, fmt=MARKERS[index % len(MARKERS)], color="black",
                      markerfacecolor="white" if row["method"] == "none" else "black", capsize=4)
        right.bar([index], [row["kl"]], yerr=[row["kl_sd"]] if row.get("kl_sd") is not None else None, color="0.8",
                  edgecolor="black", hatch=HATCHES[index % len(HATCHES)], capsize=4)
    left.axhline(0.0, color="0.5", linestyle=":", linewidth=0.8)
    left.set(ylabel="stereotype_gap (95% CI)", title="stereotype gap")
    right.set(ylabel="kl on neutral text (nats)", title="cost")
    for axis in (left, right):
        axis.set_xticks(list(positions), names, rotation=30, ha="right")
    figure.suptitle(label_of(summary), fontsize=9)
    figure.tight_layout()
    return _save(figure, path)


def selectivity_figure(summary: dict[str, Any] | None, sweep: dict[str, Any] | None, path: Path) -> Path | None:
    """stereotype_retained (x) against definitional_retained (y): each compared method (filled) and each swept
    setting (hollow, labelled with its value), the third axis, cost, written beside each point (`kl_gendered`, the
    kl on gendered text, where the row has it); the ideal corner (0, 1) removes the stereotype and keeps gender."""
    points = [(row["method"], row, True) for row in (summary or {}).get("methods", [])]
    points += [(f"{p['method']} {p['value']}", p, False) for p in (sweep or {}).get("points", [])]
    points = [(label, row, filled) for label, row, filled in points if row.get("status") == "ok"
              and all(isinstance(row.get(c), (int, float)) and math.isfinite(row[c])
                      for c in ("stereotype_retained", "definitional_retained"))]
    if not points:
        return None
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6.0, 4.6))
    methods = list(dict.fromkeys(label.split(" ")[0] for label, _, _ in points))
    for label, row, filled in points:
        marker = MARKERS[methods.index(label.split(" ")[0]) % len(MARKERS)]
        x, y = row["stereotype_retained"], row["definitional_retained"]
        axis.scatter([x], [y], marker=marker, s=36 if filled else 24, facecolors="black" if filled else "white",
                     edgecolors="black")
        cost = row.get("kl_gendered")
        if isinstance(cost, (int, float)) and math.isfinite(cost):
            label = f"{label} (kl {cost:.2g})"
        axis.annotate(label, (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    axis.scatter([0], [1], marker="*", s=140, facecolors="white", edgecolors="black", zorder=3)
    axis.annotate("ideal: stereotype gone, gender kept", (0, 1), fontsize=7, xytext=(6, -10),
                  textcoords="offset points")
    axis.axvline(1.0, color="0.6", linestyle=":", linewidth=0.8)
    axis.axhline(1.0, color="0.6", linestyle=":", linewidth=0.8)
    axis.margins(0.12)  # room for the labels of points at the edges (none sits at (1, 1))
    axis.set(xlabel="stereotype retained  a_s / a_s(none)", ylabel="definitional retained  gap / gap(none)",
             title=f"Selectivity: stereotype removed against gender kept\n{label_of(summary or sweep or {})}")
    axis.title.set_fontsize(9)
    figure.tight_layout()
    return _save(figure, path)


def frontier_figure(sweep: dict[str, Any], path: Path) -> Path | None:
    """Every swept setting (hollow) and each method's frontier (line) in the (kl, |gap|) plane; budgets dotted."""
    if not sweep.get("points"):
        return None
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6.0, 4.0))
    for index, (method, frontier) in enumerate(sweep["frontiers"].items()):
        mine = [p for p in sweep["points"] if p["method"] == method and p.get("status") == "ok"]
        marker, style = MARKERS[index % len(MARKERS)], LINESTYLES[index % len(LINESTYLES)]
        axis.scatter([p["kl"] for p in mine], [abs(p["stereotype_gap"]) for p in mine], marker=marker,
                     facecolors="white", edgecolors="black", s=30)
        for p in mine:
            axis.annotate(f"{p['value']}", (p["kl"], abs(p["stereotype_gap"])), fontsize=6, xytext=(3, 3),
                          textcoords="offset points")
        kl, gap = zip(*frontier)
        axis.plot(kl, gap, linestyle=style, marker=marker, color="black", markersize=4,
                  label=f"{method} ({mine[0]['knob'] if mine else ''})")
    for budget in sweep["budgets"]:
        axis.axvline(budget, color="0.5", linestyle=":", linewidth=0.8)
    axis.set(xlabel="kl on neutral text (nats)", ylabel="|stereotype_gap|",
             title=f"Frontiers of |gap| against kl\n{label_of(sweep)}")
    axis.title.set_fontsize(9)
    axis.legend(frameon=False, fontsize=7)
    figure.tight_layout()
    return _save(figure, path)


def _save(figure: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(temporary, dpi=130)
    plt.close(figure)
    temporary.replace(path)
    return path
