"""Loopback networking every part of the sandbox shares: the address its own servers bind, free ports."""

from __future__ import annotations

import contextlib
import socket
import time

LOOPBACK = "127.0.0.1"


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Servers set SO_REUSEADDR, so TIME_WAIT leftovers do not count as taken.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def wait_listening(port: int, seconds: float, host: str = LOOPBACK) -> bool:
    """Whether ``host:port`` accepts a connection within ``seconds`` (e.g. a port-forward just started)."""
    deadline = time.monotonic() + seconds
    while True:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def free_port(host: str = LOOPBACK) -> int:
    """A port that is free now (the kernel's choice), for a listener whose port need not be kept."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
