"""Disruption: voluntary evictions (node drains, autoscaler scale-downs) keep capacity."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from lossless.check.k8s import SCALED_KINDS, Workload, as_int
from lossless.check.model import Hit, Severity, rule
from lossless.check.rules.rollout import int_or_percent

if TYPE_CHECKING:
    from lossless.check.engine import Context


@rule("LL501", "missing-pdb", family="disruption", severity=Severity.WARNING)
def missing_pdb(ctx: Context) -> Iterator[Hit]:
    """Multi-replica Service-backed workload without a PodDisruptionBudget.

    ## What it does
    Flags a Deployment, StatefulSet, ReplicaSet or ReplicationController behind a Service when
    the Service has at least 2 pods (its own replicas or HPA minimum, added to those of the
    other workloads behind the same Service) and no PodDisruptionBudget that belongs with it
    selects its pods. Workloads behind one Service get one finding together.

    ## Why is this bad?
    A node drain (cluster upgrade, autoscaler scale-down, spot reclaim) evicts pods with no
    limit: several or all replicas of the service can be evicted at once, before replacements
    are ready. Requests fail although the workload has enough replicas on paper.

    ## Example
    ```yaml
    kind: Deployment
    metadata: {name: web}
    spec:
      replicas: 3
    # and no PodDisruptionBudget selecting app: web
    ```

    ## Use instead
    ```yaml
    apiVersion: policy/v1
    kind: PodDisruptionBudget
    metadata: {name: web}
    spec:
      maxUnavailable: 1
      selector: {matchLabels: {app: web}}
    ```
    """
    reported: set[int] = set()
    for workload in ctx.serving:
        if workload.kind not in SCALED_KINDS or ctx.pdbs_for(workload):
            continue
        pods = ctx.serving_pods(workload)
        if pods < 2 or id(workload) in reported:
            continue
        uncovered = [w for w in ctx.siblings(workload) if not ctx.pdbs_for(w)]
        reported |= {id(w) for w in uncovered}
        if len(uncovered) > 1:
            others = ", ".join(w.name for w in uncovered[1:])
            what = f"{workload.ref} and {others} run {pods} pods together"
            whose = "their"
        else:
            what, whose = f"{workload.ref} runs {pods} replicas", "its"
        yield Hit(
            workload.name_loc(),
            f"{what} behind a Service but no PodDisruptionBudget selects {whose} pods: a node "
            "drain may evict them all at once",
            workload,
        )


@rule("LL502", "pdb-blocks-eviction", family="disruption", severity=Severity.ERROR)
def pdb_blocks_eviction(ctx: Context) -> Iterator[Hit]:
    """PodDisruptionBudget that allows no eviction at all.

    ## What it does
    Flags a PodDisruptionBudget with `maxUnavailable: 0` (or `0%`), `minAvailable: 100%`, or a
    `minAvailable` greater than or equal to the replica count of a workload it selects (the
    HPA's `minReplicas` when one manages it).

    ## Why is this bad?
    Such a budget never allows an eviction: node drains hang until an operator deletes pods by
    hand or the drain times out and forces its way through. Either way pods are removed
    without the eviction API's coordination, all at once, which is exactly what the budget was
    meant to prevent; cluster upgrades and autoscaler scale-downs stall meanwhile.

    ## Example
    ```yaml
    spec:
      replicas: 2
    ---
    kind: PodDisruptionBudget
    spec:
      minAvailable: 2
      selector: {matchLabels: {app: web}}
    ```

    ## Use instead
    ```yaml
    kind: PodDisruptionBudget
    spec:
      maxUnavailable: 1
      selector: {matchLabels: {app: web}}
    ```
    """
    for pdb in ctx.of_kind("PodDisruptionBudget"):
        max_unavailable = pdb.get("spec", "maxUnavailable")
        min_available = pdb.get("spec", "minAvailable")
        if max_unavailable is not None:
            if as_int(max_unavailable) == 0 or str(max_unavailable).strip() == "0%":
                yield Hit(
                    pdb.loc("spec", "maxUnavailable"),
                    f"{pdb.ref} has maxUnavailable: {max_unavailable}: no pod can ever be "
                    "evicted, node drains hang",
                    pdb,
                )
            continue
        if min_available is None:
            continue
        if str(min_available).strip() == "100%":
            yield Hit(
                pdb.loc("spec", "minAvailable"),
                f"{pdb.ref} has minAvailable: 100%: no pod can ever be evicted, node drains hang",
                pdb,
            )
            continue
        selected = [w for w in ctx.workloads_for_pdb(pdb) if w.kind in SCALED_KINDS]
        for workload in selected:
            replicas = ctx.min_replicas(workload)
            needed = int_or_percent(min_available, replicas, round_up=True)
            if needed is not None and needed >= replicas:
                yield Hit(
                    pdb.loc("spec", "minAvailable"),
                    f"{pdb.ref} requires minAvailable: {min_available} but {workload.ref} runs "
                    f"{replicas}: no pod can ever be evicted, node drains hang",
                    pdb,
                )


#: unhealthyPodEvictionPolicy: alpha (off) in 1.26, beta and on by default from 1.27, GA 1.31.
UNHEALTHY_POLICY_BETA = (1, 27)


@rule("LL503", "pdb-unhealthy-pod-eviction", family="disruption", severity=Severity.WARNING)
def pdb_unhealthy_pod_eviction(ctx: Context) -> Iterator[Hit]:
    """PodDisruptionBudget without `unhealthyPodEvictionPolicy: AlwaysAllow`.

    ## What it does
    Flags a PodDisruptionBudget that selects a workload in the checked inputs and leaves
    `unhealthyPodEvictionPolicy` unset (or `IfHealthyBudget`). The field exists from Kubernetes
    1.27 (beta, on by default; GA in 1.31): with a target version below 1.27
    (`--kube-version`) the rule does not run.

    ## Why is this bad?
    Under the default policy a pod that is running but not ready (crash-looping, stuck on a
    dependency) may only be evicted while the budget still has room. When the budget is
    already used up by that very pod, a node drain hangs on it: the cluster upgrade or
    autoscaler scale-down stalls until someone deletes pods by hand, all at once, which is
    what the budget was meant to prevent. Evicting a pod that serves nothing costs nothing.

    ## Example
    ```yaml
    kind: PodDisruptionBudget
    spec:
      maxUnavailable: 1
      selector: {matchLabels: {app: web}}
    ```

    ## Use instead
    ```yaml
    kind: PodDisruptionBudget
    spec:
      maxUnavailable: 1
      unhealthyPodEvictionPolicy: AlwaysAllow
      selector: {matchLabels: {app: web}}
    ```
    """
    version = ctx.config.kube_version
    if version is not None and version < UNHEALTHY_POLICY_BETA:
        return
    for pdb in ctx.of_kind("PodDisruptionBudget"):
        policy = pdb.get("spec", "unhealthyPodEvictionPolicy")
        if policy == "AlwaysAllow" or not ctx.workloads_for_pdb(pdb):
            continue
        shown = "unset" if policy is None else f"{policy}"
        yield Hit(
            pdb.loc("spec", "unhealthyPodEvictionPolicy"),
            f"{pdb.ref} has unhealthyPodEvictionPolicy {shown}: a pod that runs but is not "
            "ready cannot be evicted once the budget is used up, and a node drain hangs on it; "
            "set AlwaysAllow",
            pdb,
        )


def _spreads(workload: Workload) -> bool:
    """Whether the pod template keeps replicas apart: pod anti-affinity (required or
    preferred) or a topology spread constraint."""
    spec = workload.pod_spec_path
    anti = workload.get(*spec, "affinity", "podAntiAffinity")
    if isinstance(anti, Mapping) and any(anti.get(k) for k in anti):
        return True
    spread = workload.get(*spec, "topologySpreadConstraints")
    return isinstance(spread, list) and bool(spread)


@rule("LL504", "replicas-on-one-node", family="disruption", severity=Severity.WARNING)
def replicas_on_one_node(ctx: Context) -> Iterator[Hit]:
    """Multi-replica Service-backed workload that nothing spreads across nodes.

    ## What it does
    Flags a Deployment, StatefulSet, ReplicaSet or ReplicationController behind a Service that
    runs at least 2 replicas (or whose HPA keeps at least 2) and whose pod template has neither
    a `podAntiAffinity` nor `topologySpreadConstraints`.

    ## Why is this bad?
    The scheduler's default spreading is only a preference: on a small or busy cluster all
    replicas can land on one node. Draining that node (an upgrade, a scale-down, a spot
    reclaim) then takes every replica away at once, and a PodDisruptionBudget only slows the
    evictions down: the service is down until the pods are rescheduled and ready.

    ## Example
    ```yaml
    spec:
      replicas: 3
      template:
        spec:
          containers: [...]
    ```

    ## Use instead
    ```yaml
    spec:
      replicas: 3
      template:
        spec:
          topologySpreadConstraints:
            - maxSkew: 1
              topologyKey: kubernetes.io/hostname
              whenUnsatisfiable: ScheduleAnyway
              labelSelector: {matchLabels: {app: web}}
          containers: [...]
    ```
    """
    for workload in ctx.serving:
        if workload.kind not in SCALED_KINDS:
            continue
        replicas = ctx.min_replicas(workload)
        if replicas < 2 or _spreads(workload):
            continue
        yield Hit(
            workload.loc(*workload.pod_spec_path, "affinity"),
            f"{workload.ref} runs {replicas} replicas behind a Service with no pod "
            "anti-affinity or topology spread: they may all run on one node, and one node "
            "drain takes the service down",
            workload,
        )
