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

# Criterion never fails on a timing: these steps fail only on a compile
# error or a panic. `cargo bench` needs RocksDB built in release for the
# broker benchmarks (about 20 min cold on 2 cores), so by default each
# benchmark runs once in the test profile; TRIAGE_BENCH_TIMED=1 measures
# them briefly in release (about 30 s once release is built).
BENCHES=(--bench codec --bench memory_queue --bench store_append)
if [ "${TRIAGE_BENCH_TIMED:-0}" = 1 ]; then
    echo "== micro-benchmarks (timed briefly; reported, never checked)"
    cargo bench -p triage-benches "${BENCHES[@]}" -- --warm-up-time 0.2 --measurement-time 0.5
else
    echo "== micro-benchmarks (each run once; TRIAGE_BENCH_TIMED=1 times them)"
    cargo test -p triage-benches "${BENCHES[@]}"
fi

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
