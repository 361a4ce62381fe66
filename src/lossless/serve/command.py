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

from lossless import argtypes, events
from lossless.discovery import cli as discovery_cli
from lossless.errors import LosslessError
from lossless.lifecycle import Lifecycle, set_lifecycle
from lossless.lifecycle_args import add_settings_arguments, settings_from_args
from lossless.serve import options

_DEFAULTS: dict[str, Any] = {
    "host": "127.0.0.1",
    "port": 8000,
    "workers": 1,
    "threads": 8,
    "keep_alive": 5.0,
    "log_level": "warning",
    "backlog": 2048,
    "timeout": 30,
}


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        allow_abbrev=False,  # --ws is uvicorn's option, not an abbreviation of --wsgi
        help="run an ASGI (uvicorn) or WSGI (gunicorn) app with the lossless drain sequence",
        description=(
            "Run MODULE:APP so that SIGTERM drains it without dropping a request. Every uvicorn "
            "option is also accepted with its uvicorn name (--ssl-keyfile, --uds, --ws, "
            "--env-file, ...: see uvicorn --help); one that cannot be honoured is refused."
        ),
    )
    parser.add_argument("app", metavar="MODULE:APP", help="the application, e.g. main:app")
    parser.add_argument("--wsgi", action="store_true", help="a WSGI app, served by gunicorn")
    parser.add_argument("--host", help="default 127.0.0.1")
    parser.add_argument("--port", type=argtypes.port_number, help="default 8000")
    parser.add_argument("--factory", action="store_true", help="APP is a factory to call")
    parser.add_argument("--app-dir", default=".", help="prepended to sys.path (default: .)")
    parser.add_argument(
        "--workers",
        type=argtypes.positive_count,
        help="worker processes under one master: uvicorn workers (ASGI) or gunicorn's (--wsgi)",
    )
    parser.add_argument(
        "--threads", type=argtypes.positive_count, help="threads per worker (--wsgi, default 8)"
    )
    argtypes.add_duration(
        parser,
        "--keep-alive",
        help="idle keep-alive timeout, whole seconds rounded up (default 5; uvicorn's "
        "--timeout-keep-alive too)",
    )
    parser.add_argument(
        "--log-level",
        choices=["critical", "error", "warning", "info", "debug", "trace"],
        help="the server's own log level (default warning; lossless events are always logged)",
    )
    parser.add_argument("--access-log", action="store_true", help="enable the server access log")
    parser.add_argument(
        "--backlog", type=argtypes.positive_count, help="listen backlog (default 2048)"
    )
    parser.add_argument("--root-path", default="", help="ASGI root_path (uvicorn)")
    parser.add_argument(
        "--proxy-headers", action="store_true", help="trust X-Forwarded-* (uvicorn)"
    )
    parser.add_argument(
        "--limit-concurrency", type=argtypes.positive_count, default=None, help="(uvicorn)"
    )
    parser.add_argument(
        "--timeout",
        type=argtypes.count,
        help="worker timeout in seconds, 0 for none (a master's: --wsgi or --workers N; "
        "default 30)",
    )
    parser.add_argument(
        "--preload",
        action="store_true",
        help="import the app in the gunicorn master before forking (default: in each worker)",
    )
    parser.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        help="a gunicorn config file (--wsgi, or ASGI with a master); its hooks are called",
    )
    add_settings_arguments(parser)
    discovery_cli.add_arguments(parser)
    parser.set_defaults(func=run, accepts_extra=True)


def _env_registry() -> bool:
    return bool(os.environ.get("LOSSLESS_REGISTRY", "").strip())


def _given(args: argparse.Namespace, name: str) -> Any:
    value = getattr(args, name)
    return _DEFAULTS[name] if value is None else value


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


def _find_module(target: str, app_dir: str) -> None:
    """Check that the top-level module of ``MODULE:APP`` can be found, without importing it (a
    one-line error for a typo, before any worker starts)."""
    import importlib.util

    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise LosslessError(f"app {target!r} must be given as MODULE:APP, e.g. main:app")
    top = module_name.split(".", 1)[0]
    sys.path.insert(0, os.path.abspath(app_dir))
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise LosslessError(f"cannot import module {module_name!r} (from {target})")


def _port_free(host: str, port: int) -> None:
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise LosslessError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def _refuse_ignored(args: argparse.Namespace, master: bool) -> None:
    """Options that only a shape we do not run would use are refused, never ignored."""
    if args.threads is not None and not args.wsgi:
        raise LosslessError("--threads is for WSGI apps (--wsgi): uvicorn workers have no threads")
    if not master:
        for flag, given in (("--timeout", args.timeout is not None), ("--preload", args.preload)):
            if given:
                raise LosslessError(
                    f"{flag} is a master's option (--wsgi, or --workers 2 or more); one uvicorn "
                    "process has no master"
                )


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    uv = options.parse_uvicorn_options(args.app, getattr(args, "extra", []))
    if "timeout_keep_alive" in uv and args.keep_alive is not None:
        raise LosslessError("--keep-alive and --timeout-keep-alive are the same option: give one")
    workers = _given(args, "workers")
    master = args.wsgi or workers > 1 or args.config is not None
    _refuse_ignored(args, master)
    if args.config is not None and not os.path.isfile(args.config):
        raise LosslessError(f"--config {args.config}: no such file")
    gunicorn_settings = options.gunicorn_options(uv) if args.wsgi else {}
    options.load_env_file(uv.get("env_file"))
    events.configure()
    lifecycle = Lifecycle(settings)
    set_lifecycle(lifecycle)  # before the import, so the app's get_lifecycle() finds this one
    port = _given(args, "port")
    if master and not args.wsgi and (getattr(args, "registry", None) or _env_registry()):
        raise LosslessError(
            "--registry is supported with one uvicorn process only: under a master with "
            "workers, each worker would register"
        )
    discovery_cli.attach_from_args(lifecycle, args, port, host=_given(args, "host"))
    if port != 0 and "uds" not in uv and "fd" not in uv and args.config is None:
        _port_free(_given(args, "host"), port)
    if master and not args.preload:
        # gunicorn's default: each worker imports the app after the fork (threads and sockets
        # opened at import would be dead or shared in forked workers). Only find it here.
        _find_module(args.app, args.app_dir)
        app: Any = None
    else:
        app = load_app(args.app, args.app_dir, args.factory)
    events.emit(
        "serve",
        app=args.app,
        server=("gunicorn" if args.wsgi else "uvicorn") + (f" x{workers}" if master else ""),
        drain_delay=settings.delay,
        shutdown_timeout=settings.shutdown_timeout,
    )
    if master:
        code = _run_gunicorn(app, lifecycle, args, uv, gunicorn_settings)
    else:
        code = _run_uvicorn(app, lifecycle, args, uv)
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


