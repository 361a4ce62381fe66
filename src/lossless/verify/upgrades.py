"""Many upgrades in a row (``--upgrades N``): v1 → v2 → … → vN+1 under one continuous load.

Each upgrade is one Deployment rollout (:class:`~lossless.verify.lab.rollout.Deployment`) from
the ReplicaSet the previous one left to a new one, followed by its ``terminating`` phase (every
old pod exited, every client caught up); the next upgrade starts right after. The timeline marks
each with ``UPGRADE_START`` (``detail`` ``"k/N vA→vB"``) and ``UPGRADE_END``, which
:mod:`lossless.verify.analysis.upgrades` uses to split the requests per upgrade. ``--upgrades 1``
(the default) is the single rollout of a plain run, event for event plus these two markers.

Nothing here grows with the number of requests: pods and ReplicaSets grow with N (a few objects
per replica per upgrade), the records stream to disk.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from lossless.verify.lab.pod import Lab
from lossless.verify.lab.rollout import Deployment, ReplicaSet
from lossless.verify.model import EventKind
from lossless.verify.traffic.base import TrafficModel

if TYPE_CHECKING:
    from lossless.verify.config import VerifyConfig
    from lossless.verify.lab.faults import FaultInjector

__all__ = ["run_upgrades"]


async def run_upgrades(
    lab: Lab,
    cfg: VerifyConfig,
    first: ReplicaSet,
    traffic: TrafficModel,
    *,
    set_phase: Callable[[str], None],
    on_detail: Callable[[str], None],
    injector: FaultInjector | None = None,
) -> None:
    """Roll ``first`` through ``cfg.upgrades`` upgrades, each to its own new version; return
    when the last one's old pods are gone and every client has caught up. Raises what
    :meth:`Deployment.run` raises (no progress: exit 1)."""
    total = cfg.upgrades
    old = first
    for k in range(1, total + 1):
        new = ReplicaSet(lab, cfg.template_at(k), 0)
        lab.crash_loop_exit_code = 1  # from here on a crash loop is a failed rollout
        lab.emit(EventKind.UPGRADE_START, None, f"{k}/{total} {old.name}→{new.name}")
        if injector is not None:
            injector.upgrade_started(k)
        set_phase("rollout" if total == 1 else f"rollout {k}/{total}")
        deployment = Deployment(
            lab,
            replicas=cfg.replicas,
            strategy=cfg.strategy,
            old=old,
            new=new,
            progress_deadline=cfg.progress_deadline,
            on_phase=on_detail,
            controller_delay=cfg.controller_delay,
            seed=cfg.seed + k,  # one controller-delay stream per upgrade, reproducible
        )
        await deployment.run()
        set_phase("terminating" if total == 1 else f"terminating {k}/{total}")
        for pod in old.pods:
            await pod.exited.wait()
        await traffic.settled()
        lab.emit(EventKind.UPGRADE_END, None, f"{k}/{total}")
        old = new
