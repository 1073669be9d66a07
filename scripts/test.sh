#!/usr/bin/env bash
# Install what the tests need (idempotent), then run the whole test suite.
#   bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --test
exec python3 -m pytest -q -p no:cacheprovider "$@"
