#!/usr/bin/env bash
# Regenerate docs/annotator_view.png and docs/report.png on purpose: the browser tests that take
# them write into a temporary directory unless ILLUME_SCREENSHOTS names another one.
# annotator_view.png is the 1366x768 view with ten 150-character candidates (the test checks that
# everything also fits at 1280x720). Only one of them: bash scripts/screenshots.sh -k annotator_view
#   bash scripts/screenshots.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -f scripts/project_env.sh ]; then source scripts/project_env.sh; fi
PYTHON="${ILLUME_VENV:-.venv}/bin/python"
export ILLUME_SCREENSHOTS="$PWD/docs"
exec "$PYTHON" -m pytest -q -p no:cacheprovider "$@" \
    "tests/backend/test_backend_browser.py::test_annotator_view_at_laptop_size" \
    "tests/e2e/test_report.py::test_report_renders_in_chromium"
