#!/usr/bin/env bash
# Builds and runs the whole test suite: formatting, lints, Rust unit and
# integration tests, and the interop tests that drive real NSQ client
# libraries (pynsq, gnsq) against the real triaged binary.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh
ensure_rust

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings

echo "== cargo test"
cargo test --workspace

if [ -f tests/interop/requirements.txt ]; then
    echo "== interop tests (real NSQ clients against triaged)"
    ensure_python_clients tests/interop/requirements.txt
    TRIAGED_BIN="$CARGO_TARGET_DIR/debug/triaged" "$TRIAGE_VENV/bin/python" -m pytest -q tests/interop
fi
