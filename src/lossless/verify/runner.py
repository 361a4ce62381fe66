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
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

from lossless.errors import LosslessError
from lossless.verify.config import VerifyConfig
from lossless.verify.lab.faults import injector_for
from lossless.verify.lab.pod import Lab, Pod, PodTemplate
from lossless.verify.lab.process import PortAllocator
from lossless.verify.lab.rollout import ReplicaSet
from lossless.verify.model import Clock, Event, EventKind, Record
from lossless.verify.stream_records import StreamSession
from lossless.verify.traffic.base import TrafficModel
from lossless.verify.traffic.service import ServiceTraffic
from lossless.verify.upgrades import run_upgrades

__all__ = ["Outcome", "Status", "execute"]

# Duration handed to the load generator: the run stops it with an event long before.
_UNBOUNDED = 1e7


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

    def on_session(self, session: StreamSession) -> None:
        """A long-lived client's session ended: a failed one counts with the failures."""
        if session.failed:
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
    """Every replica of ``rs`` listens on its assigned port and is available, within
    ``timeout``; LosslessError naming the first that is not (``{port}`` when it never
    listened, its readiness probe's last result otherwise)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not all(p.listening.is_set() for p in rs.active()):
        generation = lab.generation
        left = deadline - loop.time()
        if left <= 0 or not await lab.wait_changed(generation, left):
            waiting = [p for p in rs.active() if not p.listening.is_set()]
            if waiting:
                raise lab.not_listening(waiting[0], timeout)
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


async def _first_settled(traffic: TrafficModel) -> None:
    """Every client sees the first replicas (with the registry model: they registered)."""
    await traffic.settled()
    traffic.check_ready()


async def _grpc_load(
    cfg: VerifyConfig,
    view: TrafficModel,
    clock: Clock,
    on_record: Callable[[Record], None],
    stop: asyncio.Event,
) -> list[Record]:
    """``--grpc``: the gRPC generator instead of the HTTP one (load/grpc_client.py)."""
    from lossless.verify.load.grpc_client import run_grpc_load

    return await run_grpc_load(
        view,
        clock,
        cfg.grpc,
        rate=cfg.rate,
        duration=_UNBOUNDED,
        new_conn_ratio=cfg.new_conn_ratio,
        timeout=cfg.timeout,
        lag_budget=cfg.lag_budget,
        on_record=on_record,
        stop=stop,
        seed=cfg.seed,
    )


def _make_traffic(
    cfg: VerifyConfig, clock: Clock, on_event: Callable[[Event], None]
) -> TrafficModel:
    """The traffic model ``cfg.traffic`` names (call it inside the run's event loop)."""
    if cfg.traffic == "registry":
        from lossless.verify.traffic.registry import registry_traffic

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
        from lossless.verify.traffic.ingress import PROXY_LOG, IngressTraffic

        return IngressTraffic(
            clock=clock,
            clients=cfg.clients,
            profile=cfg.profile(),
            seed=cfg.seed,
            on_event=on_event,
            settings=cfg.ingress,
            host=cfg.host,
            proxy_log=cfg.out_dir / PROXY_LOG,
        )
    return ServiceTraffic(
        clock=clock, clients=cfg.clients, profile=cfg.profile(), seed=cfg.seed, on_event=on_event
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
    await traffic.start()
    try:
        await _run_lab(cfg, traffic, on_event, on_record, stop, status, clock, settings)
    finally:
        await traffic.aclose()


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
    from lossless.verify.load.generator import run_load

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
            backoff=cfg.backoff if cfg.restart_policy == "Always" else None,
            pid1=cfg.pid1,
            listen_timeout=cfg.ready_timeout,
        )
        status.lab = lab
        # -- issue 16: faults on purpose (lab/faults.py)
        injector = injector_for(cfg.faults, lab, traffic, cfg.upgrades)
        try:
            emit(EventKind.RUN_START, cfg.strategy.kind)
            old = ReplicaSet(lab, cfg.template(new=False), cfg.replicas)
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
                    mix=cfg.mix,
                    new_conn_ratio=cfg.new_conn_ratio,
                    timeout=cfg.timeout,
                    lag_budget=cfg.lag_budget,
                    on_record=on_record,
                    stop=load_stop,
                    seed=cfg.seed,
                    keep_records=False,  # they stream to disk: memory stays flat (issue 16)
                )
                if cfg.grpc is None
                else _grpc_load(cfg, traffic, clock, on_record, load_stop)
            )
            if injector is not None:
                injector.load_started()
            # -- long-lived clients (issue 13 item 3): stopped with the load -------------------
            long_lived = None
            if cfg.streams or cfg.websockets:
                from lossless.verify.load.longlived import start_long_lived

                long_lived = start_long_lived(
                    cfg, traffic, clock, tg, load_stop, on_session=status.on_session
                )
            # -------------------------------------------------------------------------------------
            status.phase = "before"
            if await _race(_sleep(cfg.before), stop):
                # -- issue 16: one or more upgrades in a row (upgrades.py)
                upgrades = run_upgrades(
                    lab,
                    cfg,
                    old,
                    traffic,
                    set_phase=lambda text: setattr(status, "phase", text),
                    on_detail=lambda text: setattr(status, "detail", text),
                    injector=injector,
                )
                if await _race(upgrades, stop):
                    status.phase = "after"
                    await _race(_sleep(cfg.after), stop)
            status.phase = "collecting"
            load_stop.set()
            await load
            if long_lived is not None:
                await long_lived
            emit(EventKind.RUN_END, "interrupted" if stop.is_set() else "complete")
        finally:
            load_stop.set()
            status.phase = "teardown"
            if injector is not None:
                injector.close()
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
    from lossless.verify.load.generator import run

    cfg.out_dir  # noqa: B018 - fail early without an output directory
    status = Status()
    try:
        return run(_main(cfg, status=status, on_record=on_record, progress=progress, quiet=quiet))
    finally:
        if status.lab is not None:
            status.lab.kill_all()
