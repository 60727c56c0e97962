#!/usr/bin/env bash
# Per-task overhead of running a trivial command many times on 2 slots, side by side
# in one run: shoal (recording every task in its SQLite store), xargs -P2, GNU
# parallel -j2 and a plain spawn loop in C (posix_spawn + wait, 2 at a time: the
# floor of starting processes here).
#
#   bench/cli_overhead.sh [TASKS] [ROUNDS]    (defaults: 2000 tasks, 7 rounds)
#
# Needs GNU parallel and gcc (installed from Debian when missing) and a release build
# of shoal. Prints each command's median and shoal's time over each, round by round.
set -euo pipefail
cd "$(dirname "$0")/.."
tasks=${1:-2000}
runs=${2:-7}

missing=()
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

# Round-robin: one run of each command per round, so that a drift of the machine's
# speed (these machines are shared) hits every command alike; shoal's ratio to each
# peer is taken within each round, then the median over the rounds.
python3 - "$tasks" "$runs" "$work" "$shoal" "$true_bin" <<'PY'
import os, statistics, subprocess, sys, time
tasks, runs, work, shoal, true_bin = int(sys.argv[1]), int(sys.argv[2]), *sys.argv[3:]
inputs = f"{work}/inputs"
commands = {
    "shoal": f"{shoal} --store {work}/s.db run -j2 --no-progress {true_bin} :::: {inputs}",
    "xargs -P2": f"xargs -P2 -n1 {true_bin} <{inputs}",
    "parallel -j2": f"parallel -j2 {true_bin} :::: {inputs}",
    "spawn loop": f"{work}/spawn_loop {tasks} {true_bin}",
}
def timed(command):
    for leftover in ("s.db", "s.db-wal", "s.db-shm"):
        try:
            os.remove(f"{work}/{leftover}")
        except FileNotFoundError:
            pass
    start = time.perf_counter()
    subprocess.run(command, shell=True, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start
for command in commands.values():  # warm-up
    timed(command)
times = {name: [] for name in commands}
for _ in range(runs):
    for name, command in commands.items():
        times[name].append(timed(command))
print(f"{runs} rounds of {tasks} tasks; medians (ms/task) and shoal's time over each, per round:")
for name, ts in times.items():
    ratios = [a / b for a, b in zip(times["shoal"], ts)]
    print(f"  {name:<14} {statistics.median(ts) * 1000 / tasks:6.3f} ms/task"
          f"   shoal/{name} = {statistics.median(ratios):5.2f}x"
          f"  (rounds: {min(ratios):.2f}-{max(ratios):.2f})")
PY
