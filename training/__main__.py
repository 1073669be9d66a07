"""`python -m training ...`, `deepspeed --module training ...` or `deepspeed training/__main__.py ...`."""
from training.cli import main

if __name__ == "__main__":
    main()
