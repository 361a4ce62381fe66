"""Disruption: voluntary evictions (node drains, autoscaler scale-downs) keep capacity."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from lossless.check.k8s import as_int
from lossless.check.model import Hit, Severity, rule
from lossless.check.rules.rollout import int_or_percent

if TYPE_CHECKING:
    from lossless.check.engine import Context


@rule("LL501", "missing-pdb", family="disruption", severity=Severity.WARNING)
def missing_pdb(ctx: Context) -> Iterator[Hit]:
    """Multi-replica Service-backed workload without a PodDisruptionBudget.

    ## What it does
    Flags a Deployment or StatefulSet behind a Service that runs at least 2 replicas (or whose
    HPA keeps at least 2) when no PodDisruptionBudget in the checked inputs selects its pods.

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
    for workload in ctx.serving:
        if workload.kind not in ("Deployment", "StatefulSet", "ReplicaSet"):
            continue
        replicas = ctx.min_replicas(workload)
        if replicas < 2 or ctx.pdbs_for(workload):
            continue
        yield Hit(
            workload.name_loc(),
            f"{workload.ref} runs {replicas} replicas behind a Service but no "
            "PodDisruptionBudget selects its pods: a node drain may evict them all at once",
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
        selected = [
            w
            for w in ctx.workloads_for_pdb(pdb)
            if w.kind in ("Deployment", "StatefulSet", "ReplicaSet")
        ]
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
