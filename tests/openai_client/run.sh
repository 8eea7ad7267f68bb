#!/usr/bin/env bash
# Runs the OpenAI Python client against `amanuensis serve` (built with `cargo build
# --release`): creates or reuses the pinned virtual environment, then the test script.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
binary="${1:-$target/release/amanuensis}"
[ -x "$binary" ] || { echo "error: no server binary at $binary (cargo build --release)" >&2; exit 1; }
venv="$("$here/venv.sh")"
exec "$venv/bin/python" "$here/test_openai_client.py" "$binary"
