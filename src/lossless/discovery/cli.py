"""Command-line flags for service discovery, shared by ``lossless serve`` (and any command that
runs a lifecycle): :func:`add_arguments` adds them, :func:`attach_from_args` acts on them.

Every flag also comes from an environment variable (the flag wins):

==========================================  ===============================  ==================
flag                                         variable                         default
==========================================  ===============================  ==================
``--registry URL`` (repeatable)              ``LOSSLESS_REGISTRY`` (URLs       none: no discovery
                                             separated by spaces)
``--service-name NAME``                      ``LOSSLESS_SERVICE_NAME``        required with a
                                                                              registry
``--instance-id ID``                         ``LOSSLESS_INSTANCE_ID``,        ``HOSTNAME-PORT``
                                             ``POD_NAME``
``--advertise-address ADDR``                 ``LOSSLESS_ADVERTISE_ADDRESS``,  bind host, else
                                             ``POD_IP``                       outbound interface
``--registry-required`` /                    ``LOSSLESS_REGISTRY_REQUIRED``   required
``--no-registry-required``
``--registry-timeout SECONDS``               ``LOSSLESS_REGISTRY_TIMEOUT``    2
==========================================  ===============================  ==================
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping

from lossless import argtypes
from lossless.discovery.attach import Attachment, attach
from lossless.discovery.instance import Instance
from lossless.discovery.urls import registry_from_url
from lossless.errors import LosslessError
from lossless.lifecycle import Lifecycle

DEFAULT_TIMEOUT = 2.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the discovery flags (see the module docstring) to ``parser``."""
    g = parser.add_argument_group("service discovery (each also from a LOSSLESS_* variable)")
    g.add_argument(
        "--registry",
        action="append",
        metavar="URL",
        help="register here when ready, deregister at SIGTERM: etcd://HOST:2379/PREFIX, "
        "zookeeper://HOST:2181/PREFIX or consul://HOST:8500 (repeatable)",
    )
    g.add_argument("--service-name", metavar="NAME", help="the service's name in the registry")
    g.add_argument("--instance-id", metavar="ID", help="this instance's id (default HOSTNAME-PORT)")
    g.add_argument(
        "--advertise-address",
        metavar="ADDR",
        help="the address callers connect to (default POD_IP, else the bind host or the "
        "outbound interface)",
    )
    g.add_argument(
        "--registry-required",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="hold readiness until registered (default: yes)",
    )
    g.add_argument(
        "--registry-timeout",
        type=argtypes.positive_duration,
        metavar="SECONDS",
        help="bound for each registry call, deregistration at SIGTERM included (default 2)",
    )


def _env_bool(env: Mapping[str, str], var: str) -> bool | None:
    raw = env.get(var, "").strip().lower()
    if not raw:
        return None
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise LosslessError(f"{var}={raw!r} is not a boolean (use true or false)")


def attach_from_args(
    lifecycle: Lifecycle,
    args: argparse.Namespace,
    port: int,
    *,
    host: str | None = None,
    env: Mapping[str, str] | None = None,
) -> list[Attachment]:
    """Attach one registrar per ``--registry`` URL (or ``LOSSLESS_REGISTRY``) to ``lifecycle``.

    ``port`` is the port the server listens on (advertised, and probed before registering);
    ``host`` the bind host (default ``args.host``). Returns the attachments (empty without a
    registry). Every URL is validated before anything is attached; a bad URL, a missing
    service name, port 0 or ``--wsgi`` raise a one-line :class:`LosslessError` (exit 2).
    """
    env = os.environ if env is None else env
    urls = list(getattr(args, "registry", None) or env.get("LOSSLESS_REGISTRY", "").split())
    if not urls:
        return []
    if getattr(args, "wsgi", False):
        raise LosslessError(
            "--registry is supported with uvicorn (ASGI) only: under gunicorn the workers, "
            "not the master, become ready"
        )
    service = getattr(args, "service_name", None) or env.get("LOSSLESS_SERVICE_NAME")
    if not service:
        raise LosslessError("--registry needs --service-name (or LOSSLESS_SERVICE_NAME)")
    if port == 0:
        raise LosslessError("--registry needs a fixed --port (0 picks one nobody could advertise)")
    required = getattr(args, "registry_required", None)
    if required is None:
        required = _env_bool(env, "LOSSLESS_REGISTRY_REQUIRED")
    timeout = getattr(args, "registry_timeout", None)
    if timeout is None and env.get("LOSSLESS_REGISTRY_TIMEOUT"):
        try:
            timeout = argtypes.positive_duration(env["LOSSLESS_REGISTRY_TIMEOUT"])
        except argparse.ArgumentTypeError as exc:
            raise LosslessError(f"LOSSLESS_REGISTRY_TIMEOUT: {exc}") from None
    bind = host if host is not None else getattr(args, "host", None)
    instance = Instance.detect(
        service,
        port,
        instance_id=getattr(args, "instance_id", None),
        address=getattr(args, "advertise_address", None),
        bind_host=bind,
        env=env,
    )
    registrars = [registry_from_url(url, instance) for url in urls]
    listening = (bind or "127.0.0.1", port)
    return [
        attach(
            lifecycle,
            registrar,
            required=True if required is None else required,
            timeout=DEFAULT_TIMEOUT if timeout is None else timeout,
            listening=listening,
        )
        for registrar in registrars
    ]
