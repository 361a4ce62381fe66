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
from lossless.verify.lab.process import (
    PortAllocator,
    ReplicaProcess,
    describe_returncode,
    pid1_mode,
    render_command,
)
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
        for what, handler in (("readiness probe", self.readiness), ("preStop", self.prestop)):
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
        self.listening = asyncio.Event()  # seen accepting on its main port at least once
        self.returncode: int | None = None
        self.exited = asyncio.Event()
        self.process: ReplicaProcess | None = None
        self.prober: ReadinessProber | None = None
        self.routed_in_place = False  # naive baseline: the endpoint stays routed until replaced
        self._tasks: set[asyncio.Task[None]] = set()
        self._probe_task: asyncio.Task[None] | None = None
        self._available_timer: asyncio.TimerHandle | None = None

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
    ``task_group``, so it shares the fate of the run. A replica that exits while nobody deleted
    it fails the run with a :class:`LosslessError` (exit 2) naming it and its last log line: a
    kubelet would restart it, the lab reports the fault instead. Call :meth:`close` before the
    task group ends: it stops every process that is still running.

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
        pod.ports = {alias: pod.port for alias in template.port_aliases}
        for group in template.ports:
            allocated = self.ports.allocate()
            pod.ports.update({key: allocated for key in group})
        env = dict(os.environ)
        env.update(template.env)
        env["PORT"] = str(pod.port)
        for group in template.ports:
            for key in group:
                var = f"PORT_{key.upper().replace('-', '_').replace('.', '_')}"
                env[var] = str(pod.ports[key])
        argv = render_command(template.command, pod.port, pod.ports)
        mode = self.pid1 if template.pid1 else None
        process = ReplicaProcess(
            argv, env=env, cwd=self.cwd, log_path=self.log_dir / f"{name}.log", pid1=mode
        )
        await process.start()
        pod.process = process
        pod.started_at = self.clock.now()
        extra = "".join(f", port {'/'.join(g)} {pod.ports[g[0]]}" for g in template.ports)
        # the group's pid first (the leak checks kill and probe the group by it)
        pid1 = ""
        if mode == "namespace":
            pid1 = f" (PID 1 of a new PID namespace: pid {process.pid})"
        elif mode == "emulated":
            pid1 = " (PID 1 rules emulated)"
        self.emit(EventKind.STARTED, pod, f"pid {process.pgid}{pid1}{extra}: {shlex.join(argv)}")
        self._spawn(self._monitor(pod), pod)
        self._spawn(self._watch_started(pod), pod)
        if template.readiness is None:
            self._set_ready(pod, True, "no readiness probe", immediate=immediate)
        else:
            pod.prober = ReadinessProber(
                template.readiness,
                pod.port,
                clock=self.clock.now,
                started_at=pod.started_at,
                on_change=lambda ready, detail: self._set_ready(pod, ready, detail),
                ports=pod.ports,
            )
            pod._probe_task = self._spawn(pod.prober.run(), pod)
        self._bump()
        return pod

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

    async def _monitor(self, pod: Pod) -> None:
        assert pod.process is not None
        code = await pod.process.wait()
        pod.returncode = code
        pod.process.kill()  # PID 1 is gone: the rest of the "container" goes with it
        pod.ready = pod.available = False
        if pod._available_timer is not None:
            pod._available_timer.cancel()
        self.emit(EventKind.EXITED, pod, describe_returncode(code))
        if not pod.routed_in_place and not self._closing:
            self._remove_endpoint(pod, "process exited")  # the pod leaves the slice
        pod.exited.set()
        self._stop_probe(pod)
        self._bump()
        if not pod.deleting and not self._closing:
            started = pod.started_at if pod.started_at is not None else pod.created_at
            after = self.clock.now() - started
            tail = pod.process.log_tail()
            raise LosslessError(
                f"replica {pod.name} exited unexpectedly ({describe_returncode(code)}, "
                f"{after:.1f}s after it started)"
                + (f": {tail}" if tail else "")
                + f" [command: {shlex.join(pod.process.argv)}]"
            )

    async def _watch_started(self, pod: Pod) -> None:
        """Wait until the replica accepts connections on its assigned port (``listening``).
        With ``listen_timeout``, a replica still running that never does within it fails the
        run with an error naming ``{port}``/``$PORT`` (a command that ignores the port it was
        given would otherwise pass for a server without a readiness probe)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        while not pod.exited.is_set():
            try:
                async with asyncio.timeout(0.5):
                    _, writer = await asyncio.open_connection(pod.host, pod.port)
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
                pod.listening.set()
                self._bump()
                return
            except (OSError, TimeoutError):
                pass
            if self.listen_timeout is not None and loop.time() - start > self.listen_timeout:
                if pod.exited.is_set() or pod.deleting or self._closing:
                    return
                raise self.not_listening(pod, self.listen_timeout)
            await asyncio.sleep(_LISTENER_POLL)

    def not_listening(self, pod: Pod, after: float) -> LosslessError:
        """The error for a replica that never listened on its assigned port."""
        argv = shlex.join(pod.process.argv) if pod.process is not None else ""
        return LosslessError(
            f"replica {pod.name} is running but not listening on its assigned port "
            f"{pod.host}:{pod.port} after {after:g}s: the command must listen on the port the "
            f"lab gives it, written {{port}} or $PORT in --cmd (also in the PORT environment "
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
            leaves the slice when the process has exited.
        (b) the container: the preStop handler (if any, and if the grace period is > 0) runs from
            t0 and is waited for at most the grace period (``PRESTOP_START``/``PRESTOP_END``; one
            still running then is abandoned, and dies with the process group); then SIGTERM goes
            to the main process (``SIGTERM``). The time left is the grace period minus the whole
            seconds the preStop took, floored at 2 s (kubelet's ``minimumGracePeriodInSeconds``:
            a preStop that used up the grace period gets a one-off 2 s); when it runs out the
            whole process group gets SIGKILL (``SIGKILL``). ``EXITED`` follows when the main
            process has been reaped, and the group is SIGKILLed then in any case.

        So without a preStop SIGKILL comes exactly ``grace`` seconds after t0 (at least 2 s).
        Deleting a pod twice does nothing; deleting one whose process already exited only does
        track (a). It does not wait: ``await pod.exited.wait()`` for that.
        """
        if pod.deleting:
            return
        pod.deleting_at = self.clock.now()
        if pod._available_timer is not None:
            pod._available_timer.cancel()
        self.emit(EventKind.DELETING, pod, f"grace {pod.template.grace:g}s")
        pod.available = False  # readiness probing goes on (only liveness and startup stop)
        self._remove_endpoint(pod, "pod deleted", keep=True)
        if not pod.exited.is_set():
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

    def _stop_probe(self, pod: Pod) -> None:
        if pod._probe_task is not None:
            pod._probe_task.cancel()
        if pod._available_timer is not None:
            pod._available_timer.cancel()

    async def _terminate(self, pod: Pod, *, run_prestop: bool = True) -> None:
        process = pod.process
        assert process is not None and pod.deleting_at is not None
        grace = pod.template.grace
        prestop = pod.template.prestop if run_prestop else None
        hook: asyncio.Task[tuple[bool, str]] | None = None
        exited = asyncio.ensure_future(pod.exited.wait())
        try:
            if prestop is not None and grace > 0:
                self.emit(EventKind.PRESTOP_START, pod, prestop.describe())
                started = self.clock.now()
                hook = asyncio.ensure_future(run_handler(prestop, pod.port, grace + 60, pod.ports))
                await asyncio.wait({hook, exited}, timeout=grace, return_when="FIRST_COMPLETED")
                took = self.clock.now() - started
                if hook.done():
                    ok, detail = hook.result()
                    self.emit(
                        EventKind.PRESTOP_END,
                        pod,
                        f"{'ok' if ok else 'failed'} after {took:.2f}s: {detail}",
                    )
                elif pod.exited.is_set():
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
            if pod.exited.is_set():
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
        waits = [asyncio.ensure_future(p.exited.wait()) for p in alive]
        try:
            if waits:
                await asyncio.wait(waits, timeout=timeout)
            for pod in self.running():
                assert pod.process is not None
                pod.process.kill()
                self.emit(EventKind.SIGKILL, pod, "teardown")
            if waits:
                await asyncio.wait(waits, timeout=5.0)
        finally:
            for future in waits:
                future.cancel()
            self.kill_all()
            for task in list(self._tasks):
                task.cancel()
            self.traffic.close()

    def kill_all(self) -> None:
        """Synchronous last resort: SIGKILL every process group the lab ever started."""
        for pod in self.pods:
            if pod.process is not None:
                pod.process.kill()
