#!/usr/bin/env bash
# Set up what the tests need (idempotent), then run the whole test suite in the project environment.
#   bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/project_env.sh
export VIRTUAL_ENV=$ILLUME_VENV PATH="$ILLUME_VENV/bin:$PATH"  # as `source .venv/bin/activate` does
bash scripts/install.sh --test
exec "$ILLUME_VENV/bin/python" -m pytest -q -p no:cacheprovider --durations=15 "$@"
