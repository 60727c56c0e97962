#!/usr/bin/env bash
# 100,000 tasks in one run: shoal's peak memory and whether its rate holds as the
# queue drains. Compares the completion rate of the first 2,000 tasks (queue about
# 100,000 deep) with the last 2,000 (queue under 2,000 deep), from the store's own
# timestamps; then the pure scheduler's rate at queue depths 100 and 100,000.
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
first, last = rate(ends[:w]), rate(ends[-w:])
print(f"rate, first {w} tasks (queue ~{len(ends)} deep): {first:8.0f} tasks/s")
print(f"rate, last  {w} tasks (queue <{w} deep):      {last:8.0f} tasks/s")
print(f"deep / shallow: {first / last:.3f}")
PY
cargo run --release --locked -q -p shoal-core --example scheduler_rate
