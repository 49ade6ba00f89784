#!/bin/sh
# Creates (or refreshes) the Python venv used by interop tests: public tools from PyPI that
# decode our files independently. Packages are pinned in tools/requirements-test.txt.
set -e
VENV=${1:-build/pyenv}
REQ="$(dirname "$0")/requirements-test.txt"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
STAMP="$VENV/.req-stamp"
if [ ! -f "$STAMP" ] || ! cmp -s "$REQ" "$STAMP"; then
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQ"
  cp "$REQ" "$STAMP"
fi
