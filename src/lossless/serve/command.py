"""``lossless serve``: run an ASGI app on uvicorn, or a WSGI app (``--wsgi``) on gunicorn, under
the lifecycle's drain sequence. See :mod:`lossless.serve.uvicorn` and
:mod:`lossless.serve.gunicorn` for what each server does on SIGTERM.
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import logging
import math
import os
import sys
from typing import Any, NoReturn

from lossless import events
from lossless.discovery import cli as discovery_cli
from lossless.errors import LosslessError
from lossless.lifecycle import Lifecycle, set_lifecycle
from lossless.lifecycle_args import add_settings_arguments, settings_from_args


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run an ASGI (uvicorn) or WSGI (gunicorn) app with the lossless drain sequence",
        description="Run MODULE:APP so that SIGTERM drains it without dropping a request.",
    )
    parser.add_argument("app", metavar="MODULE:APP", help="the application, e.g. main:app")
    parser.add_argument("--wsgi", action="store_true", help="a WSGI app, served by gunicorn")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--factory", action="store_true", help="APP is a factory to call")
    parser.add_argument("--app-dir", default=".", help="prepended to sys.path (default: .)")
    parser.add_argument("--workers", type=int, default=1, help="gunicorn workers (--wsgi)")
    parser.add_argument("--threads", type=int, default=8, help="threads per worker (--wsgi)")
    parser.add_argument(
        "--keep-alive",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="idle keep-alive timeout (default 5)",
    )
    parser.add_argument(
        "--log-level",
        default="warning",
        choices=["critical", "error", "warning", "info", "debug"],
        help="the server's own log level (lossless events are always logged)",
    )
    parser.add_argument("--access-log", action="store_true", help="enable the server access log")
    parser.add_argument("--backlog", type=int, default=2048)
    parser.add_argument("--root-path", default="", help="ASGI root_path (uvicorn)")
    parser.add_argument(
        "--proxy-headers", action="store_true", help="trust X-Forwarded-* (uvicorn)"
    )
    parser.add_argument("--limit-concurrency", type=int, default=None, help="(uvicorn)")
    parser.add_argument("--timeout", type=int, default=30, help="worker timeout (gunicorn)")
    add_settings_arguments(parser)
    discovery_cli.add_arguments(parser)
    parser.set_defaults(func=run)


def load_app(target: str, app_dir: str, factory: bool) -> Any:
    """Import ``MODULE:ATTR``; a one-line :class:`LosslessError` for every way it can fail."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise LosslessError(f"app {target!r} must be given as MODULE:APP, e.g. main:app")
    sys.path.insert(0, os.path.abspath(app_dir))
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise LosslessError(f"cannot import module {module_name!r} (from {target})") from None
        raise LosslessError(f"importing {module_name!r} failed: {exc}") from None
    except Exception as exc:
        raise LosslessError(
            f"importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise LosslessError(f"module {module_name!r} has no attribute {attr!r}") from None
    if factory:
        try:
            obj = obj()
        except Exception as exc:
            raise LosslessError(
                f"app factory {target} failed: {type(exc).__name__}: {exc}"
            ) from None
    if not callable(obj):
        raise LosslessError(f"{target} is not callable (got {type(obj).__name__})")
    return obj


def _port_free(host: str, port: int) -> None:
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise LosslessError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    events.configure()
    lifecycle = Lifecycle(settings)
    set_lifecycle(lifecycle)  # before the import, so the app's get_lifecycle() finds this one
    discovery_cli.attach_from_args(lifecycle, args, args.port)
    if args.port != 0:
        _port_free(args.host, args.port)
    app = load_app(args.app, args.app_dir, args.factory)
    events.emit(
        "serve",
        app=args.app,
        server="gunicorn" if args.wsgi else "uvicorn",
        drain_delay=settings.delay,
        shutdown_timeout=settings.shutdown_timeout,
    )
    if args.wsgi:
        code = _run_gunicorn(app, lifecycle, args)
    else:
        code = _run_uvicorn(app, lifecycle, args)
    _exit_now(code)


def _exit_now(code: int) -> NoReturn:
    """Exit as soon as the drain is over: run atexit handlers and flush the logs and stdio
    ourselves, then skip the interpreter's slow teardown (module and thread finalisation took
    20-25 ms, most of the exit latency measured by bench/bench_shutdown.py)."""
    logging.shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def _run_uvicorn(app: Any, lifecycle: Lifecycle, args: argparse.Namespace) -> int:
    try:
        import uvicorn
    except ImportError:
        raise LosslessError("uvicorn is not installed: pip install 'lossless[uvicorn]'") from None
    from lossless.asgi import LosslessMiddleware
    from lossless.serve.uvicorn import LosslessServer

    if not isinstance(app, LosslessMiddleware):
        app = LosslessMiddleware(app, lifecycle=lifecycle)
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        lifespan="auto",
        log_level=args.log_level,
        access_log=args.access_log,
        backlog=args.backlog,
        root_path=args.root_path,
        proxy_headers=args.proxy_headers,
        limit_concurrency=args.limit_concurrency,
        timeout_keep_alive=int(args.keep_alive),
        timeout_graceful_shutdown=None,
    )
    server = LosslessServer(config, lifecycle)
    server.run()
    if not server.started:
        raise LosslessError(f"uvicorn did not start on {args.host}:{args.port} (see the log above)")
    return server.exit_code()


def _run_gunicorn(app: Any, lifecycle: Lifecycle, args: argparse.Namespace) -> int:
    try:
        from lossless.serve.gunicorn import LosslessApplication
    except ImportError:
        raise LosslessError("gunicorn is not installed: pip install 'lossless[gunicorn]'") from None
    if args.workers < 1 or args.threads < 1:
        raise LosslessError("--workers and --threads must be at least 1")
    options = {
        "bind": [f"[{args.host}]:{args.port}" if ":" in args.host else f"{args.host}:{args.port}"],
        "workers": args.workers,
        "threads": args.threads,
        "keepalive": max(1, math.ceil(args.keep_alive)),
        "loglevel": args.log_level,
        "accesslog": "-" if args.access_log else None,
        "backlog": args.backlog,
        "timeout": args.timeout,
    }
    try:
        LosslessApplication(app, lifecycle, options).run()
    except SystemExit as exc:  # the arbiter's halt() exits with the lifecycle's code
        return exc.code if isinstance(exc.code, int) else 1
    return 0
