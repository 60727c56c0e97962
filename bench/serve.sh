#!/usr/bin/env bash
# `shoal serve` over a store of TASKS tasks (one run of `test N -gt 10` on 4 slots:
# tasks 1 to 10 fail), loaded from a second process on loopback by ApacheBench
# (REQUESTS requests, 4 at a time, per URL): the run page's data, a filtered page of
# the task table, a text search, /metrics and the dashboard's page; prints each
# URL's p50 and p95 in ms.
#
#   bench/serve.sh [TASKS] [REQUESTS]           (default 100000 200)
#   SHOAL=path/to/shoal bench/serve.sh ...      (another build; no cargo build)
set -euo pipefail
cd "$(dirname "$0")/.."
tasks=${1:-100000}
requests=${2:-200}
command -v ab >/dev/null ||
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq apache2-utils; }
if [ -z "${SHOAL:-}" ]; then
  cargo build --release --locked -q -p shoal-cli
  SHOAL=$PWD/target/release/shoal
fi
work=$(mktemp -d)
server=
trap '[ -z "$server" ] || kill "$server"; rm -rf "$work"' EXIT
seq "$tasks" >"$work/inputs"
start=$(date +%s.%N)
"$SHOAL" --store "$work/s.db" run -j 4 -a "$work/inputs" test {} -gt 10 >/dev/null 2>&1 || true
echo "store: $tasks tasks in $(echo "$(date +%s.%N) - $start" | bc | cut -c1-5) s, $(du -h "$work/s.db" | cut -f1)"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$SHOAL" --store "$work/s.db" serve --listen "127.0.0.1:$port" >"$work/serve.out" 2>&1 &
server=$!
until grep -q listening "$work/serve.out" 2>/dev/null; do sleep 0.05; done

printf '%-55s %8s %8s\n' url p50_ms p95_ms
for path in /api/v1/runs/1 '/api/v1/runs/1/tasks?status=failed&limit=100' \
  "/api/v1/runs/1/tasks?after=$((tasks / 2))&limit=100" '/api/v1/runs/1/tasks?q=99999&limit=100' \
  /api/v1/runs/1/failures /metrics /; do
  out=$(ab -q -n "$requests" -c 4 "http://127.0.0.1:$port$path" 2>&1)
  p50=$(awk '$1 == "50%" { print $2 }' <<<"$out")
  p95=$(awk '$1 == "95%" { print $2 }' <<<"$out")
  failed=$(awk '/^Failed requests/ { print $3 }' <<<"$out")
  printf '%-55s %8s %8s%s\n' "$path" "$p50" "$p95" "$([ "$failed" = 0 ] || echo "  ($failed failed)")"
done
