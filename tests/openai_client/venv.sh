#!/usr/bin/env bash
# Prints the path of a Python virtual environment holding requirements.txt, creating it
# once (cached under ~/.cache/amanuensis, keyed by the requirements' hash).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
hash="$(sha256sum "$here/requirements.txt" | cut -c1-12)"
venv="${AMANUENSIS_CACHE:-$HOME/.cache/amanuensis}/venv-openai-$hash"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import openai, srt, webvtt" 2>/dev/null; then
  echo "== creating $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv" >&2 || { echo "error: python3 -m venv failed (Debian: apt-get install python3-venv)" >&2; exit 1; }
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$here/requirements.txt" >&2
fi
echo "$venv"
