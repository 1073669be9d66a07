#!/usr/bin/env bash
# The main job on the embedded default: set up the project environment (idempotent), then run
# two ILLUME rounds on Shapes-X with the demo model, a local Label Studio and the ML backend.
#   bash scripts/demo.sh [illume-sync demo options, e.g. --interactive or --rounds 3]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/project_env.sh
export VIRTUAL_ENV=$ILLUME_VENV PATH="$ILLUME_VENV/bin:$PATH"  # as `source .venv/bin/activate` does
bash scripts/install.sh
exec "$ILLUME_VENV/bin/illume-sync" demo "$@"
