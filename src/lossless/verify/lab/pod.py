"""The lab: replicas as real local processes with a Kubernetes pod's lifecycle.

A :class:`Lab` creates pods from a :class:`PodTemplate` (a command template, an environment, a
readiness probe, a preStop handler, a grace period), probes them with the kubelet's semantics
(:mod:`lossless.verify.lab.prober`, also while they terminate), keeps each pod's EndpointSlice
entry (``serving``/``terminating``) and tells the traffic model about each change, and deletes
pods the way the kubelet and the endpoints controller do: two tracks in parallel from the same
t0 (see :meth:`Lab.delete`). Main processes have PID 1 signal rules
(:mod:`lossless.verify.lab.process`) and get the template's stop signal. Every transition is an
:class:`~lossless.verify.model.Event` passed to ``on_event``.

References (kubernetes/kubernetes): ``pkg/kubelet/kuberuntime/kuberuntime_container.go``
(``killContainer``, ``executePreStopHook``), ``pkg/kubelet/kuberuntime/kuberuntime_manager.go``
(``minimumGracePeriodInSeconds = 2``), ``pkg/kubelet/prober/worker.go`` (``doProbe``),
``pkg/controller/endpointslice`` (``podToEndpoint``), ``pkg/controller/replicaset/replica_set.go``
(``updatePod``: the availability re-check), ``pkg/api/v1/pod/util.go`` (``IsPodAvailable``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import math
import os
import shlex
import signal
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any

from lossless.errors import LosslessError
from lossless.verify.lab.prober import (
    Handler,
    HTTPGetAction,
    ProbeSpec,
    ReadinessProber,
    TCPSocketAction,
    run_handler,
)
from lossless.verify.lab.probes_liveness import LivenessProber, StartupProber
from lossless.verify.lab.process import (
    PortAllocator,
    ReplicaProcess,
    describe_returncode,
    pid1_mode,
    render_command,
)
from lossless.verify.lab.restart import BackOffPolicy, ContainerBackOff, CrashLoopError
from lossless.verify.lab.sidecar import SidecarSpec, render_sidecar
from lossless.verify.model import Clock, Endpoint, Event, EventKind
from lossless.verify.traffic.base import TrafficModel

__all__ = ["MINIMUM_GRACE_PERIOD", "Lab", "Pod", "PodPhase", "PodTemplate"]

# kubelet: "A minimal shutdown window for avoiding unnecessary SIGKILLs" (kuberuntime_manager.go).
MINIMUM_GRACE_PERIOD = 2.0

# How often the lab checks whether a terminating replica still accepts connections.
_LISTENER_POLL = 0.025

# The ReplicaSet controller re-checks a pod's availability this long after minReadySeconds
# ("Add a second to avoid milliseconds skew in AddAfter", replica_set.go updatePod).
AVAILABILITY_RECHECK = 1.0


@dataclasses.dataclass(frozen=True)
class PodTemplate:
    """What a pod is made of. ``command`` is the argv template (``{port}``/``$PORT`` substituted),
    ``env`` is added to the verifier's environment (``PORT`` is always set), ``grace`` is
    ``terminationGracePeriodSeconds``.

    Ports: the replica's main port (``{port}``) is the one clients use; ``port_aliases`` are the
    names and numbers that mean it (from a manifest's first container port). ``ports`` are the
    container's other ports, one tuple of keys (its name and/or number) each: each gets its own
    free port per replica, substituted as ``{port:KEY}`` and set as ``PORT_<KEY>``; probes and
    ``httpGet``/``tcpSocket`` hooks that name a port go to the replica's port of that name.

    ``stop_signal`` is what the runtime sends at termination (the image's ``STOPSIGNAL`` or the
    pod's ``lifecycle.stopSignal``); ``pid1`` gives the main process PID 1 signal rules (a pod;
    False: a plain process, the naive baseline's VM).
    """

    command: tuple[str, ...]
    version: str = "v1"
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    readiness: ProbeSpec | None = None
    prestop: Handler | None = None
    grace: float = 30.0
    stop_signal: signal.Signals = signal.SIGTERM
    pid1: bool = True
    ports: tuple[tuple[str, ...], ...] = ()
    port_aliases: tuple[str, ...] = ()
    # -- issue 16: restartPolicy, liveness and startup probes, a sidecar (lab/restart.py,
    # lab/probes_liveness.py, lab/sidecar.py)
    restart_policy: str = "Always"
    liveness: ProbeSpec | None = None
    startup: ProbeSpec | None = None
    sidecar: SidecarSpec | None = None

    def __post_init__(self) -> None:
        if not self.command:
            raise LosslessError("the replica command is empty")
        if not self.grace >= 0:
            raise LosslessError(f"grace period must be >= 0 (got {self.grace})")
        keys = [key for group in self.ports for key in group]
        both = sorted(set(keys) & set(self.port_aliases))
        if both:
            raise LosslessError(f"port {both[0]!r} is both the main port and another port")
        twice = sorted({key for key in keys if keys.count(key) > 1})
        if twice:
            raise LosslessError(f"port {twice[0]!r} names two container ports")
        known = set(keys) | set(self.port_aliases)
        handlers = (
            ("readiness probe", self.readiness),
            ("liveness probe", self.liveness),
            ("startup probe", self.startup),
            ("preStop", self.prestop),
        )
        for what, handler in handlers:
            action = handler.action if isinstance(handler, ProbeSpec) else handler
            port = action.port if isinstance(action, HTTPGetAction | TCPSocketAction) else None
            if isinstance(port, str) and port not in known:
                names = ", ".join(sorted(known)) or "none"
                raise LosslessError(
                    f"{what} port {port!r} is not a port of the container (named "
                    f"ports: {names}); name it in the command as {{port:{port}}}"
                )


class PodPhase(enum.StrEnum):
    PENDING = "pending"  # created, process not spawned yet
    RUNNING = "running"  # process running (ready or not)
    TERMINATING = "terminating"  # deletion started, process still running
    EXITED = "exited"


class Pod:
    """One replica. Mutated only by its :class:`Lab`; read by the rollout driver."""

    def __init__(self, name: str, template: PodTemplate, port: int, host: str, t: float) -> None:
        self.name = name
        self.template = template
        self.port = port
        self.host = host
        self.created_at = t
        self.started_at: float | None = None
        self.ports: dict[str, int] = {}  # container port name/number -> this replica's port
        self.ready = False  # the readiness probe's verdict (EndpointSlice "serving")
        self.ready_since: float | None = None
        self.available = False
        self.deleting_at: float | None = None
        self.in_endpoints = False  # in the ready set (serving and not terminating)
        self.in_slice = False  # in the EndpointSlice at all (ready, or serving-terminating)
        self.listening = asyncio.Event()  # its app seen accepting on app_port at least once
        self.returncode: int | None = None
        self.exited = asyncio.Event()
        self.process: ReplicaProcess | None = None
        self.prober: ReadinessProber | None = None
        self.routed_in_place = False  # naive baseline: the endpoint stays routed until replaced
        self._tasks: set[asyncio.Task[None]] = set()
        self._probe_task: asyncio.Task[None] | None = None
        self._available_timer: asyncio.TimerHandle | None = None
        # -- issue 16: restarts, liveness/startup probes, sidecar
        self.restarts = 0  # containerStatuses[].restartCount
        self.app_port = port  # the app's own port (differs from ``port`` with a sidecar)
        self.sidecar_process: ReplicaProcess | None = None
        self.startup_done = False
        self.liveness: LivenessProber | None = None
        self._crash_run = 0  # consecutive crashes, each within the back-off's reset period
        self.fault_exit = False  # the next exit is an injected fault's (lab/faults.py)
        self._backoff: ContainerBackOff | None = None
        self._restart_task: asyncio.Task[None] | None = None
        self._container_tasks: set[asyncio.Task[None]] = set()

    @property
    def in_backoff(self) -> bool:
        """The container exited and waits for its restart (CrashLoopBackOff)."""
        task = self._restart_task
        return task is not None and not task.done()

    @property
    def version(self) -> str:
        return self.template.version

    @property
    def endpoint(self) -> Endpoint:
        """Its EndpointSlice entry (``podToEndpoint``: serving = ready, terminating =
        deleting)."""
        return Endpoint(
            self.name, self.host, self.port, serving=self.ready, terminating=self.deleting
        )

    @property
    def deleting(self) -> bool:
        return self.deleting_at is not None

    @property
    def phase(self) -> PodPhase:
        if self.exited.is_set():
            return PodPhase.EXITED
        if self.deleting:
            return PodPhase.TERMINATING
        return PodPhase.RUNNING if self.started_at is not None else PodPhase.PENDING

    def __repr__(self) -> str:
        state = "ready" if self.ready else "not-ready"
        return f"<Pod {self.name} :{self.port} {self.phase} {state}>"


class Lab:
    """Local pods, their probes, the ready endpoint set and deletions, on one event loop.

    All of the lab's background work (process monitors, probers, terminations) runs as tasks of
    ``task_group``, so it shares the fate of the run. A replica whose container exits while
    nobody deleted it is restarted after the kubelet's back-off when ``backoff`` is given
    (``restartPolicy: Always``; a crash loop fails the run with :class:`CrashLoopError`); without
    ``backoff`` it fails the run with a :class:`LosslessError` (exit 2) naming it and its last
    log line. A restarted container keeps its pod's ports. Call :meth:`close` before the task
    group ends: it stops every process that is still running.

    ``pid1`` (``auto``, ``namespace``, ``emulated``) says how the main processes of templates
    with ``pid1=True`` get PID 1 signal rules (:func:`~lossless.verify.lab.process.pid1_mode`);
    the resolved mode is :attr:`pid1`. With ``listen_timeout`` a replica that runs that long
    without accepting connections on its assigned port fails the run (:meth:`not_listening`).
    """

    def __init__(
        self,
        *,
        clock: Clock,
        traffic: TrafficModel,
        task_group: asyncio.TaskGroup,
        on_event: Callable[[Event], None] | None = None,
        log_dir: Path,
        host: str = "127.0.0.1",
        cwd: str | os.PathLike[str] | None = None,
        ports: PortAllocator | None = None,
        min_ready_seconds: float = 0.0,
        watch_listener: bool = True,
        pid1: str = "auto",
        listen_timeout: float | None = None,
        backoff: BackOffPolicy | None = None,
    ) -> None:
        if min_ready_seconds < 0:
            raise LosslessError(f"minReadySeconds must be >= 0 (got {min_ready_seconds})")
        self.clock = clock
        self.traffic = traffic
        self.task_group = task_group
        self.on_event = on_event or (lambda event: None)
        self.log_dir = log_dir
        self.host = host
        self.cwd = cwd
        self.ports = ports or PortAllocator(host)
        self.min_ready_seconds = min_ready_seconds
        self.watch_listener = watch_listener
        self.pid1 = pid1_mode(pid1)  # "namespace" or "emulated"
        self.listen_timeout = listen_timeout
        self.pods: list[Pod] = []
        self.generation = 0
        self._changed = asyncio.Condition()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        # every process the lab ever made, registered before it is spawned: close() reaches a
        # container being restarted (its pod still points at the exited one) or started late
        self._processes: list[ReplicaProcess] = []
        # -- issue 16: restartPolicy Always (None: a replica exiting by itself fails the run),
        # the exit code of a crash loop (2 while the first replicas start, 1 in a rollout),
        # and the fault injector's hook that delays a pod's start (lab/faults.py)
        self.backoff = backoff
        self.crash_loop_exit_code = 2
        self.start_delay: Callable[[Pod], float] = lambda pod: 0.0

    # -- events and change notification ----------------------------------------------------------

    def emit(self, kind: EventKind, pod: Pod | None = None, detail: str = "") -> None:
        self.on_event(Event(self.clock.now(), kind, pod.name if pod else "", None, detail))

    def _bump(self) -> None:
        self.generation += 1

        async def notify() -> None:
            async with self._changed:
                self._changed.notify_all()

        if not self._closing:
            self._spawn(notify())

    async def wait_changed(self, generation: int, timeout: float | None = None) -> bool:
        """Wait until :attr:`generation` differs from ``generation`` (a pod started, became ready
        or available, or exited). Returns False on timeout."""
        try:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(lambda: self.generation != generation)
        except TimeoutError:
            return False
        return True

    def _spawn(self, coro: Coroutine[Any, Any, None], pod: Pod | None = None) -> asyncio.Task[None]:
        task = self.task_group.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if pod is not None:
            pod._tasks.add(task)
            task.add_done_callback(pod._tasks.discard)
        return task

    # -- creation ------------------------------------------------------------------------------

    async def create(
        self,
        template: PodTemplate,
        name: str,
        *,
        port: int | None = None,
        immediate: bool = False,
    ) -> Pod:
        """Create a pod and start its process; return once the process is spawned.

        The pod joins the ready endpoint set when its readiness probe reaches successThreshold,
        or at once when the template has no probe (Kubernetes' rule). ``immediate`` makes every
        client route to it at once instead of after the propagation delay (the naive baseline).
        ``port`` reuses a given port (the naive baseline restarts in place); by default the
        lab's allocator hands out a fresh one. Raises ``LosslessError`` when the command cannot
        be executed at all.
        """
        if self._closing:
            raise RuntimeError(f"lab is closing: cannot create pod {name}")
        pod = Pod(name, template, port or self.ports.allocate(), self.host, self.clock.now())
        self.pods.append(pod)
        self.emit(EventKind.CREATED, pod, f"{template.version} port {pod.port}")
        if template.sidecar is not None:
            pod.app_port = self.ports.allocate()  # the sidecar takes the pod's port
        # every container port gets its port once per pod (a restart keeps them); the main
        # port's names mean the app's own port (``app_port``: ``port`` unless a sidecar fronts it)
        pod.ports = {alias: pod.app_port for alias in template.port_aliases}
        for group in template.ports:
            allocated = self.ports.allocate()
            pod.ports.update({key: allocated for key in group})
        if template.sidecar is not None:
            await self._start_sidecar(pod, template.sidecar)
        delay = self.start_delay(pod)
        if delay > 0:  # a slow-start fault: the container starts later (lab/faults.py)
            self._spawn(self._start_later(pod, delay, immediate), pod)
        else:
            await self._start_container(pod, immediate=immediate)
        self._bump()
        return pod

    async def _start_container(self, pod: Pod, *, immediate: bool = False) -> None:
        """Spawn the pod's main container (again, after a crash) with the pod's ports (``{port}``
        and ``$PORT`` are the app's port, ``{port:KEY}`` and ``PORT_<KEY>`` its other ports),
        under PID 1 rules unless the template says otherwise, and start its probes and the watch
        for its listener."""
        template = pod.template
        env = dict(os.environ)
        env.update(template.env)
        env["PORT"] = str(pod.app_port)
        for group in template.ports:
            for key in group:
                var = f"PORT_{key.upper().replace('-', '_').replace('.', '_')}"
                env[var] = str(pod.ports[key])
        argv = render_command(template.command, pod.app_port, pod.ports)
        mode = self.pid1 if template.pid1 else None
        process = ReplicaProcess(
            argv, env=env, cwd=self.cwd, log_path=self.log_dir / f"{pod.name}.log", pid1=mode
        )
        self._processes.append(process)
        await process.start()
        pod.process = process
        pod.returncode = None
        pod.started_at = self.clock.now()
        pod.startup_done = template.startup is None
        extra = "".join(f", port {'/'.join(g)} {pod.ports[g[0]]}" for g in template.ports)
        # the group's pid first (the leak checks kill and probe the group by it)
        pid1 = ""
        if mode == "namespace":
            pid1 = f" (PID 1 of a new PID namespace: pid {process.pid})"
        elif mode == "emulated":
            pid1 = " (PID 1 rules emulated)"
        self.emit(EventKind.STARTED, pod, f"pid {process.pgid}{pid1}{extra}: {shlex.join(argv)}")
        self._spawn(self._monitor(pod, process), pod)
        self._spawn(self._watch_started(pod, process), pod)
        if template.startup is not None:
            startup = StartupProber(
                template.startup,
                pod.app_port,
                clock=self.clock.now,
                started_at=pod.started_at,
                on_started=lambda detail: self._started_up(pod, process, detail),
                on_fail=lambda detail: self._probe_kill(pod, process, "startup", detail),
                ports=pod.ports,
            )
            self._container_task(pod, startup.run())
        else:
            self._start_main_probes(pod, process, immediate=immediate)

    def _start_main_probes(
        self, pod: Pod, process: ReplicaProcess, *, immediate: bool = False
    ) -> None:
        """Readiness (or ready at once without a probe) and liveness, once the container has
        started (worker.go: "Disable other probes until container has started")."""
        template = pod.template
        assert pod.started_at is not None
        if template.readiness is None:
            self._set_ready(pod, True, "no readiness probe", immediate=immediate)
        else:
            pod.prober = ReadinessProber(
                template.readiness,
                pod.app_port,
                clock=self.clock.now,
                started_at=pod.started_at,
                on_change=lambda ready, detail: self._set_ready(pod, ready, detail),
                ports=pod.ports,
            )
            pod._probe_task = self._spawn(pod.prober.run(), pod)
        if template.liveness is not None:
            pod.liveness = LivenessProber(
                template.liveness,
                pod.app_port,
                clock=self.clock.now,
                started_at=pod.started_at,
                on_fail=lambda detail: self._probe_kill(pod, process, "liveness", detail),
                ports=pod.ports,
            )
            self._container_task(pod, pod.liveness.run())

    def _set_ready(self, pod: Pod, ready: bool, detail: str, *, immediate: bool = False) -> None:
        if pod.exited.is_set():
            return
        if pod.deleting:
            # the kubelet keeps probing readiness on a terminating pod (worker.go doProbe);
            # the EndpointSlice entry keeps terminating=true and follows serving
            if pod.routed_in_place or ready == pod.ready:
                return
            pod.ready = ready
            kind = EventKind.READY if ready else EventKind.NOT_READY
            self.emit(kind, pod, f"{detail} (terminating)")
            if pod.in_slice:
                self.traffic.add(pod.endpoint)
            self._bump()
            return
        pod.ready = ready
        if ready:
            pod.ready_since = self.clock.now()
            self.emit(EventKind.READY, pod, detail)
            self._add_endpoint(pod, immediate=immediate)
            if self.min_ready_seconds <= 0:
                self._set_available(pod)
            else:
                # the ReplicaSet controller re-checks minReadySeconds + 1 s after Ready
                loop = asyncio.get_running_loop()
                pod._available_timer = loop.call_later(
                    self.min_ready_seconds + AVAILABILITY_RECHECK, self._set_available, pod
                )
        else:
            pod.ready_since = None
            pod.available = False
            if pod._available_timer is not None:
                pod._available_timer.cancel()
            self.emit(EventKind.NOT_READY, pod, detail)
            self._remove_endpoint(pod, "readiness probe failed", keep=True)
        self._bump()

    def is_available(self, pod: Pod, now: float) -> bool:
        """``IsPodAvailable``: ready, and minReadySeconds is 0 or the Ready condition's
        ``lastTransitionTime`` (whole seconds: API times are serialized to the second) plus
        minReadySeconds is before ``now``."""
        if not pod.ready or pod.ready_since is None:
            return False
        if self.min_ready_seconds <= 0:
            return True
        wall = self.clock.wall_origin
        transition = math.floor(wall + pod.ready_since)
        return transition + self.min_ready_seconds < wall + now

    def _set_available(self, pod: Pod) -> None:
        if pod.deleting or pod.exited.is_set() or pod.available:
            return
        if not self.is_available(pod, self.clock.now()):
            if pod.ready:  # not yet (clock skew): the controller's next re-check
                loop = asyncio.get_running_loop()
                pod._available_timer = loop.call_later(
                    AVAILABILITY_RECHECK, self._set_available, pod
                )
            return
        pod.available = True
        self.emit(EventKind.AVAILABLE, pod, f"ready for {self.min_ready_seconds:g}s")
        self._bump()

    def _add_endpoint(self, pod: Pod, *, immediate: bool = False) -> None:
        if not pod.in_endpoints:
            pod.in_endpoints = pod.in_slice = True
            self.emit(EventKind.ENDPOINT_ADDED, pod, "at once" if immediate else "")
            self.traffic.add(pod.endpoint, immediate=immediate)

    def _remove_endpoint(
        self, pod: Pod, detail: str, *, immediate: bool = False, keep: bool = False
    ) -> None:
        """The pod leaves the ready set (``ENDPOINT_REMOVED``). ``keep``: it stays in the slice
        with its current conditions (not serving, or terminating); else it leaves the slice."""
        if pod.in_endpoints:
            pod.in_endpoints = False
            self.emit(EventKind.ENDPOINT_REMOVED, pod, detail)
        if not pod.in_slice:
            return
        if keep:
            self.traffic.add(pod.endpoint, immediate=immediate)
        else:
            pod.in_slice = False
            self.traffic.remove(pod.endpoint, immediate=immediate)

    def replace_endpoint(self, old: Pod, new: Pod) -> None:
        """Route every client from ``old`` to ``new`` at once (the naive baseline's restart in
        place); ``new`` must already be in the ready set."""
        self._remove_endpoint(old, f"replaced by {new.name}", immediate=True)

    # -- the process's life ----------------------------------------------------------------------

    async def _monitor(self, pod: Pod, process: ReplicaProcess) -> None:
        code = await process.wait()
        pod.returncode = code
        process.kill()  # PID 1 is gone: the rest of the "container" goes with it
        was_ready = pod.ready
        pod.ready = pod.available = False
        if pod._available_timer is not None:
            pod._available_timer.cancel()
        if (
            self.backoff is not None
            and pod.template.restart_policy == "Always"
            and not pod.deleting
            and not self._closing
        ):
            self._container_exited(pod, process, code, was_ready)
            return
        self.emit(EventKind.EXITED, pod, describe_returncode(code))
        if not pod.routed_in_place and not self._closing:
            self._remove_endpoint(pod, "process exited")  # the pod leaves the slice
        self._stop_probe(pod)
        if pod.sidecar_process is not None and not self._closing:
            await self._stop_sidecar(pod)  # native: after the app; plain: already stopping
        pod.exited.set()
        self._bump()
        if not pod.deleting and not self._closing:
            started = pod.started_at if pod.started_at is not None else pod.created_at
            after = self.clock.now() - started
            tail = process.log_tail()
            raise LosslessError(
                f"replica {pod.name} exited unexpectedly ({describe_returncode(code)}, "
                f"{after:.1f}s after it started)"
                + (f": {tail}" if tail else "")
                + f" [command: {shlex.join(process.argv)}]"
            )

    # -- issue 16: restarts with back-off, liveness/startup kills, sidecars ----------------------

    def _container_task(self, pod: Pod, coro: Coroutine[Any, Any, None]) -> None:
        task = self._spawn(coro, pod)
        pod._container_tasks.add(task)
        task.add_done_callback(pod._container_tasks.discard)

    def _stop_container_probes(self, pod: Pod) -> None:
        for task in list(pod._container_tasks):
            task.cancel()
        if pod._probe_task is not None:
            pod._probe_task.cancel()
        pod.liveness = None

    def _started_up(self, pod: Pod, process: ReplicaProcess, detail: str) -> None:
        if pod.process is not process or pod.deleting or process.returncode is not None:
            return
        pod.startup_done = True
        self.emit(EventKind.STARTUP_SUCCEEDED, pod, detail)
        for task in list(pod._container_tasks):  # "Stop probing for startup once started"
            task.cancel()
        self._start_main_probes(pod, process)
        self._bump()

    def _probe_kill(self, pod: Pod, process: ReplicaProcess, kind: str, detail: str) -> None:
        """A liveness or startup probe failed failureThreshold times: kill the container with
        the pod's grace period (preStop, SIGTERM, SIGKILL); the restart policy brings it back."""
        if pod.process is not process or pod.deleting or process.returncode is not None:
            return
        self.emit(EventKind.PROBE_KILL, pod, f"{kind} probe failed: {detail}")
        if pod.ready:
            pod.ready = pod.available = False
            self.emit(EventKind.NOT_READY, pod, f"{kind} probe failed: container killed")
            self._remove_endpoint(pod, f"{kind} probe failed", keep=True)
            self._bump()
        self._spawn(self._terminate(pod), pod)

    def _container_exited(
        self, pod: Pod, process: ReplicaProcess, code: int, was_ready: bool
    ) -> None:
        """restartPolicy Always: restart the container after the kubelet's back-off; a crash
        loop (``backoff.limit`` crashes in a row, each less than the back-off's reset period
        after its start; an injected fault's kill does not count) ends the run."""
        assert self.backoff is not None
        now = self.clock.now()
        self._stop_container_probes(pod)
        ran = now - (pod.started_at if pod.started_at is not None else pod.created_at)
        if pod.fault_exit:
            pod.fault_exit = False
        elif ran < self.backoff.reset_after:
            pod._crash_run += 1
        else:
            pod._crash_run = 1
        if pod._backoff is None:
            pod._backoff = ContainerBackOff(self.backoff)
        delay = pod._backoff.schedule(now)
        tail = process.log_tail()
        self.emit(
            EventKind.CONTAINER_EXITED,
            pod,
            f"{describe_returncode(code)} after {ran:.2f}s; restart {pod.restarts + 1} in "
            f"{delay:.2f}s (back-off)" + (f"; last log line: {tail}" if tail else ""),
        )
        if was_ready:
            self.emit(EventKind.NOT_READY, pod, "container exited")
        # the pod stays in the EndpointSlice, not serving, until its restarted container is ready
        self._remove_endpoint(pod, "container exited", keep=True)
        self._bump()
        limit = self.backoff.limit
        if limit and pod._crash_run >= limit:
            raise CrashLoopError(
                f"replica {pod.name} exited unexpectedly ({describe_returncode(code)}, "
                f"{ran:.1f}s after it started), {pod._crash_run} times in a row "
                "(CrashLoopBackOff)"
                + (f": {tail}" if tail else "")
                + f" [command: {shlex.join(process.argv)}]",
                exit_code=self.crash_loop_exit_code,
            )
        pod._restart_task = self._spawn(self._restart_after(pod, delay), pod)

    async def _restart_after(self, pod: Pod, delay: float) -> None:
        if delay > 0:
            await asyncio.sleep(delay)
        if pod.deleting or self._closing:
            return
        pod.restarts += 1
        self.emit(EventKind.RESTARTED, pod, f"restart {pod.restarts}")
        await self._start_container(pod)
        self._bump()

    async def _start_later(self, pod: Pod, delay: float, immediate: bool) -> None:
        self.emit(EventKind.NOTE, pod, f"container start delayed {delay:g}s (fault)")
        await asyncio.sleep(delay)
        if pod.deleting or self._closing:
            pod.exited.set()
            return
        await self._start_container(pod, immediate=immediate)
        self._bump()

    async def _start_sidecar(self, pod: Pod, spec: SidecarSpec) -> None:
        """Start the sidecar on the pod's port (the app has a port of its own, ``app_port``,
        allocated by :meth:`create`). The sidecar is a plain process (no PID 1 rules)."""
        env = dict(os.environ)
        env.update(pod.template.env)
        env.update(PORT=str(pod.port), APP_PORT=str(pod.app_port))
        argv = render_sidecar(spec.command, pod.port, pod.app_port)
        process = ReplicaProcess(
            argv, env=env, cwd=self.cwd, log_path=self.log_dir / f"{pod.name}.sidecar.log"
        )
        self._processes.append(process)
        await process.start()
        pod.sidecar_process = process
        self.emit(
            EventKind.SIDECAR_STARTED,
            pod,
            f"{spec.kind} sidecar pid {process.pid} on port {pod.port}, app on port "
            f"{pod.app_port}: {shlex.join(argv)}",
        )
        self._spawn(self._monitor_sidecar(pod, process), pod)

    async def _monitor_sidecar(self, pod: Pod, process: ReplicaProcess) -> None:
        code = await process.wait()
        process.kill()
        unexpected = not pod.deleting and not self._closing and not pod.exited.is_set()
        self.emit(
            EventKind.SIDECAR_EXITED,
            pod,
            describe_returncode(code) + (" (unexpected: not restarted)" if unexpected else ""),
        )

    async def _stop_sidecar(self, pod: Pod, grace: float | None = None) -> None:
        """SIGTERM the sidecar, SIGKILL its group after ``grace`` (default: what is left of
        the pod's grace period since its deletion, at least 2 s)."""
        process = pod.sidecar_process
        if process is None or process.returncode is not None:
            return
        if grace is None:
            grace = pod.template.grace
            if pod.deleting_at is not None:
                grace -= self.clock.now() - pod.deleting_at
            grace = max(grace, MINIMUM_GRACE_PERIOD)
        if process.terminate():
            self.emit(EventKind.SIDECAR_SIGTERM, pod, f"{grace:g}s before SIGKILL")
        try:
            async with asyncio.timeout(grace):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()
        process.kill()

    # -- issue 15: the replica listens on the port it was given -------------------------------

    async def _watch_started(self, pod: Pod, process: ReplicaProcess) -> None:
        """Wait until the replica's container accepts connections on the app's assigned port
        (:attr:`Pod.app_port`; ``listening``). With ``listen_timeout``, a container still
        running that never does within it fails the run with an error naming ``{port}``/
        ``$PORT`` (a command that ignores the port it was given would otherwise pass for a
        server without a readiness probe). Once a pod has listened, its restarted containers
        are not watched again (the command is known to use its port)."""
        if pod.listening.is_set():
            return
        loop = asyncio.get_running_loop()
        start = loop.time()
        while process.returncode is None and not pod.exited.is_set():
            try:
                async with asyncio.timeout(0.5):
                    _, writer = await asyncio.open_connection(pod.host, pod.app_port)
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
                pod.listening.set()
                self._bump()
                return
            except (OSError, TimeoutError):
                pass
            if self.listen_timeout is not None and loop.time() - start > self.listen_timeout:
                if process.returncode is not None or pod.exited.is_set():
                    return
                if pod.deleting or self._closing:
                    return
                raise self.not_listening(pod, self.listen_timeout)
            await asyncio.sleep(_LISTENER_POLL)

    def not_listening(self, pod: Pod, after: float) -> LosslessError:
        """The error for a replica that never listened on its assigned port."""
        argv = shlex.join(pod.process.argv) if pod.process is not None else ""
        return LosslessError(
            f"replica {pod.name} is running but not listening on its assigned port "
            f"{pod.host}:{pod.app_port} after {after:g}s: the command must listen on the port "
            f"the lab gives it, written {{port}} or $PORT in --cmd (also in the PORT environment "
            f"variable) [command: {argv}]"
        )

    async def _watch_listener(self, pod: Pod) -> None:
        """Record when the replica first refuses a connection (its listener closed)."""
        while not pod.exited.is_set():
            try:
                async with asyncio.timeout(0.5):
                    _, writer = await asyncio.open_connection(pod.host, pod.port)
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
            except ConnectionRefusedError:
                self.emit(EventKind.LISTENER_CLOSED, pod, "connect refused")
                return
            except (OSError, TimeoutError):
                pass
            await asyncio.sleep(_LISTENER_POLL)
        self.emit(EventKind.LISTENER_CLOSED, pod, "process exited")

    # -- deletion ------------------------------------------------------------------------------

    def delete(self, pod: Pod) -> None:
        """Delete ``pod`` the way Kubernetes does; return at once.

        Deletion starts at t0 = now (a ``DELETING`` event) and runs two tracks in parallel, as
        the endpoints controller and the kubelet each react to the pod's deletion on their own:

        (a) endpoints: the pod leaves the ready endpoint set at t0 (``ENDPOINT_REMOVED``) but
            stays in the EndpointSlice as terminating, serving while its readiness probe (which
            the kubelet keeps running) passes; each client of the traffic model stops routing
            new connections to it when its view takes that state (``VIEW_REMOVED``), unless it
            has no ready endpoint left and falls back to serving-terminating ones. The entry
            leaves the slice when the process has exited. Liveness and startup probes stop at
            t0 (``StopLivenessAndStartup``); a container that has not passed its startup probe
            never gets readiness probes.
        (b) the container: the preStop handler (if any, and if the grace period is > 0) runs from
            t0 and is waited for at most the grace period (``PRESTOP_START``/``PRESTOP_END``; one
            still running then is abandoned, and dies with the process group); then the
            template's stop signal goes to the main process (a ``SIGTERM`` event naming the
            signal, and saying so when PID 1 rules drop it because the process has no handler
            for it). The time left is the grace period minus the whole
            seconds the preStop took, floored at 2 s (kubelet's ``minimumGracePeriodInSeconds``:
            a preStop that used up the grace period gets a one-off 2 s); when it runs out the
            whole process group gets SIGKILL (``SIGKILL``). ``EXITED`` follows when the main
            process has been reaped, and the group is SIGKILLed then in any case.

        So without a preStop SIGKILL comes exactly ``grace`` seconds after t0 (at least 2 s).
        A sidecar stops after the app (native) or from t0 in parallel (plain): see
        :mod:`lossless.verify.lab.sidecar`. A pod whose container is in back-off (or not started
        yet) goes at once. Deleting a pod twice does nothing; deleting one whose process already
        exited only does track (a). It does not wait: ``await pod.exited.wait()`` for that.
        """
        if pod.deleting:
            return
        pod.deleting_at = self.clock.now()
        if pod._available_timer is not None:
            pod._available_timer.cancel()
        self.emit(EventKind.DELETING, pod, f"grace {pod.template.grace:g}s")
        self._stop_liveness_and_startup(pod)
        pod.available = False  # readiness probing goes on (only liveness and startup stop)
        self._remove_endpoint(pod, "pod deleted", keep=True)
        sidecar = pod.template.sidecar
        if sidecar is not None and not sidecar.native:  # a plain container stops at t0 too
            self._spawn(self._stop_sidecar(pod), pod)
        if not pod.exited.is_set() and (pod.process is None or pod.process.returncode is not None):
            # in back-off (or not started yet): no container to stop, the pod goes at once
            if pod._restart_task is not None:
                pod._restart_task.cancel()
            self._stop_probe(pod)
            self.emit(EventKind.EXITED, pod, "deleted while its container was not running")
            self._remove_endpoint(pod, "pod deleted")  # the pod leaves the slice
            if pod.sidecar_process is not None:
                self._spawn(self._stop_sidecar(pod), pod)
            pod.exited.set()
        elif not pod.exited.is_set():
            self._spawn(self._terminate(pod), pod)
            if self.watch_listener:
                self._spawn(self._watch_listener(pod), pod)
        self._bump()

    def stop_in_place(self, pod: Pod) -> None:
        """The naive baseline's stop: SIGTERM at once, no preStop, and the endpoint stays routed
        (a VM behind a static load balancer) until :meth:`replace_endpoint`; SIGKILL to the
        group after the grace period. Returns at once."""
        if pod.deleting:
            return
        pod.deleting_at = self.clock.now()
        pod.routed_in_place = True
        self.emit(EventKind.DELETING, pod, "stop in place (naive)")
        self._stop_probe(pod)
        if not pod.exited.is_set():
            self._spawn(self._terminate(pod, run_prestop=False), pod)
            if self.watch_listener:
                self._spawn(self._watch_listener(pod), pod)
        self._bump()

    def _stop_liveness_and_startup(self, pod: Pod) -> None:
        """At deletion the kubelet stops liveness and startup probes (``StopLivenessAndStartup``);
        readiness goes on until the container exits."""
        for task in list(pod._container_tasks):
            task.cancel()
        if pod._available_timer is not None:
            pod._available_timer.cancel()

    def _stop_probe(self, pod: Pod) -> None:
        """Every probe of the pod stops (its container exited, or the naive baseline's stop)."""
        self._stop_liveness_and_startup(pod)
        if pod._probe_task is not None:
            pod._probe_task.cancel()

    async def _terminate(self, pod: Pod, *, run_prestop: bool = True) -> None:
        process = pod.process
        assert process is not None
        grace = pod.template.grace
        prestop = pod.template.prestop if run_prestop else None
        hook: asyncio.Task[tuple[bool, str]] | None = None
        exited = asyncio.ensure_future(process.wait())
        try:
            if prestop is not None and grace > 0:
                self.emit(EventKind.PRESTOP_START, pod, prestop.describe())
                started = self.clock.now()
                hook = asyncio.ensure_future(
                    run_handler(prestop, pod.app_port, grace + 60, pod.ports)
                )
                await asyncio.wait({hook, exited}, timeout=grace, return_when="FIRST_COMPLETED")
                took = self.clock.now() - started
                if hook.done():
                    ok, detail = hook.result()
                    self.emit(
                        EventKind.PRESTOP_END,
                        pod,
                        f"{'ok' if ok else 'failed'} after {took:.2f}s: {detail}",
                    )
                elif process.returncode is not None:
                    self.emit(EventKind.PRESTOP_END, pod, "process exited during preStop")
                else:
                    self.emit(
                        EventKind.PRESTOP_END,
                        pod,
                        f"not completed in the {grace:g}s grace period: abandoned",
                    )
                # kubelet: gracePeriod -= int64(time.Since(start).Seconds()) (whole seconds)
                grace -= int(took)
            grace = max(grace, MINIMUM_GRACE_PERIOD)
            if process.returncode is not None:
                return
            sig = pod.template.stop_signal
            outcome = process.stop(sig)
            if outcome is not None:
                detail = f"{sig.name}, {grace:g}s before SIGKILL"
                if outcome == "dropped":
                    detail += (
                        f": not delivered, PID 1 has no {sig.name} handler (pid_namespaces(7)); "
                        "only SIGKILL will stop it"
                    )
                self.emit(EventKind.SIGTERM, pod, detail)
            done, _ = await asyncio.wait({exited}, timeout=grace)
            if not done:
                process.kill()
                self.emit(EventKind.SIGKILL, pod, "grace period over")
                await exited
        finally:
            for future in (hook, exited):
                if future is not None and not future.done():
                    future.cancel()

    # -- teardown ------------------------------------------------------------------------------

    def running(self) -> list[Pod]:
        return [p for p in self.pods if p.process is not None and not p.exited.is_set()]

    async def close(self, *, timeout: float = 1.0) -> None:
        """Stop everything the lab started; return when every replica has been reaped.

        First SIGTERM to each main process still running, then after ``timeout`` seconds SIGKILL
        to every process group; cancels probes, hooks and timers. Idempotent; safe to call while
        the run is being cancelled. Replica exits during close are not errors.
        """
        self._closing = True
        alive = self.running()
        for pod in alive:
            assert pod.process is not None
            if pod.process.terminate():
                self.emit(EventKind.SIGTERM, pod, "teardown")
        # wait for the processes, not ``pod.exited``: a failed task group has cancelled the
        # monitors that set it (issue 13: a crash at start took 6.5 s to exit)
        procs = [p.process for p in alive if p.process is not None]
        procs += [p.sidecar_process for p in self.pods if p.sidecar_process is not None]
        waits = [asyncio.ensure_future(proc.wait()) for proc in procs]
        try:
            if waits:
                await asyncio.wait(waits, timeout=timeout)
            for pod in alive:
                assert pod.process is not None
                if pod.process.returncode is None:
                    pod.process.kill()
                    self.emit(EventKind.SIGKILL, pod, "teardown")
            for pod in self.pods:
                if pod.sidecar_process is not None:
                    pod.sidecar_process.kill()
            if waits:
                await asyncio.wait(waits, timeout=5.0)
            for pod in alive:  # every exit in the timeline, also when its monitor was cancelled
                assert pod.process is not None
                code = pod.process.returncode
                if not pod.exited.is_set() and code is not None:
                    pod.returncode = code
                    self.emit(EventKind.EXITED, pod, describe_returncode(code))
                    pod.exited.set()
        finally:
            for future in waits:
                future.cancel()
            self.kill_all()
            # reap every process the lab made, also those close() did not wait for above (a
            # container started while closing): none may outlive the loop unreaped
            left = [p for p in self._processes if p.pid is not None and p.returncode is None]
            if left:
                reaps = [asyncio.ensure_future(p.wait()) for p in left]
                try:
                    await asyncio.wait(reaps, timeout=2.0)
                finally:
                    for future in reaps:
                        future.cancel()
            for task in list(self._tasks):
                task.cancel()
            self.traffic.close()

    def kill_all(self) -> None:
        """Synchronous last resort: SIGKILL every process group the lab ever started (also
        one whose pod no longer points at it, or does not yet)."""
        for process in self._processes:
            process.kill()
