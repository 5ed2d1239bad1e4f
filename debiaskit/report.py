"""Report files from a run directory: the tables as Markdown and LaTeX (booktabs), PNG figures, one HTML page.

Reads what `compare --out` writes (summary.json, prompts.csv) and what `sweep --out` writes (sweep.json); either may
be missing. Writes report.md, table.tex (and matched_cost.tex after a sweep), figures/*.png and report.html, whose
figures are inlined (base64) so the page is one file. Figures use black, greys, markers, hatches and line styles
only, so they read in greyscale, and each is labelled with model, data set, templates and seed.
"""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from debiaskit.errors import DebiasKitError
from debiaskit.reporting import atomic_write_text, latex_escape

CONTROLS_FILE = "controls.csv"
PROFESSIONS_FILE = "professions.csv"
SWEEP_FILE = "sweep.json"
MARKERS = ("s", "^", "D", "v", "o", "P", "X", "*")
LINESTYLES = ("-", "--", "-.", ":")
TEXT_COLUMNS = ("method", "noise", "protocol")
HATCHES = ("", "//", "..", "xx", "\\\\", "--", "oo", "++")


@dataclass(frozen=True)
class Table:
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    note: str = ""


def _number(value: Any, digits: int) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    rounded = round(float(value), digits)
    return f"{rounded if rounded != 0 else 0.0:.{digits}f}"  # never "-0.000"


def _interval(row: dict[str, Any], value: str, low: str, high: str, digits: int) -> str:
    text = _number(row.get(value), digits)
    if text and row.get(low) is not None and row.get(high) is not None:
        text += f" [{_number(row[low], digits)}, {_number(row[high], digits)}]"
    return text


def _with_sd(row: dict[str, Any], column: str, digits: int) -> str:
    text = _number(row.get(column), digits)
    sd = row.get(f"{column}_sd")
    return f"{text} ± {_number(sd, digits)}" if text and sd is not None else text


def summary_table(summary: dict[str, Any]) -> Table:
    """The unified table with intervals: one row per method, numbers rounded to what the measurement supports."""
    columns = ("method", "stereotype_gap", "gap_change_pct", "noise", "stereotype_retained", "factual_retained",
               "definitional_retained", "definitional_acc", "agreement_share", "kl", "kl_gendered", "ppl_ratio", "bls_corr",
               "protocol")
    rows = []
    for row in summary["methods"]:
        if row.get("status") != "ok":
            rows.append((row["method"], "failed: " + str(row.get("error", "")), *[""] * (len(columns) - 2)))
            continue
        noise = {True: "within noise", False: "", None: ""}[row.get("within_noise")]
        rows.append((row["method"], _interval(row, "stereotype_gap", "gap_ci_low", "gap_ci_high", 3),
                     _interval(row, "gap_change_pct", "change_ci_low", "change_ci_high", 1), noise,
                     *(_interval(row, name, f"{name}_ci_low", f"{name}_ci_high", 2)
                       for name in ("stereotype_retained", "factual_retained", "definitional_retained")),
                     _with_sd(row, "definitional_acc", 3), _with_sd(row, "agreement_share", 3), _with_sd(row, "kl", 4),
                     _with_sd(row, "kl_gendered", 4), _number(row.get("ppl_ratio"), 3), _number(row.get("bls_corr"), 2),
                     str(row.get("protocol", ""))))
    level = f"95% paired bootstrap intervals ({summary.get('bootstrap')} resamples: jobs and templates for the gap, nouns and templates for definitional_retained, professions for the regression)" if summary.get("bootstrap") else "no intervals (--bootstrap 0)"
    seeds = f"; ± = sd over seeds {','.join(map(str, summary['seeds']))}" if summary.get("seeds") else ""
    return Table("Comparison", columns, tuple(rows), level + seeds)


def matched_cost_table(sweep: dict[str, Any]) -> Table:
    budgets, keep = sweep["budgets"], sweep.get("keep")
    kept = [f"gap_reduction_pct_at_kl_{b:g}_keep_{keep:g}" for b in budgets] if keep is not None else []
    columns = ("method", "settings", *(f"gap_reduction_pct @ kl={b:g}" for b in budgets),
               *(f"same, definitional_retained >= {keep:g} @ kl={b:g}" for b in budgets if kept), "frontier_area")
    rows = tuple((r["method"], str(r["settings"]), *(_number(r[f"gap_reduction_pct_at_kl_{b:g}"], 1) for b in budgets),
                  *(_number(r.get(column), 1) for column in kept), _number(r["frontier_area"], 4)) for r in sweep["matched"])
    scored = f"; scored on held-out templates {sweep['heldout_templates']}" if sweep.get("heldout_templates") else ""
    where = f"; settings scored on {sweep['dataset']}"
    return Table("Matched cost", columns, rows, f"baseline |stereotype_gap| {abs(sweep['baseline_gap']):.3f}; frontier_area = "
                 f"mean |gap| on the frontier over kl in [0, {max(budgets):g}]{scored}{where}")


