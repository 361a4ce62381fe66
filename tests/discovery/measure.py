"""Measure deregistration latency (not a test): ``python -m tests.discovery.measure [RUNS]``.

For each registry, RUNS ``lossless serve`` processes register, get SIGTERM (D = 0.5 s), and the
time from their ``draining`` event to a watcher seeing the registration gone is recorded; the
last run of etcd and ZooKeeper is killed with SIGKILL instead (TTL / session 2 s). Prints JSON.
"""

from __future__ import annotations

import json
import signal
import statistics
import sys
import time
from typing import Any

from tests.discovery.conftest import Etcd, EtcdWatcher, RegistryServer, ZooKeeper
from tests.discovery.consul_fake import ConsulFake
from tests.discovery.test_zookeeper import NodeWatcher


def _one(kind: str, i: int, last: bool, etcd: Etcd, zk: ZooKeeper, consul: ConsulFake) -> Any:
    svc = f"m{kind[:2]}{i}"
    url = {
        "etcd": f"{etcd.url}?ttl=2",
        "zookeeper": f"{zk.url}?session_timeout=2",
        "consul": consul.url,
    }[kind]
    watcher: Any = None
    if kind == "etcd":
        watcher = EtcdWatcher(etcd.client, f"/services/{svc}/")
    elif kind == "zookeeper":
        watcher = NodeWatcher(zk.hosts, f"/services/{svc}/{svc}-1")
    server = RegistryServer(
        *("--registry", url, "--service-name", svc, "--instance-id", f"{svc}-1"),
        *("--drain-delay", "0.5", "--shutdown-timeout", "3"),
    )
    try:
        server.wait_ready()
        registered = float(server.wait_event("registered")["ts"])
        ready = float(server.wait_event("ready")["ts"])
        created = watcher.wait_for(True)[0] if kind == "zookeeper" else 0.0
        if last and watcher is not None:
            killed = time.time()
            server.signal(signal.SIGKILL)
            server.wait_exit(5)
            if kind == "etcd":
                gone = watcher.wait_for("DELETE", 8)
            else:
                gone = watcher.wait_for(False, after=created, timeout=8)[0]
            return ("kill", gone - killed, ready - registered)
        server.signal()
        t0 = float(server.wait_event("draining")["ts"])
        if kind == "etcd":
            gone = watcher.wait_for("DELETE", 5)
        elif kind == "zookeeper":
            gone = watcher.wait_for(False, after=created, timeout=5)[0]
        else:
            server.wait_event("deregistered")
            calls = consul.calls_to(f"/v1/agent/service/deregister/{svc}-1")
            gone = calls[0].at
        server.wait_exit(10)
        return ("term", gone - t0, ready - registered)
    finally:
        server.kill()
        if watcher is not None:
            watcher.close()


def main(runs: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    etcd, zk, consul = Etcd(), ZooKeeper(), ConsulFake()
    try:
        etcd.start()
        zk.start()
        for kind in ("etcd", "zookeeper", "consul"):
            term: list[float] = []
            kill: list[float] = []
            ready: list[float] = []
            for i in range(runs):
                what, value, to_ready = _one(kind, i, i == runs - 1, etcd, zk, consul)
                (kill if what == "kill" else term).append(value)
                ready.append(to_ready)
            out[kind] = {
                "runs": runs,
                "t0_to_gone_ms_median": round(statistics.median(term) * 1000, 1),
                "t0_to_gone_ms_max": round(max(term) * 1000, 1),
                "registered_to_ready_ms_median": round(statistics.median(ready) * 1000, 1),
                "kill9_to_gone_s": [round(k, 2) for k in kill],
            }
    finally:
        etcd.cleanup()
        zk.cleanup()
        consul.close()
    return out


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else 10), indent=1))
