#!/bin/sh
# The same `debiaskit sweep` on Ray with --workers 1, then --workers 2: wall seconds of each, their ratio, and the
# largest difference of any number between the two sweep.json files (they must agree).
# usage: benchmarks/ray_workers.sh OUT_DIR [sweep arguments]   (default: 8 settings of LEACE's blend)
set -eu
out=${1:?usage: benchmarks/ray_workers.sh OUT_DIR [sweep arguments]}
shift
[ "$#" -gt 0 ] || set -- -m leace -o leace.edit_positions=all --knob blend=0.3,0.4,0.5,0.6,0.7,0.8,0.9,1
bin=$(dirname "$0")/../.venv/bin
for workers in 1 2; do
  rm -rf "$out/workers-$workers"
  start=$(date +%s.%N)
  "$bin/debiaskit" sweep "$@" --executor ray --workers "$workers" --out "$out/workers-$workers" \
    > "$out/workers-$workers.txt" 2> "$out/workers-$workers.log"
  echo "$workers $(echo "$(date +%s.%N) - $start" | bc)" >> "$out/seconds.txt"
done
"$bin/python" - "$out" <<'PY'
import json, math, sys
from pathlib import Path

out = Path(sys.argv[1])
seconds = dict(line.split() for line in (out / "seconds.txt").read_text().splitlines()[-2:])
one, two = (json.loads((out / f"workers-{w}" / "sweep.json").read_text()) for w in (1, 2))
diff = max((abs(a[k] - b[k]) for part in ("points", "matched") for a, b in zip(one[part], two[part])
            for k in a if isinstance(a[k], float) and k != "seconds" and not math.isnan(a[k])), default=0.0)
print(f"workers 1: {float(seconds['1']):.1f} s, workers 2: {float(seconds['2']):.1f} s, "
      f"speed-up {float(seconds['1']) / float(seconds['2']):.2f}x, largest difference {diff:.1e}")
PY
