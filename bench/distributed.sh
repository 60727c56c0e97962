#!/usr/bin/env bash
# 5,000 x `true` on 2 slots: on the embedded SQLite store, on a PostgreSQL store run
# by one `shoal run` (its own slots), and through PostgreSQL across processes (`shoal
# run --detach` submits, one idle `shoal worker -j 2` runs it, `shoal wait` sees its
# end), alternately ROUNDS times, on a local cluster this script starts (fsync and
# synchronous_commit on) and tears down; prints each round, the medians and the
# ratios to SQLite.
#
#   bench/distributed.sh [TASKS] [ROUNDS]          (default 5000 5)
#   SHOAL=path/to/shoal bench/distributed.sh ...   (another build; no cargo build)
#   PG_BIN=/usr/lib/postgresql/15/bin              (default: the newest there)
set -euo pipefail
cd "$(dirname "$0")/.."
tasks=${1:-5000}
rounds=${2:-5}
source bench/pg_cluster.sh
seq "$tasks" >"$work/inputs"
url="postgresql://postgres@127.0.0.1:$port/bench"
true=$(type -P true)

fresh_db() {
  "${as_pg[@]}" "$PG_BIN/psql" -q -h "$work" -p "$port" -U postgres -d postgres \
    -c "DROP DATABASE IF EXISTS bench" -c "CREATE DATABASE bench" >/dev/null 2>&1
}
now() { date +%s.%N; }

# Seconds of one run on SQLite, and on PostgreSQL by one `shoal run`.
sqlite_run() {
  rm -f "$work/s.db" "$work/s.db-wal" "$work/s.db-shm"
  local start; start=$(now)
  "$SHOAL" --store "$work/s.db" run -j2 --no-progress "$true" :::: "$work/inputs" 2>/dev/null
  echo "$(now) - $start" | bc
}
pg_run() {
  fresh_db
  local start; start=$(now)
  "$SHOAL" --store "$url" run -j2 --no-progress "$true" :::: "$work/inputs" 2>/dev/null
  echo "$(now) - $start" | bc
}
# Seconds from the submit to the end `shoal wait` sees, with an idle agent waiting.
agent_run() {
  fresh_db
  "$SHOAL" --store "$url" store init >/dev/null
  "$SHOAL" --store "$url" worker -j2 2>/dev/null &
  local worker=$! start run
  sleep 0.5
  start=$(now)
  run=$("$SHOAL" --store "$url" run --detach "$true" :::: "$work/inputs")
  "$SHOAL" --store "$url" wait "$run" 2>/dev/null
  echo "$(now) - $start" | bc
  kill -TERM "$worker"
  wait "$worker"
}

s=() p=() a=()
for round in $(seq "$rounds"); do
  s+=("$(sqlite_run)")
  p+=("$(pg_run)")
  a+=("$(agent_run)")
  echo "round $round: SQLite ${s[-1]} s, PostgreSQL (one shoal run) ${p[-1]} s, PostgreSQL (submit + shoal worker) ${a[-1]} s"
done
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ms=$(median "${s[@]}")
mp=$(median "${p[@]}")
ma=$(median "${a[@]}")
echo "$tasks tasks, 2 slots, medians of $rounds: SQLite $ms s, PostgreSQL one shoal run $mp s (ratio $(echo "scale=2; $mp / $ms" | bc)), submit + shoal worker $ma s (ratio $(echo "scale=2; $ma / $ms" | bc))"
