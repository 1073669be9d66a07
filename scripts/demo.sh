#!/usr/bin/env bash
# The main job on the embedded default: install what is missing (idempotent), then run two
# ILLUME rounds on Shapes-X with the demo model, a local Label Studio and the ML backend.
#   bash scripts/demo.sh [illume-sync demo options, e.g. --interactive or --rounds 3]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec illume-sync demo "$@"
