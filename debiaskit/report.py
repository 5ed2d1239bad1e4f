"""Report files from a run directory: the tables as Markdown and LaTeX (booktabs), the figures, one HTML page.

Reads what `compare --out` writes (summary.json, prompts.csv) and what `sweep --out` writes (sweep.json); either may
be missing. Writes report.md, table.tex (and matched_cost.tex, chosen.tex after a sweep), figures/*.png and
report.html, whose figures are inlined (base64) so the page is one file.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from debiaskit.errors import DebiasKitError
from debiaskit.figures import frontier_figure, gap_kl_figure, job_share_figure, selectivity_figure
from debiaskit.run_dir import (
    CHOSEN_TEX,
    FRONTIERS_PNG,
    GAP_KL_PNG,
    JOB_SHARES_PNG,
    MANIFEST_FILE,
    MATCHED_COST_TEX,
    PROMPTS_FILE,
    REPORT_HTML,
    REPORT_MD,
    SELECTIVITY_PNG,
    SUMMARY_FILE,
    SWEEP_FILE,
    TABLE_TEX,
    atomic_write_text,
    read_frame,
    read_json_object,
)
from debiaskit.tables import label_of, latex_escape

TEXT_COLUMNS = ("method", "noise", "protocol")


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
               "definitional_retained", "definitional_acc", "agreement_share", "kl", "kl_gendered", "ppl_ratio",
               "bls_corr", "protocol")
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
    level = (f"95% paired bootstrap intervals ({summary.get('bootstrap')} resamples: jobs and templates for the gap, "
             "nouns and templates for definitional_retained, professions for the regression)"
             if summary.get("bootstrap") else "no intervals (--bootstrap 0)")
    seeds = f"; ± = sd over seeds {','.join(map(str, summary['seeds']))}" if summary.get("seeds") else ""
    return Table("Comparison", columns, tuple(rows), level + seeds)


def benchmark_table(summary: dict[str, Any]) -> Table | None:
    """CrowS-Pairs and WinoGender per method (`compare --benchmarks`), beside the occupation prompts' gap change;
    None when the run scored no benchmark."""
    names = summary.get("benchmarks") or []
    if not names:
        return None
    columns = ("method", "gap_change_pct",
               *(("crows_pct_stereotype", "crows_change") if "crows" in names else ()),
               *(("winogender_gap", "winogender_gap_change_pct", "winogender_bls_corr", "winogender_left_out")
                 if "winogender" in names else ()))
    rows = []
    for row in summary["methods"]:
        if row.get("status") != "ok":
            continue
        cells = {"method": row["method"], "gap_change_pct": _number(row.get("gap_change_pct"), 1),
                 "crows_pct_stereotype": _interval(row, "crows_pct_stereotype", "crows_pct_stereotype_low",
                                                   "crows_pct_stereotype_high", 1),
                 "crows_change": _interval(row, "crows_change", "crows_change_low", "crows_change_high", 1),
                 "winogender_gap": _number(row.get("winogender_gap"), 3),
                 "winogender_gap_change_pct": _number(row.get("winogender_gap_change_pct"), 1),
                 "winogender_bls_corr": _number(row.get("winogender_bls_corr"), 2),
                 "winogender_left_out": str(row.get("winogender_left_out", ""))}
        rows.append(tuple(cells[column] for column in columns))
    return Table("Benchmarks", columns, tuple(rows),
                 "crows_pct_stereotype: % of CrowS-Pairs gender pairs where the more stereotyping sentence is more "
                 "likely (50 = no preference; crows_change in points against none); winogender_gap: female share "
                 "of majority-female minus majority-male WinoGender occupations (its change against none on the "
                 "same occupations); a WinoGender occupation sharing a head noun with a job the method trained on "
                 "is scored held out or left out (winogender_left_out). See docs/benchmarks.md")


def matched_cost_table(sweep: dict[str, Any]) -> Table:
    budgets, keep = sweep["budgets"], sweep.get("keep")
    kept = [f"gap_reduction_pct_at_kl_{b:g}_keep_{keep:g}" for b in budgets] if keep is not None else []
    columns = ("method", "settings", *(f"gap_reduction_pct @ kl={b:g}" for b in budgets),
               *(f"same, definitional_retained >= {keep:g} @ kl={b:g}" for b in budgets if kept), "frontier_area")
    rows = tuple((r["method"], str(r["settings"]), *(_number(r[f"gap_reduction_pct_at_kl_{b:g}"], 1) for b in budgets),
                  *(_number(r.get(column), 1) for column in kept), _number(r["frontier_area"], 4))
                 for r in sweep["matched"])
    scored = f"; scored on held-out templates {sweep['heldout_templates']}" if sweep.get("heldout_templates") else ""
    where = f"; settings scored on {sweep['dataset']}"
    return Table("Matched cost", columns, rows,
                 f"baseline |stereotype_gap| {abs(sweep['baseline_gap']):.3f}; frontier_area = "
                 f"mean |gap| on the frontier over kl in [0, {max(budgets):g}]{scored}{where}")


def chosen_table(sweep: dict[str, Any]) -> Table:
    """`sweep --dev`: each method's setting chosen on the dev jobs and its row on the reported jobs."""
    columns = ("method", "setting", "dev gap_change_pct", "dev kl", "gap_change_pct", "stereotype_retained",
               "definitional_retained", "kl", "kl_gendered", "agreement_share")
    rows = []
    for row in sweep["chosen"]:
        if row.get("status") != "ok":
            rows.append((row["method"], str(row.get("status")) + ": " + str(row.get("error", "")),
                         *[""] * (len(columns) - 2)))
            continue
        rows.append((row["method"], f"{row['knob']}={row['value']}", _number(row.get("dev_gap_change_pct"), 1),
                     _number(row.get("dev_kl"), 4),
                     _interval(row, "gap_change_pct", "change_ci_low", "change_ci_high", 1),
                     _number(row.get("stereotype_retained"), 2), _number(row.get("definitional_retained"), 2),
                     _number(row.get("kl"), 4), _number(row.get("kl_gendered"), 4),
                     _number(row.get("agreement_share"), 3)))
    return Table("Chosen on dev jobs, scored on the reported jobs", columns, tuple(rows),
                 f"chosen on {sweep.get('dev')}: the largest gap reduction with kl <= {sweep['budgets'][0]:g} and "
                 f"definitional_retained >= {sweep.get('keep')}; scored on {sweep.get('scored_dataset')}")


