# The project environment's location, sourced by install.sh, demo.sh and test.sh:
# ILLUME_VENV if set, else an already active virtual environment (reused as it is), else .venv.
if [[ -z "${ILLUME_VENV:-}" && -n "${VIRTUAL_ENV:-}" && -x "${VIRTUAL_ENV}/bin/python" ]]; then
  ILLUME_VENV=$VIRTUAL_ENV
  ILLUME_VENV_REUSED=1
fi
ILLUME_VENV=${ILLUME_VENV:-$PWD/.venv}
