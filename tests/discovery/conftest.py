"""Real registries for the discovery tests: etcd and ZooKeeper on free loopback ports with
temporary data directories, always stopped; and ``lossless serve`` processes with the discovery
flags (through :mod:`tests.discovery.serve_with_registry`)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import free_port
from tests.runtime.conftest import Server

from lossless._prctl import die_with_parent, prctl
from lossless.discovery.registrar import RegistryError
from lossless.etcdv3 import EtcdClient

HERE = Path(__file__).parent
ROOT = HERE.parent.parent

prctl()  # looked up here, in the parent: the forked child only makes the system call
APPS = ROOT / "tests" / "runtime"
ETCD = shutil.which("etcd") or "/usr/bin/etcd"
ZOOKEEPER_JAR = Path("/usr/share/java/zookeeper.jar")


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"{what} within {timeout} s")


def t0_of(draining: dict[str, Any]) -> float:
    """t0 as wall-clock time from a ``draining`` event: its ``ts`` less its ``t_plus`` (the
    line may be logged a moment after t0 when the server waits for the CPU)."""
    return float(draining["ts"]) - float(draining.get("t_plus") or 0.0)


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGCONT)
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


class Etcd:
    """One etcd member on 127.0.0.1 (client and peer ports free), data in a temp dir."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="lossless-etcd-"))
        self.port = free_port()
        self.peer_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.client = EtcdClient([("127.0.0.1", self.port)])

    @property
    def url(self) -> str:
        return f"etcd://127.0.0.1:{self.port}/services"

    def start(self, *, wipe: bool = False) -> None:
        if wipe:
            shutil.rmtree(self.dir / "data", ignore_errors=True)
        client = f"http://127.0.0.1:{self.port}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        self.proc = subprocess.Popen(
            [
                ETCD,
                "--name=default",
                f"--data-dir={self.dir / 'data'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=default={peer}",
                "--heartbeat-interval=50",
                "--election-timeout=500",  # minimum lease TTL is 1.5 x this
                "--log-level=error",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        _wait(self._healthy, 15, "etcd did not start")

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"etcd exited with {self.proc.returncode}")
        try:
            self.client.get_prefix("/", 0.5)
        except RegistryError:
            return False
        return True

    def stop(self) -> None:
        _stop(self.proc)
        self.proc = None

    def pause(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class ZooKeeper:
    """One standalone ZooKeeper on 127.0.0.1 (tickTime 200 ms: sessions from 0.4 s)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="lossless-zk-"))
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        cfg = self.dir / "zoo.cfg"
        cfg.write_text(
            "tickTime=200\n"
            f"dataDir={self.dir / 'data'}\n"
            f"clientPort={self.port}\n"
            "clientPortAddress=127.0.0.1\n"
            "admin.enableServer=false\n"
            "minSessionTimeout=400\n"
            "maxSessionTimeout=60000\n"
            "4lw.commands.whitelist=ruok\n"
        )
        self.cfg = cfg

    @property
    def hosts(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"zookeeper://127.0.0.1:{self.port}/services"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "java",
                "-Xmx128m",
                "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1",
                "-cp",
                f"{ZOOKEEPER_JAR}:/etc/zookeeper/conf",
                "org.apache.zookeeper.server.quorum.QuorumPeerMain",
                str(self.cfg),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        _wait(self._ok, 30, "ZooKeeper did not start")
        self._open_a_session(60)

    def _open_a_session(self, timeout: float) -> None:
        """Return once a client session can be opened: ``imok`` comes before the server is
        quick to serve sessions (a fresh JVM on a loaded machine took more than the tests'
        10 s to open their first one)."""
        from kazoo.client import KazooClient  # type: ignore[import-untyped]

        client = KazooClient(hosts=self.hosts, timeout=10)
        try:
            client.start(timeout)
        finally:
            client.stop()
            client.close()

    def _ok(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"ZooKeeper exited with {self.proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"ruok")
                return s.recv(4) == b"imok"
        except OSError:
            return False

    def cleanup(self) -> None:
        _stop(self.proc)
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)


def _need(path: str, package: str) -> None:
    if not Path(path).exists():
        pytest.fail(f"{path} missing: install the Debian package {package} (make setup does)")


@pytest.fixture(scope="session")
def etcd() -> Iterator[Etcd]:
    """A shared etcd for tests that do not stop or pause it."""
    _need(ETCD, "etcd-server")
    server = Etcd()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def own_etcd() -> Iterator[Etcd]:
    """An etcd of the test's own (not started yet), for tests that stop, pause or wipe it."""
    _need(ETCD, "etcd-server")
    server = Etcd()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def zookeeper() -> Iterator[ZooKeeper]:
    _need(str(ZOOKEEPER_JAR), "zookeeper")
    if shutil.which("java") is None:
        pytest.fail("java missing: install the Debian package default-jre-headless")
    server = ZooKeeper()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


class RegistryServer(Server):
    """A ``lossless serve`` process with the discovery flags (see serve_with_registry)."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.kind = "uvicorn"
        self.port = free_port()
        cmd = [
            sys.executable,
            "-m",
            "tests.discovery.serve_with_registry",
            "serve",
            "apps:asgi",
            "--app-dir",
            str(APPS),
            "--port",
            str(self.port),
            *args,
        ]
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("LOSSLESS_")}
        full_env.pop("KUBERNETES_SERVICE_HOST", None)
        full_env.update(env or {})
        full_env["PYTHONPATH"] = str(ROOT)
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=full_env,
            start_new_session=True,
            text=True,
            cwd=str(ROOT),
        )
        self._watch()

    def wait_event(self, name: str, timeout: float = 10.0) -> dict[str, Any]:
        found: dict[str, Any] = {}

        def seen() -> bool:
            event = self.event(name)
            if event is not None:
                found.update(event)
                return True
            return False

        _wait(seen, timeout, f"no {name!r} event: {self.stderr()}")
        return found


@pytest.fixture
def serve_registry() -> Iterator[Callable[..., RegistryServer]]:
    started: list[RegistryServer] = []

    def start(*args: str, env: dict[str, str] | None = None) -> RegistryServer:
        server = RegistryServer(*args, env=env)
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()


class EtcdWatcher:
    """Records every event under a prefix with its wall-clock arrival time (``time.time()``,
    comparable with the ``ts`` of the server's log events)."""

    def __init__(self, client: EtcdClient, prefix: str) -> None:
        self.events: list[tuple[float, str, str, bytes]] = []
        self._client = client
        self._prefix = prefix
        self._watch = client.watch(prefix)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with contextlib.suppress(RegistryError):
            for event in self._watch:
                self.events.append((time.time(), event.type, event.key, event.value))

    def wait_for(self, kind: str, timeout: float = 10.0, after: float = 0.0) -> float:
        """Wall time of the first ``kind`` (PUT/DELETE) event received after ``after``."""
        found: list[float] = []

        def seen() -> bool:
            found.extend(t for t, k, _key, _v in list(self.events) if k == kind and t > after)
            return bool(found)

        _wait(seen, timeout, f"no etcd {kind} event (seen: {self.events})")
        return found[0]

    def kinds_after(self, t: float, key: str | None = None) -> list[str]:
        return [k for when, k, k_key, _v in list(self.events) if when > t and key in (None, k_key)]

    def sync(self, timeout: float = 10.0) -> None:
        """Return once every event written before this call has been received: a watch
        delivers events in revision order, so seeing a sentinel PUT written now proves it."""
        sentinel = f"{self._prefix}~sync"
        self._client.put(sentinel, b"", 2.0)
        _wait(
            lambda: any(k_key == sentinel for _t, _k, k_key, _v in list(self.events)),
            timeout,
            "the watch did not deliver the sync sentinel",
        )

    def close(self) -> None:
        self._watch.close()
        self._thread.join(5)


@pytest.fixture
def etcd_watch(etcd: Etcd) -> Iterator[Callable[[str], EtcdWatcher]]:
    watchers: list[EtcdWatcher] = []

    def open_watch(prefix: str, client: EtcdClient | None = None) -> EtcdWatcher:
        watcher = EtcdWatcher(client or etcd.client, prefix)
        watchers.append(watcher)
        return watcher

    yield open_watch
    for watcher in watchers:
        watcher.close()
