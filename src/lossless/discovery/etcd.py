"""etcd v3: the instance is a key under a lease that the runtime keeps alive.

Key ``<prefix>/<service>/<instance-id>``, value :meth:`Instance.to_json`, attached to a lease of
``ttl`` seconds (default 10). :meth:`EtcdRegistrar.keepalive` refreshes the lease every ttl/3 s
and reports the registration lost when the lease or the key is gone (etcd restarted without its
data, lease revoked, key deleted). Deregistration revokes the lease, which deletes the key in the
same revision: watchers see one ``DELETE`` event. A process killed with ``kill -9`` disappears
when its lease expires, at most ``ttl`` seconds later.

The client itself is :mod:`lossless.etcdv3`.
"""

from __future__ import annotations

import contextlib
import time

from lossless.discovery.instance import Instance
from lossless.errors import RegistryError
from lossless.etcdv3 import EtcdClient


class EtcdRegistrar:
    """:class:`~lossless.discovery.registrar.Registrar` for etcd v3 (see the module docstring)."""

    kind = "etcd"

    def __init__(self, client: EtcdClient, instance: Instance, prefix: str, ttl: int = 10) -> None:
        if ttl < 1:
            raise ValueError("etcd lease ttl must be at least 1 s")
        self.client = client
        self.instance = instance
        self.prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
        self.key = f"{self.prefix}/{instance.service}/{instance.id}"
        self.ttl = ttl
        self.keepalive_interval = ttl / 3
        self.expires_after = float(ttl)
        self.lease = 0

    def describe(self) -> str:
        return f"etcd {self.client.describe()} {self.key}"

    def register(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        if self.lease:  # replacing a registration: do not leave its lease behind
            with contextlib.suppress(RegistryError):
                self.client.revoke(self.lease, min(timeout / 4, 0.5))
            self.lease = 0
        timeout = max(0.001, end - time.monotonic())
        lease = self.client.grant(self.ttl, timeout)
        self.lease = lease
        self.client.put(self.key, self.instance.to_json(), timeout, lease=lease)

    def keepalive(self, timeout: float) -> bool:
        if not self.lease or self.client.keepalive(self.lease, timeout) <= 0:
            return False
        found = self.client.get(self.key, timeout)
        return found is not None and found[1] == self.lease

    def deregister(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        if self.lease and self.client.revoke(self.lease, timeout):
            self.lease = 0  # the revoke deleted the key in the same revision
            return
        self.client.delete(self.key, max(0.001, end - time.monotonic()))
        self.lease = 0

    def close(self) -> None:
        """Nothing to release: every call uses its own connection."""
