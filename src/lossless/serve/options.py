"""uvicorn's own command-line options under ``lossless serve``, with the same names.

The options are not re-listed here: every argument ``lossless serve`` does not define itself is
parsed by uvicorn's own click command (``uvicorn.main``), so each option uvicorn has (TLS,
``--forwarded-allow-ips``, ``--log-config``, ``--uds``/``--fd``, ``--ws``, ``--http``, ``--loop``,
``--env-file``, ``--timeout-keep-alive``, ``--h11-max-incomplete-event-size``...) is accepted with
uvicorn's spelling, types, validation and ``UVICORN_*`` variables, and a new uvicorn option works
without a change here. Only what was given explicitly is passed on, so uvicorn's defaults stay.

What cannot be honoured is refused with one line naming the option (:data:`REFUSED`), never
ignored. Under ``--wsgi`` (gunicorn) the options that have a gunicorn equivalent are translated
(:data:`GUNICORN_EQUIVALENT`); the others are refused.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from typing import Any

from lossless.errors import LosslessError

__all__ = ["GUNICORN_EQUIVALENT", "REFUSED", "gunicorn_options", "parse_uvicorn_options"]

_RELOAD = "a reloader restarts the server without the drain sequence (use plain uvicorn to develop)"

#: uvicorn options ``lossless serve`` cannot honour, and why.
REFUSED: dict[str, str] = {
    "reload": _RELOAD,
    "reload_dirs": _RELOAD,
    "reload_includes": _RELOAD,
    "reload_excludes": _RELOAD,
    "reload_delay": _RELOAD,
    "timeout_graceful_shutdown": "the drain has one deadline: use --shutdown-timeout",
    "timeout_worker_healthcheck": "workers are supervised by the master: use --timeout",
    "version": "use uvicorn --version",
}

#: Options ``lossless serve`` defines itself (parsed by argparse, never by uvicorn's command).
OWN = frozenset(
    {
        "app",
        "host",
        "port",
        "workers",
        "factory",
        "app_dir",
        "log_level",
        "access_log",
        "backlog",
        "root_path",
        "proxy_headers",
        "limit_concurrency",
    }
)

#: uvicorn option -> gunicorn setting, for ``--wsgi``.
GUNICORN_EQUIVALENT: dict[str, str] = {
    "ssl_keyfile": "keyfile",
    "ssl_certfile": "certfile",
    "ssl_ca_certs": "ca_certs",
    "ssl_ciphers": "ciphers",
    "ssl_cert_reqs": "cert_reqs",
    "ssl_version": "ssl_version",
    "forwarded_allow_ips": "forwarded_allow_ips",
    "timeout_keep_alive": "keepalive",
    "limit_max_requests": "max_requests",
    "limit_max_requests_jitter": "max_requests_jitter",
    "log_config": "logconfig",
    "env_file": "",  # loaded by lossless serve itself, before the app is imported
    "uds": "bind",
    "fd": "bind",
}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def parse_uvicorn_options(app: str, extra: Sequence[str]) -> dict[str, Any]:
    """Parse ``extra`` (the arguments ``lossless serve`` did not recognise) with uvicorn's own
    command; return ``{uvicorn.Config keyword: value}`` for the options given (on the command
    line or as ``UVICORN_*`` variables). Raises a one-line :class:`LosslessError` for an unknown
    or invalid option and for one in :data:`REFUSED`."""
    try:
        import click
        import uvicorn
        import uvicorn.main
    except ImportError:
        if extra:
            raise LosslessError(
                f"unrecognized arguments: {' '.join(extra)} (uvicorn's options need uvicorn: "
                "pip install 'lossless[uvicorn]')"
            ) from None
        return {}
    command = uvicorn.main.main
    command = getattr(command, "__self__", command)  # a bound click.Command.main in new uvicorn
    assert isinstance(command, click.Command)
    try:
        ctx = command.make_context("lossless serve", [app, *extra], resilient_parsing=False)
    except click.ClickException as exc:
        raise LosslessError(exc.format_message().replace("\n", " ")) from None
    except click.exceptions.Exit:
        raise LosslessError("uvicorn's --help and --version are not lossless serve's") from None
    config_params = set(inspect.signature(uvicorn.Config).parameters)
    given: dict[str, Any] = {}
    with ctx:
        for name, value in ctx.params.items():
            if name in OWN:
                continue
            source = ctx.get_parameter_source(name)
            if source not in (
                click.core.ParameterSource.COMMANDLINE,
                click.core.ParameterSource.ENVIRONMENT,
            ):
                continue
            if name in REFUSED:
                raise LosslessError(f"{_flag(name)} cannot be honoured: {REFUSED[name]}")
            if name == "interface" and value == "wsgi":
                raise LosslessError("--interface wsgi cannot be honoured: use --wsgi (gunicorn)")
            if name == "headers":
                value = [h.split(":", 1) for h in value]
                if any(len(h) != 2 for h in value):
                    raise LosslessError("--header must be NAME:VALUE")
            if name not in config_params:
                raise LosslessError(f"{_flag(name)} cannot be honoured by this uvicorn version")
            given[name] = value
    return given


def load_env_file(path: str | None) -> None:
    """Load ``--env-file`` into ``os.environ`` before the app is imported (uvicorn loads it
    later, when its config is built: too late for an app that reads its environment at import)."""
    if path is None:
        return
    if not os.path.isfile(path):
        raise LosslessError(f"--env-file {path}: no such file")
    try:
        from dotenv import load_dotenv
    except ImportError:
        raise LosslessError("--env-file needs python-dotenv: pip install python-dotenv") from None
    load_dotenv(dotenv_path=path)


def gunicorn_options(uvicorn_options: dict[str, Any]) -> dict[str, Any]:
    """Translate uvicorn options given with ``--wsgi`` to gunicorn settings; refuse (one line
    naming it) each one gunicorn cannot honour."""
    settings: dict[str, Any] = {}
    for name, value in uvicorn_options.items():
        target = GUNICORN_EQUIVALENT.get(name)
        if target is None:
            raise LosslessError(
                f"{_flag(name)} cannot be honoured with --wsgi: it is a uvicorn (ASGI) option "
                "with no gunicorn equivalent"
            )
        if name == "env_file" or not target:
            continue
        if name == "uds":
            settings["bind"] = [f"unix:{value}"]
        elif name == "fd":
            settings["bind"] = [f"fd://{value}"]
        elif name == "log_config":
            ext = os.path.splitext(str(value))[1].lower()
            if ext == ".json":
                settings["logconfig_json"] = str(value)
            elif ext in (".yaml", ".yml"):
                raise LosslessError("--log-config: gunicorn (--wsgi) reads .ini or .json, not YAML")
            else:
                settings["logconfig"] = str(value)
        else:
            settings[target] = value
    return settings
