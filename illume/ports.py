"""A free TCP port on the loopback interface (servers, rendezvous of training processes)."""
from __future__ import annotations

import socket


def free_port() -> int:
    """A port nothing listens on now; a caller that binds later must cope with losing it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
