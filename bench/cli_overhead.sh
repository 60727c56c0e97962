#!/usr/bin/env bash
# Per-task overhead of running a trivial command many times on 2 slots, side by side
# in one run: shoal (recording every task in its SQLite store), xargs -P2, GNU
# parallel -j2 and a plain spawn loop in C (posix_spawn + wait, 2 at a time: the
# floor of starting processes here).
#
#   bench/cli_overhead.sh [TASKS] [RUNS]      (defaults: 2000 tasks, 7 runs each)
#
# Needs hyperfine, GNU parallel and gcc (installed from Debian when missing) and a
# release build of shoal. Prints hyperfine's table and the ratios of the medians.
set -euo pipefail
cd "$(dirname "$0")/.."
tasks=${1:-2000}
runs=${2:-7}

missing=()
command -v hyperfine >/dev/null || missing+=(hyperfine)
command -v parallel >/dev/null || missing+=(parallel)
command -v gcc >/dev/null || missing+=(gcc)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
cargo build --release --locked -q
shoal=$PWD/target/release/shoal
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
seq "$tasks" >"$work/inputs"
true_bin=$(type -P true)

# The spawn floor: posix_spawn and wait, keeping 2 processes running, nothing else.
cat >"$work/spawn_loop.c" <<'C'
#include <spawn.h>
#include <stdlib.h>
#include <sys/wait.h>
extern char **environ;
int main(int argc, char **argv) {
    int tasks = atoi(argv[1]), running = 0, started = 0, status;
    char *args[] = {argv[2], "x", NULL};
    while (started < tasks || running > 0) {
        for (; running < 2 && started < tasks; running++, started++) {
            pid_t pid;
            if (posix_spawn(&pid, argv[2], NULL, NULL, args, environ) != 0) return 1;
        }
        if (wait(&status) < 0) return 1;
        running--;
    }
    return 0;
}
C
gcc -O2 -o "$work/spawn_loop" "$work/spawn_loop.c"

hyperfine --runs "$runs" --warmup 1 --export-json "$work/result.json" \
  --prepare "rm -f $work/s.db $work/s.db-wal $work/s.db-shm" \
  -n shoal "$shoal --store $work/s.db run -j2 --no-progress $true_bin :::: $work/inputs" \
  -n "xargs -P2" "xargs -P2 -n1 $true_bin <$work/inputs" \
  -n "parallel -j2" "parallel -j2 $true_bin :::: $work/inputs" \
  -n "spawn loop" "$work/spawn_loop $tasks $true_bin"

python3 - "$work/result.json" "$tasks" <<'PY'
import json, sys
results = {r["command"]: r["median"] for r in json.load(open(sys.argv[1]))["results"]}
tasks = int(sys.argv[2])
shoal = results["shoal"]
print(f"\nmedians over {tasks} tasks (ms/task) and shoal's time as a ratio of each:")
for name, median in results.items():
    print(f"  {name:<14} {median * 1000 / tasks:6.3f} ms/task   shoal/{name} = {shoal / median:5.2f}x")
PY
