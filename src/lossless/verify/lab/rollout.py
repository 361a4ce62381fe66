"""Rollout strategies: the Deployment controller's rolling update and Recreate, and the naive
VM-style upgrade as the baseline.

The arithmetic follows kubernetes/kubernetes ``pkg/controller/deployment``:

- ``util/deployment_util.go`` ``ResolveFenceposts``: maxSurge is scaled from a percentage
  rounding *up*, maxUnavailable rounding *down*; when both resolve to 0, maxUnavailable becomes 1.
  ``MaxUnavailable`` caps it at the replica count. ``NewRSNewReplicas``: the new ReplicaSet may
  grow until all ReplicaSets' replicas reach ``replicas + maxSurge``, never past ``replicas``.
- ``rolling.go`` ``reconcileOldReplicaSets``: old pods may go only while
  ``allPods - minAvailable - newRSUnavailable > 0``; unhealthy old pods go first
  (``cleanupUnhealthyReplicas``), then available ones down to ``minAvailable``
  (``scaleDownOldReplicaSetsForRollingUpdate``). ``rolloutRolling`` scales up *or* down in one
  sync and syncs again on the next change.
- ``apps/validation`` ``ValidateRollingUpdateDeployment``: both 0 is rejected ("may not be 0 when
  maxSurge is 0"), maxUnavailable may not exceed 100%.
- ``pkg/controller/controller_utils.go`` ``ActivePodsWithRanks``: a ReplicaSet scaling down
  deletes not-ready pods first, then those ready for the shortest time, then the newest.
- Controller timing: a change the Deployment controller reacts to (a pod ready or available,
  a pod gone) travels kubelet status update → API server → ReplicaSet controller → Deployment
  controller → API call before anything is created or deleted; the driver waits
  ``controller_delay`` (seeded, tens to hundreds of ms) after each change before its next sync,
  instead of acting in the same loop turn. Availability itself follows the ReplicaSet
  controller's re-check (:data:`lossless.verify.lab.pod.AVAILABILITY_RECHECK`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
import re
from collections.abc import Callable

from lossless.errors import LosslessError
from lossless.verify.lab.pod import Lab, Pod, PodTemplate
from lossless.verify.model import EventKind
from lossless.verify.traffic.base import PropagationDelay

__all__ = [
    "STRATEGIES",
    "Deployment",
    "IntOrPercent",
    "ReplicaSet",
    "RolloutStrategy",
    "max_unavailable",
    "new_rs_new_replicas",
    "old_replicas_to_scale_down",
    "parse_int_or_percent",
    "resolve_fenceposts",
    "scaled_value",
    "validate_rolling_update",
]

STRATEGIES = ("rolling", "recreate", "naive")

IntOrPercent = int | str
_PERCENT = re.compile(r"^[0-9]+%$")


def parse_int_or_percent(value: int | str, field: str) -> IntOrPercent:
    """Accept ``3``, ``"3"`` or ``"25%"``; reject anything else with an error naming ``field``."""
    if isinstance(value, bool):
        raise LosslessError(f"{field}: expected an integer or a percentage, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise LosslessError(f"{field}: must be >= 0 (got {value})")
        return value
    text = str(value).strip()
    if _PERCENT.match(text):
        return text
    if text.isdigit():
        return int(text)
    raise LosslessError(f"{field}: expected an integer or a percentage like 25%, got {value!r}")


def scaled_value(value: IntOrPercent, total: int, round_up: bool) -> int:
    """intstr ``GetScaledValueFromIntOrPercent``: an int as is, a percentage of ``total``."""
    if isinstance(value, int):
        return value
    percent = int(value[:-1])
    numerator = percent * total
    return -(-numerator // 100) if round_up else numerator // 100


def _literal(value: IntOrPercent) -> int:
    # validation's getIntOrPercentValue: the number as written, percentage or not
    return value if isinstance(value, int) else int(value[:-1])


def validate_rolling_update(max_surge: IntOrPercent, max_unavailable: IntOrPercent) -> None:
    """The API server's validation of ``spec.strategy.rollingUpdate``."""
    if _literal(max_surge) == 0 and _literal(max_unavailable) == 0:
        raise LosslessError("maxUnavailable may not be 0 when maxSurge is 0")
    if isinstance(max_unavailable, str) and int(max_unavailable[:-1]) > 100:
        raise LosslessError(f"maxUnavailable must not be greater than 100% ({max_unavailable})")


def resolve_fenceposts(
    max_surge: IntOrPercent, max_unavailable: IntOrPercent, desired: int
) -> tuple[int, int]:
    """``ResolveFenceposts``: (surge, unavailable) as pod counts for ``desired`` replicas."""
    surge = scaled_value(max_surge, desired, True)
    unavailable = scaled_value(max_unavailable, desired, False)
    if surge == 0 and unavailable == 0:
        # "If both fenceposts resolve to zero, then we should set maxUnavailable to 1 on the
        # assumption that surge can't be 0" (percentages that round down to 0).
        unavailable = 1
    return surge, unavailable


