"""Read the rollout-relevant parts of a Kubernetes Deployment manifest (``-f deploy.yaml``).

Taken from the first ``kind: Deployment`` document of the file: ``spec.replicas``,
``spec.strategy`` (``RollingUpdate`` with ``maxSurge``/``maxUnavailable``, or ``Recreate``),
``spec.minReadySeconds``, ``spec.template.spec.terminationGracePeriodSeconds``, and from the
first container (or the one named by ``container``): ``readinessProbe`` (``httpGet``,
``tcpSocket``, ``exec`` or ``grpc``, with its timing fields), ``lifecycle.preStop`` (``exec``,
``httpGet`` or ``sleep``), ``lifecycle.stopSignal`` and ``ports`` (the first container port is
the replica's main port, ``{port}``; each other one gets a port of its own per replica,
``{port:NAME}``/``{port:NUMBER}``; a probe or hook that names a port goes to that one). Fields left out get Kubernetes' defaults. Command-line flags override
the manifest (the command layer applies them).

Every problem is a :class:`~lossless.errors.LosslessError` (exit 2) with a one-line message
naming the file, and the line when the YAML parser knows it.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from lossless.errors import LosslessError
from lossless.verify.lab.manifest_stress import stress_fields
from lossless.verify.lab.prober import (
    ExecAction,
    GRPCAction,
    Handler,
    HTTPGetAction,
    ProbeSpec,
    SleepAction,
    TCPSocketAction,
)
from lossless.verify.lab.rollout import IntOrPercent, parse_int_or_percent

__all__ = ["MAX_MANIFEST_BYTES", "DeploymentSpec", "load_deployment"]

MAX_MANIFEST_BYTES = 5 * 1024 * 1024


@dataclasses.dataclass(frozen=True, slots=True)
class DeploymentSpec:
    """What the lab needs from a Deployment (Kubernetes defaults where the manifest is silent)."""

    name: str
    replicas: int = 1
    strategy: str = "rolling"  # "rolling" (RollingUpdate) or "recreate"
    max_surge: IntOrPercent = "25%"
    max_unavailable: IntOrPercent = "25%"
    min_ready_seconds: float = 0.0
    grace: float = 30.0
    readiness: ProbeSpec | None = None
    prestop: Handler | None = None
    container: str = ""
    # -- issue 16 (lab/manifest_stress.py): livenessProbe, startupProbe, restartPolicy, sidecar
    liveness: ProbeSpec | None = None
    startup: ProbeSpec | None = None
    restart_policy: str = "Always"
    sidecar_kind: str | None = None  # "native" (initContainers, restartPolicy Always), "plain"
    sidecar_name: str = ""
    stop_signal: str | None = None
    # the names/numbers of the main container port, then one tuple per other container port
    port_aliases: tuple[str, ...] = ()
    ports: tuple[tuple[str, ...], ...] = ()


class _Where:
    def __init__(self, path: Path) -> None:
        self.path = path

    def error(self, message: str, node: Any = None) -> LosslessError:
        line = _line_of(node)
        where = f"{self.path}:{line}" if line else str(self.path)
        return LosslessError(f"{where}: {message}")


def _line_of(node: Any) -> int | None:
    lc = getattr(node, "lc", None)
    if lc is None:
        return None
    try:
        return int(lc.line) + 1
    except (TypeError, AttributeError):
        return None


def _load_documents(path: Path) -> list[Any]:
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise LosslessError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if size > MAX_MANIFEST_BYTES:
        raise LosslessError(
            f"{path}: {size} bytes is too large for a manifest (limit {MAX_MANIFEST_BYTES})"
        )
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LosslessError(f"{path}: cannot read: {exc}") from None
    if "{{" in text and "}}" in text:
        raise LosslessError(f"{path}: looks like an unrendered Helm template; run helm template")
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    yaml = YAML(typ="rt")
    try:
        return [doc for doc in yaml.load_all(text) if doc is not None]
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = (exc.problem or exc.context or "invalid YAML").strip()
        raise LosslessError(f"{path}{line}: not valid YAML: {problem}") from None
    except YAMLError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid YAML"
        raise LosslessError(f"{path}: not valid YAML: {first}") from None
    except RecursionError:
        raise LosslessError(f"{path}: YAML nested too deeply") from None


def _map(where: _Where, node: Any, field: str) -> dict[str, Any]:
    if node is None:
        return {}
    if not isinstance(node, dict):
        raise where.error(f"{field}: expected a mapping", node)
    return node


def _number(where: _Where, parent: Any, key: str, default: float, *, minimum: float = 0) -> float:
    value = parent.get(key, default) if isinstance(parent, dict) else default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise where.error(f"{key}: expected a number, got {value!r}", parent)
    if value < minimum:
        raise where.error(f"{key}: must be >= {minimum:g} (got {value})", parent)
    return float(value)


def _port(where: _Where, action: dict[str, Any]) -> str | None:
    """A handler's port as a container port key (its name, or its number as a string): the lab
    resolves it to the replica's own port of that name (see :class:`PodTemplate`)."""
    port = action.get("port")
    if port is None:
        return None
    if isinstance(port, str):
        return port
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise where.error(f"port: expected a port number or name, got {port!r}", action)
    return str(port)


