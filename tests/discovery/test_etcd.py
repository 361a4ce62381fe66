"""etcd v3 against a real etcd: a real ``lossless serve`` process registers under a lease when
ready and revokes it at t0, while a watcher records what callers would see."""

from __future__ import annotations

import json
import signal
import time

from tests.discovery.conftest import Etcd, EtcdWatcher, RegistryServer, t0_of


def _start(serve_registry, etcd: Etcd, service: str, *extra: str, ttl: int = 5) -> RegistryServer:
    return serve_registry(
        "--registry",
        f"{etcd.url}?ttl={ttl}",
        "--service-name",
        service,
        "--instance-id",
        f"{service}-1",
        *extra,
    )


def test_sigterm_deletes_the_key_at_t0_while_still_serving(
    serve_registry, etcd: Etcd, etcd_watch
) -> None:
    """1. serve registers when ready (a watcher sees the PUT) 2. SIGTERM with D = 3 s.
    Result: the DELETE reaches the watcher at t0 (within 1 s: the server, etcd and this
    watcher may each wait for the CPU on a loaded machine; D is 3 s); requests sent after it
    are still answered 200 (the drain delay); exit 0."""
    watcher = etcd_watch("/services/orders/")
    server = _start(
        serve_registry, etcd, "orders", "--drain-delay", "3", "--shutdown-timeout", "10"
    )
    server.wait_ready()
    watcher.wait_for("PUT")
    value = json.loads(etcd.client.get("/services/orders/orders-1", 1.0)[0])  # type: ignore[index]
    assert value == {
        "service": "orders",
        "id": "orders-1",
        "address": "127.0.0.1",
        "port": server.port,
        "metadata": {},
    }
    server.signal()
    deleted = watcher.wait_for("DELETE", timeout=5)
    t0 = t0_of(server.wait_event("draining"))
    latency = deleted - t0
    assert 0 <= latency <= 1.0, f"key deleted {latency * 1000:.0f} ms after t0"
    assert server.proc.poll() is None
    assert server.get("/")[0] == 200  # still serving: callers that had not heard yet lose nothing
    assert server.event("listeners_closed") is None  # still within D
    assert server.wait_exit(10) == 0, server.stderr()
    done = server.event("deregistered")
    assert done is not None and float(done["duration"]) < 1.0  # type: ignore[arg-type]
    assert etcd.client.get("/services/orders/orders-1", 1.0) is None


def test_kill_9_key_expires_with_its_lease(serve_registry, etcd: Etcd, etcd_watch) -> None:
    """1. serve registers with a 2 s lease 2. kill -9. Result: the key disappears once the
    lease expires (2 s, plus etcd's expiry check), not before, not much later (4 s of slack
    for etcd and the watcher on a loaded machine)."""
    watcher = etcd_watch("/services/killed/")
    server = _start(serve_registry, etcd, "killed", ttl=2)
    server.wait_ready()
    watcher.wait_for("PUT")
    killed = time.time()
    server.signal(signal.SIGKILL)
    server.wait_exit(5)
    deleted = watcher.wait_for("DELETE", timeout=12)
    assert 1.0 <= deleted - killed <= 6.0, f"gone {deleted - killed:.2f} s after kill -9"


def test_lease_loss_reregisters_while_ready_never_while_draining(
    serve_registry, etcd: Etcd, etcd_watch
) -> None:
    """1. the lease is revoked behind the instance's back (lease loss) 2. it re-registers
    while READY 3. the lease is revoked again and SIGTERM follows at once (D = 2 s). Result:
    after t0 the key is deleted or absent and never PUT again during the drain.

    The instance may notice the second loss and re-register before t0 (it is READY then; the
    PUT may reach the watcher after t0): every PUT must be one the server logged as a
    registration it started before t0."""
    watcher = etcd_watch("/services/lossy/")
    server = _start(
        serve_registry, etcd, "lossy", "--drain-delay", "2", "--shutdown-timeout", "5", ttl=3
    )
    server.wait_ready()
    key = "/services/lossy/lossy-1"
    first = watcher.wait_for("PUT")
    lease = etcd.client.get(key, 1.0)[1]  # type: ignore[index]
    revoked = time.time()
    assert etcd.client.revoke(lease, 1.0)
    again = watcher.wait_for("PUT", timeout=5, after=first)
    assert again - revoked < 3.0  # noticed at a keepalive (every 1 s), not at the TTL's end
    assert server.wait_event("reregistered")
    lease = etcd.client.get(key, 1.0)[1]  # type: ignore[index]
    assert etcd.client.revoke(lease, 1.0)
    server.signal()
    t0 = t0_of(server.wait_event("draining"))
    assert server.wait_exit(10) == 0, server.stderr()  # the whole drain delay has passed
    watcher.sync()  # every write until now has reached the watcher
    registrations = [e for e in server.events() if e["event"] in ("registered", "reregistered")]
    for e in registrations:  # started (ts less its duration) before t0
        assert float(e["ts"]) - float(e["duration"]) < t0, (e, t0)  # type: ignore[arg-type]
    puts = [k for _t, k, k_key, _v in watcher.events if k == "PUT" and k_key == key]
    assert len(puts) == len(registrations), (watcher.events, registrations)
    assert etcd.client.get(key, 1.0) is None


