#!/usr/bin/env bash
# A run of TASKS tasks stopped early and resumed: the resume's peak memory, which
# must not grow with the tasks it runs (it reads them from the store a page at a
# time). The first run gets SIGTERM after a second, so the rest of its input is
# recorded unrun; a first resume is killed (kill -9) SECONDS in, as a crash would;
# a second resume runs what is left. Prints both resumes' peak RSS and the counts.
#
#   bench/resume_scale.sh [TASKS] [SECONDS]      (default 300000 1)
#   SHOAL=path/to/shoal bench/resume_scale.sh ...   (another build; no cargo build)
set -euo pipefail
cd "$(dirname "$0")/.."
tasks=${1:-300000}
seconds=${2:-1}
if [ -z "${SHOAL:-}" ]; then
  cargo build --release --locked -q
  SHOAL=$PWD/target/release/shoal
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
seq "$tasks" >"$work/inputs"
counts() {
  python3 - "$work/s.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
print(", ".join(f"{n} {s}" for s, n in db.execute(
    "SELECT status, count(*) FROM tasks GROUP BY status ORDER BY status")))
PY
}

"$SHOAL" --store "$work/s.db" run -j2 --no-progress "$(type -P true)" :::: "$work/inputs" \
  2>/dev/null &
sleep 1
# SIGTERM, not SIGINT: a background job of a script ignores SIGINT.
kill -TERM $!
wait $! || true
echo "after SIGTERM: $(counts)"

/usr/bin/time -f "%M" -o "$work/rss1" "$SHOAL" --store "$work/s.db" run --resume --no-progress \
  2>/dev/null &
sleep "$seconds"
# The resume itself, not /usr/bin/time, is killed.
kill -9 "$(pgrep -P $!)"
wait $! || true
echo "first resume, killed after $seconds s: peak RSS $(( $(tail -1 "$work/rss1") / 1024 )) MiB; $(counts)"

/usr/bin/time -f "%M" -o "$work/rss2" "$SHOAL" --store "$work/s.db" run --resume --no-progress
echo "second resume, to the end: peak RSS $(( $(tail -1 "$work/rss2") / 1024 )) MiB; $(counts)"
