"""Registry URLs: which registry, where, and its options, in one string.

===============================================================  ==============================
``etcd://HOST[:PORT][,HOST[:PORT]...]/PREFIX?ttl=SECONDS``         etcd v3, default port 2379,
                                                                   prefix ``/services``, ttl 10
``zookeeper://HOST[:PORT][,...]/PREFIX?session_timeout=SECONDS``   ZooKeeper (also ``zk://``),
                                                                   default port 2181, prefix
                                                                   ``/services``, timeout 10
``consul://HOST[:PORT]?check=ttl|http&ttl=SECONDS&                 Consul agent, default port
deregister_after=DURATION&token=TOKEN``                            8500, TTL check of 10 s
===============================================================  ==============================

Every mistake is a one-line :class:`~lossless.errors.LosslessError` naming the URL and what is
wrong with it.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import urllib.parse

from lossless._duration import parse_duration
from lossless.discovery.etcd import EtcdRegistrar
from lossless.discovery.instance import Instance
from lossless.discovery.registrar import Registrar
from lossless.errors import LosslessError
from lossless.etcdv3 import EtcdClient

DEFAULT_PORTS = {"etcd": 2379, "zookeeper": 2181, "consul": 8500}
SCHEMES = {"etcd": "etcd", "zookeeper": "zookeeper", "zk": "zookeeper", "consul": "consul"}
OPTIONS = {
    "etcd": {"ttl"},
    "zookeeper": {"session_timeout"},
    "consul": {"check", "ttl", "deregister_after", "token", "readiness_path"},
}
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)$")


def _fail(url: str, why: str) -> LosslessError:
    return LosslessError(f"registry URL {url!r}: {why}")


def _hosts(url: str, netloc: str, kind: str) -> list[tuple[str, int]]:
    if not netloc:
        raise _fail(url, "no host (e.g. etcd://127.0.0.1:2379/services)")
    hosts: list[tuple[str, int]] = []
    for part in netloc.split(","):
        host, port_text = part, ""
        if part.startswith("["):
            host, _, rest = part.partition("]")
            host += "]"
            port_text = rest[1:] if rest.startswith(":") else rest
        elif ":" in part:
            host, _, port_text = part.rpartition(":")
        if not host or not _HOST.match(host):
            raise _fail(url, f"bad host {host!r}")
        if port_text:
            if not port_text.isdigit() or not 0 < int(port_text) < 65536:
                raise _fail(url, f"bad port {port_text!r}")
            port = int(port_text)
        else:
            port = DEFAULT_PORTS[kind]
        hosts.append((host.strip("[]"), port))
    return hosts


def _seconds(url: str, name: str, raw: str, *, minimum: float) -> float:
    try:
        value = parse_duration(raw)
    except ValueError:
        raise _fail(url, f"{name}={raw!r} is not a duration") from None
    if not math.isfinite(value) or value < minimum:
        raise _fail(url, f"{name} must be at least {minimum:g} s, got {raw!r}")
    return value


def etcd_from_url(url: str) -> tuple[EtcdClient, str, int]:
    """``(client, prefix, ttl)`` of an ``etcd://`` URL, for readers of the registry (the verify
    lab's ``registry`` traffic model). Raises :class:`LosslessError` like
    :func:`registry_from_url`."""
    if urllib.parse.urlsplit(url.strip()).scheme.lower() != "etcd":
        raise _fail(url, "not an etcd:// URL")
    registrar = registry_from_url(url, Instance("probe", "probe", "127.0.0.1", 1))
    assert isinstance(registrar, EtcdRegistrar)
    return registrar.client, registrar.prefix, registrar.ttl


def registry_from_url(url: str, instance: Instance) -> Registrar:
    """The registrar a registry URL names (see the module docstring for the syntax).

    Raises :class:`LosslessError` (one line) for an unknown scheme, a bad host or port, an
    unknown or invalid option, or a missing client library (``kazoo`` for ZooKeeper).
    """
    parts = urllib.parse.urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        known = ", ".join(f"{s}://" for s in ("etcd", "zookeeper", "consul"))
        shown = f"unknown scheme {scheme!r}" if scheme else "no scheme"
        raise _fail(url, f"{shown} (use {known})")
    kind = SCHEMES[scheme]
    if parts.fragment:
        raise _fail(url, "fragments (#...) mean nothing here")
    if "@" in parts.netloc:
        raise _fail(url, "credentials in the URL are not supported")
    try:
        query = urllib.parse.parse_qs(parts.query, keep_blank_values=True, strict_parsing=False)
    except ValueError as exc:
        raise _fail(url, f"bad query: {exc}") from None
    options = {key: values[-1] for key, values in query.items()}
    unknown = sorted(set(options) - OPTIONS[kind])
    if unknown:
        allowed = ", ".join(sorted(OPTIONS[kind]))
        raise _fail(url, f"unknown option {unknown[0]!r} for {kind} (known: {allowed})")
    hosts = _hosts(url, parts.netloc, kind)
    prefix = parts.path.rstrip("/") or "/services"
    if kind == "etcd":
        ttl = _seconds(url, "ttl", options.get("ttl", "10"), minimum=1)
        if ttl != int(ttl):
            raise _fail(url, f"ttl must be whole seconds (etcd leases), got {ttl:g}")
        return EtcdRegistrar(EtcdClient(hosts), instance, prefix, ttl=int(ttl))
    if kind == "zookeeper":
        if importlib.util.find_spec("kazoo") is None:
            raise LosslessError(
                "zookeeper:// needs kazoo: pip install 'lossless[zookeeper]'"
            ) from None
        from lossless.discovery.zookeeper import ZooKeeperRegistrar

        timeout = _seconds(
            url, "session_timeout", options.get("session_timeout", "10"), minimum=0.1
        )
        netloc = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in hosts)
        return ZooKeeperRegistrar(netloc, instance, prefix, session_timeout=timeout)
    from lossless.discovery.consul import ConsulRegistrar

    if len(hosts) > 1:
        raise _fail(url, "consul:// names one agent (the local one), not several hosts")
    if parts.path not in ("", "/"):
        raise _fail(url, "consul:// takes no path (services live in the agent, not under a prefix)")
    check = options.get("check", "ttl")
    if check not in ("ttl", "http"):
        raise _fail(url, f"check must be 'ttl' or 'http', got {check!r}")
    ttl = _seconds(url, "ttl", options.get("ttl", "10"), minimum=1)
    after = options.get("deregister_after", "1m")
    _seconds(url, "deregister_after", after, minimum=60)  # Consul's own minimum
    token = options.get("token") or os.environ.get("CONSUL_HTTP_TOKEN") or None
    return ConsulRegistrar(
        hosts[0][0],
        hosts[0][1],
        instance,
        check=check,
        ttl=ttl,
        deregister_after=after,
        readiness_path=options.get("readiness_path", "/readyz"),
        token=token,
    )
