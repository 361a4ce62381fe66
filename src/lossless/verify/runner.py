"""One verification run: start the old replicas, load them, roll out, keep loading, tear down.

:func:`execute` is what ``lossless verify`` and ``lossless demo`` call. The lab (and its pods'
probes and terminations), the rollout driver and the load generator run in one
:class:`asyncio.TaskGroup`; every record and timeline event is streamed to a
:class:`~lossless.verify.results.RunWriter` as it happens, so an interrupted or failed run keeps
what it measured.

Phases: ``starting`` (old replicas up and available, every client sees them) → ``before`` (load
only) → ``rollout`` (until the Deployment is complete) → ``terminating`` (until every old
replica has exited) → ``after`` (load only) → ``collecting`` (no new request; in-flight ones
finish) → teardown (every replica still running gets SIGTERM, then SIGKILL after 1 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

from lossless.errors import LosslessError
from lossless.verify.haproxy import HAProxySettings
from lossless.verify.lab import Lab, Pod, PodTemplate
from lossless.verify.model import Clock, Event, EventKind, Record
from lossless.verify.probe import Handler, ProbeSpec
from lossless.verify.process import PortAllocator
from lossless.verify.rollout import Deployment, ReplicaSet, RolloutStrategy
from lossless.verify.traffic import TRAFFIC_MODELS, PropagationDelay, ServiceTraffic, TrafficModel

__all__ = ["Outcome", "Status", "VerifyConfig", "execute"]

# Duration handed to the load generator: the run stops it with an event long before.
_UNBOUNDED = 1e7


@dataclasses.dataclass(frozen=True)
class VerifyConfig:
    """Everything one run needs. ``command``/``new_command`` are argv templates; without
    ``new_command`` the new version is ``command`` with ``LOSSLESS_VERSION`` set to
    ``new_version`` instead of ``old_version``."""

    command: tuple[str, ...]
    out: Path | None  # None: the caller picks one before execute()
    new_command: tuple[str, ...] | None = None
    replicas: int = 3
    rate: float = 50.0
    before: float = 3.0
    after: float = 3.0
    strategy: RolloutStrategy = dataclasses.field(default_factory=RolloutStrategy)
    min_ready_seconds: float = 0.0
    readiness: ProbeSpec | None = None
    prestop: Handler | None = None
    grace: float = 30.0
    propagation: PropagationDelay = dataclasses.field(default_factory=PropagationDelay)
    clients: int = 3
    new_conn_ratio: float = 0.1
    seed: int = 0
    path: str = "/"
    timeout: float = 5.0
    lag_budget: float = 0.1
    traffic: str = "service"
    cwd: Path | None = None
    base_port: int | None = None
    ready_timeout: float = 30.0
    progress_deadline: float = 120.0
    env: tuple[tuple[str, str], ...] = ()
    old_version: str = "v1"
    new_version: str = "v2"
    host: str = "127.0.0.1"
    # --traffic registry: the etcd:// URL replicas register in and clients watch, the service's
    # name there, and how long each client caches what it read
    registry: str | None = None
    service_name: str = "verify"
    registry_cache_ttl: float = 1.0
    # --traffic ingress: the HAProxy settings that decide outcomes (retries, redispatch...)
    ingress: HAProxySettings = dataclasses.field(default_factory=HAProxySettings)

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise LosslessError(f"--replicas must be >= 1 (got {self.replicas})")
        if not self.rate > 0:
            raise LosslessError(f"--rate must be > 0 requests/s (got {self.rate})")
        for name in ("before", "after", "min_ready_seconds", "grace"):
            if not getattr(self, name) >= 0:
                raise LosslessError(f"{name.replace('_', '-')} must be >= 0")
        if not 0 <= self.new_conn_ratio <= 1:
            raise LosslessError(f"--new-conn-ratio must be within 0..1 (got {self.new_conn_ratio})")
        if self.traffic not in TRAFFIC_MODELS:
            raise LosslessError(
                f"--traffic {self.traffic}: not available (models: {', '.join(TRAFFIC_MODELS)})"
            )
        if self.old_version == self.new_version:
            raise LosslessError("the old and new versions must differ")
        if not self.path.startswith("/"):
            raise LosslessError(f"--path must start with / (got {self.path!r})")
        self._check_registry()

    def _check_registry(self) -> None:
        if self.traffic != "registry":
            if self.registry is not None:
                raise LosslessError(
                    f"--registry is used by --traffic registry only (not --traffic {self.traffic})"
                )
            return
        if not self.registry:
            raise LosslessError("--traffic registry needs --registry etcd://HOST:PORT/PREFIX")
        from lossless.discovery.urls import etcd_from_url

        etcd_from_url(self.registry)  # a bad URL fails here, before anything starts
        name = self.service_name
        if not name or "/" in name or name.strip() != name:
            raise LosslessError(f"--service-name {name!r}: expected a name without '/' or spaces")
        if not (math.isfinite(self.registry_cache_ttl) and self.registry_cache_ttl >= 0):
            raise LosslessError(
                f"--registry-cache-ttl must be >= 0 seconds (got {self.registry_cache_ttl})"
            )

    @property
    def out_dir(self) -> Path:
        if self.out is None:
            raise ValueError("VerifyConfig.out must be set before the run")
        return self.out

    def template(self, new: bool) -> PodTemplate:
        version = self.new_version if new else self.old_version
        command = self.new_command if new and self.new_command else self.command
        return PodTemplate(
            command=command,
            version=version,
            env={**dict(self.env), **self.registry_env(), "LOSSLESS_VERSION": version},
            readiness=self.readiness,
            prestop=self.prestop,
            grace=self.grace,
        )

    def registry_env(self) -> dict[str, str]:
        """What every replica gets with ``--traffic registry`` (``lossless serve`` reads it and
        registers itself; the lab adds ``LOSSLESS_INSTANCE_ID=<pod name>`` per replica)."""
        if self.traffic != "registry" or not self.registry:
            return {}
        return {
            "LOSSLESS_REGISTRY": self.registry,
            "LOSSLESS_SERVICE_NAME": self.service_name,
            "LOSSLESS_ADVERTISE_ADDRESS": self.host,
        }

    def settings(self) -> dict[str, Any]:
        """The run's settings as JSON (settings.json)."""

        def handler(h: Handler | None) -> str | None:
            return None if h is None else h.describe()

        probe = self.readiness
        registry: dict[str, Any] = {}
        if self.traffic == "registry":
            registry = {
                "registry": self.registry,
                "service_name": self.service_name,
                "registry_cache_ttl": self.registry_cache_ttl,
            }
        if self.traffic == "ingress":
            registry = {"ingress": self.ingress.to_json()}
        return {
            "command": list(self.command),
            "new_command": list(self.new_command) if self.new_command else None,
            "replicas": self.replicas,
            "rate": self.rate,
            "duration_before": self.before,
            "duration_after": self.after,
            "strategy": self.strategy.kind,
            "max_surge": self.strategy.max_surge,
            "max_unavailable": self.strategy.max_unavailable,
            "min_ready_seconds": self.min_ready_seconds,
            "readiness_probe": None
            if probe is None
            else {
                "action": probe.action.describe(),
                "initial_delay": probe.initial_delay,
                "period": probe.period,
                "timeout": probe.timeout,
                "success_threshold": probe.success_threshold,
                "failure_threshold": probe.failure_threshold,
            },
            "prestop": handler(self.prestop),
            "grace_period": self.grace,
            "traffic": self.traffic,
            "clients": self.clients,
            "propagation_delay": {
                "mean": self.propagation.mean,
                "jitter": self.propagation.jitter,
            },
            "propagation_delay_max": self.propagation.max,
            "new_conn_ratio": self.new_conn_ratio,
            "seed": self.seed,
            "path": self.path,
            "url": f"http://{self.host}{self.path}",
            "timeout": self.timeout,
            "lag_budget": self.lag_budget,
            "versions": [self.old_version, self.new_version],
            **registry,
        }


