"""The comparison as a table: the terminal view, and Markdown, CSV, LaTeX and JSON (`--format`)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from debiaskit.errors import DebiasKitError
from debiaskit.metrics import VERDICTS

FORMATS = ("table", "markdown", "csv", "latex", "json")
# `model` only in a run of several models, which marks each row with its model
LEADING_COLUMNS = ("model", "method", "status", "stereotype_gap", "gap_ci_low", "gap_ci_high", "gap_change_pct",
                   "change_ci_low", "change_ci_high", "within_noise", "stereotype_retained", "factual_retained",
                   "definitional_retained", "definitional_acc", "agreement_acc", "agreement_share", "abs_bias",
                   "bls_corr", "gender_mass", "kl", "kl_gendered", "ppl_ratio", *VERDICTS, "seconds")
# the rest of what the host computes for every row: after the leading columns, never a method's own details
SELECTIVITY_COLUMNS = tuple(
    f"{name}{suffix}"
    for name in ("a_s", "a_f", "b", "stereotype_retained", "factual_retained", "definitional_gap",
                 "definitional_retained", "female_noun_share", "male_noun_share")
    for suffix in ("", "_ci_low", "_ci_high")
) + ("professions_scored", "professions_left_out")
BENCHMARK_COLUMNS = ("crows_pct_stereotype", "crows_pct_stereotype_low", "crows_pct_stereotype_high", "crows_change",
                     "crows_change_low", "crows_change_high", "crows_loglik_diff", "winogender_gap",
                     "winogender_gap_change_pct", "winogender_bls_corr", "winogender_female_share",
                     "winogender_occupations", "winogender_left_out")
HEADLINE_BENCHMARK_COLUMNS = ("crows_pct_stereotype", "winogender_gap", "winogender_bls_corr")
TRAILING_COLUMNS = ("protocol", "error")
HOST_COLUMNS = (*LEADING_COLUMNS, *SELECTIVITY_COLUMNS, *BENCHMARK_COLUMNS, *TRAILING_COLUMNS)
INTERVAL_COLUMNS = ("gap_ci_low", "gap_ci_high", "change_ci_low", "change_ci_high")


def summary_frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Rows in a fixed column order: headline columns, then method-specific ones, then protocol and error."""
    frame = pd.DataFrame(list(rows))
    extra = [c for c in frame.columns if c not in HOST_COLUMNS]
    ordered = list(dict.fromkeys(c for c in (*LEADING_COLUMNS, *SELECTIVITY_COLUMNS, *BENCHMARK_COLUMNS, *extra,
                                             *TRAILING_COLUMNS) if c in frame.columns))
    return frame[ordered]


def render(header: dict[str, Any], rows: Sequence[dict[str, Any]], fmt: str) -> str:
    if fmt not in FORMATS:
        raise DebiasKitError(f"unknown format {fmt!r}; accepted: {', '.join(FORMATS)}")
    if fmt == "json":
        return json.dumps({**header, "methods": [jsonable(row) for row in rows]}, indent=2, allow_nan=False)
    frame = summary_frame(rows)
    if fmt == "csv":
        return frame.to_csv(index=False)
    cells = [[_cell(value) for value in record] for record in frame.itertuples(index=False)]
    if fmt == "markdown":
        return _markdown(list(frame.columns), cells)
    if fmt == "latex":
        return _latex(list(frame.columns), cells)
    title = (f"model={header.get('model')}  dataset={header.get('dataset')}  templates={header.get('templates')}  "
             f"seed={header.get('seed')}")
    return title + "\n" + _plain(list(frame.columns), cells)


def headline_table(header: dict[str, Any], rows: Sequence[dict[str, Any]]) -> str:
    """The terminal view of a comparison: one row per method with the headline columns (the gap's interval as one
    cell), then each method's own columns (layers, latents, probe accuracies) and errors on a line of their own."""
    frame = summary_frame(rows)
    shown = [c for c in LEADING_COLUMNS if c in frame.columns and c not in (*INTERVAL_COLUMNS, *VERDICTS)]
    shown += [c for c in HEADLINE_BENCHMARK_COLUMNS if c in frame.columns]
    after_gap = shown.index("stereotype_gap") + 1 if "stereotype_gap" in shown else len(shown)
    columns = (shown[:after_gap] + (["gap_95ci"] if "gap_ci_low" in frame.columns else []) + shown[after_gap:]
               + ["protocol"])
    cells = []
    for row in rows:
        values = {**row, "gap_95ci": _interval(row.get("gap_ci_low"), row.get("gap_ci_high"))}
        cells.append([_cell(values.get(column)) for column in columns])
    details = []
    for row in rows:
        own = {k: v for k, v in row.items() if k not in HOST_COLUMNS and _cell(v)}
        name = row_label(row)
        if row.get("status") != "ok":
            details.append(f"  {name}: failed: {row.get('error')}")
        elif own:
            details.append(f"  {name}: " + "; ".join(f"{k}={_cell(v)}" for k, v in own.items()))
    title = (f"model={header.get('model')}  dataset={header.get('dataset')}  templates={header.get('templates')}  "
             f"seed={header.get('seed')}")
    footer = ["method details:", *details] if details else []
    footer.append("(per-job verdicts and every column: --format csv or json, or --out DIR)")
    return title + "\n" + _plain(columns, cells) + "\n".join(footer) + "\n"


def row_label(row: dict[str, Any]) -> str:
    """A row's method, after its model in a run of several models."""
    return " ".join(filter(None, (row.get("model"), row["method"])))


def _interval(low: Any, high: Any) -> str:
    if low is None or high is None or any(isinstance(v, float) and math.isnan(v) for v in (low, high)):
        return ""
    return f"{_cell(low)} to {_cell(high)}"


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.1f}" if abs(value) >= 100 else f"{value:.4f}" if abs(value) < 1 else f"{value:.3f}"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def _plain(columns: list[str], cells: list[list[str]]) -> str:
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def _markdown(columns: list[str], cells: list[list[str]]) -> str:
    escape = lambda text: text.replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(escape(v) for v in row) + " |" for row in cells]
    return "\n".join(lines) + "\n"


LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    return "".join(LATEX_SPECIALS.get(char, char) for char in text)


def _latex(columns: list[str], cells: list[list[str]]) -> str:
    lines = [r"\begin{tabular}{l" + "r" * (len(columns) - 1) + "}", r"\toprule",
             " & ".join(latex_escape(c) for c in columns) + r" \\", r"\midrule"]
    lines += [" & ".join(latex_escape(v) for v in row) + r" \\" for row in cells]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def jsonable(value: Any) -> Any:
    """`value` with numpy scalars as Python numbers and NaN or infinity as None, as JSON can hold it."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def label_of(header: dict[str, Any]) -> str:
    """The run's model, data set, templates and seed, as report titles and figures name them."""
    return (f"model {header.get('model')} · data set {header.get('dataset')} · templates {header.get('templates')} · "
            f"seed {header.get('seed')}")
