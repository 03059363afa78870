"""Loopback ports for test servers.

Prefer :func:`bound_socket`: the kernel picks a free port (bind to port 0) and the
socket stays open, so no other process can take the port before the server uses
it. :func:`free_port` closes its socket and returns the number; use it only where
a child process must bind the port itself (``--port N``), accepting the small
window in which another process could take it.
"""

from __future__ import annotations

import socket

LOOPBACK = "127.0.0.1"


def bound_socket(host: str = LOOPBACK, port: int = 0) -> socket.socket:
    """A TCP socket bound to ``port`` on ``host`` (0: a free one the kernel picks);
    the caller owns (and closes) it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def free_port(host: str = LOOPBACK) -> int:
    """A port that was free a moment ago (for servers that bind it themselves)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
