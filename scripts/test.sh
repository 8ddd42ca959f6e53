#!/usr/bin/env bash
# Builds and runs the whole test suite: formatting, lints, Rust unit and
# integration tests, and the interop tests that drive real NSQ client
# libraries (pynsq, gnsq) against the real triaged binary.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh
ensure_rust
ensure_build_tools

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings

echo "== cargo test"
cargo test --workspace

if [ -f tests/interop/nsqjs/package-lock.json ]; then
    echo "== interop tests: nsqjs"
    command -v npm >/dev/null 2>&1 || apt_install nodejs npm
    (cd tests/interop/nsqjs && npm ci --silent --no-audit --no-fund \
        && TRIAGED_BIN="$CARGO_TARGET_DIR/debug/triaged" node --test)
fi

if [ -f tests/interop/requirements.txt ]; then
    echo "== interop tests: pynsq, gnsq"
    ensure_python_clients tests/interop/requirements.txt
    TRIAGED_BIN="$CARGO_TARGET_DIR/debug/triaged" "$TRIAGE_VENV/bin/python" -m pytest -q tests/interop
fi
