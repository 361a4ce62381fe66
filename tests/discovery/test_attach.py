"""attach() in-process with a scripted registrar: readiness gating, retry with backoff,
re-registration while READY only, and the bound on deregistration at t0."""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from lossless.discovery import Instance, Registrar, RegistryError, attach
from lossless.discovery.attach import backoff
from lossless.lifecycle import Lifecycle, State
from lossless.settings import Settings


class Scripted:
    """A registrar whose registry can be down, lose the registration, or hang."""

    kind = "scripted"
    keepalive_interval = 0.05
    expires_after = 3.0

    def __init__(self) -> None:
        self.instance = Instance("svc", "svc-1", "127.0.0.1", 9)
        self.down = False
        self.hang = 0.0
        self.holds = True
        self.calls: list[tuple[float, str]] = []
        self.lock = threading.Lock()

    def describe(self) -> str:
        return "scripted registry"

    def _call(self, name: str, timeout: float) -> None:
        with self.lock:
            self.calls.append((time.monotonic(), name))
        if self.hang:
            time.sleep(self.hang)
        if self.down:
            raise RegistryError("scripted registry unreachable: connection refused")

    def register(self, timeout: float) -> None:
        self._call("register", timeout)
        self.holds = True

    def keepalive(self, timeout: float) -> bool:
        self._call("keepalive", timeout)
        return self.holds

    def deregister(self, timeout: float) -> None:
        self._call("deregister", timeout)

    def close(self) -> None:
        self.calls.append((time.monotonic(), "close"))

    def times(self, name: str) -> list[float]:
        return [t for t, n in list(self.calls) if n == name]


@pytest.fixture
def lifecycle() -> Iterator[Lifecycle]:
    lc = Lifecycle(Settings(check_interval=0.05, shutdown_timeout=5, drain_delay=0))
    yield lc
    lc.drain()
    lc.shutdown_sync()


def _wait(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(0.005)


def test_scripted_registrar_satisfies_the_protocol() -> None:
    assert isinstance(Scripted(), Registrar)


def test_required_readiness_waits_for_registration_with_backoff(lifecycle: Lifecycle) -> None:
    """1. registry down at start 2. comes back after 4 failed attempts. Result: not READY
    while down (the check says why), attempts spaced by a growing backoff (each gap at least
    the backoff's lower bound: a thread that waits for the CPU only widens gaps), READY once
    registered."""
    reg = Scripted()
    reg.down = True
    att = attach(lifecycle, reg, timeout=0.5)
    lifecycle.startup_sync()
    _wait(lambda: len(reg.times("register")) >= 4, timeout=10)
    assert lifecycle.state is State.STARTING and not lifecycle.is_ready()
    _wait(lambda: any(r.name == "registry" for r in lifecycle.health.results()))
    (result,) = [r for r in lifecycle.health.results() if r.name == "registry"]
    assert not result.ok and "unreachable" in result.output and "retry in" in result.output
    attempts = reg.times("register")
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert all(gap >= 0.08 * 2**i for i, gap in enumerate(gaps)), gaps  # backoff(i + 1)
    reg.down = False
    _wait(lifecycle.is_ready, timeout=10)
    assert att.registered and att.registrations == 1


def test_registration_waits_for_the_other_critical_checks(lifecycle: Lifecycle) -> None:
    reg = Scripted()
    gate = threading.Event()

    def database() -> str:
        if not gate.is_set():
            raise ConnectionError("db down")
        return "ok"

    lifecycle.add_check("db", database)
    attach(lifecycle, reg, timeout=0.5)
    lifecycle.startup_sync()
    time.sleep(0.5)
    assert reg.times("register") == []  # never discoverable while a critical check fails
    gate.set()
    _wait(lifecycle.is_ready)
    assert len(reg.times("register")) == 1


def test_registration_waits_for_the_listener(lifecycle: Lifecycle) -> None:
    """uvicorn starts the lifecycle before it binds: callers must not learn the address
    before something accepts connections on it."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    reg = Scripted()
    attach(lifecycle, reg, timeout=0.5, listening=("127.0.0.1", port))
    lifecycle.startup_sync()
    time.sleep(0.4)
    assert reg.times("register") == []
    holder.listen()
    try:
        _wait(lifecycle.is_ready)
    finally:
        holder.close()


def test_not_required_is_ready_at_once_and_registers_later(lifecycle: Lifecycle) -> None:
    reg = Scripted()
    reg.down = True
    att = attach(lifecycle, reg, required=False, timeout=0.5)
    lifecycle.startup_sync()
    _wait(lifecycle.is_ready, timeout=2)
    assert not att.registered
    (result,) = [r for r in lifecycle.health.results() if r.name == "registry"]
    assert not result.critical
    reg.down = False
    _wait(lambda: att.registered, timeout=3)


def test_lost_registration_is_recreated_while_ready_never_after_t0(lifecycle: Lifecycle) -> None:
    reg = Scripted()
    att = attach(lifecycle, reg, timeout=0.5)
    lifecycle.startup_sync()
    _wait(lifecycle.is_ready)
    reg.holds = False
    _wait(lambda: att.registrations == 2, timeout=2)
    assert lifecycle.is_ready()  # losing the registration never failed readiness
    reg.down = True  # the registry goes away: keepalive fails, readiness unaffected
    _wait(lambda: "keepalive failing" in att.status())
    assert lifecycle.is_ready()
    reg.down = False
    reg.holds = False
    lifecycle.drain()
    t0 = time.monotonic()
    _wait(lambda: bool(reg.times("deregister")))
    deregistered = reg.times("deregister")[0]
    time.sleep(0.3)  # the window in which a wrongly continuing keepalive loop would call
    assert [t for t in reg.times("register") if t > t0] == []
    # a keepalive already running at t0 may finish; none starts once the deregistration has
    # (the ordering, not the milliseconds, is the contract)
    assert [t for t in reg.times("keepalive") if t > deregistered] == []


def test_deregistration_is_bounded_and_recorded(lifecycle: Lifecycle) -> None:
    """The registry hangs at t0: the drain hook gives up after the registry timeout, the
    failure is recorded as forced (exit code 1), the shutdown finishes in time."""
    reg = Scripted()
    attach(lifecycle, reg, timeout=0.2)
    lifecycle.startup_sync()
    _wait(lifecycle.is_ready)
    reg.hang = 6.0
    start = time.monotonic()
    lifecycle.drain()
    lifecycle.shutdown_sync()
    assert time.monotonic() - start < 3.0  # the 0.2 s registry timeout, not the 6 s hang
    assert any("scripted registry" in what and "0.2 s" in what for what in lifecycle.forced)
    assert lifecycle.stopped() == 1


def test_drain_before_registration_deregisters_nothing(lifecycle: Lifecycle) -> None:
    reg = Scripted()
    attach(lifecycle, reg, timeout=0.2)
    lifecycle.drain()
    lifecycle.shutdown_sync()
    assert reg.times("deregister") == [] and not lifecycle.forced


def test_backoff_doubles_up_to_its_cap() -> None:
    assert 0.08 <= backoff(1) <= 0.1
    assert 0.16 <= backoff(2) <= 0.2
    assert 4.0 <= backoff(20) <= 5.0
