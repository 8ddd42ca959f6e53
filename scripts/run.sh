#!/usr/bin/env bash
# Builds triaged in release mode and starts it on its embedded defaults
# (TCP 127.0.0.1:4150, HTTP 127.0.0.1:4151, data in ./data). Extra arguments
# are passed to triaged, e.g. `scripts/run.sh --mem-queue-size=50000`.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh
ensure_rust
ensure_build_tools
cargo build --release --bin triaged
exec "$CARGO_TARGET_DIR/release/triaged" "$@"
