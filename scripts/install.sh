#!/usr/bin/env bash
# Idempotent set-up of everything ILLUME Studio and its tests need on a fresh machine.
#   bash scripts/install.sh            # the tool + a local Label Studio (for the demo)
#   bash scripts/install.sh --test     # also test tools and headless Chromium
# Environment: ILLUME_TORCH_SPEC (default torch==2.13.0, the CPU wheel on CPU machines),
#              ILLUME_LS_VENV (default ~/.cache/illume/label-studio-venv).
set -euo pipefail
cd "$(dirname "$0")/.."

WITH_TEST=0
[[ "${1:-}" == "--test" ]] && WITH_TEST=1
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${ILLUME_TORCH_SPEC:-torch==2.13.0}
LS_VENV=${ILLUME_LS_VENV:-$HOME/.cache/illume/label-studio-venv}
LS_VERSION=1.23.2
PIP="$PYTHON -m pip install --disable-pip-version-check -q"

step() { printf '\n==> %s\n' "$*"; }

if ! $PYTHON -c "import torch" 2>/dev/null; then
  step "installing $TORCH_SPEC"
  $PIP "$TORCH_SPEC"
fi

extras=""
[[ $WITH_TEST == 1 ]] && extras="[test]"
if ! $PYTHON -c "import illume, connector, ml_backend, training, peft, deepspeed, label_studio_sdk, pycocoevalcap, fastapi" 2>/dev/null \
   || { [[ $WITH_TEST == 1 ]] && ! $PYTHON -c "import pytest_timeout, playwright, httpx" 2>/dev/null; }; then
  step "installing illume-studio$extras (editable)"
  $PIP -e ".$extras"
fi

if [[ ! -x "$LS_VENV/bin/label-studio" ]]; then
  step "installing Label Studio $LS_VERSION in its own virtual environment ($LS_VENV)"
  $PYTHON -m venv "$LS_VENV"
  "$LS_VENV/bin/python" -m pip install --disable-pip-version-check -q "label-studio==$LS_VERSION"
fi

if ! command -v java >/dev/null; then
  echo "warning: java not found: METEOR (pycocoevalcap) needs a Java runtime (apt-get install default-jre-headless)" >&2
fi

if [[ $WITH_TEST == 1 ]]; then
  missing=()
  [[ -x /usr/bin/chromium ]] || missing+=(chromium)  # headless browser tests
  docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null || missing+=(docker-compose)
  if (( ${#missing[@]} )); then
    step "installing Debian packages: ${missing[*]}"
    if [[ $(id -u) == 0 ]]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi
step "set-up complete"
