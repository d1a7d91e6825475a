#!/usr/bin/env bash
# Set up Local Diffusion in ./.venv from the lock, requirements/lock-linux.txt (every version pinned): torch and
# torchvision, the package, and its test tools (the [test] and [test-e2e] extras).
#
#   bash scripts/setup.sh             PyPI's torch. On Linux that is the CUDA build with its nvidia packages
#                                     (a venv of about 6.2 GiB); it runs on a CPU-only machine too.
#   bash scripts/setup.sh --cpu       the CPU-only torch from PyTorch's CPU index (a venv of about 1.8 GiB);
#                                     the same as LOCALDIFFUSION_TORCH=cpu bash scripts/setup.sh. Start from a fresh
#                                     .venv (rm -rf .venv) to drop a CUDA build installed before.
#   bash scripts/setup.sh --pose      also the [pose] extra: mediapipe, for pose detection from a photo.
#   bash scripts/setup.sh --dry-run   print the commands instead of running them.
#
# PYTHON names the interpreter for a new .venv (default python3; Python 3.11 or newer).
set -euo pipefail
cd "$(dirname "$0")/.."

LOCK=requirements/lock-linux.txt
CPU_INDEX=https://download.pytorch.org/whl/cpu
TORCH=${LOCALDIFFUSION_TORCH:-}
POSE=0
DRY=0
for arg in "$@"; do
  case "$arg" in
    --cpu) TORCH=cpu ;;
    --pose) POSE=1 ;;
    --dry-run) DRY=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup.sh: unknown option '$arg'; the options are --cpu, --pose, --dry-run and --help." >&2; exit 2 ;;
  esac
done
if [ -n "$TORCH" ] && [ "$TORCH" != cpu ]; then
  echo "setup.sh: LOCALDIFFUSION_TORCH is '$TORCH'; set it to 'cpu' for the CPU-only torch, or leave it unset for PyPI's." >&2
  exit 2
fi
if [ "$TORCH" = cpu ] && [ "$(uname -s)" != Linux ]; then
  echo "setup.sh: PyPI's torch for $(uname -s) has no CUDA parts, so the CPU-only build changes nothing here; installing PyPI's." >&2
  TORCH=
fi
if [ "$(uname -s)-$(uname -m)" != Linux-x86_64 ]; then
  echo "setup.sh: the lock was made on Linux x86_64; here it pins every package the platforms share, and pip picks the rest." >&2
fi

run() {
  if [ "$DRY" = 1 ]; then echo "+ $*"; else "$@"; fi
}

# The interpreter: the existing .venv's, or $PYTHON's for a new one.
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] && CHECK=.venv/bin/python || CHECK=$PYTHON
if ! "$CHECK" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "setup.sh: Local Diffusion needs Python 3.11 or newer, and $CHECK is $("$CHECK" -V 2>&1 || echo missing);" \
    "remove .venv and name a newer one, e.g. PYTHON=python3.12 bash scripts/setup.sh." >&2
  exit 1
fi
[ -x .venv/bin/python ] || run "$PYTHON" -m venv .venv

PIP=".venv/bin/python -m pip"
pip_install() {
  # Once mediapipe is in (with --no-deps, below), pip notes on every install that its declared requirements
  # are missing; that is expected, so those lines are dropped (pip check below still fails on anything else).
  run $PIP install --quiet -c "$LOCK" "$@" 2> >(grep -v -e '^mediapipe ' -e '^k-diffusion ' -e "^ERROR: pip's dependency resolver does not currently" >&2)
}
EXTRAS=test,test-e2e,openvino,cluster
[ "$POSE" = 1 ] && EXTRAS=$EXTRAS,pose
if [ "$TORCH" = cpu ]; then
  # The CPU index's builds carry a local version (2.14.1+cpu), which the lock's plain pins accept (PEP 440).
  torch=$(sed -n 's/^torch==//p' "$LOCK")
  vision=$(sed -n 's/^torchvision==//p' "$LOCK")
  pip_install --extra-index-url "$CPU_INDEX" "torch==$torch+cpu" "torchvision==$vision+cpu"
fi
pip_install -e ".[$EXTRAS]"
# The tests' oracle for A1111's samplers, without its training dependencies (see the file).
pip_install --no-deps -r requirements/test-oracles.txt
if [ "$POSE" = 1 ]; then
  # --no-deps: mediapipe's metadata would add a second OpenCV and jax; pyproject.toml's [pose] extra says why.
  pip_install --no-deps -r requirements/mediapipe.txt
fi
if [ "$DRY" = 1 ]; then
  echo "+ $PIP check"
  exit 0
fi
# mediapipe's and k-diffusion's declared requirements (installed with --no-deps, see above) are the only mismatches allowed.
problems=$($PIP check 2>&1 | grep -v -e '^mediapipe ' -e '^k-diffusion ' -e '^No broken requirements found' || true)
if [ -n "$problems" ]; then
  echo "$problems" >&2
  exit 1
fi
# ...so check that what pose detection imports is there.
if [ "$POSE" = 1 ] && ! .venv/bin/python -c "import mediapipe.python.solutions.pose" 2>/dev/null; then
  echo "setup.sh: mediapipe was installed but does not import; run .venv/bin/python -c 'import mediapipe' to see why." >&2
  exit 1
fi
echo "Local Diffusion is set up in .venv: run .venv/bin/localdiffusion --help"
