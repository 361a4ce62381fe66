"""Consul against the protocol fake (tests/discovery/consul_fake.py): no Consul agent can be
installed here, so these tests check the calls against the documented agent API."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from tests.discovery.conftest import t0_of
from tests.discovery.consul_fake import ConsulFake

from lossless.discovery import Instance, attach, registry_from_url
from lossless.lifecycle import Lifecycle
from lossless.settings import Settings


@pytest.fixture
def consul() -> Iterator[ConsulFake]:
    fake = ConsulFake()
    yield fake
    fake.close()


def _passing(consul: ConsulFake, name: str) -> list[str]:
    _status, answer = consul._route("GET", f"/v1/health/service/{name}", {"passing": ""}, None)
    return [entry["Service"]["ID"] for entry in answer]


def test_register_on_ready_maintenance_at_t0_then_deregister(serve_registry, consul) -> None:
    """1. serve registers with a TTL check when ready and passes it 2. SIGTERM with D = 3 s.
    Result: maintenance (critical at once) then deregister, both at t0 (within 1 s: the server
    and the fake, a thread of this process, may wait for the CPU), while the process still
    serves; no TTL pass after them; exit 0."""
    server = serve_registry(
        "--registry",
        f"{consul.url}?ttl=3",
        "--service-name",
        "web",
        "--instance-id",
        "web-1",
        "--drain-delay",
        "3",
        "--shutdown-timeout",
        "10",
        env={"LOSSLESS_VERSION": "1.2.3"},
    )
    server.wait_ready()
    (register,) = consul.calls_to("/v1/agent/service/register")
    assert register.method == "PUT" and "replace-existing-checks" in register.query
    body = register.body
    assert body["ID"] == "web-1" and body["Name"] == "web" and body["Port"] == server.port
    assert body["Address"] == "127.0.0.1"
    assert body["Meta"]["version"] == "1.2.3"
    assert json.loads(body["Meta"]["lossless_instance"])["id"] == "web-1"
    assert body["Check"]["TTL"] == "3s" and body["Check"]["Status"] == "passing"
    assert _passing(consul, "web") == ["web-1"]
    deadline = time.monotonic() + 3
    while not consul.calls_to("/v1/agent/check/pass/service:web-1"):
        assert time.monotonic() < deadline, "no TTL pass"
        time.sleep(0.05)
    server.signal()
    server.wait_event("deregistered")
    t0 = t0_of(server.wait_event("draining"))
    (maint,) = consul.calls_to("/v1/agent/service/maintenance/")
    (dereg,) = consul.calls_to("/v1/agent/service/deregister/")
    assert maint.query["enable"] == "true" and "draining" in maint.query["reason"]
    assert maint.path.endswith("/web-1") and dereg.path.endswith("/web-1")
    assert t0 <= maint.at <= dereg.at <= t0 + 1.0, (t0, maint.at, dereg.at)
    assert consul.services == {}
    assert server.proc.poll() is None and server.get("/")[0] == 200
    assert server.event("listeners_closed") is None  # still within D
    assert server.wait_exit(10) == 0, server.stderr()
    # No keepalive from t0 on: none after the deregistration (a pass the server sent just
    # before t0 may be recorded by the fake a moment after t0, but not after two more calls).
    passes = consul.calls_to("/v1/agent/check/pass/")
    assert not passes or max(c.at for c in passes) < dereg.at, (dereg.at, [c.at for c in passes])


def test_agent_restart_reregisters(consul) -> None:
    """In-process: 1. registered 2. the agent forgets its services (restart without data)
    3. the next TTL pass answers 404. Result: registered again, at once."""
    lc = Lifecycle(Settings(check_interval=0.05))
    registrar = registry_from_url(f"{consul.url}?ttl=1", Instance("api", "api-1", "127.0.0.1", 9))
    att = attach(lc, registrar, timeout=1.0)
    try:
        lc.startup_sync()
        _wait(lambda: att.registered and lc.is_ready())
        consul.restart()
        _wait(lambda: "api-1" in consul.services, timeout=3)
        _wait(lambda: att.registrations >= 2)  # counted once the call returned
        assert att.registrations == 2
        assert len(consul.calls_to("/v1/agent/service/register")) == 2
    finally:
        lc.drain()
        lc.shutdown_sync()
    assert consul.services == {}


def test_hung_agent_at_t0_is_bounded_by_the_registry_timeout(consul) -> None:
    """In-process: the agent stops answering; the deregistration gives up after the registry
    timeout (0.3 s), records why, and the shutdown completes (within 5 s on a loaded machine,
    half its 10 s deadline)."""
    lc = Lifecycle(Settings(check_interval=0.05, shutdown_timeout=10))
    registrar = registry_from_url(consul.url, Instance("api", "api-2", "127.0.0.1", 9))
    att = attach(lc, registrar, timeout=0.3)
    lc.startup_sync()
    _wait(lambda: att.registered)
    consul.hang.set()
    start = time.monotonic()
    lc.drain()
    lc.shutdown_sync()
    took = time.monotonic() - start
    consul.hang.clear()
    assert took < 5.0, took
    assert any("deregistration from consul" in what for what in lc.forced), lc.forced
    assert lc.stopped() == 1


def _wait(predicate, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(0.01)
