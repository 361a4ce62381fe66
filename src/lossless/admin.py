"""The admin endpoint ``/lossless/drain``: start the drain from a preStop hook, and watch it.

``POST /lossless/drain`` begins the drain sequence (:meth:`Lifecycle.drain` with reason
``prestop``) and answers ``202`` with the state below, whether this call started the drain or it
had already begun. ``GET /lossless/drain`` answers ``200`` with the state::

    {"draining": true, "state": "draining", "since_t0": 1.25, "delay_remaining": 3.75,
     "deadline_remaining": 23.75, "in_flight": 2, "pid": 12, "started": true}

``pid`` names the process that answered: behind a server with several workers, each answers
for itself (``lossless prestop`` uses it to wait for every worker it reached).

``lossless prestop --drain-url`` posts, then polls until ``delay_remaining`` is 0, so the
kubelet's SIGTERM (which follows the preStop hook) arrives after the drain delay D.

Who may call it: loopback callers only (a preStop exec hook runs inside the pod's network
namespace), and only with ``Authorization: Bearer <token>`` where the token is the content of the
file named by ``LOSSLESS_ADMIN_TOKEN_FILE`` (read on every call, so it can be rotated; compared in
constant time). Without that variable, or with an empty or unreadable file, the endpoint is
disabled and answers ``404``. Other callers get ``403``, a missing or wrong token ``401``, other
methods ``405``. The endpoint never changes state on ``GET`` and cannot undo a drain.
"""

from __future__ import annotations

import hmac
import json
import os
from collections.abc import Iterable, Mapping

from lossless.lifecycle import Lifecycle
from lossless.probe_render import is_loopback

__all__ = ["ADMIN_PATH", "TOKEN_FILE_ENV", "handle_admin"]

ADMIN_PATH = "/lossless/drain"
TOKEN_FILE_ENV = "LOSSLESS_ADMIN_TOKEN_FILE"
CONTENT_TYPE = "application/json"


def _error(status: int, message: str) -> tuple[int, bytes]:
    return status, json.dumps({"error": message}).encode()


def _header(headers: Mapping[str, str] | Iterable[tuple[str, str]], name: str) -> str:
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    for key, value in pairs:
        if key.lower() == name:
            return value
    return ""


def _token(token_file: str | None) -> str | None:
    path = token_file if token_file is not None else os.environ.get(TOKEN_FILE_ENV)
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            token = f.read().strip()
    except OSError:
        return None
    return token or None


def state(lifecycle: Lifecycle, *, started: bool | None = None) -> dict[str, object]:
    """The drain state as the endpoint reports it."""
    since = lifecycle.since_t0()
    payload: dict[str, object] = {
        "draining": lifecycle.draining,
        "state": lifecycle.state.value,
        "since_t0": since,
        "delay_remaining": round(lifecycle.delay_remaining(), 6),
        "deadline_remaining": round(lifecycle.remaining(), 6) if since is not None else None,
        "in_flight": lifecycle.in_flight,
        "pid": os.getpid(),
    }
    if started is not None:
        payload["started"] = started
    return payload


def handle_admin(
    lifecycle: Lifecycle,
    method: str,
    path: str,
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
    client: str | None,
    *,
    token_file: str | None = None,
) -> tuple[int, bytes] | None:
    """Answer a request for the admin endpoint, or return ``None`` when ``path`` is not it (the
    caller then passes the request on to the app).

    ``headers`` is a mapping or ``(name, value)`` pairs, any case; ``client`` the peer's IP
    address. The body returned is JSON (``application/json``). ``token_file`` overrides
    ``LOSSLESS_ADMIN_TOKEN_FILE`` (tests). Never raises on bad input.
    """
    if path.split("?", 1)[0] != ADMIN_PATH:
        return None
    expected = _token(token_file)
    if expected is None:
        return _error(404, f"admin endpoint disabled: set {TOKEN_FILE_ENV} to a token file")
    if not is_loopback(client):
        return _error(403, "admin endpoint accepts loopback callers only")
    scheme, _, given = _header(headers, "authorization").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), expected.encode()
    ):
        return _error(401, "missing or wrong bearer token")
    if method == "POST":
        started = lifecycle.drain(reason="prestop")
        return 202, json.dumps(state(lifecycle, started=started)).encode()
    if method in ("GET", "HEAD"):
        return 200, json.dumps(state(lifecycle)).encode()
    return _error(405, f"method {method} not allowed: use POST to drain, GET for the state")