def markdown(table: Table) -> str:
    escape = lambda text: text.replace("|", "\\|")  # noqa: E731
    lines = [f"### {table.title}", "", "| " + " | ".join(table.columns) + " |",
             "|" + "|".join("---" for _ in table.columns) + "|"]
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
    return (f"<h2>{html.escape(table.title)}</h2><table><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table>{note}")


def write_report(run_dir: Path) -> Path:
    """Write report.md, table.tex, matched_cost.tex, figures/*.png and report.html into `run_dir`; return the HTML.
    A file that is not as debiaskit writes it, or a folder that cannot be written, is a DebiasKitError."""
    run_dir = Path(run_dir)
    summary, sweep = read_json_object(run_dir / SUMMARY_FILE), read_json_object(run_dir / SWEEP_FILE)
    if summary is None and sweep is None:
        raise DebiasKitError(f"{run_dir} holds neither {SUMMARY_FILE} (from `compare --out`) nor {SWEEP_FILE} "
                             "(from `sweep --out`)")
    try:
        return _write_report(run_dir, summary, sweep)
    except OSError as error:
        raise DebiasKitError(f"cannot write the report into {run_dir}: {error.strerror or error}") from None
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as error:
        what = f"it has no {error.args[0]!r}" if isinstance(error, KeyError) else str(error)
        names = " and ".join(name for name, content in ((SUMMARY_FILE, summary), (SWEEP_FILE, sweep)) if content)
        raise DebiasKitError(f"{run_dir}: {names} is not as debiaskit writes it ({what}); write it again with the "
                             "command that made it") from None


def incomplete_notice(run_dir: Path, summary: dict[str, Any] | None, sweep: dict[str, Any] | None) -> str:
    """What a reader must know first when the run did not score everything it set out to ('' when it did)."""
    parts = []
    if summary is not None:
        rows = summary["methods"]
        manifest = read_json_object(run_dir / MANIFEST_FILE) or {}
        planned = [entry["method"] for entry in manifest.get("methods", [])]
        scored = {row["method"] for row in rows}
        missing = [name for name in planned if name not in scored]
        if missing:
            parts.append(f"{len(missing)} of {len(planned)} methods were not scored ({', '.join(missing)}): the run "
                         f"was interrupted; finish it with `debiaskit compare --resume {run_dir}`")
        failed = [row["method"] for row in rows if row.get("status") != "ok"]
        if failed:
            parts.append(f"{len(failed)} method(s) failed ({', '.join(failed)})")
    if sweep is not None:
        failed = [f"{p['method']} {p.get('value')}" for p in sweep["points"] if p.get("status") != "ok"]
        if failed:
            parts.append(f"{len(failed)} sweep setting(s) failed ({', '.join(failed)}) and are left out of the "
                         "frontiers")
    return ("Incomplete: " + "; ".join(parts) + ".") if parts else ""