def _container_ports(where: _Where, c: dict[str, Any]) -> list[tuple[str, ...]]:
    """``ports``: one tuple of keys (name and number) per container port, in order."""
    node = c.get("ports")
    if node is None:
        return []
    if not isinstance(node, list):
        raise where.error("ports: expected a list", c)
    out: list[tuple[str, ...]] = []
    for item in node:
        item = _map(where, item, "ports[]")
        number = item.get("containerPort")
        if isinstance(number, bool) or not isinstance(number, int) or not 0 < number < 65536:
            raise where.error(
                f"ports[].containerPort: expected a port number, got {number!r}", item
            )
        name = item.get("name")
        keys = (str(name), str(number)) if name else (str(number),)
        out.append(keys)
    return out


def _action(where: _Where, node: Any, field: str, *, prestop: bool) -> Handler:
    node = _map(where, node, field)
    if "httpGet" in node:
        http = _map(where, node["httpGet"], f"{field}.httpGet")
        scheme = str(http.get("scheme", "HTTP")).upper()
        if scheme != "HTTP":
            raise where.error(f"{field}.httpGet: scheme {scheme} is not supported", http)
        path = str(http.get("path", "/"))
        port = _port(where, http)
        return HTTPGetAction(path=path if path.startswith("/") else "/" + path, port=port)
    if "tcpSocket" in node:
        port = _port(where, _map(where, node["tcpSocket"], f"{field}.tcpSocket"))
        return TCPSocketAction(port=port)
    if "exec" in node:
        command = _map(where, node["exec"], f"{field}.exec").get("command")
        if not isinstance(command, list) or not command:
            raise where.error(f"{field}.exec.command: expected a non-empty list", node)
        return ExecAction(tuple(str(word) for word in command))
    if prestop and "sleep" in node:
        sleep = _map(where, node["sleep"], f"{field}.sleep")
        return SleepAction(_number(where, sleep, "seconds", 0))
    kinds = "exec, httpGet or sleep" if prestop else "httpGet, tcpSocket, exec or grpc"
    raise where.error(f"{field}: expected {kinds} (found {', '.join(node) or 'nothing'})", node)


def _grpc_action(where: _Where, probe: dict[str, Any]) -> GRPCAction:
    """``readinessProbe.grpc``: ``port`` (a number: Kubernetes takes no name here) and an
    optional ``service`` (default ``""``)."""
    node = _map(where, probe["grpc"], "readinessProbe.grpc")
    port = node.get("port")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise where.error(f"readinessProbe.grpc.port: expected a port number, got {port!r}", node)
    service = node.get("service", "")
    if not isinstance(service, str):
        raise where.error(f"readinessProbe.grpc.service: expected a string, got {service!r}", node)
    return GRPCAction(service=service)


