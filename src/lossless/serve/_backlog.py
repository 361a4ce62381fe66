"""Taking the accept queue before a listener closes (both servers' step at t0 + D).

Closing a listening socket resets the connections waiting in its accept queue: the kernel has
completed their handshake, so their clients believe they are connected (gunicorn#3397). Each
server accepts them first with :func:`accept_backlog` and serves them like any other.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["accept_backlog"]


def accept_backlog(
    listeners: Iterable[Any], serve: Callable[[socket.socket, Any, Any], None]
) -> int:
    """Accept (non-blocking) every connection waiting in the accept queue of each listener and
    hand it to ``serve(client, address, listener)``; return how many were taken. A listener
    that cannot be made non-blocking, or fails to accept, is left as it is."""
    taken = 0
    for listener in listeners:
        try:
            listener.setblocking(False)
        except OSError:
            continue
        while True:
            try:
                client, addr = listener.accept()
            except (BlockingIOError, InterruptedError):
                break
            except ConnectionAbortedError:
                continue
            except OSError:
                break
            serve(client, addr, listener)
            taken += 1
    return taken
