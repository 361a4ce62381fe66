"""Service: the selector and target ports route to the pods that serve."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from lossless.check.k8s import KNOWN_KINDS, K8sObject, as_int
from lossless.check.model import Hit, Severity, rule

if TYPE_CHECKING:
    from lossless.check.engine import Context


#: Fields of a custom resource's spec that say an operator runs pods for it.
_POD_FIELDS = ("replicas", "template", "podTemplate", "podMetadata", "containers", "image")


def _pod_making_resources(ctx: Context) -> list[K8sObject]:
    """Custom resources (kinds the checker does not know) whose spec describes pods."""
    found = []
    for obj in ctx.objects:
        spec = obj.get("spec")
        pods = isinstance(spec, Mapping) and any(field in spec for field in _POD_FIELDS)
        if obj.kind not in KNOWN_KINDS and pods:
            found.append(obj)
    return found


@rule("LL601", "service-selects-nothing", family="service", severity=Severity.ERROR)
def service_selects_nothing(ctx: Context) -> Iterator[Hit]:
    """Service selector that matches no workload.

    ## What it does
    Flags a Service with a selector that matches the pods of no workload in the checked inputs
    that belong with it (same namespace; with no namespace, same directory, kustomization or
    Helm release). Labels a controller adds itself count (`statefulset.kubernetes.io/pod-name`
    selects one StatefulSet pod). It only runs when a workload is defined in the Service's
    namespace or next to it (same directory, kustomization or Helm release), so checking a lone
    Service file, or a Service beside unrelated directories, does not trigger it. Nor does it
    when a custom resource that describes pods (its spec has `replicas`, `template`,
    `podMetadata`, `containers`...: a Prometheus, an Alertmanager, an Argo Rollout) belongs with
    the Service: its operator may run the pods the Service selects.

    ## Why is this bad?
    A selector that matches nothing gives the Service no endpoints: every request is refused
    (or answered 503 by an ingress). It usually comes from a label renamed on one side only, a
    typo, or a Helm value that differs between the chart's Service and Deployment; the next
    rollout of the renamed side takes the whole service offline.

    ## Example
    ```yaml
    kind: Service
    spec:
      selector: {app: web-frontend}
    # the Deployment's pods are labelled app: frontend
    ```

    ## Use instead
    ```yaml
    kind: Service
    spec:
      selector: {app: frontend}
    ```
    """
    workload_groups = ctx.workload_groups  # of the whole run, also when checked part by part
    if not workload_groups:
        return
    operated = _pod_making_resources(ctx)
    for service in ctx.services:
        selector = service.get("spec", "selector")
        if service.get("spec", "type") == "ExternalName":
            continue
        if not isinstance(selector, Mapping) or not selector:
            continue
        if ctx.workloads_for(service):
            continue
        group = ctx.group_of(service)
        if not ctx.any_related(ctx.workloads, service) and group not in workload_groups:
            continue  # no evidence: the Service's pods are defined elsewhere
        if ctx.any_related(operated, service):
            continue  # an operator may run the pods (a Prometheus, an Argo Rollout...)
        shown = ", ".join(f"{k}={v}" for k, v in selector.items())
        yield Hit(
            service.loc("spec", "selector"),
            f"{service.ref} selector {shown} matches no pod template in the checked inputs: "
            "the Service has no endpoints",
            service,
        )


@rule("LL602", "target-port-not-exposed", family="service", severity=Severity.ERROR)
def target_port_not_exposed(ctx: Context) -> Iterator[Hit]:
    """Service targetPort not exposed by the pods it selects.

    ## What it does
    For every port of a Service, resolves `targetPort` against the containers of each workload
    the Service selects, native sidecars (init containers with `restartPolicy: Always`)
    included: a named targetPort must be the name of a container port; a number written as
    `targetPort` must be declared by a container (checked only when the pod's containers
    declare ports at all). A `targetPort` that is absent or 0 defaults to `port` in the API
    server and is not checked as a number: ports need not be declared to receive traffic.

    ## Why is this bad?
    A named targetPort that no container defines leaves the port out of the endpoints: the
    Service forwards nothing and clients are refused. A number that is not declared usually
    means the application moved to another port and the Service was not updated: connections
    are refused on every pod, new and old, from the moment it is applied.

    ## Example
    ```yaml
    kind: Service
    spec:
      ports: [{port: 80, targetPort: http}]
    # container ports: [{name: web, containerPort: 8080}]
    ```

    ## Use instead
    ```yaml
    kind: Service
    spec:
      ports: [{port: 80, targetPort: web}]
    ```
    """
    for service in ctx.services:
        ports = service.get("spec", "ports")
        if not isinstance(ports, list):
            continue
        workloads = ctx.workloads_for(service)
        for index, port in enumerate(ports):
            if not isinstance(port, Mapping):
                continue
            target = port.get("targetPort")
            if target is None or as_int(target) == 0:
                continue  # defaults to port: the pod may listen on it without declaring it
            field = "targetPort"
            for workload in workloads:
                containers = workload.pod_containers()
                if any(c.exposes(target) for c in containers):
                    continue
                if as_int(target) is None:
                    names = sorted({p.name for c in containers for p in c.ports if p.name})
                    known = f" (named ports: {', '.join(names)})" if names else ""
                    problem = f"targetPort '{target}' is not a named port of {workload.ref}{known}"
                else:
                    numbers = sorted({p.number for c in containers for p in c.ports if p.number})
                    if not numbers:
                        continue
                    shown = ", ".join(str(n) for n in numbers)
                    problem = f"targetPort {target} is not declared by {workload.ref} ({shown})"
                yield Hit(
                    service.loc("spec", "ports", index, field),
                    f"{service.ref}: {problem}: connections to this port are refused",
                    service,
                )


@rule("LL603", "publish-not-ready-addresses", family="service", severity=Severity.ERROR)
def publish_not_ready_addresses(ctx: Context) -> Iterator[Hit]:
    """Traffic Service that publishes not-ready pods.

    ## What it does
    Flags a Service with `publishNotReadyAddresses: true` that carries traffic: it is not
    headless (`clusterIP: None`), so kube-proxy, load balancers and ingresses route to it. A
    headless Service used for peer discovery (a StatefulSet's members finding each other
    before they are ready) is fine and not flagged.

    ## Why is this bad?
    The setting puts every pod in the endpoints whether it is ready or not. Readiness stops
    gating traffic: a new pod gets requests before it can serve them, and a pod that fails
    readiness on purpose while it drains keeps receiving new requests until it exits. Every
    rollout drops requests at both ends.

    ## Example
    ```yaml
    kind: Service
    spec:
      type: ClusterIP
      publishNotReadyAddresses: true
      selector: {app: web}
    ```

    ## Use instead
    ```yaml
    kind: Service
    spec:
      type: ClusterIP
      selector: {app: web}
    ---
    kind: Service              # peer discovery only, if the app needs it
    spec:
      clusterIP: None
      publishNotReadyAddresses: true
      selector: {app: web}
    ```
    """
    for service in ctx.services:
        if service.get("spec", "publishNotReadyAddresses") is not True:
            continue
        if service.get("spec", "clusterIP") == "None":  # headless (YAML null is not "None")
            continue
        if service.get("spec", "type") == "ExternalName":
            continue
        kind = service.get("spec", "type") or "ClusterIP"
        yield Hit(
            service.loc("spec", "publishNotReadyAddresses"),
            f"{service.ref} ({kind}) has publishNotReadyAddresses: true: pods get traffic "
            "before they are ready and while they drain; keep it on a headless Service only",
            service,
        )
