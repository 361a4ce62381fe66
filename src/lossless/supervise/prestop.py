"""``lossless prestop``: a Kubernetes preStop exec hook that needs nothing from the image.

Two jobs, in this order, both within ``--timeout`` (the whole command never runs longer):

1. ``--drain-url URL``: ``POST`` to the app's admin endpoint (:mod:`lossless.admin`, or the probe
   port of ``lossless run``) so the drain starts now, at the beginning of the pod's termination;
   then poll ``GET`` until every worker it reached reports that it is draining and
   ``delay_remaining`` is 0 (or the app stops accepting connections, which it does at t0 + D);
   a worker that is not draining yet is never taken for done (see :func:`drain`). The kubelet sends SIGTERM only after the hook returns,
   so the signal then lands after the drain delay. The bearer token is read from
   ``--token-file`` (default: ``$LOSSLESS_ADMIN_TOKEN_FILE``).
2. ``--sleep SECONDS``: sleep in Python, for images that have no ``sleep`` binary.

Exit codes: 0 done; 1 the app refused the drain, or the time ran out before the delay ended;
2 usage errors (bad flags, unreadable token file). A non-zero exit only makes the kubelet log
``FailedPreStopHook``; termination goes on either way.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import time
import urllib.parse

from lossless import argtypes, events
from lossless.admin import ADMIN_PATH, TOKEN_FILE_ENV
from lossless.errors import LosslessError

#: Seconds between two polls of the drain state.
POLL_INTERVAL = 0.1
#: Consecutive answers from draining workers needed, once the delay is over, to be done.
SETTLED = 3
DEFAULT_TIMEOUT = 30.0


def add_prestop_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "prestop",
        help="preStop hook: start the app's drain and wait for its delay, or sleep (no sleep "
        "binary needed)",
        description="For a Kubernetes preStop exec hook. Bounded by --timeout.",
    )
    parser.add_argument(
        "--sleep",
        type=argtypes.nonnegative_duration,
        default=0.0,
        metavar="SECONDS",
        help="sleep this long",
    )
    parser.add_argument(
        "--drain-url",
        metavar="URL",
        help=f"the app's admin endpoint, e.g. http://127.0.0.1:8000{ADMIN_PATH}",
    )
    parser.add_argument(
        "--token-file",
        metavar="FILE",
        help=f"bearer token for --drain-url (default: ${TOKEN_FILE_ENV})",
    )
    parser.add_argument(
        "--timeout",
        type=argtypes.nonnegative_duration,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"upper bound for the whole command (default {DEFAULT_TIMEOUT:g})",
    )
    parser.set_defaults(func=prestop_command)


def _target(url: str) -> tuple[str, int, str]:
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme != "http" or not parsed.hostname:
        raise LosslessError(f"--drain-url {url!r} must be http://HOST:PORT[{ADMIN_PATH}]")
    try:
        port = parsed.port or 80
    except ValueError:
        raise LosslessError(f"--drain-url {url!r} has an invalid port") from None
    path = parsed.path if parsed.path not in ("", "/") else ADMIN_PATH
    return parsed.hostname, port, path


def _read_token(path: str | None) -> str:
    path = path or os.environ.get(TOKEN_FILE_ENV)
    if not path:
        raise LosslessError(f"--drain-url needs a token: --token-file FILE or ${TOKEN_FILE_ENV}")
    try:
        with open(path, encoding="utf-8") as f:
            token = f.read().strip()
    except OSError as exc:
        raise LosslessError(f"cannot read token file {path}: {exc.strerror or exc}") from None
    if not token:
        raise LosslessError(f"token file {path} is empty")
    return token


def _call(
    host: str, port: int, method: str, path: str, token: str, timeout: float
) -> tuple[int, dict[str, object]]:
    conn = http.client.HTTPConnection(host, port, timeout=max(timeout, 0.05))
    try:
        conn.request(method, path, headers={"Authorization": f"Bearer {token}"})
        resp = conn.getresponse()
        raw = resp.read(65536)
    finally:
        conn.close()
    try:
        body = json.loads(raw)
    except ValueError:
        body = {"error": raw.decode("utf-8", "replace")[:200]}
    return resp.status, body if isinstance(body, dict) else {"body": body}


def drain(url: str, token: str, end: float) -> dict[str, object]:
    """POST the drain, then poll until every process that answered is draining and past its
    delay, or the app stops accepting; raise :class:`LosslessError` (exit 1) when refused or
    when ``end`` passes first.

    Behind a server with several workers that do not share a drain state (plain gunicorn with
    UvicornWorker, hypercorn ``-w 2``), each request reaches one worker, which answers for itself
    (``pid`` in the state). So: a worker that answers "not draining" gets a POST of its own
    (a poll reached it: so may a POST) and its ``delay_remaining`` is never taken for the end of
    the drain; the wait ends when the latest delay end among the draining workers seen has
    passed and the last :data:`SETTLED` answers all came from draining workers. prestop reaches
    only the workers the server's accept distribution hands its connections to: with one shared
    listener an idle worker may never get one (gunicorn without ``--reuse-port``). Under
    ``lossless run`` or ``lossless serve`` every worker shares t0, so one POST drains them all.
    """
    host, port, path = _target(url)
    try:
        status, body = _call(host, port, "POST", path, token, end - time.monotonic())
    except OSError as exc:
        raise LosslessError(
            f"cannot reach {url}: {getattr(exc, 'strerror', None) or exc}", exit_code=1
        ) from None
    if status != 202:
        reason = body.get("error", body)
        raise LosslessError(f"{url} answered {status}: {reason}", exit_code=1)
    events.emit("prestop_drain_started", url=url, started=body.get("started"), pid=body.get("pid"))
    delay_ends: dict[object, float] = {}  # pid -> monotonic end of its drain delay
    posts = 1
    while True:
        now = time.monotonic()
        left = body.get("delay_remaining")
        draining = body.get("draining") is True
        if draining and isinstance(left, int | float):
            delay_ends[body.get("pid")] = max(delay_ends.get(body.get("pid"), 0.0), now + left)
            if now >= max(delay_ends.values()):
                return {**body, "workers": len(delay_ends), "posts": posts}
        if now >= end:
            raise LosslessError(
                f"timed out: {url} still reports delay_remaining {left} s "
                f"(draining: {body.get('draining')})",
                exit_code=1,
            )
        try:
            if not draining:
                # This worker has not seen the drain: ask it (or whichever worker gets it).
                method, expected = "POST", 202
                posts += 1
            else:
                wait = min(POLL_INTERVAL, max(0.0, max(delay_ends.values()) - now))
                time.sleep(max(0.0, min(wait, end - now)))
                method, expected = "GET", 200
            status, body = _call(host, port, method, path, token, end - time.monotonic())
        except ConnectionRefusedError:
            # closed at t0 + D (or the process is gone): the drain is done
            return {"delay_remaining": 0, "listener": "closed", "workers": len(delay_ends),
                    "posts": posts}  # fmt: skip
        except OSError as exc:
            raise LosslessError(
                f"polling {url}: {getattr(exc, 'strerror', None) or exc}", exit_code=1
            ) from None
        if status != expected:
            raise LosslessError(f"{url} answered {status}: {body.get('error', body)}", exit_code=1)


def prestop_command(args: argparse.Namespace) -> int:
    if not args.drain_url and not args.sleep:
        raise LosslessError("nothing to do: give --sleep SECONDS and/or --drain-url URL")
    if args.sleep > args.timeout:
        raise LosslessError(f"--sleep {args.sleep:g} exceeds --timeout {args.timeout:g}")
    events.configure()
    start = time.monotonic()
    end = start + args.timeout
    if args.drain_url:
        token = _read_token(args.token_file)
        _target(args.drain_url)  # validate before any network I/O
        state = drain(args.drain_url, token, end)
        events.emit(
            "prestop_drain_done",
            waited=round(time.monotonic() - start, 3),
            delay_remaining=state.get("delay_remaining"),
            since_t0=state.get("since_t0"),
            workers=state.get("workers"),
            posts=state.get("posts"),
        )
    if args.sleep:
        time.sleep(max(0.0, min(args.sleep, end - time.monotonic())))
    return 0