def test_unreachable_at_start_then_restarted_without_data(serve_registry, own_etcd: Etcd) -> None:
    """1. serve starts while etcd is down: not ready, the check says why 2. etcd starts: ready
    and registered 3. etcd restarts with an empty data dir: re-registered 4. SIGTERM: gone."""
    server = _start(serve_registry, own_etcd, "late", "--registry-timeout", "0.5", ttl=3)
    server.wait_listening()
    unreachable = server.wait_event("registry_unreachable")
    end = time.monotonic() + 10  # the check reports the attempt at its next round
    while True:
        status, _headers, body = server.get("/readyz?verbose")
        assert status == 503, body
        if b"[-]registry" in body and b"unreachable" in body:
            break
        assert time.monotonic() < end, body
        time.sleep(0.05)
    assert "refused" in str(unreachable["error"]).lower()
    own_etcd.start()
    server.wait_ready(timeout=10)
    assert own_etcd.client.get("/services/late/late-1", 1.0) is not None
    own_etcd.stop()
    own_etcd.start(wipe=True)
    assert own_etcd.client.get("/services/late/late-1", 1.0) is None
    deadline = time.monotonic() + 8
    while own_etcd.client.get("/services/late/late-1", 1.0) is None:
        assert time.monotonic() < deadline, server.stderr()
        time.sleep(0.05)
    assert server.wait_event("registration_lost")
    assert server.get("/readyz")[0] == 200  # registry trouble never failed readiness once ready
    server.signal()
    assert server.wait_exit(10) == 0, server.stderr()
    assert own_etcd.client.get("/services/late/late-1", 1.0) is None


def test_registry_down_at_shutdown_the_drain_goes_on(serve_registry, own_etcd: Etcd) -> None:
    """1. serve registered 2. etcd hangs (SIGSTOP: calls time out rather than fail fast)
    3. SIGTERM with D = 0.5 s, deadline 10 s, registry timeout 0.5 s. Result: the process exits
    well before its deadline (within 5 s: a loaded machine), exit code 1, and the log names the
    registry, the error and how long the stale key can live."""
    own_etcd.start()
    server = _start(
        serve_registry,
        own_etcd,
        "hung",
        "--drain-delay",
        "0.5",
        "--shutdown-timeout",
        "10",
        "--registry-timeout",
        "0.5",
    )
    server.wait_ready()
    own_etcd.pause()
    try:
        t0 = server.signal()
        code = server.wait_exit(10)
        assert server.exited_at is not None
        assert server.exited_at - t0 < 5.0, f"exit {server.exited_at - t0:.2f} s after SIGTERM"
    finally:
        own_etcd.resume()
    assert code == 1, server.stderr()
    failed = server.event("deregister_failed")
    assert failed is not None, server.stderr()
    assert "etcd 127.0.0.1" in str(failed["registry"])
    assert "within" in str(failed["error"]), failed
    assert failed["expires_after"] == 5
    forced = [e for e in server.events() if e["event"] == "forced"]
    assert any("deregistration from etcd" in str(e["what"]) for e in forced), server.stderr()


def test_watch_sees_both_instances_of_a_rolling_pair(serve_registry, etcd: Etcd) -> None:
    """Two instances of one service: each appears under its own key with its own address."""
    watcher = EtcdWatcher(etcd.client, "/services/pair/")
    try:
        a = serve_registry("--registry", etcd.url, "--service-name", "pair", "--instance-id", "a")
        b = serve_registry("--registry", etcd.url, "--service-name", "pair", "--instance-id", "b")
        a.wait_ready()
        b.wait_ready()
        kvs, _rev = etcd.client.get_prefix("/services/pair/", 1.0)
        ports = sorted(json.loads(v)["port"] for v in kvs.values())
        assert ports == sorted([a.port, b.port])
        a.signal()
        assert a.wait_exit(10) == 0
        kvs, _rev = etcd.client.get_prefix("/services/pair/", 1.0)
        assert list(kvs) == ["/services/pair/b"]
        b.signal()
        assert b.wait_exit(10) == 0
        watcher.sync()  # both DELETEs have reached the watcher
    finally:
        watcher.close()
    assert [k for _t, k, _key, _v in watcher.events].count("DELETE") == 2