def chosen_table(sweep: dict[str, Any]) -> Table:
    """`sweep --dev`: each method's setting chosen on the dev jobs and its row on the reported jobs."""
    columns = ("method", "setting", "dev gap_change_pct", "dev kl", "gap_change_pct", "stereotype_retained",
               "definitional_retained", "kl", "kl_gendered", "agreement_share")
    rows = []
    for row in sweep["chosen"]:
        if row.get("status") != "ok":
            rows.append((row["method"], str(row.get("status")) + ": " + str(row.get("error", "")), *[""] * (len(columns) - 2)))
            continue
        rows.append((row["method"], f"{row['knob']}={row['value']}", _number(row.get("dev_gap_change_pct"), 1),
                     _number(row.get("dev_kl"), 4), _interval(row, "gap_change_pct", "change_ci_low", "change_ci_high", 1),
                     _number(row.get("stereotype_retained"), 2), _number(row.get("definitional_retained"), 2),
                     _number(row.get("kl"), 4), _number(row.get("kl_gendered"), 4), _number(row.get("agreement_share"), 3)))
    return Table("Chosen on dev jobs, scored on the reported jobs", columns, tuple(rows),
                 f"chosen on {sweep.get('dev')}: the largest gap reduction with kl <= {sweep['budgets'][0]:g} and "
                 f"definitional_retained >= {sweep.get('keep')}; scored on {sweep.get('scored_dataset')}")


def markdown(table: Table) -> str:
    escape = lambda text: text.replace("|", "\\|")  # noqa: E731
    lines = [f"### {table.title}", "", "| " + " | ".join(table.columns) + " |", "|" + "|".join("---" for _ in table.columns) + "|"]
    lines += ["| " + " | ".join(escape(cell) for cell in row) + " |" for row in table.rows]
    return "\n".join(lines + ([f"\n{table.note}"] if table.note else [])) + "\n"


