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
if [ -z "${SHOAL:-}" ]; then
  cargo build --release --locked -q -p shoal-cli
  SHOAL=$PWD/target/release/shoal
fi
PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}
work=$(mktemp -d)
as_pg=()
if [ "$(id -u)" = 0 ]; then
  chown postgres: "$work"
  as_pg=(runuser -u postgres --)
fi
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"${as_pg[@]}" "$PG_BIN/initdb" -D "$work/data" -U postgres --auth=trust -E UTF8 >/dev/null
"${as_pg[@]}" "$PG_BIN/pg_ctl" -D "$work/data" -l "$work/log" -w start \
  -o "-p $port -k $work -c listen_addresses=127.0.0.1 -c fsync=on -c synchronous_commit=on" >/dev/null
trap '"${as_pg[@]}" "$PG_BIN/pg_ctl" -D "$work/data" -m fast -w stop >/dev/null; rm -rf "$work"' EXIT
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
