"""`python -m training ...`, `deepspeed --module training ...` or `deepspeed training/__main__.py ...`."""
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import the package, not this folder's modules
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    sys.path.insert(0, str(here.parent))

from training.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
