"""Probes: readiness gates traffic, liveness only restarts what is really stuck."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from lossless.check.k8s import Container, as_int
from lossless.check.model import Hit, Severity, rule

if TYPE_CHECKING:
    from lossless.check.engine import Context

PROBES = ("readinessProbe", "livenessProbe", "startupProbe")


def resolve_port(port: Any, container: Container | None) -> str:
    """A probe port as a comparable value: a named port is replaced by the number the
    container declares for it (``http`` and ``8080`` are the same port), else kept."""
    if container is not None and as_int(port) is None:
        for declared in container.ports:
            if declared.name == str(port) and declared.number is not None:
                return str(declared.number)
    return str(port)


def describe_action(
    probe: Mapping[str, Any], container: Container | None = None
) -> tuple[Any, str] | None:
    """A comparable key for the probe's action and a human description, or ``None``.

    Named ports are resolved against ``container``'s ports, so the key of ``port: http`` equals
    the key of ``port: 8080`` when ``http`` is 8080.
    """
    http = probe.get("httpGet")
    if isinstance(http, Mapping):
        scheme = str(http.get("scheme") or "HTTP").upper()
        path = str(http.get("path") or "/")
        port = http.get("port")
        host = http.get("host") or ""
        key = ("http", scheme, host, resolve_port(port, container), path)
        return key, f"{'GET' if scheme == 'HTTP' else scheme + ' GET'} {path} on port {port}"
    tcp = probe.get("tcpSocket")
    if isinstance(tcp, Mapping):
        port = tcp.get("port")
        return ("tcp", resolve_port(port, container)), f"open a TCP connection to port {port}"
    grpc = probe.get("grpc")
    if isinstance(grpc, Mapping):
        service = grpc.get("service") or ""
        port = grpc.get("port")
        return ("grpc", resolve_port(port, container), service), f"call gRPC health on {port}"
    exec_ = probe.get("exec")
    if isinstance(exec_, Mapping):
        command = [str(c) for c in exec_.get("command") or []]
        return ("exec", tuple(command)), f"run {' '.join(command)!r}"
    return None


def failure_window(probe: Mapping[str, Any]) -> tuple[int, str]:
    """Seconds of consecutive failures before the probe acts, and the arithmetic as text."""
    threshold = as_int(probe.get("failureThreshold")) or 3
    period = as_int(probe.get("periodSeconds")) or 10
    return threshold * period, f"{threshold} x {period} s = {threshold * period} s"


def probe_port(probe: Mapping[str, Any]) -> tuple[str, Any] | None:
    for action in ("httpGet", "tcpSocket", "grpc"):
        spec = probe.get(action)
        if isinstance(spec, Mapping) and spec.get("port") is not None:
            return action, spec.get("port")
    return None


def _long_running(ctx: Context) -> Iterator[Container]:
    for workload in ctx.workloads:
        if not workload.is_batch:
            yield from workload.containers()


@rule("LL101", "missing-readiness-probe", family="probes", severity=Severity.ERROR)
def missing_readiness_probe(ctx: Context) -> Iterator[Hit]:
    """Service-backed container without a readinessProbe.

    ## What it does
    Flags a container that receives a Service's traffic (it exposes a port the Service targets)
    and has no `readinessProbe`.

    ## Why is this bad?
    Without a readiness probe a pod is added to the Service's endpoints as soon as its containers
    have started, before the application listens or has warmed up. During a rolling update every
    new pod receives requests it cannot serve yet: connection refused or 503 until it is up. The
    rollout also counts such pods as available at once and removes old pods too early.

    ## Example
    ```yaml
    containers:
      - name: web
        image: ghcr.io/acme/web:1.4
        ports:
          - {name: http, containerPort: 8080}
    ```

    ## Use instead
    ```yaml
    containers:
      - name: web
        image: ghcr.io/acme/web:1.4
        ports:
          - {name: http, containerPort: 8080}
        readinessProbe:
          httpGet: {path: /readyz, port: http}
          periodSeconds: 2
          failureThreshold: 2
    ```
    """
    for workload in ctx.serving:
        services = ", ".join(s.name for s in ctx.services_for(workload))
        for container in ctx.serving_containers(workload):
            if not isinstance(container.get("readinessProbe"), Mapping):
                yield Hit(
                    container.loc("name"),
                    f"container '{container.name}' of {workload.ref} is behind Service "
                    f"{services} but has no readinessProbe: new pods get traffic before they "
                    "can serve it",
                    workload,
                )


@rule("LL102", "readiness-equals-liveness", family="probes", severity=Severity.WARNING)
def readiness_equals_liveness(ctx: Context) -> Iterator[Hit]:
    """readinessProbe and livenessProbe run the same check.

    ## What it does
    Flags a container whose readiness and liveness probes perform the same action (same HTTP
    path and port, same TCP port, same gRPC service or same command; a named port is the same
    port as the number it names), and states what each
    probe's thresholds mean: after how many seconds of failures the pod leaves the endpoints
    (readiness) and after how many it is restarted (liveness).

    ## Why is this bad?
    Readiness answers "should this pod get traffic now?"; liveness answers "is this process
    stuck beyond repair?". With one shared check, a pod that is only busy, draining or waiting
    for a dependency fails liveness at the same moment it fails readiness, and the kubelet
    restarts it instead of merely taking it out of rotation: in-flight requests are cut and a
    dependency outage turns into a restart storm. A draining pod (readiness 503 on purpose) is
    also killed by its own liveness probe.

    ## Example
    ```yaml
    readinessProbe:
      httpGet: {path: /healthz, port: 8080}
    livenessProbe:
      httpGet: {path: /healthz, port: 8080}
    ```

    ## Use instead
    ```yaml
    readinessProbe:
      httpGet: {path: /readyz, port: 8080}   # dependencies, draining state
      periodSeconds: 2
    livenessProbe:
      httpGet: {path: /livez, port: 8080}    # the process itself only
      periodSeconds: 10
      failureThreshold: 6
    ```
    """
    for container in _long_running(ctx):
        readiness, liveness = container.get("readinessProbe"), container.get("livenessProbe")
        if not isinstance(readiness, Mapping) or not isinstance(liveness, Mapping):
            continue
        r_action = describe_action(readiness, container)
        l_action = describe_action(liveness, container)
        if r_action is None or l_action is None or r_action[0] != l_action[0]:
            continue
        _, r_text = failure_window(readiness)
        _, l_text = failure_window(liveness)
        yield Hit(
            container.loc("livenessProbe"),
            f"readinessProbe and livenessProbe of container '{container.name}' both "
            f"{r_action[1]}: readiness takes the pod out of endpoints after {r_text} of "
            f"failures, liveness restarts it after {l_text}; a busy or draining pod is "
            "restarted instead of drained",
            container.workload,
        )


@rule("LL103", "liveness-before-readiness", family="probes", severity=Severity.WARNING)
def liveness_before_readiness(ctx: Context) -> Iterator[Hit]:
    """livenessProbe gives up sooner than readinessProbe.

    ## What it does
    Compares how long each probe tolerates failures (`failureThreshold x periodSeconds`,
    defaults 3 x 10 s) and flags a container whose liveness probe restarts it sooner than its
    readiness probe would take it out of the Service's endpoints.

    ## Why is this bad?
    When the application stops answering, the kubelet restarts the container while the pod is
    still listed as ready: requests keep being routed to a process that is being killed, and
    every request in flight is lost. Readiness should always react first, so that traffic
    moves away before anything is restarted.

    ## Example
    ```yaml
    readinessProbe:
      httpGet: {path: /readyz, port: 8080}
      periodSeconds: 10
      failureThreshold: 3      # out of endpoints after 30 s
    livenessProbe:
      httpGet: {path: /livez, port: 8080}
      periodSeconds: 5
      failureThreshold: 1      # restarted after 5 s
    ```

    ## Use instead
    ```yaml
    readinessProbe:
      httpGet: {path: /readyz, port: 8080}
      periodSeconds: 2
      failureThreshold: 2      # out of endpoints after 4 s
    livenessProbe:
      httpGet: {path: /livez, port: 8080}
      periodSeconds: 10
      failureThreshold: 3      # restarted after 30 s
    ```
    """
    for container in _long_running(ctx):
        readiness, liveness = container.get("readinessProbe"), container.get("livenessProbe")
        if not isinstance(readiness, Mapping) or not isinstance(liveness, Mapping):
            continue
        r_window, r_text = failure_window(readiness)
        l_window, l_text = failure_window(liveness)
        if l_window < r_window:
            field = "periodSeconds" if "periodSeconds" in liveness else "failureThreshold"
            yield Hit(
                container.loc("livenessProbe", field),
                f"livenessProbe of container '{container.name}' restarts it after {l_text} of "
                f"failures, before readinessProbe takes it out of endpoints ({r_text}): "
                "requests are routed to a container being restarted",
                container.workload,
            )


@rule("LL104", "probe-port-not-exposed", family="probes", severity=Severity.ERROR)
def probe_port_not_exposed(ctx: Context) -> Iterator[Hit]:
    """A probe targets a port the container does not declare.

    ## What it does
    Flags an `httpGet`, `tcpSocket` or `grpc` probe whose port is a *name* that is not one of
    the container's named ports. A numeric port is never flagged, declared or not: the kubelet
    probes the pod's IP on that number, and health ports are commonly left out of `ports:` on
    purpose (ingress-nginx's 10254, the OpenTelemetry collector's 13133).

    ## Why is this bad?
    A named port is resolved against the container's `ports:`; a name that does not exist
    makes the probe fail on every attempt: the pod never becomes ready (readiness) or is
    restarted in a loop (liveness), and a rollout stalls or takes capacity away.

    ## Example
    ```yaml
    ports:
      - {name: http, containerPort: 8080}
    readinessProbe:
      httpGet: {path: /readyz, port: web}
    ```

    ## Use instead
    ```yaml
    ports:
      - {name: http, containerPort: 8080}
    readinessProbe:
      httpGet: {path: /readyz, port: http}
    ```
    """
    for container in _long_running(ctx):
        for probe_name in PROBES:
            probe = container.get(probe_name)
            if not isinstance(probe, Mapping):
                continue
            found = probe_port(probe)
            if found is None:
                continue
            action, port = found
            if as_int(port) is not None or container.exposes(port):
                continue  # a number needs no declaration (the kubelet probes the pod IP)
            problem = f"port name '{port}' is not a named port of container"
            yield Hit(
                container.loc(probe_name, action, "port"),
                f"{probe_name} {problem} '{container.name}': the probe cannot succeed",
                container.workload,
            )
