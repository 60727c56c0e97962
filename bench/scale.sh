#!/usr/bin/env bash
# TASKS tasks in one run: shoal's peak memory and whether its rate holds from the
# first tasks to the last. Prints the completion rate of 2,000-task windows at every
# tenth of the run, from the store's own timestamps (the input is read as the run
# goes: the engine holds at most 10,000 waiting tasks, so "queue deep" below is the
# input left to run, not the scheduler's queue); then the pure scheduler's rate at
# queue depths 100 and 100,000. 1,000,000 tasks take about 10 minutes on 2 cores.
#
#   bench/scale.sh [TASKS]        (default 100000)
set -euo pipefail
cd "$(dirname "$0")/.."
tasks=${1:-100000}
cargo build --release --locked -q
shoal=$PWD/target/release/shoal
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
seq "$tasks" >"$work/inputs"

/usr/bin/time -f "%M" -o "$work/rss" \
  "$shoal" --store "$work/s.db" run -j2 --no-progress "$(type -P true)" :::: "$work/inputs"
echo "peak RSS of shoal: $(( $(cat "$work/rss") / 1024 )) MiB for $tasks tasks"

python3 - "$work/s.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
ends = [r[0] for r in db.execute("SELECT ended_at FROM attempts ORDER BY ended_at")]
w = 2000
def rate(xs):
    return (len(xs) - 1) / (xs[-1] - xs[0])
# Windows of w tasks at every tenth of the run: a rate that fell with the queue's
# depth would rise from the first window to the last; noise has no trend.
step = max(len(ends) // 10, w)
starts = list(range(0, len(ends) - w + 1, step)) + [len(ends) - w]
for i in starts:
    print(f"rate, tasks {i:>7}-{i + w:<7} (queue ~{len(ends) - i:>7} deep): {rate(ends[i:i + w]):8.0f} tasks/s")
first, last = rate(ends[:w]), rate(ends[-w:])
print(f"first / last window: {first / last:.3f}")
PY
cargo run --release --locked -q -p shoal-core --example scheduler_rate
