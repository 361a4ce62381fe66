"""Liveness and startup probes with the kubelet's semantics (``pkg/kubelet/prober/worker.go``).

Both reuse :class:`~lossless.verify.lab.prober.ReadinessProber`'s ticker and handlers and change
only what a result does:

- **startup** (initial result Unknown): ``successThreshold`` is 1 (API validation); the first
  success marks the container *started* and the worker stops probing ("Stop probing for startup
  once container has started"); ``failureThreshold`` consecutive failures kill the container,
  which is then restarted under its restart policy.
- **liveness** (initial result Success): ``failureThreshold`` consecutive failures kill the
  container with the pod's grace period (preStop, SIGTERM, SIGKILL), and the worker holds
  ("Stop probing until we see a new container ID", ``onHold``) until the restart.
- **gating**: until a container with a startup probe has started, its readiness and liveness
  workers do not probe ("Disable other probes until container has started"); the lab starts
  them only then. ``initialDelaySeconds`` counts from the container's start in every case.
- **ports**: like readiness, a probe that names a container port (``{port:NAME}``) goes to the
  replica's port of that name (``ports``); otherwise to the app's port.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from lossless.errors import LosslessError
from lossless.verify.lab.prober import ProbeSpec, ReadinessProber

__all__ = ["LivenessProber", "StartupProber", "check_probe"]


def check_probe(spec: ProbeSpec, kind: str) -> ProbeSpec:
    """The API server's rule for liveness and startup probes: successThreshold must be 1."""
    if spec.success_threshold != 1:
        raise LosslessError(
            f"{kind} probe successThreshold must be 1 (got {spec.success_threshold})"
        )
    return spec


class LivenessProber(ReadinessProber):
    """Calls ``on_fail(detail)`` once ``failure_threshold`` consecutive probes failed, then holds
    (no more probes): the container is being killed and a new prober comes with the restart."""

    def __init__(
        self,
        spec: ProbeSpec,
        port: int,
        *,
        clock: Callable[[], float],
        started_at: float,
        on_fail: Callable[[str], None],
        ports: Mapping[str, int] | None = None,
    ) -> None:
        super().__init__(
            spec,
            port,
            clock=clock,
            started_at=started_at,
            on_change=lambda ok, detail: None,
            ports=ports,
        )
        self.ready = True  # liveness starts as Success
        self.on_fail = on_fail
        self.held = False

    def observe(self, success: bool, detail: str) -> None:
        if self.held:
            return
        self.last_detail = detail
        if self._last_result == success:
            self._run += 1
        else:
            self._last_result = success
            self._run = 1
        if not success and self._run >= self.spec.failure_threshold:
            self.held = True
            self._run = 0
            self.on_fail(f"{detail} ({self.spec.failure_threshold} consecutive failures)")


class StartupProber(LivenessProber):
    """Calls ``on_started(detail)`` at the first success and then stops; ``on_fail`` as
    :class:`LivenessProber` after ``failure_threshold`` consecutive failures."""

    def __init__(
        self,
        spec: ProbeSpec,
        port: int,
        *,
        clock: Callable[[], float],
        started_at: float,
        on_started: Callable[[str], None],
        on_fail: Callable[[str], None],
        ports: Mapping[str, int] | None = None,
    ) -> None:
        super().__init__(
            spec, port, clock=clock, started_at=started_at, on_fail=on_fail, ports=ports
        )
        self.ready = False  # Unknown until the first result
        self.on_started = on_started

    def observe(self, success: bool, detail: str) -> None:
        if self.held:
            return
        if success:
            self.held = True
            self.ready = True
            self.last_detail = detail
            self.on_started(detail)
            return
        super().observe(success, detail)
