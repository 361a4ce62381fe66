"""The contract every registry integration implements, and the error it raises.

A :class:`Registrar` knows one registry and one :class:`~lossless.discovery.instance.Instance`.
It does no threading and no retrying of its own: :func:`lossless.discovery.attach` calls it
from one thread at a time, retries with backoff, keeps the registration alive and decides when
to (re-)register and deregister. Every call is bounded by the ``timeout`` it is given.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from lossless.discovery.instance import Instance
from lossless.errors import RegistryError

__all__ = ["Registrar", "RegistryError"]


@runtime_checkable
class Registrar(Protocol):
    """One instance's registration in one registry.

    Lifetime: ``register`` → ``keepalive`` every :attr:`keepalive_interval` seconds →
    ``deregister`` at t0 → ``close``. ``register`` may be called again after ``keepalive``
    reported the registration lost (registry restarted, lease or session expired).
    """

    #: The instance this registrar registers.
    instance: Instance
    #: Short registry kind for logs: ``etcd``, ``zookeeper``, ``consul``.
    kind: str
    #: Seconds between two :meth:`keepalive` calls.
    keepalive_interval: float
    #: Seconds after which the registry forgets an instance that stopped keeping alive (lease
    #: TTL, session timeout, TTL check + critical deregistration); what a ``kill -9`` costs.
    expires_after: float

    def describe(self) -> str:
        """Where the registration lives, for logs: ``etcd 127.0.0.1:2379 /services/a/a-1``."""
        ...

    def register(self, timeout: float) -> None:
        """Create the registration, or replace one that was lost. Idempotent.

        Raises :class:`RegistryError` when the registry is unreachable or refuses within
        ``timeout`` seconds.
        """
        ...

    def keepalive(self, timeout: float) -> bool:
        """One liveness step: refresh the lease, check the session, pass the TTL check.

        Returns ``True`` while the registration holds, ``False`` when the registry no longer has
        it (the caller then calls :meth:`register`). Raises :class:`RegistryError` when the
        registry cannot be reached within ``timeout``.
        """
        ...

    def deregister(self, timeout: float) -> None:
        """Remove the registration so that callers stop routing to the instance: revoke the
        lease, delete the node, put the service in maintenance and deregister it. Idempotent
        (no error when nothing is registered). Raises :class:`RegistryError` within
        ``timeout``."""
        ...

    def close(self) -> None:
        """Release connections and background threads. Idempotent; never deregisters and never
        raises."""
        ...
