"""Text keys shared by sampling, export, the backend and the metrics (no torch needed)."""
from __future__ import annotations

import re


def normalise(text: str) -> str:
    """The key under which two candidates (or two answers) count as the same text."""
    return re.sub(r"[^\w ]", "", " ".join(text.lower().split())).strip()
