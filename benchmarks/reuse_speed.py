"""The reused path against the full path, in one process on the same prompts and methods: a real `debiaskit compare`
run twice, first with every forward from the embedding (`reuse_residuals=False`), then as it runs by default (each
declared method's forward started above what it touches, `debiaskit.reuse`). Per method: the seconds of each path and
their ratio, and the largest difference of any scored probability (occupation prompts, controls, professions, the
benchmarks' sets) and of any number in the table; exits 1 when a probability differs by more than --tolerance
(default 1e-5).

    python benchmarks/reuse_speed.py [--json FILE] [--tolerance 1e-5] -- [compare arguments, e.g. -m none -m leace]
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from same_table import differences, read_rows

import debiaskit.cli
import debiaskit.commands.compare

SCORED_SETS = ("prompts.csv", "controls.csv", "professions.csv", "crows.csv", "winogender.csv")
PROBABILITY_COLUMNS = ("p_male", "p_female", "log_likelihood_more", "log_likelihood_less")


def run_compare(compare_args: list[str], out: Path, reuse: bool) -> float:
    """Run `debiaskit compare` into `out`; its wall seconds."""
    original = debiaskit.commands.compare.run_comparison
    debiaskit.commands.compare.run_comparison = functools.partial(original, reuse_residuals=reuse)
    started = time.perf_counter()
    try:
        debiaskit.cli.cli.main(["compare", *compare_args, "--out", str(out)], standalone_mode=False)
    except SystemExit as stop:
        if stop.code:
            raise
    finally:
        debiaskit.commands.compare.run_comparison = original
    return time.perf_counter() - started


def largest_probability_gaps(full: Path, reused: Path) -> dict[str, float]:
    """Per method, the largest |full - reused| over every scored item's probabilities (rows in the same order)."""
    gaps: dict[str, float] = {}
    for name in SCORED_SETS:
        if not (full / name).is_file():
            continue
        a, b = pd.read_csv(full / name), pd.read_csv(reused / name)
        if len(a) != len(b) or list(a["method"]) != list(b["method"]):
            raise SystemExit(f"{name}: the two runs scored different items")
        for column in (c for c in PROBABILITY_COLUMNS if c in a):
            for method, gap in (a[column] - b[column]).abs().groupby(a["method"]).max().items():
                gaps[method] = max(gaps.get(method, 0.0), float(gap))
    return gaps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, default=None, help="write the figures here as JSON")
    parser.add_argument("--tolerance", type=float, default=1e-5)
    parser.add_argument("compare_args", nargs=argparse.REMAINDER, help="arguments for `debiaskit compare` (after --)")
    args = parser.parse_args()
    compare_args = [a for a in args.compare_args if a != "--"]
    with tempfile.TemporaryDirectory() as scratch:
        full_dir, reused_dir = Path(scratch) / "full", Path(scratch) / "reused"
        full_seconds = run_compare(compare_args, full_dir, reuse=False)
        reused_seconds = run_compare(compare_args, reused_dir, reuse=True)
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
        full_rows, reused_rows = read_rows(full_dir), read_rows(reused_dir)
        probability_gaps = largest_probability_gaps(full_dir, reused_dir)
    table_gaps: dict[str, float] = {}
    for method, _, gap in differences(full_rows, reused_rows):
        table_gaps[method] = max(table_gaps.get(method, 0.0), gap)
    reused_by_method = {row["method"]: row for row in reused_rows}
    methods = []
    lines = [f"{'method':24s}{'full s':>9s}{'reused s':>10s}{'ratio':>7s}{'largest dp':>12s}{'largest d(table)':>18s}"]
    for row in full_rows:
        name, again = row["method"], reused_by_method.get(row["method"], {})
        entry = {"method": name, "full_seconds": row.get("seconds"), "reused_seconds": again.get("seconds"),
                 "largest_probability_difference": probability_gaps.get(name),
                 "largest_table_difference": table_gaps.get(name)}
        methods.append(entry)
        ratio = entry["full_seconds"] / entry["reused_seconds"] if entry["reused_seconds"] else float("nan")
        gap, table_gap = entry["largest_probability_difference"] or 0, entry["largest_table_difference"] or 0
        lines.append(f"{name:24s}{entry['full_seconds'] or 0:9.1f}{entry['reused_seconds'] or 0:10.1f}{ratio:7.2f}"
                     f"{gap:12.1e}{table_gap:18.1e}")
    worst = max(probability_gaps.values(), default=0.0)
    lines.append(f"whole compare: full {full_seconds:.1f} s, reused {reused_seconds:.1f} s, "
                 f"{full_seconds / reused_seconds:.2f}x; largest probability difference {worst:.1e} "
                 f"(tolerance {args.tolerance:g}); peak memory {peak_mib:.0f} MiB (the larger of the two runs)")
    print("\n".join(lines), file=sys.stderr)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "benchmark": "reuse_speed", "arguments": compare_args, "machine": platform.platform(),
            "cpu_threads": torch.get_num_threads(), "full_seconds": round(full_seconds, 2),
            "reused_seconds": round(reused_seconds, 2), "largest_probability_difference": worst,
            "tolerance": args.tolerance, "peak_memory_mib": round(peak_mib), "methods": methods,
        }, indent=1) + "\n", encoding="utf-8")
    sys.exit(1 if worst > args.tolerance else 0)


if __name__ == "__main__":
    main()
