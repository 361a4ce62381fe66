"""``restartPolicy: Always``: the kubelet's crash-loop back-off, and when a crash loop ends a run.

Kubernetes restarts a container of a pod that is not being deleted whenever it exits (any exit
code, under ``restartPolicy: Always``, the only policy a Deployment accepts). The delay before
each restart is the kubelet's per-container back-off (kubernetes/kubernetes):

- ``pkg/kubelet/kubelet.go``: ``backOffPeriod = time.Second * 10`` (the initial back-off) and
  ``MaxContainerBackOff = 300 * time.Second``; the kubelet builds
  ``flowcontrol.NewBackOff(backOffPeriod, MaxContainerBackOff)``.
- ``pkg/kubelet/kuberuntime/kuberuntime_manager.go`` ``doBackOff``: with ``ts`` = the exited
  container's ``FinishedAt``, the container is not restarted while
  ``backOff.IsInBackOffSince(key, ts)`` ("Back-off restarting failed container"); otherwise
  ``backOff.Next(key, ts)`` and the container starts.
- ``k8s.io/client-go/util/flowcontrol/backoff.go``: ``IsInBackOffSince`` is false without an
  entry, or when the entry has expired, else ``now - ts < entry.backoff``; ``Next`` creates the
  entry with the initial period (or re-creates it when expired), else doubles it, capped at the
  maximum, and sets ``lastUpdate = now``; ``hasExpired``: ``eventTime - lastUpdate >
  2 * maxDuration`` ("consider stable if it's ok for twice the maxDuration").

So the first crash restarts at once, the next ones after 10, 20, 40, 80, 160, 300, 300... s,
and a container that ran for more than 10 minutes since its last restart starts over. The lab
scales every period by ``scale`` (``--backoff-scale``, default 0.1: 1 s doubling to 30 s, reset
after 60 s), so that a local run stays short; ``scale`` 1 is the kubelet's own timing.

A crash loop the run cannot get past: a container that crashes ``limit`` times in a row
(``--crash-loop-limit``, default 2), each time less than the back-off's reset period after it
started (the kubelet's own notion of "not stable yet"), stops the run at once with a
:class:`CrashLoopError` naming it, its exit and its last log line — instead of waiting out a
ready timeout or a progress deadline for a replica that will never serve. A kill injected by
``--fault`` is not a crash of the app's and does not count.
"""

from __future__ import annotations

import dataclasses
import math

from lossless.errors import LosslessError

__all__ = [
    "BACKOFF_INITIAL",
    "BACKOFF_MAX",
    "RESTART_POLICIES",
    "BackOffPolicy",
    "ContainerBackOff",
    "CrashLoopError",
]

BACKOFF_INITIAL = 10.0  # pkg/kubelet/kubelet.go backOffPeriod
BACKOFF_MAX = 300.0  # pkg/kubelet/kubelet.go MaxContainerBackOff
RESTART_POLICIES = ("Always", "Never")


class CrashLoopError(LosslessError):
    """A replica crash-loops: the run cannot progress. Exit 2 while the first replicas start (the
    command does not run), 1 during the rollout (the new version does not run)."""


@dataclasses.dataclass(frozen=True, slots=True)
class BackOffPolicy:
    """The kubelet's back-off periods, each multiplied by ``scale``; ``limit`` is the number of
    consecutive crashes that ends the run (0: never)."""

    scale: float = 0.1
    limit: int = 2
    initial: float = BACKOFF_INITIAL
    maximum: float = BACKOFF_MAX

    def __post_init__(self) -> None:
        if not (math.isfinite(self.scale) and self.scale >= 0):
            raise LosslessError(f"--backoff-scale must be >= 0 (got {self.scale})")
        if self.limit < 0:
            raise LosslessError(f"--crash-loop-limit must be >= 0 (got {self.limit})")

    @property
    def first(self) -> float:
        return self.initial * self.scale

    @property
    def cap(self) -> float:
        return self.maximum * self.scale

    @property
    def reset_after(self) -> float:
        """A container that ran this long since its last restart starts over (twice the maximum)."""
        return 2 * self.cap


class ContainerBackOff:
    """``flowcontrol.Backoff`` for one container (one key), without jitter (the kubelet passes
    none). Times are the caller's clock in seconds."""

    def __init__(self, policy: BackOffPolicy) -> None:
        self.policy = policy
        self.backoff: float | None = None  # None: no entry
        self.last_update = 0.0

    def _expired(self, event_time: float) -> bool:
        return event_time - self.last_update > self.policy.reset_after

    def wait(self, finished_at: float, now: float) -> float:
        """Seconds from ``now`` until a container that exited at ``finished_at`` may restart
        (``IsInBackOffSince``: 0 when not in back-off)."""
        if self.backoff is None or self._expired(finished_at):
            return 0.0
        return max(0.0, self.backoff - (now - finished_at))

    def next(self, finished_at: float, now: float) -> None:
        """Record a restart at ``now`` of a container that exited at ``finished_at``."""
        if self.backoff is None or self._expired(finished_at):
            self.backoff = self.policy.first
        else:
            self.backoff = min(self.backoff * 2, self.policy.cap)
        self.last_update = now

    def schedule(self, finished_at: float) -> float:
        """Both steps at once for a container restarted as soon as allowed: the delay after
        ``finished_at`` before the restart (and the entry is updated for that restart)."""
        delay = self.wait(finished_at, finished_at)
        self.next(finished_at, finished_at + delay)
        return delay
