"""ZooKeeper: the instance is an ephemeral node that lives as long as the client's session.

Node ``<prefix>/<service>/<instance-id>``, data :meth:`Instance.to_json`, created ephemeral with
the parents made persistent as needed. The session is kept by kazoo's own thread (heartbeats
every third of the session timeout); :meth:`ZooKeeperRegistrar.keepalive` checks that the node
still exists *and belongs to the current session*. When the session expires (a network
partition or a process pause longer than the session timeout, or a ZooKeeper restart without
its data) ZooKeeper deletes the node; kazoo reconnects with a new session, ``keepalive`` reports
the registration lost and the runtime re-creates the node. Deregistration deletes the node (one
``NodeDeleted`` / child event for watchers); a process killed with ``kill -9`` disappears when
its session times out.

Client library: ``kazoo`` (pure Python, maintained by the python-zk organisation), installed
with the ``zookeeper`` extra.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from lossless.discovery.instance import Instance
from lossless.discovery.registrar import RegistryError

# kazoo logs through a child of the ``lossless`` logger, so its lines are JSON like ours; its
# INFO chatter (every connect) stays out.
_LOGGER = logging.getLogger("lossless.kazoo")
_LOGGER.setLevel(logging.WARNING)


def _kazoo() -> Any:
    try:
        from kazoo import client, exceptions  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - depends on the extra
        raise RegistryError("kazoo is not installed: pip install 'lossless[zookeeper]'") from None
    return client, exceptions


class ZooKeeperRegistrar:
    """:class:`~lossless.discovery.registrar.Registrar` for ZooKeeper (see the module
    docstring). ``hosts`` is kazoo's ``host:port[,host:port...]``."""

    kind = "zookeeper"

    def __init__(
        self, hosts: str, instance: Instance, prefix: str, session_timeout: float = 10.0
    ) -> None:
        self.hosts = hosts
        self.instance = instance
        self.prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
        self.path = f"{self.prefix}/{instance.service}/{instance.id}"
        self.session_timeout = session_timeout
        self.keepalive_interval = min(0.5, session_timeout / 3)
        self.expires_after = session_timeout
        self._client: Any = None
        self._lock = threading.Lock()

    def describe(self) -> str:
        return f"zookeeper {self.hosts} {self.path}"

    # -- connection ----------------------------------------------------------------------------
    def _connected(self, timeout: float) -> Any:
        """A started, connected kazoo client (a new one after a failed start)."""
        client_mod, _exc = _kazoo()
        with self._lock:
            client = self._client
            if client is None:
                client = client_mod.KazooClient(
                    hosts=self.hosts,
                    timeout=self.session_timeout,
                    # Reconnect for ever in the background (a new session after expiry);
                    # our own calls are bounded by their timeouts instead.
                    connection_retry={"max_tries": -1, "delay": 0.05, "max_delay": 1.0},
                    logger=_LOGGER,
                )
                self._client = client
        if client.connected:
            return client
        try:
            client.start(timeout=max(timeout, 0.001))
        except Exception as exc:  # kazoo's timeout_exception, socket errors
            with self._lock:
                if self._client is client:
                    self._client = None
            raise RegistryError(
                f"zookeeper {self.hosts}: no session within {timeout:g} s ({type(exc).__name__})"
            ) from None
        negotiated = getattr(client, "_session_timeout", 0)
        if negotiated:
            self.expires_after = negotiated / 1000.0
        return client

    def _call(
        self, what: str, result: Any, timeout: float, passthrough: tuple[type, ...] = ()
    ) -> Any:
        """``result``'s value within ``timeout``; a kazoo error or no answer becomes one
        ``RegistryError`` naming ``what``, except the node errors and ``passthrough``."""
        _client, exc = _kazoo()
        try:
            return result.get(timeout=max(timeout, 0.001))
        except (exc.NoNodeError, exc.NodeExistsError, *passthrough):
            raise
        except exc.KazooException as error:
            raise RegistryError(
                f"zookeeper {self.hosts}: {what} failed: {type(error).__name__}"
            ) from None
        except Exception as error:  # the handler's timeout_exception
            raise RegistryError(
                f"zookeeper {self.hosts}: {what}: no answer within {timeout:g} s "
                f"({type(error).__name__})"
            ) from None

    # -- Registrar -----------------------------------------------------------------------------
    def register(self, timeout: float) -> None:
        _client, exc = _kazoo()
        client = self._connected(timeout)
        session = client.client_id[0] if client.client_id else None
        parent = self.path.rsplit("/", 1)[0]
        if parent:
            try:
                client.ensure_path(parent)
            except exc.KazooException as error:
                raise RegistryError(
                    f"zookeeper {self.hosts}: creating {parent} failed: {type(error).__name__}"
                ) from None
        data = self.instance.to_json()
        for _attempt in range(2):
            try:
                self._call(
                    f"create {self.path}",
                    client.create_async(self.path, data, ephemeral=True),
                    timeout,
                )
                return
            except exc.NodeExistsError:
                pass
            except exc.NoNodeError:
                raise RegistryError(f"zookeeper {self.hosts}: {parent} vanished") from None
            # A node of ours from an expired session (or a crashed predecessor with the same
            # instance id) is still there: replace it, unless the current session owns it.
            stat = self._call(f"exists {self.path}", client.exists_async(self.path), timeout)
            if stat is not None and stat.ephemeralOwner == session:
                self._call(f"set {self.path}", client.set_async(self.path, data), timeout)
                return
            try:
                self._call(f"delete {self.path}", client.delete_async(self.path), timeout)
            except exc.NoNodeError:
                pass
        raise RegistryError(f"zookeeper {self.hosts}: {self.path} keeps being re-created")

    def keepalive(self, timeout: float) -> bool:
        client = self._client
        if client is None:
            return False
        if not client.connected:
            raise RegistryError(f"zookeeper {self.hosts}: connection lost, reconnecting")
        session = client.client_id[0] if client.client_id else None
        stat = self._call(f"exists {self.path}", client.exists_async(self.path), timeout)
        return stat is not None and stat.ephemeralOwner == session

    def deregister(self, timeout: float) -> None:
        _client, exc = _kazoo()
        client = self._client
        if client is None:
            return  # never connected: nothing of ours can exist
        end = time.monotonic() + timeout
        # A connection lost under the delete (or a session expired: its ephemeral node is gone,
        # though a newer session's may exist) is retried once kazoo has reconnected, until the
        # timeout: a process paused and resumed by its SIGTERM meets exactly that.
        transient = (exc.ConnectionLoss, exc.SessionExpiredError)
        while True:
            while not client.connected and time.monotonic() < end:
                time.sleep(0.01)  # kazoo is reconnecting in the background; do not disturb it
            if not client.connected:
                raise RegistryError(f"zookeeper {self.hosts}: not connected within {timeout:g} s")
            left = max(0.001, end - time.monotonic())
            what = f"delete {self.path}"
            try:
                self._call(what, client.delete_async(self.path), left, passthrough=transient)
                return
            except exc.NoNodeError:
                return
            except transient as error:
                if time.monotonic() >= end:
                    raise RegistryError(
                        f"zookeeper {self.hosts}: {what} failed: {type(error).__name__} "
                        f"(retried until the {timeout:g} s timeout)"
                    ) from None
                time.sleep(0.01)  # kazoo may not have noticed the loss yet

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is None:
            return
        try:
            client.stop()
            client.close()
        except Exception:  # closing is best effort: the session expires on its own
            pass
