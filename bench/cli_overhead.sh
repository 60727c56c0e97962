#!/usr/bin/env bash
# Per-task overhead of running a trivial command many times on 2 slots, side by side
# in one run: shoal (recording every task in its SQLite store), xargs -P2, GNU
# parallel -j2 and a plain sequential spawn loop (the floor of fork+exec here).
#
#   bench/cli_overhead.sh [TASKS] [RUNS]      (defaults: 2000 tasks, 7 runs each)
#
# Needs hyperfine and GNU parallel (installed from Debian when missing) and a
# release build of shoal. Prints hyperfine's table and the ratios of the medians.
set -euo pipefail
cd "$(dirname "$0")/.."
tasks=${1:-2000}
runs=${2:-7}

missing=()
command -v hyperfine >/dev/null || missing+=(hyperfine)
command -v parallel >/dev/null || missing+=(parallel)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
cargo build --release --locked -q
shoal=$PWD/target/release/shoal
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
seq "$tasks" >"$work/inputs"
true_bin=$(command -v true)

# The spawn floor: one fork+exec+wait after the other, from a small C-like loop
# (perl's system() execs directly when given a list).
cat >"$work/spawn_loop.pl" <<PERL
for my \$i (1..$tasks) { system('$true_bin', \$i) == 0 or die; }
PERL

hyperfine --runs "$runs" --warmup 1 --export-json "$work/result.json" \
  --prepare "rm -f $work/s.db $work/s.db-wal $work/s.db-shm" \
  -n shoal "$shoal --store $work/s.db run -j2 --no-progress $true_bin :::: $work/inputs" \
  -n "xargs -P2" "xargs -P2 -n1 $true_bin <$work/inputs" \
  -n "parallel -j2" "parallel -j2 $true_bin :::: $work/inputs" \
  -n "spawn loop" "perl $work/spawn_loop.pl"

python3 - "$work/result.json" "$tasks" <<'PY'
import json, sys
results = {r["command"]: r["median"] for r in json.load(open(sys.argv[1]))["results"]}
tasks = int(sys.argv[2])
shoal = results["shoal"]
print(f"\nmedians over {tasks} tasks (ms/task) and shoal's time as a ratio of each:")
for name, median in results.items():
    print(f"  {name:<14} {median * 1000 / tasks:6.3f} ms/task   shoal/{name} = {shoal / median:5.2f}x")
PY