def max_unavailable(max_surge: IntOrPercent, max_unavail: IntOrPercent, replicas: int) -> int:
    """``deploymentutil.MaxUnavailable``: resolved and capped at ``replicas``."""
    if replicas == 0:
        return 0
    _, unavailable = resolve_fenceposts(max_surge, max_unavail, replicas)
    return min(unavailable, replicas)


def new_rs_new_replicas(
    *, replicas: int, max_surge: IntOrPercent, all_replicas: int, new_replicas: int
) -> int:
    """``NewRSNewReplicas`` for RollingUpdate: the new ReplicaSet's next ``spec.replicas``.
    ``all_replicas`` is the sum of every ReplicaSet's ``spec.replicas``."""
    surge = scaled_value(max_surge, replicas, True)
    max_total = replicas + surge
    if all_replicas >= max_total:
        return new_replicas
    scale_up = min(max_total - all_replicas, replicas - new_replicas)
    return new_replicas + scale_up


def old_replicas_to_scale_down(
    *,
    replicas: int,
    max_surge: IntOrPercent,
    max_unavail: IntOrPercent,
    old_replicas: int,
    old_available: int,
    new_replicas: int,
    new_available: int,
) -> tuple[int, int]:
    """``reconcileOldReplicaSets`` for one old ReplicaSet: ``(unhealthy, available)`` old
    pods to remove now; the old ReplicaSet's next ``spec.replicas`` is ``old_replicas`` minus
    their sum."""
    if old_replicas == 0:
        return 0, 0
    all_pods = old_replicas + new_replicas
    min_available = replicas - max_unavailable(max_surge, max_unavail, replicas)
    new_unavailable = new_replicas - new_available
    max_scaled_down = all_pods - min_available - new_unavailable
    if max_scaled_down <= 0:
        return 0, 0
    # cleanupUnhealthyReplicas
    unhealthy = 0
    if old_replicas != old_available:
        unhealthy = min(max_scaled_down, old_replicas - old_available)
    old_left = old_replicas - unhealthy
    # scaleDownOldReplicaSetsForRollingUpdate (available counts are status, not spec)
    available = old_available + new_available
    if available <= min_available:
        return unhealthy, 0
    return unhealthy, min(old_left, available - min_available)


@dataclasses.dataclass(frozen=True, slots=True)
class RolloutStrategy:
    """``rolling`` (RollingUpdate), ``recreate`` (Recreate) or ``naive`` (the VM-style baseline:
    per replica, SIGTERM the old process, start the new one on the same port, route to it at
    once, no readiness gating, no preStop)."""

    kind: str = "rolling"
    max_surge: IntOrPercent = "25%"
    max_unavailable: IntOrPercent = "25%"

    def __post_init__(self) -> None:
        if self.kind not in STRATEGIES:
            raise LosslessError(f"unknown strategy {self.kind!r} (one of {', '.join(STRATEGIES)})")
        object.__setattr__(self, "max_surge", parse_int_or_percent(self.max_surge, "maxSurge"))
        object.__setattr__(
            self, "max_unavailable", parse_int_or_percent(self.max_unavailable, "maxUnavailable")
        )
        if self.kind == "rolling":
            validate_rolling_update(self.max_surge, self.max_unavailable)


def _deletion_rank(pod: Pod) -> tuple[int, float, float]:
    # ActivePodsWithRanks, the parts that apply here: not ready < ready; ready for less time
    # < more time; newer < older. Lower sorts first = deleted first.
    ready_since = pod.ready_since if pod.ready_since is not None else math.inf
    return (1 if pod.ready else 0, -ready_since, -pod.created_at)


class ReplicaSet:
    """A ReplicaSet: a template, ``replicas`` (spec), and the pods it owns. :meth:`sync` is the
    ReplicaSet controller: it creates or deletes pods until the active ones match the spec."""

    def __init__(self, lab: Lab, template: PodTemplate, replicas: int = 0) -> None:
        self.lab = lab
        self.template = template
        self.replicas = replicas
        self.pods: list[Pod] = []
        self._serial = 0

    @property
    def name(self) -> str:
        return self.template.version

    def active(self) -> list[Pod]:
        """Pods not being deleted (terminating pods do not count, as FilterActivePods)."""
        return [p for p in self.pods if not p.deleting and not p.exited.is_set()]

    def available(self) -> int:
        return sum(1 for p in self.active() if p.available)

    def ready(self) -> int:
        return sum(1 for p in self.active() if p.ready)

    def next_name(self) -> str:
        name = f"{self.name}-{self._serial}"
        self._serial += 1
        return name

    async def sync(self) -> None:
        active = self.active()
        diff = self.replicas - len(active)
        if diff > 0:
            for _ in range(diff):
                self.pods.append(await self.lab.create(self.template, self.next_name()))
        elif diff < 0:
            for pod in sorted(active, key=_deletion_rank)[:-diff]:
                self.lab.delete(pod)


