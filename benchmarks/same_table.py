"""Do two `debiaskit compare --out` runs give the same table? For a CPU and a GPU run of the same command.

For every method in both runs and every numeric column of `summary.json` but the timings, the largest absolute
difference; exits 1 when one exceeds the tolerance (default 1e-3, the performance issue's bar), and 2 when the runs
share no method.

    python benchmarks/same_table.py RUN_A RUN_B [--tolerance 1e-3]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

NOT_COMPARED = {"seconds"}  # wall time is expected to differ


def numeric_columns(row: dict[str, Any]) -> dict[str, float]:
    """The row's numbers; null (how summary.json writes NaN) reads as NaN."""
    def is_number(value: Any) -> bool:
        return value is None or isinstance(value, (int, float)) and not isinstance(value, bool)

    return {key: math.nan if value is None else float(value) for key, value in row.items()
            if key not in NOT_COMPARED and is_number(value)}


def differences(rows_a: list[dict[str, Any]], rows_b: list[dict[str, Any]]) -> list[tuple[str, str, float]]:
    """(method, column, |a - b|) for every numeric column the two runs' rows of the same method share; a column
    that is NaN (null) in one run and a number in the other counts as an infinite difference, one empty in both
    is left out."""
    by_method_b = {row["method"]: row for row in rows_b}
    found = []
    for row_a in rows_a:
        row_b = by_method_b.get(row_a["method"])
        if row_b is None:
            continue
        values_b = numeric_columns(row_b)
        for column, value_a in numeric_columns(row_a).items():
            if column not in values_b:
                continue
            value_b = values_b[column]
            if math.isnan(value_a) and math.isnan(value_b):
                continue  # empty in both: nothing to compare
            gap = math.inf if math.isnan(value_a) or math.isnan(value_b) else abs(value_a - value_b)
            found.append((row_a["method"], column, gap))
    return found


def read_rows(run: Path) -> list[dict[str, Any]]:
    summary = run / "summary.json"
    if not summary.is_file():
        raise SystemExit(f"{summary} not found; pass the --out folder of a `debiaskit compare` run")
    return json.loads(summary.read_text(encoding="utf-8"))["methods"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    parser.add_argument("--tolerance", type=float, default=1e-3)
    args = parser.parse_args()
    found = differences(read_rows(args.run_a), read_rows(args.run_b))
    if not found:
        print("the two runs share no method", file=sys.stderr)
        sys.exit(2)
    worst: dict[str, tuple[str, float]] = {}
    for method, column, gap in found:
        if method not in worst or gap > worst[method][1]:
            worst[method] = (column, gap)
    print(f"{'method':28s} {'largest difference':>18s}  column")
    for method, (column, gap) in worst.items():
        print(f"{method:28s} {gap:18.2e}  {column}")
    over = [(method, column, gap) for method, column, gap in found if gap > args.tolerance]
    print(f"{len(found)} values compared over {len(worst)} methods; {len(over)} differ by more than {args.tolerance:g}")
    sys.exit(1 if over else 0)


if __name__ == "__main__":
    main()
