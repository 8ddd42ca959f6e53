# Shared set-up for the scripts: installs what a fresh Debian machine lacks.
# Sourced, not run.

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/triage/target}"
TRIAGE_VENV="${TRIAGE_VENV:-$HOME/.cache/triage/venv}"

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=0
apt_install() {
    if [ "$apt_updated" = 0 ]; then
        as_root apt-get update -qq
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

ensure_rust() {
    if ! command -v cargo >/dev/null 2>&1; then
        if [ -x "$HOME/.cargo/bin/cargo" ]; then
            export PATH="$HOME/.cargo/bin:$PATH"
        else
            echo "cargo not found: install Rust (https://rustup.rs) and re-run" >&2
            exit 1
        fi
    fi
}

# The rocksdb crate builds RocksDB from C++ and needs libclang for its bindings.
ensure_build_tools() {
    if ! dpkg -s libclang-dev >/dev/null 2>&1; then
        apt_install libclang-dev
    fi
    if ! command -v c++ >/dev/null 2>&1; then
        apt_install g++
    fi
}

# The Python NSQ clients the interop tests drive, in a venv outside the clone.
ensure_python_clients() {
    local req="$1"
    local stamp="$TRIAGE_VENV/.requirements"
    if [ -f "$stamp" ] && cmp -s "$req" "$stamp"; then
        return
    fi
    if ! python3 -m venv --help >/dev/null 2>&1; then
        apt_install python3-venv
    fi
    python3 -m venv "$TRIAGE_VENV"
    "$TRIAGE_VENV/bin/pip" install --quiet --disable-pip-version-check -r "$req"
    cp "$req" "$stamp"
}
