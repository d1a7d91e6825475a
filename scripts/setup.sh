#!/usr/bin/env bash
# Set up everything Local Diffusion needs in ./.venv: torch (+torchvision), the package and its test tools.
# Works on a CPU-only machine and on a CUDA machine (pip picks the right torch build for the platform).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
PIP=".venv/bin/python -m pip"
# torch and torchvision first and together: their versions must match (spandrel, open_clip need torchvision).
$PIP install --quiet "torch>=2.1" "torchvision>=0.16"
$PIP install --quiet -e ".[test,pose]"
$PIP check
echo "Local Diffusion is set up in .venv: run .venv/bin/localdiffusion --help"
