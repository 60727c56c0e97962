#!/usr/bin/env bash
# Runs every test of shoal on a fresh machine: formatting and lints, then unit,
# property, integration (real processes, real kills) and snapshot tests of the Rust
# crates, then the Python package's pytest suite against the package installed
# from this tree as `pip install .` does. Installs what they need first.
set -euo pipefail
cd "$(dirname "$0")/.."

# The integration tests use python3 (a memory hog), procps-style tools, GNU
# parallel (the reference some CLI behaviour is compared against, side by side) and
# PostgreSQL's server programs (each test binary starts its own throwaway cluster
# with initdb and pg_ctl), iproute2, and for the dashboard's browser test chromium
# driven by playwright-core under node, from a plain Debian and npm; install them
# when missing.
need=()
command -v parallel >/dev/null || need+=(parallel)
command -v python3 >/dev/null || need+=(python3)
command -v ps >/dev/null || need+=(procps)
# `shoal man` is checked by rendering it with groff and man.
command -v groff >/dev/null || need+=(groff-base)
command -v man >/dev/null || need+=(man-db)
python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
# The partition test puts an agent in a network namespace (`ip netns`, as root).
command -v ip >/dev/null || need+=(iproute2)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi

[ -d tests/browser/node_modules/playwright-core ] ||
  npm install --prefix tests/browser --no-audit --no-fund --silent

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo build --workspace --all-targets --locked
# The public crate's docs: every item documented, every link resolved.
RUSTDOCFLAGS="-D warnings" cargo doc -p shoal-pool --no-deps --locked
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked 2>&1 | tee "$log"

# The Python package, installed into a private environment exactly as a user's
# `pip install .` does: pip fetches maturin into an isolated build environment, which
# builds the engine in release mode.
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q pytest
.venv/bin/pip install -q .
SHOAL_BIN="$PWD/target/debug/shoal" .venv/bin/python -m pytest tests/python 2>&1 | tee -a "$log"

# One closing line for the whole suite (cargo prints one per test binary, pytest
# one line such as "3 failed, 80 passed in 9.1s").
awk '
  /^test result:/ { passed += $4; failed += $6 }
  /^=+ .* in [0-9.]+s/ {
    for (i = 2; i < NF; i++) {
      if ($(i + 1) ~ /^passed/) passed += $i
      if ($(i + 1) ~ /^(failed|errors?)/) failed += $i
    }
  }
  END { printf "tests: %d passed, %d failed\n", passed, failed }' "$log"
