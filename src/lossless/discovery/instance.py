"""The identity of one service instance in a registry, and the JSON value stored for it.

The value every registrar stores (etcd key value, ZooKeeper node data, Consul ``Meta``) is one
JSON object, UTF-8, keys sorted::

    {"address": "10.1.2.3", "id": "orders-7d9f-x2x", "metadata": {"version": "1.4.2",
     "zone": "eu-west-1a"}, "port": 8000, "service": "orders"}

``service``, ``id``, ``address`` (an IP address or host name callers connect to) and ``port``
are always present; ``metadata`` holds string values only and may be empty. Readers must ignore
keys they do not know (the format may grow; it never changes the meaning of these five).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import socket
from collections.abc import Mapping
from typing import Any

from lossless.errors import LosslessError

#: Environment variables read by :meth:`Instance.detect`, first match wins.
ADDRESS_VARS = ("LOSSLESS_ADVERTISE_ADDRESS", "POD_IP")
ID_VARS = ("LOSSLESS_INSTANCE_ID", "POD_NAME")
VERSION_VAR = "LOSSLESS_VERSION"
ZONE_VAR = "LOSSLESS_ZONE"

# Names end up in etcd keys, ZooKeeper paths and Consul IDs: keep to a portable alphabet.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,252}$")
_WILDCARD_HOSTS = ("", "0.0.0.0", "::", "[::]")


@dataclasses.dataclass(frozen=True, slots=True)
class Instance:
    """One instance of a service as callers should reach it."""

    service: str
    id: str
    address: str
    port: int
    metadata: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        for label, value in (("service name", self.service), ("instance id", self.id)):
            if not _NAME.match(value):
                raise LosslessError(
                    f"{label} {value!r} must be 1-253 characters of letters, digits, '.', '_', "
                    "':' or '-', starting with a letter or digit"
                )
        if not self.address:
            raise LosslessError("advertise address is empty")
        if not 0 < self.port < 65536:
            raise LosslessError(f"advertised port {self.port} is not within 1..65535")

    def to_json(self) -> bytes:
        """The registry value (see the module docstring)."""
        value = {
            "service": self.service,
            "id": self.id,
            "address": self.address,
            "port": self.port,
            "metadata": dict(self.metadata),
        }
        return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> Instance:
        """Parse a registry value; raises ``ValueError`` when it is not one."""
        raw: Any = json.loads(data)
        if not isinstance(raw, dict):
            raise ValueError("registry value is not a JSON object")
        try:
            metadata = raw.get("metadata") or {}
            return cls(
                service=str(raw["service"]),
                id=str(raw["id"]),
                address=str(raw["address"]),
                port=int(raw["port"]),
                metadata={str(k): str(v) for k, v in dict(metadata).items()},
            )
        except (KeyError, TypeError, LosslessError) as exc:
            raise ValueError(f"not an instance record: {exc}") from None

    @classmethod
    def detect(
        cls,
        service: str,
        port: int,
        *,
        instance_id: str | None = None,
        address: str | None = None,
        bind_host: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Instance:
        """Build the identity of this process.

        - address: ``address``, else ``LOSSLESS_ADVERTISE_ADDRESS``, else ``POD_IP``, else
          ``bind_host`` when it is a specific address, else the address of the interface that
          routes outwards (no packet is sent), else ``127.0.0.1``;
        - id: ``instance_id``, else ``LOSSLESS_INSTANCE_ID``, else ``POD_NAME``, else
          ``<hostname>-<port>`` (a pod's hostname is its name, unique in its namespace);
        - metadata: ``version`` from ``LOSSLESS_VERSION`` and ``zone`` from ``LOSSLESS_ZONE``
          when set.

        Raises :class:`LosslessError` for an unusable name, id, address or port.
        """
        env = os.environ if env is None else env
        addr = address or _first(env, ADDRESS_VARS)
        if not addr and bind_host not in _WILDCARD_HOSTS and bind_host is not None:
            addr = bind_host
        addr = addr or _outbound_address()
        ident = instance_id or _first(env, ID_VARS) or f"{socket.gethostname()}-{port}"
        metadata = {
            key: env[var]
            for key, var in (("version", VERSION_VAR), ("zone", ZONE_VAR))
            if env.get(var)
        }
        return cls(service=service, id=ident, address=addr, port=port, metadata=metadata)


def _first(env: Mapping[str, str], names: tuple[str, ...]) -> str | None:
    for name in names:
        if env.get(name):
            return env[name]
    return None


def _outbound_address() -> str:
    """The local address of the interface with the default route (UDP connect sends nothing)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: never routed, nothing is sent
            return str(probe.getsockname()[0])
    except OSError:
        return "127.0.0.1"
