#!/usr/bin/env bash
# A skewed workload on 2 slots: 190 short tasks (50 ms) and 9 long ones (2 s),
# the long ones last in input order, run with and without cost hints, against the
# lower bound max(total work / slots, longest task). Medians of RUNS runs.
#
#   bench/skew.sh [RUNS]        (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
cargo build --release --locked -q
shoal=$PWD/target/release/shoal
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
durations = [0.05] * 190 + [2.0] * 9
with open(f"{work}/hinted.jsonl", "w") as hinted, open(f"{work}/plain.jsonl", "w") as plain:
    for d in durations:
        hinted.write(json.dumps({"args": [str(d)], "cost": d}) + "\n")
        plain.write(json.dumps({"args": [str(d)]}) + "\n")
total, longest = sum(durations), max(durations)
print(f"{max(total / 2, longest):.3f}", file=open(f"{work}/bound", "w"))
PY
bound=$(cat "$work/bound")

run() { # name file
  for _ in $(seq "$runs"); do
    rm -f "$work"/s.db*
    python3 - "$shoal" "$work" "$2" <<'PY'
import subprocess, sys, time
shoal, work, tasks = sys.argv[1:]
start = time.perf_counter()
subprocess.run([shoal, "--store", f"{work}/s.db", "run", "-j2", "--no-progress",
                "--tasks", f"{work}/{tasks}", "sleep"], check=True, stderr=subprocess.DEVNULL)
print(time.perf_counter() - start)
PY
  done | sort -n | awk -v name="$1" -v bound="$bound" '{ t[NR] = $1 } END {
    m = t[int((NR + 1) / 2)]
    printf "%-22s median %6.3f s  = %.3fx the lower bound (%.3f s)\n", name, m, m / bound, bound }'
}
run "with cost hints" hinted.jsonl
run "without hints (FIFO)" plain.jsonl
