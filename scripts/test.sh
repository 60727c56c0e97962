#!/usr/bin/env bash
# Runs every test of shoal on a fresh machine: formatting and lints, then unit,
# property, integration (real processes, real kills) and snapshot tests. Installs
# what they need first.
set -euo pipefail
cd "$(dirname "$0")/.."

# The integration tests use python3 (a memory hog) and procps-style tools from a
# plain Debian; install them when missing.
need=()
command -v python3 >/dev/null || need+=(python3)
command -v ps >/dev/null || need+=(procps)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo build --workspace --all-targets --locked
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked 2>&1 | tee "$log"
# One closing line for the whole suite (cargo prints one per test binary).
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "tests: %d passed, %d failed\n", passed, failed }' "$log"
