"""Rollout: a rolling update must keep ready capacity and be able to progress."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from lossless.check.k8s import SCALED_KINDS, Workload, as_int
from lossless.check.model import Hit, Severity, rule

if TYPE_CHECKING:
    from lossless.check.engine import Context


def int_or_percent(value: Any, total: int, *, round_up: bool) -> int | None:
    """Resolve an IntOrString against ``total`` the way the Deployment controller does.

    Percentages round up for maxSurge and down for maxUnavailable; ``None`` when malformed.
    """
    number = as_int(value)
    if number is not None:
        return number
    match = re.fullmatch(r"\s*(\d+)%\s*", str(value))
    if not match:
        return None
    exact = total * int(match.group(1)) / 100
    return math.ceil(exact) if round_up else math.floor(exact)


def _is_zero(value: Any) -> bool:
    return as_int(value) == 0 or str(value).strip() == "0%"


def _replicas_text(ctx: Context, workload: Workload) -> str:
    hpa = ctx.hpa_for(workload)
    count = ctx.min_replicas(workload)
    if hpa is not None:
        return f"{count} replica{'s' if count != 1 else ''} (minReplicas of HPA {hpa.name})"
    return f"{count} replica{'s' if count != 1 else ''}"


@rule("LL401", "recreate-strategy", family="rollout", severity=Severity.ERROR)
def recreate_strategy(ctx: Context) -> Iterator[Hit]:
    """Service-backed Deployment uses the Recreate strategy.

    ## What it does
    Flags a Deployment selected by a Service whose `spec.strategy.type` is `Recreate`.

    ## Why is this bad?
    Recreate deletes every old pod before it creates any new one: for the whole time the new
    pods take to start and become ready, the Service has no endpoints and every request fails.
    That is the old "stop, then start" upgrade this tool exists to remove.

    ## Example
    ```yaml
    strategy:
      type: Recreate
    ```

    ## Use instead
    ```yaml
    strategy:
      type: RollingUpdate
      rollingUpdate: {maxSurge: 1, maxUnavailable: 0}
    ```
    If two versions must never run together (a schema change, a singleton), say why in a
    `lossless/ignore` annotation.
    """
    for workload in ctx.serving:
        if workload.kind == "Deployment" and workload.get("spec", "strategy", "type") == "Recreate":
            yield Hit(
                workload.loc("spec", "strategy", "type"),
                f"{workload.ref} is behind a Service but uses the Recreate strategy: all pods "
                "stop before new ones are ready, the Service has no endpoints meanwhile",
                workload,
            )


@rule("LL402", "rollout-drops-capacity", family="rollout", severity=Severity.ERROR)
def rollout_drops_capacity(ctx: Context) -> Iterator[Hit]:
    """maxSurge/maxUnavailable can take every ready replica away, or block the rollout.

    ## What it does
    Resolves `maxSurge` (default 25 %, percentages round **up**) and `maxUnavailable`
    (default 25 %, percentages round **down**) against the replica count (the HPA's
    `minReplicas` when one manages the Deployment) and flags a Service-backed Deployment when:
    both are literally 0 (the API rejects it: the rollout cannot progress); both resolve to 0
    (the controller then uses maxUnavailable = 1); or maxUnavailable resolves to the whole
    replica count, so the rollout may stop every ready pod at once.

    ## Why is this bad?
    With maxUnavailable equal to the replica count, the controller may terminate all old pods
    before any new pod is ready: the Service has no ready endpoint and requests fail. A value
    that only looks safe (`10%` of 3 replicas is 0) silently changes the rollout's behaviour.

    ## Example
    ```yaml
    replicas: 2
    strategy:
      rollingUpdate: {maxSurge: 0, maxUnavailable: 100%}
    ```

    ## Use instead
    ```yaml
    replicas: 2
    strategy:
      rollingUpdate: {maxSurge: 1, maxUnavailable: 0}
    ```
    """
    for workload in ctx.serving:
        if workload.kind != "Deployment":
            continue
        strategy = workload.get("spec", "strategy", "type")
        if strategy not in (None, "RollingUpdate"):
            continue
        path = ("spec", "strategy", "rollingUpdate")
        raw_surge = workload.get(*path, "maxSurge")
        raw_unavailable = workload.get(*path, "maxUnavailable")
        surge_value = "25%" if raw_surge is None else raw_surge
        unavailable_value = "25%" if raw_unavailable is None else raw_unavailable
        replicas = ctx.min_replicas(workload)
        surge = int_or_percent(surge_value, replicas, round_up=True)
        unavailable = int_or_percent(unavailable_value, replicas, round_up=False)
        if surge is None or unavailable is None or replicas < 1:
            continue
        if raw_unavailable is not None:
            where = workload.loc(*path, "maxUnavailable")
        elif raw_surge is not None:
            where = workload.loc(*path, "maxSurge")
        else:
            where = workload.loc("spec", "replicas")
        shown = _replicas_text(ctx, workload)
        if _is_zero(surge_value) and _is_zero(unavailable_value):
            yield Hit(
                where,
                f"{workload.ref}: maxSurge and maxUnavailable are both 0: the API rejects the "
                "update and the rollout cannot progress",
                workload,
            )
            continue
        note = ""
        if surge == 0 and unavailable == 0:
            note = (
                f" (maxSurge {surge_value} and maxUnavailable {unavailable_value} both resolve "
                "to 0, so the controller uses maxUnavailable 1)"
            )
            unavailable = 1
        if unavailable >= replicas:
            yield Hit(
                where,
                f"{workload.ref}: maxUnavailable {unavailable_value} resolves to {unavailable} "
                f"of {shown}{note}: the rollout may stop every ready pod at once",
                workload,
            )


def _scaled(ctx: Context) -> Iterator[Workload]:
    for workload in ctx.serving:
        if workload.kind in SCALED_KINDS:
            yield workload


def _together(ctx: Context, workload: Workload) -> str:
    """`` (with reviews-v2, reviews-v3)`` when other workloads share its Services."""
    others = [w.name for w in ctx.siblings(workload)[1:]]
    return f" (with {', '.join(others)})" if others else ""


@rule("LL403", "single-replica", family="rollout", severity=Severity.WARNING)
def single_replica(ctx: Context) -> Iterator[Hit]:
    """Service-backed workload runs fewer than 2 replicas.

    ## What it does
    Flags a Deployment, StatefulSet, ReplicaSet or ReplicationController behind a Service that
    runs a single replica (`replicas` unset or below 2) when the Service has no other pod
    either: the replicas of every workload a Service selects count together (reviews-v1, -v2
    and -v3 behind one Service are 3 pods). A workload managed by a HorizontalPodAutoscaler is
    left to LL405.

    ## Why is this bad?
    With one pod, anything that replaces it drops requests: a node drain, an eviction, a crash,
    and (for a StatefulSet, or a Deployment with `maxSurge: 0`) every rollout. There is no
    other ready endpoint to take the traffic while the pod stops.

    ## Example
    ```yaml
    spec:
      replicas: 1
    ```

    ## Use instead
    ```yaml
    spec:
      replicas: 2
    ```
    or an HPA with `minReplicas: 2`.
    """
    for workload in _scaled(ctx):
        if ctx.hpa_for(workload) is not None or ctx.serving_pods(workload) >= 2:
            continue
        yield Hit(
            workload.loc("spec", "replicas"),
            f"{workload.ref} runs {_replicas_text(ctx, workload)} behind a Service: a node "
            "drain, eviction or restart leaves it with no ready endpoint",
            workload,
        )


@rule("LL405", "hpa-min-replicas-one", family="rollout", severity=Severity.WARNING)
def hpa_min_replicas_one(ctx: Context) -> Iterator[Hit]:
    """HorizontalPodAutoscaler lets a Service-backed workload scale down to 1 replica.

    ## What it does
    Flags a HorizontalPodAutoscaler whose `minReplicas` is 1 (or unset: the API defaults it
    to 1) when its exact `scaleTargetRef` is a workload behind a Service, and no other workload
    behind that Service keeps a second pod.

    ## Why is this bad?
    At night or on a quiet weekend the autoscaler scales the workload down to its minimum. With
    one pod left, the next node drain, eviction, crash or rollout step has no other ready
    endpoint: requests fail until a new pod is ready. The service is only highly available
    while it is busy.

    ## Example
    ```yaml
    kind: HorizontalPodAutoscaler
    spec:
      scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
      minReplicas: 1
      maxReplicas: 10
    ```

    ## Use instead
    ```yaml
    kind: HorizontalPodAutoscaler
    spec:
      scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
      minReplicas: 2
      maxReplicas: 10
    ```
    """
    for workload in _scaled(ctx):
        hpa = ctx.hpa_for(workload)
        if hpa is None or ctx.serving_pods(workload) >= 2:
            continue
        written = hpa.get("spec", "minReplicas")
        shown = "unset (1)" if written is None else str(written)
        yield Hit(
            hpa.loc("spec", "minReplicas"),
            f"HPA {hpa.name} lets {workload.ref} scale down to 1 replica (minReplicas "
            f"{shown}) behind a Service{_together(ctx, workload)}: at low load a node drain, "
            "eviction or restart leaves it with no ready endpoint",
            hpa,
        )


@rule("LL404", "static-replicas-with-hpa", family="rollout", severity=Severity.WARNING)
def static_replicas_with_hpa(ctx: Context) -> Iterator[Hit]:
    """A workload managed by an HPA also sets `spec.replicas`.

    ## What it does
    Flags a Deployment or StatefulSet that sets `spec.replicas` while a
    HorizontalPodAutoscaler in the checked inputs targets it (its exact `scaleTargetRef`, in
    the same namespace, directory, kustomization or Helm release).

    ## Why is this bad?
    Every `kubectl apply` (or GitOps sync) of the manifest resets the replica count to the
    static value, overriding the autoscaler: a service scaled out under load is scaled back in
    on deploy, exactly when new pods are starting, and requests are dropped or queued.

    ## Example
    ```yaml
    kind: Deployment
    spec:
      replicas: 3          # and an HPA targets this Deployment
    ```

    ## Use instead
    ```yaml
    kind: Deployment
    spec:                  # no replicas: the HPA owns the count
      selector: {matchLabels: {app: web}}
    ```
    """
    for workload in ctx.workloads:
        if workload.kind not in ("Deployment", "StatefulSet"):
            continue
        hpa = ctx.hpa_for(workload)
        if hpa is None or workload.get("spec", "replicas") is None:
            continue
        yield Hit(
            workload.loc("spec", "replicas"),
            f"{workload.ref} sets replicas: {workload.get('spec', 'replicas')} but HPA "
            f"{hpa.name} manages it: every apply resets the autoscaled count",
            workload,
        )