def _run_uvicorn(
    app: Any, lifecycle: Lifecycle, args: argparse.Namespace, uv: dict[str, Any]
) -> int:
    try:
        import uvicorn
    except ImportError:
        raise LosslessError("uvicorn is not installed: pip install 'lossless[uvicorn]'") from None
    from lossless.asgi import LosslessMiddleware
    from lossless.serve.uvicorn import LosslessServer

    if not isinstance(app, LosslessMiddleware):
        app = LosslessMiddleware(app, lifecycle=lifecycle)
    kwargs: dict[str, Any] = {
        "host": _given(args, "host"),
        "port": _given(args, "port"),
        "lifespan": "auto",
        "log_level": _given(args, "log_level"),
        "access_log": args.access_log,
        "backlog": _given(args, "backlog"),
        "root_path": args.root_path,
        "proxy_headers": args.proxy_headers,
        "limit_concurrency": args.limit_concurrency,
        "timeout_keep_alive": math.ceil(_given(args, "keep_alive")),
    }
    kwargs.update(uv)
    kwargs.update(app=app, timeout_graceful_shutdown=None)
    try:
        config = uvicorn.Config(**kwargs)
    except (OSError, ValueError) as exc:
        raise LosslessError(f"uvicorn: {exc}") from None
    server = LosslessServer(config, lifecycle)
    server.run()
    if not server.started:
        where = uv.get("uds") or (f"fd {uv['fd']}" if "fd" in uv else None)
        where = where or f"{kwargs['host']}:{kwargs['port']}"
        raise LosslessError(f"uvicorn did not start on {where} (see the log above)")
    return server.exit_code()


def _run_gunicorn(
    app: Any,
    lifecycle: Lifecycle,
    args: argparse.Namespace,
    uv: dict[str, Any],
    translated: dict[str, Any],
) -> int:
    """gunicorn's master (LosslessArbiter) with gthread workers (--wsgi) or uvicorn workers."""
    try:
        from lossless.serve.gunicorn import LosslessApplication
    except ImportError:
        raise LosslessError("gunicorn is not installed: pip install 'lossless[gunicorn]'") from None
    host = _given(args, "host")
    port = _given(args, "port")
    defaults: dict[str, Any] = {
        "bind": [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"],
        "workers": _DEFAULTS["workers"],
        "keepalive": max(1, math.ceil(_DEFAULTS["keep_alive"])),
        "loglevel": _DEFAULTS["log_level"],
        "backlog": _DEFAULTS["backlog"],
        "timeout": _DEFAULTS["timeout"],
        # gunicorn 27's control socket has one default path per user: two servers on a machine
        # (tests, sidecars) would fight over it. On again with control_socket_disable = False.
        "control_socket_disable": True,
    }
    if args.wsgi:
        defaults["threads"] = _DEFAULTS["threads"]
    given: dict[str, Any] = {}
    if args.host is not None or args.port is not None:
        given["bind"] = defaults["bind"]
    for name, setting in (
        ("workers", "workers"),
        ("threads", "threads"),
        ("log_level", "loglevel"),
        ("backlog", "backlog"),
        ("timeout", "timeout"),
    ):
        if getattr(args, name) is not None:
            given[setting] = getattr(args, name)
    if args.keep_alive is not None:
        given["keepalive"] = max(1, math.ceil(args.keep_alive))
    if args.access_log:
        given["accesslog"] = "-"
    worker_options: dict[str, Any] = {}
    if args.wsgi:
        given.update(translated)
    else:
        worker_options = dict(uv)
        for key in ("uds", "fd"):  # the master binds; workers get its sockets
            if key in worker_options:
                value = worker_options.pop(key)
                given["bind"] = [f"unix:{value}" if key == "uds" else f"fd://{value}"]
        worker_options.update(
            root_path=args.root_path,
            proxy_headers=args.proxy_headers,
            limit_concurrency=args.limit_concurrency,
            access_log=args.access_log,
        )
        if args.keep_alive is not None:
            worker_options["timeout_keep_alive"] = math.ceil(args.keep_alive)

    def load() -> Any:
        return app if app is not None else load_app(args.app, args.app_dir, args.factory)

    try:
        LosslessApplication(
            load,
            lifecycle,
            given,
            defaults=defaults,
            config_file=args.config,
            asgi=not args.wsgi,
            uvicorn_options=worker_options,
            preload=args.preload,
        ).run()
    except SystemExit as exc:  # the arbiter's halt() exits with the lifecycle's code
        return exc.code if isinstance(exc.code, int) else 1
    return 0
