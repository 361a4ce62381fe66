"""A rolling update through a chosen traffic model, written as a run directory.

The same steps as ``lossless.verify.runner.run_once`` (old replicas up → load → rolling update →
old replicas gone → load → collect), built from the lab's public pieces, so the ingress model
can be tested before ``lossless verify --traffic ingress`` is wired (docs/ingress.md has the
patch). Everything started here is stopped on every path out, SIGINT included.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lossless.verify.haproxy.config import HAProxySettings
from lossless.verify.lab.pod import Lab, PodTemplate
from lossless.verify.lab.prober import Handler, HTTPGetAction, ProbeSpec
from lossless.verify.lab.rollout import Deployment, ReplicaSet, RolloutStrategy
from lossless.verify.load.generator import run_load
from lossless.verify.model import Clock, Event, EventKind
from lossless.verify.results import RunWriter
from lossless.verify.traffic.base import PropagationDelay
from lossless.verify.traffic.ingress import PROXY_LOG, IngressTraffic
from lossless.verify.traffic.service import ServiceTraffic
from lossless.verify.traffic.sync import PROFILES

REPO = Path(__file__).resolve().parents[3]
PYTHON = sys.executable

NAIVE_APP = (
    PYTHON,
    "-m",
    "uvicorn",
    "examples.app:app",
    "--host",
    "127.0.0.1",
    "--port",
    "{port}",
    "--log-level",
    "warning",
)
LOSSLESS_APP = (
    PYTHON,
    "-m",
    "lossless",
    "serve",
    "examples.app:app",
    "--host",
    "127.0.0.1",
    "--port",
    "{port}",
    "--drain-delay",
    "2",
    "--shutdown-timeout",
    "10",
)


@dataclasses.dataclass(frozen=True)
class Scenario:
    """One run: ``replicas`` of ``command`` rolled from v1 to v2 (maxSurge 1, maxUnavailable 0)
    under ``rate`` req/s, through ``traffic`` ("ingress" or "service")."""

    command: Sequence[str]
    traffic: str = "ingress"
    ingress: HAProxySettings = dataclasses.field(default_factory=HAProxySettings)
    replicas: int = 2
    rate: float = 100.0
    before: float = 1.0
    after: float = 1.0
    readiness_path: str | None = "/readyz"
    prestop: Handler | None = None
    grace: float = 30.0
    delay: PropagationDelay = dataclasses.field(default_factory=lambda: PropagationDelay(1.0, 0.2))
    # these scenarios test what the proxy does with a change, not when it gets it: the watch
    # lag alone (tests/verify/test_fidelity.py runs the ingress-nginx profile)
    profile: str = "lag-only"
    clients: int = 2
    new_conn_ratio: float = 0.1
    seed: int = 0
    path: str = "/"
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    cwd: Path = REPO
    deadline: float = 60.0

    def settings(self) -> dict[str, Any]:
        return {
            "command": list(self.command),
            "traffic": self.traffic,
            "ingress": self.ingress.to_json() if self.traffic == "ingress" else None,
            "replicas": self.replicas,
            "rate": self.rate,
            "strategy": "rolling",
            "max_surge": 1,
            "max_unavailable": 0,
            "grace_period": self.grace,
            "clients": self.clients,
            "propagation_delay": {"mean": self.delay.mean, "jitter": self.delay.jitter},
            "new_conn_ratio": self.new_conn_ratio,
            "seed": self.seed,
            "path": self.path,
            "timeout": 5.0,
        }


async def _wait_available(lab: Lab, rs: ReplicaSet, n: int) -> None:
    while rs.available() < n:
        if not await lab.wait_changed(lab.generation, 30.0):
            raise TimeoutError(f"{rs.name}: {rs.available()}/{n} available after 30 s")


async def run_scenario(sc: Scenario, out: Path) -> None:
    """Run ``sc`` into the run directory ``out`` (records.csv, timeline.jsonl, settings.json,
    proxy.jsonl for the ingress, replicas/*.log)."""
    clock = Clock()
    with RunWriter(out, clock=clock) as writer:
        writer.settings(sc.settings())
        if sc.traffic == "ingress":
            traffic: IngressTraffic | ServiceTraffic = IngressTraffic(
                clock=clock,
                clients=sc.clients,
                delay=sc.delay,
                seed=sc.seed,
                on_event=writer.event,
                settings=sc.ingress,
                profile=PROFILES[sc.profile],
                proxy_log=out / PROXY_LOG,
            )
        else:
            traffic = ServiceTraffic(
                clock=clock,
                clients=sc.clients,
                delay=sc.delay,
                seed=sc.seed,
                on_event=writer.event,
                profile=PROFILES[sc.profile],
            )
        try:
            if isinstance(traffic, IngressTraffic):
                await traffic.start()
            async with asyncio.timeout(sc.deadline):
                await _rollout(sc, out, clock, traffic, writer)
        finally:
            if isinstance(traffic, IngressTraffic):
                await traffic.aclose()


async def _rollout(
    sc: Scenario,
    out: Path,
    clock: Clock,
    traffic: IngressTraffic | ServiceTraffic,
    writer: RunWriter,
) -> None:
    readiness = None
    if sc.readiness_path is not None:
        readiness = ProbeSpec(HTTPGetAction(sc.readiness_path), period=0.5, failure_threshold=1)

    def template(version: str) -> PodTemplate:
        env = {**sc.env, "LOSSLESS_VERSION": version}
        return PodTemplate(tuple(sc.command), version, env, readiness, sc.prestop, sc.grace)

    load_stop = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        lab = Lab(
            clock=clock,
            traffic=traffic,
            task_group=tg,
            on_event=writer.event,
            log_dir=out / "replicas",
            cwd=sc.cwd,
        )
        try:
            writer.event(Event(clock.now(), EventKind.RUN_START, detail="rolling"))
            old = ReplicaSet(lab, template("v1"), sc.replicas)
            new = ReplicaSet(lab, template("v2"), 0)
            await old.sync()
            await _wait_available(lab, old, sc.replicas)
            await traffic.settled()
            load = tg.create_task(
                run_load(
                    traffic,
                    clock,
                    rate=sc.rate,
                    duration=1e7,
                    path=sc.path,
                    new_conn_ratio=sc.new_conn_ratio,
                    on_record=writer.record,
                    stop=load_stop,
                    seed=sc.seed,
                )
            )
            await asyncio.sleep(sc.before)
            strategy = RolloutStrategy("rolling", 1, 0)
            await Deployment(lab, replicas=sc.replicas, strategy=strategy, old=old, new=new).run()
            for pod in old.pods:
                await pod.exited.wait()
            await traffic.settled()
            await asyncio.sleep(sc.after)
            load_stop.set()
            await load
            writer.event(Event(clock.now(), EventKind.RUN_END, detail="complete"))
        finally:
            load_stop.set()
            await lab.close()
