#!/usr/bin/env bash
# Regenerate requirements/lock-linux.txt, the pins scripts/setup.sh installs from: resolve pyproject.toml's ranges
# (every extra, PyPI's torch, mediapipe with --no-deps) in a throw-away venv, then freeze it.
# Run it on Linux x86_64 with Python 3.11, then run the tests (bash scripts/setup.sh && .venv/bin/python -m pytest)
# and commit the new lock with the pyproject.toml bounds it was tested against.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PYTHON" -m venv "$work/venv"
PIP="$work/venv/bin/python -m pip"
$PIP install --quiet -e ".[test,test-e2e,pose]"
$PIP install --quiet --no-deps -r requirements/mediapipe.txt -r requirements/test-oracles.txt
{
  echo "# Every package scripts/setup.sh installs, pinned: pip install -c requirements/lock-linux.txt ..."
  echo "# Made by scripts/lock.sh on $(uname -s) $(uname -m) with Python $("$work/venv/bin/python" -c 'import platform; print(platform.python_version())'); edit pyproject.toml's ranges, not this file."
  echo "# Includes the [pose] extra and mediapipe; a constraint only applies to the packages an install asks for."
  $PIP freeze --exclude-editable | grep -v -e '^#' -e '^-e '
} > "$work/lock.txt"
mv "$work/lock.txt" requirements/lock-linux.txt
echo "Wrote requirements/lock-linux.txt ($(grep -c '==' requirements/lock-linux.txt) pins)"