def load_deployment(
    path: str | os.PathLike[str], *, container: str | None = None
) -> DeploymentSpec:
    """Parse ``path`` and return the first Deployment's :class:`DeploymentSpec`.

    Raises ``LosslessError`` naming the file when it cannot be read, is not YAML, holds no
    Deployment, or a field has the wrong type.
    """
    file = Path(path)
    where = _Where(file)
    documents = _load_documents(file)
    deployments = [d for d in documents if isinstance(d, dict) and d.get("kind") == "Deployment"]
    if not deployments:
        kinds = sorted({str(d.get("kind")) for d in documents if isinstance(d, dict)})
        found = f"found kind {', '.join(kinds)}" if kinds else "no Kubernetes object found"
        raise LosslessError(f"{file}: not a Deployment manifest ({found})")
    doc = deployments[0]
    name = str(_map(where, doc.get("metadata"), "metadata").get("name", "deployment"))
    spec = _map(where, doc.get("spec"), "spec")
    replicas_value = spec.get("replicas", 1)
    if (
        isinstance(replicas_value, bool)
        or not isinstance(replicas_value, int)
        or replicas_value < 1
    ):
        raise where.error(f"spec.replicas: expected an integer >= 1, got {replicas_value!r}", spec)
    strategy_node = _map(where, spec.get("strategy"), "spec.strategy")
    strategy_type = strategy_node.get("type", "RollingUpdate")
    max_surge: IntOrPercent = "25%"
    max_unavailable: IntOrPercent = "25%"
    if strategy_type == "RollingUpdate":
        strategy = "rolling"
        rolling = _map(where, strategy_node.get("rollingUpdate"), "spec.strategy.rollingUpdate")
        try:
            max_surge = parse_int_or_percent(rolling.get("maxSurge", "25%"), "maxSurge")
            max_unavailable = parse_int_or_percent(
                rolling.get("maxUnavailable", "25%"), "maxUnavailable"
            )
        except LosslessError as exc:
            raise where.error(f"spec.strategy.rollingUpdate.{exc}", rolling) from None
    elif strategy_type == "Recreate":
        strategy = "recreate"
    else:
        raise where.error(f"spec.strategy.type: unknown {strategy_type!r}", strategy_node)
    min_ready = _number(where, spec, "minReadySeconds", 0)
    template = _map(where, spec.get("template"), "spec.template")
    pod = _map(where, template.get("spec"), "spec.template.spec")
    grace = _number(where, pod, "terminationGracePeriodSeconds", 30)
    containers = pod.get("containers")
    if not isinstance(containers, list) or not containers:
        raise where.error("spec.template.spec.containers: expected a non-empty list", pod)
    chosen = containers[0]
    if container is not None:
        named = [c for c in containers if isinstance(c, dict) and c.get("name") == container]
        if not named:
            raise where.error(f"no container named {container!r}", pod)
        chosen = named[0]
    c = _map(where, chosen, "container")
    readiness: ProbeSpec | None = None
    probe = c.get("readinessProbe")
    if probe is not None:
        probe = _map(where, probe, "readinessProbe")
        action: Handler | GRPCAction
        if "grpc" in probe:  # Kubernetes >= 1.24 (issue 13, lab/grpc_probe.py)
            action = _grpc_action(where, probe)
        else:
            action = _action(where, probe, "readinessProbe", prestop=False)
        assert not isinstance(action, SleepAction)
        try:
            readiness = ProbeSpec(
                action=action,
                initial_delay=_number(where, probe, "initialDelaySeconds", 0),
                period=_number(where, probe, "periodSeconds", 10, minimum=1),
                timeout=_number(where, probe, "timeoutSeconds", 1, minimum=1),
                success_threshold=int(_number(where, probe, "successThreshold", 1, minimum=1)),
                failure_threshold=int(_number(where, probe, "failureThreshold", 3, minimum=1)),
            )
        except LosslessError as exc:
            raise where.error(f"readinessProbe: {exc}", probe) from None
    prestop: Handler | None = None
    lifecycle = _map(where, c.get("lifecycle"), "lifecycle")
    if lifecycle.get("preStop") is not None:
        prestop = _action(where, lifecycle["preStop"], "lifecycle.preStop", prestop=True)
    stop_signal = lifecycle.get("stopSignal")
    if stop_signal is not None:
        from lossless.verify.lab.process import parse_signal

        try:
            parse_signal(str(stop_signal))
        except LosslessError as exc:
            raise where.error(f"lifecycle.stopSignal: {exc}", lifecycle) from None
    stress = stress_fields(where, pod, c, containers)  # issue 16 (lab/manifest_stress.py)
    ports = _container_ports(where, c)
    aliases: tuple[str, ...] = ports[0] if ports else ()
    if not ports:
        # no declared ports: a probe or hook port can only mean the one the app listens on
        probes = (readiness, stress.get("liveness"), stress.get("startup"))
        actions = [p.action for p in probes if isinstance(p, ProbeSpec)] + [prestop]
        referenced = [
            h.port
            for h in actions
            if isinstance(h, HTTPGetAction | TCPSocketAction) and isinstance(h.port, str)
        ]
        aliases = tuple(dict.fromkeys(referenced))
    return DeploymentSpec(
        name=name,
        replicas=replicas_value,
        strategy=strategy,
        max_surge=max_surge,
        max_unavailable=max_unavailable,
        min_ready_seconds=min_ready,
        grace=grace,
        readiness=readiness,
        prestop=prestop,
        container=str(c.get("name", "")),
        **stress,
        stop_signal=None if stop_signal is None else str(stop_signal),
        port_aliases=aliases,
        ports=tuple(ports[1:]),
    )
