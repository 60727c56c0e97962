#!/usr/bin/env bash
# Builds shoal and runs a real example of the main job on the embedded store:
# checksum every file under /usr/share/doc with 2 slots, a timeout and retries,
# then show what the store recorded.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked
shoal=target/release/shoal
store=$(mktemp -d)/demo.db

inputs="${store%.db}.inputs"
find /usr/share/doc -type f -name '*.gz' >"$inputs.all"
head -n 500 "$inputs.all" >"$inputs"
"$shoal" --store "$store" run -j2 --timeout 10 --retries 1 --no-progress \
  'gzip -dc {} | sha256sum | cut -c1-16' :::: "$inputs" | tail -n 3
"$shoal" --store "$store" runs
"$shoal" --store "$store" stats
"$shoal" --store "$store" results --status succeeded >"$inputs.results"
head -n 4 "$inputs.results"