@dataclasses.dataclass
class Status:
    """Live counters for the progress display."""

    phase: str = "starting"
    sent: int = 0
    failures: int = 0
    detail: str = ""
    lab: Lab | None = None

    def on_record(self, record: Record) -> None:
        self.sent += 1
        if not record.ok and not record.error.is_artefact:
            self.failures += 1

    def ready_count(self) -> int:
        if self.lab is None:
            return 0
        return sum(1 for p in self.lab.pods if p.in_endpoints)


@dataclasses.dataclass
class Outcome:
    """How a run ended: ``interrupted`` by the user (SIGINT/SIGTERM), or with ``error`` (the
    results gathered until then are in ``out`` all the same)."""

    out: Path
    interrupted: bool = False
    error: LosslessError | None = None


def _first_lossless_error(exc: BaseException) -> LosslessError | None:
    if isinstance(exc, LosslessError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _first_lossless_error(inner)
            if found is not None:
                return found
    return None


async def _race(work: Coroutine[Any, Any, None], stop: asyncio.Event) -> bool:
    """Run ``work`` until it ends (True) or ``stop`` is set (False, ``work`` cancelled)."""
    task = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if task.cancelled():
        return False
    task.result()
    return True


async def _wait_available(lab: Lab, rs: ReplicaSet, replicas: int, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while rs.available() < replicas:
        generation = lab.generation
        left = deadline - loop.time()
        if left <= 0 or not await lab.wait_changed(generation, left):
            waiting = [p for p in rs.active() if not p.available]
            pod = waiting[0] if waiting else None
            why = ""
            if pod is not None and pod.prober is not None:
                why = f": readiness probe {pod.prober.last_detail}"
            name = pod.name if pod is not None else rs.name
            raise LosslessError(f"replica {name} not available after {timeout:g}s{why}")


async def _sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


async def _all_gone(rs: ReplicaSet, traffic: TrafficModel) -> None:
    """Every pod of ``rs`` has exited and every client has applied every endpoint change."""
    for pod in rs.pods:
        await pod.exited.wait()
    await traffic.settled()


async def _first_settled(traffic: TrafficModel) -> None:
    """Every client sees the first replicas (with the registry model: they registered)."""
    await traffic.settled()
    from lossless.verify.traffic_registry import RegistryTraffic

    if isinstance(traffic, RegistryTraffic):
        traffic.check_registered()


def _make_traffic(
    cfg: VerifyConfig, clock: Clock, on_event: Callable[[Event], None]
) -> TrafficModel:
    """The traffic model ``cfg.traffic`` names (call it inside the run's event loop)."""
    if cfg.traffic == "registry":
        from lossless.verify.traffic_registry import registry_traffic

        assert cfg.registry is not None  # VerifyConfig checked it
        return registry_traffic(
            cfg.registry,
            clock=clock,
            service=cfg.service_name,
            clients=cfg.clients,
            cache_ttl=cfg.registry_cache_ttl,
            seed=cfg.seed,
            on_event=on_event,
        )
    if cfg.traffic == "ingress":
        from lossless.verify.traffic_ingress import PROXY_LOG, IngressTraffic

        return IngressTraffic(
            clock=clock,
            clients=cfg.clients,
            delay=cfg.propagation,
            seed=cfg.seed,
            on_event=on_event,
            settings=cfg.ingress,
            host=cfg.host,
            proxy_log=cfg.out_dir / PROXY_LOG,
        )
    return ServiceTraffic(
        clock=clock, clients=cfg.clients, delay=cfg.propagation, seed=cfg.seed, on_event=on_event
    )


class _NamedLab(Lab):
    """A lab whose replicas get their pod name as ``LOSSLESS_INSTANCE_ID`` (their registry key,
    as a pod's name reaches it through the downward API)."""

    async def create(
        self, template: PodTemplate, name: str, *, port: int | None = None, immediate: bool = False
    ) -> Pod:
        named = dataclasses.replace(template, env={**template.env, "LOSSLESS_INSTANCE_ID": name})
        return await super().create(named, name, port=port, immediate=immediate)


async def run_once(
    cfg: VerifyConfig,
    *,
    on_event: Callable[[Event], None],
    on_record: Callable[[Record], None],
    stop: asyncio.Event,
    status: Status,
    clock: Clock,
    settings: Callable[[dict[str, Any]], None] | None = None,
) -> None:
    """The run itself (see the module docstring). Returns when the run is complete or ``stop``
    was set and everything has been torn down; raises ``LosslessError`` on a lab fault."""
    traffic = _make_traffic(cfg, clock, on_event)
    # the ingress model runs a real HAProxy: started before the lab, always stopped after it
    # (also when the run is cancelled by a second Ctrl-C)
    start = getattr(traffic, "start", None)
    if start is not None:
        await start()
    try:
        await _run_lab(cfg, traffic, on_event, on_record, stop, status, clock, settings)
    finally:
        aclose = getattr(traffic, "aclose", None)
        if aclose is not None:
            await aclose()


async def _run_lab(
    cfg: VerifyConfig,
    traffic: TrafficModel,
    on_event: Callable[[Event], None],
    on_record: Callable[[Record], None],
    stop: asyncio.Event,
    status: Status,
    clock: Clock,
    settings: Callable[[dict[str, Any]], None] | None,
) -> None:
    from lossless.verify.load import run_load

    def emit(kind: EventKind, detail: str = "") -> None:
        on_event(Event(clock.now(), kind, "", None, detail))

    load_stop = asyncio.Event()
    log_dir = cfg.out_dir / "replicas"
    async with asyncio.TaskGroup() as tg:
        lab = (_NamedLab if cfg.traffic == "registry" else Lab)(
            clock=clock,
            traffic=traffic,
            task_group=tg,
            on_event=on_event,
            log_dir=log_dir,
            host=cfg.host,
            cwd=cfg.cwd,
            ports=PortAllocator(cfg.host, cfg.base_port),
            min_ready_seconds=cfg.min_ready_seconds,
        )
        status.lab = lab
        try:
            emit(EventKind.RUN_START, cfg.strategy.kind)
            old = ReplicaSet(lab, cfg.template(new=False), cfg.replicas)
            new = ReplicaSet(lab, cfg.template(new=True), 0)
            await old.sync()
            if settings is not None:
                settings({"replica_ports": {p.name: p.port for p in old.pods}})
            if not await _race(_wait_available(lab, old, cfg.replicas, cfg.ready_timeout), stop):
                return
            if not await _race(_first_settled(traffic), stop):
                return
            load = tg.create_task(
                run_load(
                    traffic,
                    clock,
                    rate=cfg.rate,
                    duration=_UNBOUNDED,
                    path=cfg.path,
                    new_conn_ratio=cfg.new_conn_ratio,
                    timeout=cfg.timeout,
                    lag_budget=cfg.lag_budget,
                    on_record=on_record,
                    stop=load_stop,
                    seed=cfg.seed,
                )
            )
            status.phase = "before"
            if await _race(_sleep(cfg.before), stop):
                status.phase = "rollout"
                deployment = Deployment(
                    lab,
                    replicas=cfg.replicas,
                    strategy=cfg.strategy,
                    old=old,
                    new=new,
                    progress_deadline=cfg.progress_deadline,
                    on_phase=lambda text: setattr(status, "detail", text),
                )
                if await _race(deployment.run(), stop):
                    status.phase = "terminating"
                    if await _race(_all_gone(old, traffic), stop):
                        status.phase = "after"
                        await _race(_sleep(cfg.after), stop)
            status.phase = "collecting"
            load_stop.set()
            await load
            emit(EventKind.RUN_END, "interrupted" if stop.is_set() else "complete")
        finally:
            load_stop.set()
            status.phase = "teardown"
            await lab.close()


@contextlib.contextmanager
def _signals(loop: asyncio.AbstractEventLoop, on_signal: Callable[[int], None]) -> Iterator[None]:
    """Route SIGINT and SIGTERM to ``on_signal`` while the run lasts, then restore the previous
    handlers. No-op outside the main thread."""
    installed: list[int] = []
    try:
        for sig in (int(signal.SIGINT), int(signal.SIGTERM)):
            try:
                loop.add_signal_handler(sig, on_signal, sig)
                installed.append(sig)
            except (RuntimeError, ValueError):  # not the main thread
                break
        yield
    finally:
        for number in installed:
            loop.remove_signal_handler(number)


async def _main(
    cfg: VerifyConfig,
    *,
    status: Status,
    on_record: Callable[[Record], None] | None,
    progress: Callable[[Status, float], None] | None,
    quiet: bool,
) -> Outcome:
    from lossless.verify.results import RunWriter

    clock = Clock()
    writer = RunWriter(cfg.out_dir, clock=clock)
    outcome = Outcome(cfg.out_dir)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    assert main_task is not None
    run_task: asyncio.Task[None] | None = None
    signals = 0

    def on_signal(sig: int) -> None:
        nonlocal signals
        signals += 1
        outcome.interrupted = True
        if signals == 1:
            if not quiet:
                print(
                    "\nlossless verify: stopping: collecting in-flight requests "
                    "(press Ctrl-C again to abort)",
                    file=sys.stderr,
                )
            stop.set()
        elif run_task is not None:
            run_task.cancel()

    def record(r: Record) -> None:
        writer.record(r)
        status.on_record(r)
        if on_record is not None:
            on_record(r)

    async def ticker() -> None:
        while True:
            if progress is not None:
                progress(status, clock.now())
            await asyncio.sleep(0.2)

    try:
        writer.settings(cfg.settings())
        with _signals(loop, on_signal):
            run_task = asyncio.ensure_future(
                run_once(
                    cfg,
                    on_event=writer.event,
                    on_record=record,
                    stop=stop,
                    status=status,
                    clock=clock,
                    settings=writer.settings,
                )
            )
            tick = asyncio.ensure_future(ticker())
            try:
                await run_task
            except asyncio.CancelledError:
                if not outcome.interrupted:
                    raise
            except BaseException as exc:  # unwrapped below, else re-raised
                error = _first_lossless_error(exc)
                if error is None:
                    raise
                outcome.error = error
            finally:
                tick.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await tick
                if progress is not None:
                    progress(status, clock.now())
    finally:
        writer.close()
    return outcome


def execute(
    cfg: VerifyConfig,
    *,
    progress: Callable[[Status, float], None] | None = None,
    on_record: Callable[[Record], None] | None = None,
    quiet: bool = False,
) -> Outcome:
    """Run ``cfg`` to the end (or to the first SIGINT/SIGTERM) and return how it ended. The
    results are in ``cfg.out`` whatever happens; no replica process outlives this call."""
    from lossless.verify.load import run

    cfg.out_dir  # noqa: B018 - fail early without an output directory
    status = Status()
    try:
        return run(_main(cfg, status=status, on_record=on_record, progress=progress, quiet=quiet))
    finally:
        if status.lab is not None:
            status.lab.kill_all()
