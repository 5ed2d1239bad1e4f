"""The same `debiaskit sweep` on Ray with --workers 1, then --workers 2: the wall seconds of each, the mean seconds
per cell, the speed-up, and the largest difference of any number between the two sweeps (they must agree).

    .venv/bin/python benchmarks/ray_workers.py runs/ray-workers            # 8 settings of LEACE's blend
    .venv/bin/python benchmarks/ray_workers.py runs/ray-workers -- -m logit-rebalance --knob strength=0.2,0.4,...
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_SWEEP = ["-m", "leace", "-o", "leace.edit_positions=all", "--knob", "blend=0.3,0.4,0.5,0.6,0.7,0.8,0.9,1"]
DEBIASKIT = Path(sys.executable).parent / "debiaskit"


def main() -> None:
    out = Path(sys.argv[1])
    sweep_args = sys.argv[3:] if len(sys.argv) > 2 and sys.argv[2] == "--" else DEFAULT_SWEEP
    out.mkdir(parents=True, exist_ok=True)
    seconds, sweeps = {}, {}
    for workers in (1, 2):
        folder = out / f"workers-{workers}"
        started = time.perf_counter()
        with open(out / f"workers-{workers}.log", "w") as log:
            subprocess.run([str(DEBIASKIT), "sweep", *sweep_args, "--executor", "ray", "--workers", str(workers),
                            "--out", str(folder), "--force"], stdout=log, stderr=log, check=True)
        seconds[workers] = time.perf_counter() - started
        sweeps[workers] = json.loads((folder / "sweep.json").read_text())
    differences = [abs(a[key] - b[key]) for part in ("points", "matched")
                   for a, b in zip(sweeps[1][part], sweeps[2][part]) for key in a
                   if isinstance(a[key], float) and key != "seconds" and not math.isnan(a[key])]
    for workers in (1, 2):
        per_cell = sum(p["seconds"] for p in sweeps[workers]["points"]) / len(sweeps[workers]["points"])
        print(f"workers {workers}: {seconds[workers]:.1f} s, {per_cell:.1f} s per cell", file=sys.stderr)
    print(f"speed-up {seconds[1] / seconds[2]:.2f}x; largest difference {max(differences, default=0.0):.1e} over "
          f"{len(differences)} numbers", file=sys.stderr)


if __name__ == "__main__":
    main()
