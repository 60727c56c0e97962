#!/usr/bin/env bash
# 5,000 x `true` on 2 slots, recorded in the embedded SQLite store and in a
# PostgreSQL store (a local cluster this script starts, fsync and
# synchronous_commit on, torn down at the end), alternately ROUNDS times; prints
# each run's wall time, the medians, and PostgreSQL's time over SQLite's.
#
#   bench/pg_store.sh [TASKS] [ROUNDS]          (default 5000 5)
#   SHOAL=path/to/shoal bench/pg_store.sh ...   (another build; no cargo build)
#   PG_BIN=/usr/lib/postgresql/15/bin           (default: the newest there)
set -euo pipefail
cd "$(dirname "$0")/.."
tasks=${1:-5000}
rounds=${2:-5}
source bench/pg_cluster.sh
seq "$tasks" >"$work/inputs"

# Seconds one run takes, recorded in the store $1 (which is made fresh first).
one() {
  local store=$1
  case $store in
    postgresql://*) "${as_pg[@]}" "$PG_BIN/psql" -q -h "$work" -p "$port" -U postgres -d postgres \
      -c "DROP DATABASE IF EXISTS bench" -c "CREATE DATABASE bench" >/dev/null 2>&1 ;;
    *) rm -f "$store" "$store-wal" "$store-shm" ;;
  esac
  local start end
  start=$(date +%s.%N)
  "$SHOAL" --store "$store" run -j2 --no-progress "$(type -P true)" :::: "$work/inputs" 2>/dev/null
  end=$(date +%s.%N)
  echo "$end - $start" | bc
}

sqlite=() pg=()
for round in $(seq "$rounds"); do
  s=$(one "$work/s.db")
  p=$(one "postgresql://postgres@127.0.0.1:$port/bench")
  sqlite+=("$s") pg+=("$p")
  echo "round $round: SQLite $s s, PostgreSQL $p s"
done
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ms=$(median "${sqlite[@]}")
mp=$(median "${pg[@]}")
echo "$tasks tasks, 2 slots, medians of $rounds: SQLite $ms s, PostgreSQL $mp s, ratio $(echo "scale=2; $mp / $ms" | bc)"
