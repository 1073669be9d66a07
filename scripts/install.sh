#!/usr/bin/env bash
# Idempotent set-up of everything ILLUME Studio needs, into the project's own virtual
# environment: nothing is ever installed into the interpreter that runs this script.
#   bash scripts/install.sh            # the tool, a Java runtime (METEOR), a local Label Studio
#   bash scripts/install.sh --test     # also test tools, headless Chromium and docker-compose
# Environment:
#   PYTHON              interpreter that creates the environment (default: python3; 3.10+, 3.11 tested)
#   ILLUME_VENV         the project environment (default: the active virtualenv, else .venv here)
#   ILLUME_TORCH_SPEC   torch requirement (default: torch==2.13.0)
#   ILLUME_TORCH_INDEX  wheel index for torch (default: PyTorch's CPU index on machines without an
#                       NVIDIA GPU, falling back to the ordinary index when it cannot be reached;
#                       the ordinary index, i.e. the CUDA build, with a GPU)
#   ILLUME_LS_VENV      Label Studio's own environment (default: ~/.cache/illume/label-studio-venv)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/project_env.sh

WITH_TEST=0
[[ "${1:-}" == "--test" ]] && WITH_TEST=1
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${ILLUME_TORCH_SPEC:-torch==2.13.0}
CPU_TORCH_INDEX=https://download.pytorch.org/whl/cpu
LS_VENV=${ILLUME_LS_VENV:-$HOME/.cache/illume/label-studio-venv}
LS_VERSION=1.23.2
MIN_PYTHON=3.10     # older interpreters would let pip pick untested old releases
TESTED_PYTHON=3.11  # what CI and the README's runs use

step() { printf '\n==> %s\n' "$*"; }
die() { printf '\nerror: %s\n' "$*" >&2; exit 1; }

# Debian/Ubuntu packages, as root or through sudo; returns 1 when that is impossible.
APT_UPDATED=0
apt_install() {
  local sudo=""
  if [[ $(id -u) != 0 ]]; then
    sudo -n true 2>/dev/null || return 1
    sudo="sudo -n"
  fi
  command -v apt-get >/dev/null || return 1
  step "installing Debian packages: $*"
  if [[ $APT_UPDATED == 0 ]]; then $sudo apt-get update -qq; APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

# 1. The interpreter: new enough, and able to make a virtual environment.
if [[ -z "${ILLUME_VENV_REUSED:-}" ]]; then
  command -v "$PYTHON" >/dev/null || die "no '$PYTHON' on PATH: install Python $TESTED_PYTHON (e.g. apt-get install python3 python3-venv) or set PYTHON=/path/to/python3"
  version=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  "$PYTHON" -c "import sys; sys.exit(sys.version_info[:2] < tuple(map(int, '$MIN_PYTHON'.split('.'))))" \
    || die "$PYTHON is Python $version; ILLUME Studio needs $MIN_PYTHON or newer (tested: $TESTED_PYTHON). Set PYTHON=/path/to/python3.11."
  [[ $version == "$TESTED_PYTHON" ]] || echo "note: Python $version is not the tested $TESTED_PYTHON; continuing" >&2
fi

# 2. The project environment (reused when it is already complete).
if [[ ! -x "$ILLUME_VENV/bin/python" ]] || ! "$ILLUME_VENV/bin/python" -m pip --version >/dev/null 2>&1; then
  [[ -z "${ILLUME_VENV_REUSED:-}" ]] \
    || die "the active virtual environment $ILLUME_VENV has no pip: run 'python -m ensurepip' in it, or deactivate it to use .venv"
  if ! "$PYTHON" -c "import venv, ensurepip" 2>/dev/null; then
    apt_install "python$version-venv" \
      || die "$PYTHON cannot create virtual environments (no venv/ensurepip). Install Debian's package: sudo apt-get install python$version-venv (or python3-venv), then run this again."
  fi
  step "creating the project environment $ILLUME_VENV"
  rm -rf "$ILLUME_VENV"
  "$PYTHON" -m venv "$ILLUME_VENV"
fi
VPY="$ILLUME_VENV/bin/python"
PIP="$VPY -m pip install --disable-pip-version-check -q"

# 3. torch: the CPU build without an NVIDIA GPU, the ordinary (CUDA) build with one.
if ! "$VPY" -c "import torch" 2>/dev/null; then
  index=${ILLUME_TORCH_INDEX:-}
  if [[ -z $index ]] && ! { command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; }; then
    if "$VPY" -c "import urllib.request as u; u.urlopen('$CPU_TORCH_INDEX/torch/', timeout=10)" 2>/dev/null; then
      index=$CPU_TORCH_INDEX
    else
      echo "note: $CPU_TORCH_INDEX cannot be reached; taking $TORCH_SPEC from the ordinary index" >&2
    fi
  fi
  step "installing $TORCH_SPEC${index:+ from $index}"
  $PIP ${index:+--index-url "$index"} "$TORCH_SPEC"
fi

# 4. ILLUME Studio itself (editable), with the test tools on request.
extras=""
[[ $WITH_TEST == 1 ]] && extras="[test]"
if ! "$VPY" -c "import illume, connector, ml_backend, training, peft, deepspeed, label_studio_sdk, pycocoevalcap, fastapi, ijson, tqdm" 2>/dev/null \
   || { [[ $WITH_TEST == 1 ]] && ! "$VPY" -c "import pytest_timeout, playwright, httpx, yaml, statsmodels, trl, datasets, moto" 2>/dev/null; }; then
  step "installing illume-studio$extras (editable) into $ILLUME_VENV"
  $PIP -e ".$extras"
fi

# 5. Label Studio in its own environment (its pins clash with ours).
if [[ ! -x "$LS_VENV/bin/label-studio" ]]; then
  step "installing Label Studio $LS_VERSION in its own environment ($LS_VENV)"
  rm -rf "$LS_VENV"
  "$VPY" -m venv "$LS_VENV"
  "$LS_VENV/bin/python" -m pip install --disable-pip-version-check -q "label-studio==$LS_VERSION"
fi

# 6. Debian packages: Java for METEOR; Chromium and docker-compose for the tests.
missing=()
command -v java >/dev/null || missing+=(default-jre-headless)
if [[ $WITH_TEST == 1 ]]; then
  [[ -x /usr/bin/chromium ]] || missing+=(chromium)
  docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null || missing+=(docker-compose)
fi
if (( ${#missing[@]} )) && ! apt_install "${missing[@]}"; then
  echo "warning: could not install ${missing[*]} (needs root or sudo and apt-get): install them yourself." >&2
  [[ " ${missing[*]} " == *" default-jre-headless "* ]] && \
    echo "warning: without Java, METEOR is skipped (reported as missing); the other metrics and the promotion gate work." >&2
fi

step "set-up complete: activate the environment with  source $ILLUME_VENV/bin/activate"