def _write_report(run_dir: Path, summary: dict[str, Any] | None, sweep: dict[str, Any] | None) -> Path:
    tables: list[Table] = []
    figures: list[tuple[Path, str]] = []
    header = summary if summary is not None else sweep
    assert header is not None
    if summary is not None:
        tables.append(summary_table(summary))
        atomic_write_text(run_dir / TABLE_TEX, latex(tables[-1]))
        benchmarks = benchmark_table(summary)
        if benchmarks is not None:
            tables.append(benchmarks)
        prompts = read_frame(run_dir / PROMPTS_FILE)
        if not prompts.empty:
            found = job_share_figure(prompts, summary, run_dir / JOB_SHARES_PNG)
            if found:
                figures.append((found, "Per-job female share without the method (open circles) and with it "
                                       "(filled squares) against the job's percent women."))
        found = gap_kl_figure(summary, run_dir / GAP_KL_PNG)
        if found:
            figures.append((found, "stereotype_gap with its 95% interval (left) and kl on neutral text (right) "
                                   "per method."))
    if sweep is not None:
        tables.append(matched_cost_table(sweep))
        atomic_write_text(run_dir / MATCHED_COST_TEX, latex(tables[-1]))
        if sweep.get("chosen"):
            tables.append(chosen_table(sweep))
            atomic_write_text(run_dir / CHOSEN_TEX, latex(tables[-1]))
        found = frontier_figure(sweep, run_dir / FRONTIERS_PNG)
        if found:
            figures.append((found, "Each swept setting (hollow, labelled with its knob value) and each method's "
                                   "frontier; dotted lines mark the kl budgets."))
    found = selectivity_figure(summary, sweep, run_dir / SELECTIVITY_PNG)
    if found:
        figures.append((found, "Stereotype retained (a_s / a_s(none), x) against definitional retained (y) "
                               "per method (filled) and swept setting (hollow); the star is the ideal corner."))
    title = f"debiaskit report: {label_of(header)}"
    protocol = f"protocol: {header.get('protocol')}, folds {header.get('folds')}" + (
        f", held-out templates {header['heldout_templates']}" if header.get("heldout_templates") else "")
    notice = incomplete_notice(run_dir, summary, sweep)
    md = [f"# {title}", "", *([f"**{notice}**", ""] if notice else []), protocol, ""] + [markdown(t) for t in tables]
    md += [f"![{caption}]({path.relative_to(run_dir).as_posix()})\n\n{caption}\n" for path, caption in figures]
    atomic_write_text(run_dir / REPORT_MD, "\n".join(md))
    images = "".join(f"<figure><img alt='{html.escape(caption)}' "
                     f"src='data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}'>"
                     f"<figcaption>{html.escape(caption)}</figcaption></figure>" for path, caption in figures)
    body = ((f"<p><strong>{html.escape(notice)}</strong></p>" if notice else "") + f"<p>{html.escape(protocol)}</p>"
            + "".join(html_table(t) for t in tables) + images)
    atomic_write_text(run_dir / REPORT_HTML, html_page(title, body))
    return run_dir / REPORT_HTML


def html_page(title: str, body: str) -> str:
    """One self-contained HTML page: `title` as its heading, then `body`."""
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>" + html.escape(title)
            + "</title><style>"
            "body{font-family:sans-serif;margin:2em;color:#111;max-width:1200px}"
            "table{border-collapse:collapse;margin:1em 0}"
            "th,td{border-top:1px solid #999;border-bottom:1px solid #999;padding:4px 8px;text-align:right}"
            "td{white-space:nowrap}th:first-child,td:first-child,td:last-child{text-align:left}"
            "th{border-bottom:2px solid #111}.note{color:#444;font-size:90%}"
            "img{max-width:100%}figure{margin:1.5em 0}</style></head><body>"
            f"<h1>{html.escape(title)}</h1>{body}</body></html>\n")


def write_models_report(out: Path, folders: Sequence[Path]) -> Path:
    """report.md and report.html in `out` for a run of several models: a panel per model (its table, its own report
    beside it in its folder, with the figures); return the HTML."""
    panels = []
    for folder in folders:
        summary = read_json_object(folder / SUMMARY_FILE)
        if summary is None:
            raise DebiasKitError(f"{folder} holds no {SUMMARY_FILE}; write it again with the command that made it")
        table = summary_table(summary)
        panels.append((summary, Table(str(summary.get("model")), table.columns, table.rows, table.note),
                       folder.relative_to(out).as_posix(), incomplete_notice(folder, summary, None)))
    models = ", ".join(str(summary.get("model")) for summary, *_ in panels)
    title = f"debiaskit report: {label_of({**panels[0][0], 'model': models})}"
    md = [f"# {title}", ""]
    body = ""
    for _, table, link, notice in panels:
        note = f"**{notice}**\n\n" if notice else ""
        md.append(f"{note}{markdown(table)}\nFigures and the benchmark table: [{link}/report.md]({link}/report.md)\n")
        body += ((f"<p><strong>{html.escape(notice)}</strong></p>" if notice else "") + html_table(table)
                 + f"<p><a href='{html.escape(link)}/report.html'>{html.escape(link)}/report.html</a>: figures and "
                 "the benchmark table</p>")
    try:
        atomic_write_text(out / REPORT_MD, "\n".join(md))
        atomic_write_text(out / REPORT_HTML, html_page(title, body))
    except OSError as error:
        raise DebiasKitError(f"cannot write the report into {out}: {error.strerror or error}") from None
    return out / REPORT_HTML