class Deployment:
    """Drives one rollout from ``old`` to ``new`` with ``strategy``; ``replicas`` is the
    Deployment's ``spec.replicas``. ``on_phase`` hears human-readable progress."""

    def __init__(
        self,
        lab: Lab,
        *,
        replicas: int,
        strategy: RolloutStrategy,
        old: ReplicaSet,
        new: ReplicaSet,
        progress_deadline: float = 120.0,
        on_phase: Callable[[str], None] | None = None,
        controller_delay: PropagationDelay | None = None,
        seed: int = 0,
    ) -> None:
        self.lab = lab
        self.controller_delay = controller_delay or PropagationDelay(0.0, 0.0)
        self._delay_rng = random.Random(f"{seed}/controller")
        self.replicas = replicas
        self.strategy = strategy
        self.old = old
        self.new = new
        self.progress_deadline = progress_deadline
        self.on_phase = on_phase or (lambda text: None)

    def complete(self) -> bool:
        """Deployment complete: every replica updated and available, no old pod left."""
        return (
            self.new.replicas == self.replicas
            and len(self.new.active()) == self.replicas
            and self.new.available() == self.replicas
            and self.old.replicas == 0
            and not self.old.active()
        )

    async def run(self) -> None:
        """Roll out; return when :meth:`complete` (old pods may still be terminating). Raises
        ``LosslessError`` (exit 1) when nothing progresses for ``progress_deadline`` seconds."""
        self.lab.emit(EventKind.ROLLOUT_START, None, self.strategy.kind)
        if self.strategy.kind == "naive":
            await self._naive()
        else:
            step = self._sync_rolling if self.strategy.kind == "rolling" else self._sync_recreate
            while True:
                generation = self.lab.generation
                acted = await step()
                if self.complete():
                    break
                if acted:  # the next sync comes with the ReplicaSet's update event
                    await self._controller_latency()
                    continue
                if not await self.lab.wait_changed(generation, self.progress_deadline):
                    raise LosslessError(
                        f"rollout made no progress for {self.progress_deadline:g}s "
                        f"({self.new.name}: {self.new.available()}/{self.replicas} available)",
                        exit_code=1,
                    )
                await self._controller_latency()
        self.lab.emit(EventKind.ROLLOUT_END, None, self.strategy.kind)

    async def _controller_latency(self) -> None:
        d = self.controller_delay
        if d.mean <= 0 and d.jitter <= 0:
            await asyncio.sleep(0)
            return
        await asyncio.sleep(max(0.0, d.mean + self._delay_rng.uniform(-d.jitter, d.jitter)))

    def _status(self) -> str:
        return (
            f"{self.old.name} {len(self.old.active())} · {self.new.name} "
            f"{self.new.available()}/{self.replicas} available"
        )

    async def _sync_rolling(self) -> bool:
        s = self.strategy
        # reconcileNewReplicaSet
        if self.new.replicas < self.replicas:
            target = new_rs_new_replicas(
                replicas=self.replicas,
                max_surge=s.max_surge,
                all_replicas=self.old.replicas + self.new.replicas,
                new_replicas=self.new.replicas,
            )
            if target != self.new.replicas:
                self.new.replicas = target
                await self.new.sync()
                self.on_phase(self._status())
                return True
        # reconcileOldReplicaSets
        unhealthy, available = old_replicas_to_scale_down(
            replicas=self.replicas,
            max_surge=s.max_surge,
            max_unavail=s.max_unavailable,
            old_replicas=self.old.replicas,
            old_available=self.old.available(),
            new_replicas=self.new.replicas,
            new_available=self.new.available(),
        )
        if unhealthy + available > 0:
            self.old.replicas -= unhealthy + available
            await self.old.sync()
            self.on_phase(self._status())
            return True
        return False

    async def _sync_recreate(self) -> bool:
        # rolloutRecreate: scale old to 0, wait until no old pod runs, then scale new up.
        if self.old.replicas > 0:
            self.old.replicas = 0
            await self.old.sync()
            self.on_phase(self._status())
            return True
        if any(not p.exited.is_set() for p in self.old.pods):
            return False
        if self.new.replicas < self.replicas:
            self.new.replicas = self.replicas
            await self.new.sync()
            self.on_phase(self._status())
            return True
        return False

    async def _naive(self) -> None:
        naive_template = dataclasses.replace(self.new.template, readiness=None, prestop=None)
        for old_pod in sorted(self.old.active(), key=lambda p: p.name):
            self.lab.stop_in_place(old_pod)
            self.old.replicas -= 1
            await old_pod.exited.wait()
            new_pod = await self.lab.create(
                naive_template, self.new.next_name(), port=old_pod.port, immediate=True
            )
            self.new.pods.append(new_pod)
            self.new.replicas += 1
            self.lab.replace_endpoint(old_pod, new_pod)
            self.on_phase(self._status())
