#!/usr/bin/env bash
# Runs every command of docs/plugins.md (its ```sh blocks, in order) in a fresh clone of
# this repository's HEAD, as a reader would. Slow: the clone builds from scratch.
set -euo pipefail
root="$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
git clone -q "$root" "$work/clone"
cd "$work/clone"
# The guide's paths (target/release/...) assume cargo's default target directory.
unset CARGO_TARGET_DIR
awk '/^```sh$/ {on = 1; next} /^```/ {on = 0} on' docs/plugins.md > "$work/commands.sh"
echo "== commands of docs/plugins.md"
cat "$work/commands.sh"
bash -euxo pipefail "$work/commands.sh"
echo "== all commands of docs/plugins.md passed"