def latex(table: Table) -> str:
    """A booktabs tabular (needs \\usepackage{booktabs}); ± is written as $\\pm$."""
    def cell(text: str) -> str:
        return latex_escape(text).replace("±", r"$\pm$")

    lines = [f"% {table.title}: {table.note}" if table.note else f"% {table.title}",
             r"\begin{tabular}{" + "".join("l" if c in TEXT_COLUMNS else "r" for c in table.columns) + "}", r"\toprule",
             " & ".join(cell(c) for c in table.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(cell(v) for v in row) + r" \\" for row in table.rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def html_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>" for row in table.rows)
    note = f"<p class='note'>{html.escape(table.note)}</p>" if table.note else ""
    return f"<h2>{html.escape(table.title)}</h2><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{note}"


def label_of(header: dict[str, Any]) -> str:
    return f"model {header.get('model')} · data set {header.get('dataset')} · templates {header.get('templates')} · seed {header.get('seed')}"


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
            axis.plot([before.at[job, "pct_women"]] * 2, [before.at[job, "female_share"], after.at[job, "female_share"]],
                      color="0.65", linewidth=0.8)
        axis.scatter(before["pct_women"], before["female_share"], facecolors="white", edgecolors="0.35", marker="o", s=22, label="none")
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
        error = [[row["stereotype_gap"] - low], [high - row["stereotype_gap"]]] if low is not None and high is not None else None
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
    setting (hollow, labelled with its value); the ideal corner (0, 1) removes the stereotype and keeps gender."""
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
        axis.annotate(label, (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    axis.scatter([0], [1], marker="*", s=140, facecolors="white", edgecolors="black", zorder=3)
    axis.annotate("ideal: stereotype gone, gender kept", (0, 1), fontsize=7, xytext=(6, -10), textcoords="offset points")
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
        axis.scatter([p["kl"] for p in mine], [abs(p["stereotype_gap"]) for p in mine], marker=marker, facecolors="white",
                     edgecolors="black", s=30)
        for p in mine:
            axis.annotate(f"{p['value']}", (p["kl"], abs(p["stereotype_gap"])), fontsize=6, xytext=(3, 3), textcoords="offset points")
        kl, gap = zip(*frontier)
        axis.plot(kl, gap, linestyle=style, marker=marker, color="black", markersize=4, label=f"{method} ({mine[0]['knob'] if mine else ''})")
    for budget in sweep["budgets"]:
        axis.axvline(budget, color="0.5", linestyle=":", linewidth=0.8)
    axis.set(xlabel="kl on neutral text (nats)", ylabel="|stereotype_gap|", title=f"Frontiers of |gap| against kl\n{label_of(sweep)}")
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


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise DebiasKitError(f"cannot read {path}: {error}") from None


def write_report(run_dir: Path) -> Path:
    """Write report.md, table.tex, matched_cost.tex, figures/*.png and report.html into `run_dir`; return the HTML."""
    run_dir = Path(run_dir)
    summary, sweep = _read_json(run_dir / "summary.json"), _read_json(run_dir / SWEEP_FILE)
    if summary is None and sweep is None:
        raise DebiasKitError(f"{run_dir} holds neither summary.json (from `compare --out`) nor {SWEEP_FILE} (from `sweep --out`)")
    tables: list[Table] = []
    figures: list[tuple[Path, str]] = []
    header = summary if summary is not None else sweep
    assert header is not None
    if summary is not None:
        tables.append(summary_table(summary))
        atomic_write_text(run_dir / "table.tex", latex(tables[-1]))
        prompts_path = run_dir / "prompts.csv"
        if prompts_path.is_file() and prompts_path.stat().st_size > 1:
            found = job_share_figure(pd.read_csv(prompts_path), summary, run_dir / "figures" / "job_shares.png")
            if found:
                figures.append((found, "Per-job female share without the method (open circles) and with it (filled squares) against the job's percent women."))
        found = gap_kl_figure(summary, run_dir / "figures" / "gap_kl.png")
        if found:
            figures.append((found, "stereotype_gap with its 95% interval (left) and kl on neutral text (right) per method."))
    if sweep is not None:
        tables.append(matched_cost_table(sweep))
        atomic_write_text(run_dir / "matched_cost.tex", latex(tables[-1]))
        if sweep.get("chosen"):
            tables.append(chosen_table(sweep))
            atomic_write_text(run_dir / "chosen.tex", latex(tables[-1]))
        found = frontier_figure(sweep, run_dir / "figures" / "frontiers.png")
        if found:
            figures.append((found, "Each swept setting (hollow, labelled with its knob value) and each method's frontier; dotted lines mark the kl budgets."))
    found = selectivity_figure(summary, sweep, run_dir / "figures" / "selectivity.png")
    if found:
        figures.append((found, "Stereotype retained (a_s / a_s(none), x) against definitional retained (y) per method (filled) and swept setting (hollow); the star is the ideal corner."))
    title = f"debiaskit report: {label_of(header)}"
    protocol = f"protocol: {header.get('protocol')}, folds {header.get('folds')}" + (
        f", held-out templates {header['heldout_templates']}" if header.get("heldout_templates") else "")
    md = [f"# {title}", "", protocol, ""] + [markdown(t) for t in tables]
    md += [f"![{caption}]({path.relative_to(run_dir).as_posix()})\n\n{caption}\n" for path, caption in figures]
    atomic_write_text(run_dir / "report.md", "\n".join(md))
    images = "".join(f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}'>"
                     f"<figcaption>{html.escape(caption)}</figcaption></figure>" for path, caption in figures)
    page = ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>" + html.escape(title) + "</title><style>"
            "body{font-family:sans-serif;margin:2em;color:#111;max-width:1200px}table{border-collapse:collapse;margin:1em 0}"
            "th,td{border-top:1px solid #999;border-bottom:1px solid #999;padding:4px 8px;text-align:right}"
            "td{white-space:nowrap}th:first-child,td:first-child,td:last-child{text-align:left}th{border-bottom:2px solid #111}.note{color:#444;font-size:90%}"
            "img{max-width:100%}figure{margin:1.5em 0}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><p>{html.escape(protocol)}</p>" + "".join(html_table(t) for t in tables) + images + "</body></html>\n")
    atomic_write_text(run_dir / "report.html", page)
    return run_dir / "report.html"

