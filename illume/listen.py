"""Where a server of this project listens: the ML backend and the trainer service share one declaration."""
from __future__ import annotations

from dataclasses import dataclass

from illume.options import option


@dataclass(frozen=True)
class Listen:
    host: str = option("0.0.0.0", "Address to listen on (127.0.0.1: this machine only).", env="ILLUME_HOST")
    port: int = option(9090, "TCP port to listen on.", env="ILLUME_PORT", min=1, max=65535)
    log_level: str = option("info", "Server log level: critical, error, warning, info or debug.",
                            env="ILLUME_LOG_LEVEL",
                            choices=("critical", "error", "warning", "info", "debug"))
