"""Faults on purpose (``--fault SPEC``, repeatable): what to break, when, and the injector.

A spec reads ``KIND@WHEN[,for=S][,replica=NAME]``:

``kill``         SIGKILL to the replica's process group (``kill -9``); the kubelet restarts the
                 container (restartPolicy Always, with back-off: the first restart is immediate)
``stop``         SIGSTOP the replica's process group for ``for`` seconds (default 1), then
                 SIGCONT (a frozen process: a GC pause, a throttled CPU, a stuck node)
``slow-start``   the next replica created from WHEN on starts ``for`` seconds late (default 2: a
                 slow image pull or a slow scheduler)
``ingress-down`` ``--traffic ingress`` only: HAProxy is stopped (SIGSTOP) for ``for`` seconds

WHEN is seconds after the load starts (``kill@4.5``), or a phase: ``rollout`` (the first
upgrade's start), ``rollout:K`` (upgrade K of ``--upgrades``), each with an optional ``+S``
(``kill@rollout:3+0.5``). Without ``replica`` a fault hits the oldest ready replica that is not
being deleted at that moment (``kill``/``stop``). A fault that finds no target is not silently
dropped: it is a ``note`` in the timeline and a warning of the report.

Every fault is a ``FAULT`` timeline event (``replica`` set, ``detail`` starting with
``fault N``: N numbers the specs from 1 in the order given), and ``FAULT_END`` when it has a
duration. :mod:`lossless.verify.analysis.faults` attributes the failures they cause.

``registry-down`` is not modelled: the registry is the user's etcd, which the lab does not own
(an error says so).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import os
import re
import signal

from lossless.errors import LosslessError
from lossless.verify.lab.pod import Lab, Pod
from lossless.verify.model import EventKind
from lossless.verify.traffic.base import TrafficModel

__all__ = ["FAULT_KINDS", "FaultInjector", "FaultSpec", "parse_fault"]

FAULT_KINDS = ("kill", "stop", "slow-start", "ingress-down")
_DEFAULT_FOR = {"kill": 0.0, "stop": 1.0, "slow-start": 2.0, "ingress-down": 1.0}
_WHEN = re.compile(r"^(?:(?P<at>[0-9.]+)|rollout(?::(?P<k>[0-9]+))?(?:\+(?P<plus>[0-9.]+))?)$")


@dataclasses.dataclass(frozen=True, slots=True)
class FaultSpec:
    """One parsed ``--fault``. ``upgrade`` 0 means "seconds after the load starts"; K ≥ 1 means
    ``at`` seconds after upgrade K started."""

    kind: str
    at: float
    upgrade: int = 0
    duration: float = 0.0
    replica: str | None = None
    text: str = ""


def _seconds(value: str, what: str, spec: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not (math.isfinite(number) and number >= 0):
        raise LosslessError(f"--fault {spec!r}: {what} must be a number of seconds >= 0")
    return number


def parse_fault(text: str) -> FaultSpec:
    """Parse one ``--fault`` spec; a one-line ``LosslessError`` naming the spec otherwise."""
    head, _, rest = text.strip().partition(",")
    kind, at_sign, when = head.partition("@")
    kind = kind.strip()
    if kind == "registry-down":
        raise LosslessError(
            f"--fault {text!r}: registry-down is not modelled (the registry is your etcd, which "
            "the lab does not run); use kill or stop on replicas instead"
        )
    if kind not in FAULT_KINDS:
        raise LosslessError(
            f"--fault {text!r}: unknown fault {kind!r} (one of {', '.join(FAULT_KINDS)})"
        )
    if not at_sign or not when:
        raise LosslessError(
            f"--fault {text!r}: expected KIND@WHEN, e.g. kill@rollout+1 or stop@4,for=2"
        )
    match = _WHEN.match(when.strip())
    if match is None:
        raise LosslessError(
            f"--fault {text!r}: WHEN {when!r} must be seconds after the load starts or "
            "rollout[:K][+S]"
        )
    if match.group("at") is not None:
        at, upgrade = _seconds(match.group("at"), "WHEN", text), 0
    else:
        upgrade = int(match.group("k") or 1)
        if upgrade < 1:
            raise LosslessError(f"--fault {text!r}: upgrades are numbered from 1")
        plus = match.group("plus")
        at = _seconds(plus, "the +S offset", text) if plus else 0.0
    duration = _DEFAULT_FOR[kind]
    replica: str | None = None
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise LosslessError(f"--fault {text!r}: expected key=value, got {item!r}")
        if key in ("for", "delay"):
            duration = _seconds(value, key, text)
        elif key == "replica":
            if kind in ("slow-start", "ingress-down"):
                raise LosslessError(f"--fault {text!r}: {kind} takes no replica")
            replica = value.strip()
        else:
            raise LosslessError(f"--fault {text!r}: unknown key {key!r} (for, replica)")
    if kind == "kill" and duration:
        raise LosslessError(f"--fault {text!r}: kill takes no duration")
    return FaultSpec(kind, at, upgrade, duration, replica, text.strip())


class FaultInjector:
    """Runs the faults of one run on the lab's task group.

    The run calls :meth:`load_started` when the load begins and :meth:`upgrade_started` at the
    start of each upgrade; each fault whose trigger that is fires ``at`` seconds later.
    :meth:`close` cancels what has not fired and resumes anything still stopped (SIGCONT), so a
    fault never outlives the run.
    """

    def __init__(
        self,
        faults: tuple[FaultSpec, ...],
        lab: Lab,
        traffic: TrafficModel,
        upgrades: int = 1,
    ) -> None:
        for spec in faults:
            if spec.upgrade > upgrades:
                raise LosslessError(
                    f"--fault {spec.text!r}: there is no upgrade {spec.upgrade} "
                    f"(--upgrades {upgrades})"
                )
            if spec.kind == "ingress-down" and getattr(traffic, "haproxy", None) is None:
                raise LosslessError(f"--fault {spec.text!r}: needs --traffic ingress")
        self.faults = faults
        self.lab = lab
        self.traffic = traffic
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopped: set[int] = set()  # process groups under SIGSTOP
        self._slow: list[tuple[int, FaultSpec]] = []
        lab.start_delay = self._start_delay

    def _fire(self, trigger: int) -> None:
        for number, spec in enumerate(self.faults, start=1):
            if spec.upgrade == trigger:
                task = self.lab.task_group.create_task(self._run(number, spec))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    @property
    def armed(self) -> int:
        """Slow-start faults that fired and wait for the next pod to be created."""
        return len(self._slow)

    def load_started(self) -> None:
        self._fire(0)

    def upgrade_started(self, k: int) -> None:
        self._fire(k)

    def _emit(
        self, kind: EventKind, pod: Pod | None, number: int, spec: FaultSpec, what: str
    ) -> None:
        self.lab.emit(kind, pod, f"fault {number} ({spec.text}): {what}")

    def _target(self, spec: FaultSpec) -> Pod | None:
        alive = [
            p
            for p in self.lab.pods
            if not p.exited.is_set() and p.process is not None and p.process.returncode is None
        ]
        if spec.replica is not None:
            return next((p for p in alive if p.name == spec.replica), None)
        ready = [p for p in alive if p.ready and not p.deleting]
        return min(ready, key=lambda p: p.created_at) if ready else None

    async def _run(self, number: int, spec: FaultSpec) -> None:
        await asyncio.sleep(spec.at)
        if spec.kind == "slow-start":
            self._slow.append((number, spec))
            return
        if spec.kind == "ingress-down":
            await self._pause(number, spec, None, self._haproxy_pid())
            return
        pod = self._target(spec)
        # the process group (as the ``started`` event names it): in a PID namespace the main
        # process's pid is not the group's
        pgid = pod.process.pgid if pod is not None and pod.process is not None else None
        if pod is None or pod.process is None or pgid is None:
            who = spec.replica or "a ready replica"
            self.lab.emit(
                EventKind.NOTE, None, f"fault {number} ({spec.text}): skipped, no {who} running"
            )
            return
        if spec.kind == "kill":
            self._emit(EventKind.FAULT, pod, number, spec, f"kill -9 pid {pgid}")
            pod.fault_exit = True  # not a crash of the app's: no crash-loop count
            pod.process.kill()
        else:
            await self._pause(number, spec, pod, pgid)

    async def _pause(self, number: int, spec: FaultSpec, pod: Pod | None, pgid: int | None) -> None:
        what = "HAProxy" if pod is None else f"pid {pgid}"
        if pgid is None:
            self.lab.emit(
                EventKind.NOTE, None, f"fault {number} ({spec.text}): skipped, not running"
            )
            return
        self._emit(EventKind.FAULT, pod, number, spec, f"SIGSTOP {what} for {spec.duration:g}s")
        self._signal(pgid, signal.SIGSTOP)
        self._stopped.add(pgid)
        try:
            await asyncio.sleep(spec.duration)
        finally:
            self._stopped.discard(pgid)
            self._signal(pgid, signal.SIGCONT)
            self._emit(EventKind.FAULT_END, pod, number, spec, f"SIGCONT {what}")

    def _haproxy_pid(self) -> int | None:
        haproxy = getattr(self.traffic, "haproxy", None)
        pid = getattr(haproxy, "pid", None)
        return pid if isinstance(pid, int) else None

    @staticmethod
    def _signal(pgid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)

    def _start_delay(self, pod: Pod) -> float:
        if not self._slow:
            return 0.0
        number, spec = self._slow.pop(0)
        self._emit(EventKind.FAULT, pod, number, spec, f"start delayed {spec.duration:g}s")
        return spec.duration

    def close(self) -> None:
        """Cancel the faults not fired yet; SIGCONT whatever is still stopped. Idempotent."""
        for task in list(self._tasks):
            task.cancel()
        for pgid in list(self._stopped):
            self._signal(pgid, signal.SIGCONT)
        self._stopped.clear()
        self.lab.start_delay = lambda pod: 0.0


def injector_for(
    faults: tuple[FaultSpec, ...], lab: Lab, traffic: TrafficModel, upgrades: int
) -> FaultInjector | None:
    """The run's injector, or None without faults."""
    return FaultInjector(faults, lab, traffic, upgrades) if faults else None
