"""Kubernetes objects over the position-carrying YAML tree.

:func:`objects_from` turns loaded documents into :class:`K8sObject` values (``kind: List`` is
flattened; documents without ``apiVersion`` and ``kind`` are not Kubernetes objects and are
skipped). Accessors never raise on a malformed manifest: a field of the wrong type reads as absent.
:meth:`K8sObject.loc` gives the position of the deepest existing field along a path, so a finding
about a missing field points at its nearest parent.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from lossless.check.model import Location
from lossless.check.yaml_source import Document, Origin, find_origin

__all__ = [
    "BATCH_KINDS",
    "CONTROLLER_LABELS",
    "IGNORE_ANNOTATION",
    "KNOWN_KINDS",
    "SCALED_KINDS",
    "WORKLOAD_KINDS",
    "Container",
    "K8sObject",
    "Port",
    "as_int",
    "labels_match",
    "objects_from",
    "selector_matches",
    "split_suppressions",
]

IGNORE_ANNOTATION = "lossless/ignore"
WORKLOAD_KINDS = frozenset(
    {
        "Deployment",
        "StatefulSet",
        "DaemonSet",
        "ReplicaSet",
        "ReplicationController",
        "Pod",
        "Job",
        "CronJob",
    }
)
#: Kinds whose replica count is ``spec.replicas`` (1 when unset).
SCALED_KINDS = frozenset({"Deployment", "StatefulSet", "ReplicaSet", "ReplicationController"})
BATCH_KINDS = frozenset({"Job", "CronJob"})
ANALYZED_KINDS = WORKLOAD_KINDS | {
    "Service",
    "PodDisruptionBudget",
    "HorizontalPodAutoscaler",
    "Ingress",
}
#: Built-in kinds that carry nothing about the request path: read silently, not analyzed.
PASSIVE_KINDS = frozenset(
    {
        "APIService",
        "CSIDriver",
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "ControllerRevision",
        "CustomResourceDefinition",
        "EndpointSlice",
        "Endpoints",
        "IngressClass",
        "Lease",
        "LimitRange",
        "MutatingWebhookConfiguration",
        "Namespace",
        "NetworkPolicy",
        "PersistentVolume",
        "PersistentVolumeClaim",
        "PodTemplate",
        "PriorityClass",
        "ResourceQuota",
        "Role",
        "RoleBinding",
        "RuntimeClass",
        "Secret",
        "ServiceAccount",
        "StorageClass",
        "ValidatingWebhookConfiguration",
        "VerticalPodAutoscaler",
    }
)
KNOWN_KINDS = ANALYZED_KINDS | PASSIVE_KINDS

PathPart = str | int


def split_suppressions(raw: str) -> list[str]:
    """Entries of a ``lossless/ignore`` value: one per line, or separated by ``;`` when the next
    entry starts with a code (so a reason may itself contain ``;``)."""
    return [e.strip() for e in re.split(r"\n|;(?=\s*[A-Za-z]{2}\d{3}\s*:)", raw) if e.strip()]


def as_int(value: Any) -> int | None:
    """An integer field's value, or ``None`` when absent or not an integer (``"3"`` counts)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*\d+\s*", value):
        return int(value)
    return None


def labels_match(selector: Mapping[str, Any], labels: Mapping[str, Any]) -> bool:
    """A Service-style selector (a plain map) matches when every pair is in ``labels``."""
    return bool(selector) and all(
        str(labels.get(k)) == str(v) and k in labels for k, v in selector.items()
    )


def selector_matches(selector: Any, labels: Mapping[str, Any]) -> bool:
    """A ``LabelSelector`` (``matchLabels`` + ``matchExpressions``) against pod labels.

    An empty selector matches everything (the API's meaning for a PDB); a malformed one nothing.
    """
    if not isinstance(selector, Mapping):
        return False
    match_labels = selector.get("matchLabels") or {}
    if not isinstance(match_labels, Mapping):
        return False
    for key, value in match_labels.items():
        if key not in labels or str(labels[key]) != str(value):
            return False
    for expr in selector.get("matchExpressions") or []:
        if not isinstance(expr, Mapping):
            return False
        key, op = str(expr.get("key")), expr.get("operator")
        values = [str(v) for v in expr.get("values") or []]
        present = key in labels
        if op == "In" and not (present and str(labels[key]) in values):
            return False
        if op == "NotIn" and present and str(labels[key]) in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True


def _walk(node: Any, path: tuple[PathPart, ...]) -> Any:
    """The value at ``path`` below ``node``, or ``None`` when any step is missing."""
    for part in path:
        if type(part) is str and type(node) is dict:  # the common case, without ABC checks
            if part not in node:
                return None
        elif isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                return None
        elif not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


@dataclass(frozen=True)
class Port:
    """A container port: its number and optional name."""

    number: int | None
    name: str | None
    path: tuple[PathPart, ...]


@dataclass(eq=False)
class K8sObject:
    """One Kubernetes object: ``prefix`` is its path from the document root (``items``, n)."""

    document: Document
    data: dict[str, Any]
    prefix: tuple[PathPart, ...] = ()
    ignores: dict[str, str] = field(default_factory=dict)
    ignore_errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._parse_ignores()

    @cached_property
    def kind(self) -> str:
        return str(self.data.get("kind") or "")

    @cached_property
    def api_version(self) -> str:
        return str(self.data.get("apiVersion") or "")

    @cached_property
    def metadata(self) -> Mapping[str, Any]:
        meta = self.data.get("metadata")
        return meta if isinstance(meta, Mapping) else {}

    @cached_property
    def name(self) -> str:
        return str(self.metadata.get("name") or "")

    @cached_property
    def namespace(self) -> str | None:
        ns = self.metadata.get("namespace")
        return str(ns) if ns else None

    @property
    def ref(self) -> str:
        """``Kind/namespace/name`` (namespace omitted when unset), for messages and reports."""
        ns = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind}/{ns}{self.name or '<unnamed>'}"

    @cached_property
    def origin(self) -> Origin | None:
        return find_origin(self.document, self.metadata)

    def same_namespace(self, other: K8sObject) -> bool:
        """Namespaces match, an unset namespace matching any (rendered charts often omit it)."""
        return (
            self.namespace is None or other.namespace is None or self.namespace == other.namespace
        )

    def get(self, *path: PathPart) -> Any:
        """The value at ``path`` below the object, or ``None`` when any step is missing."""
        return _walk(self.data, path)

    def loc(self, *path: PathPart) -> Location:
        """Position of the deepest existing key (or item) along ``path``; the object's start else.

        The end column covers the key's text, so editors and SARIF viewers underline it.
        """
        line, column, length = self.document.locate(self.prefix, path)
        end = column + 1 + length if length else None
        return Location(self.document.source.path, line + 1, column + 1, line + 1, end)

    def name_loc(self) -> Location:
        return self.loc("metadata", "name")

    def _parse_ignores(self) -> None:
        annotations = self.metadata.get("annotations")
        if not isinstance(annotations, Mapping) or IGNORE_ANNOTATION not in annotations:
            return
        raw = str(annotations.get(IGNORE_ANNOTATION) or "")
        for entry in split_suppressions(raw):
            entry = entry.strip()
            if not entry:
                continue
            code, sep, reason = entry.partition(":")
            code = code.strip().upper()
            if not re.fullmatch(r"LL\d{3}", code):
                self.ignore_errors.append(f"'{entry}' does not start with a rule code (LL201: ...)")
            elif not sep or not reason.strip():
                self.ignore_errors.append(f"suppression of {code} has no reason ('{code}: why')")
            else:
                self.ignores[code] = reason.strip()


@dataclass(eq=False)
class Container:
    """A container of a workload's pod template (``init`` for init containers)."""

    workload: Workload
    path: tuple[PathPart, ...]
    data: Mapping[str, Any]
    init: bool = False

    @property
    def name(self) -> str:
        return str(self.data.get("name") or f"#{self.path[-1]}")

    def get(self, *path: PathPart) -> Any:
        return _walk(self.data, path)  # self.data is the node at self.path

    def loc(self, *path: PathPart) -> Location:
        return self.workload.loc(*self.path, *path)

    @property
    def image(self) -> str:
        return str(self.data.get("image") or "")

    @cached_property
    def ports(self) -> list[Port]:
        found: list[Port] = []
        for i, port in enumerate(self.get("ports") or []):
            if isinstance(port, Mapping):
                name = port.get("name")
                found.append(
                    Port(as_int(port.get("containerPort")), str(name) if name else None, (i,))
                )
        return found

    def exposes(self, port: Any) -> bool:
        """Whether ``port`` (a number or a port name) is declared in this container's ports."""
        number = as_int(port)
        if number is not None:
            return any(p.number == number for p in self.ports)
        return any(p.name == str(port) for p in self.ports)

    @property
    def env(self) -> dict[str, Any]:
        """Literal environment values (``valueFrom`` entries map to ``None``)."""
        values: dict[str, Any] = {}
        for item in self.get("env") or []:
            if isinstance(item, Mapping) and item.get("name"):
                values[str(item["name"])] = item.get("value")
        return values

    def env_loc(self, name: str) -> Location:
        for i, item in enumerate(self.get("env") or []):
            if isinstance(item, Mapping) and item.get("name") == name:
                return self.loc("env", i, "value")
        return self.loc("env")

    @property
    def argv(self) -> list[str]:
        """``command`` + ``args`` as given (empty when the image's entrypoint is used)."""
        words: list[str] = []
        for key in ("command", "args"):
            value = self.get(key)
            if isinstance(value, list):
                words += [str(v) for v in value]
        return words


#: Pod labels that a controller adds itself (never in the pod template): a Service selecting
#: one of them still selects the controller's pods. Value: kinds whose controller adds it.
CONTROLLER_LABELS = {
    "statefulset.kubernetes.io/pod-name": frozenset({"StatefulSet"}),
    "apps.kubernetes.io/pod-index": frozenset({"StatefulSet"}),
    "controller-revision-hash": frozenset({"StatefulSet", "DaemonSet"}),
    "pod-template-hash": frozenset({"Deployment", "ReplicaSet"}),
    "batch.kubernetes.io/job-name": frozenset({"Job", "CronJob"}),
    "job-name": frozenset({"Job", "CronJob"}),
    "batch.kubernetes.io/controller-uid": frozenset({"Job", "CronJob"}),
    "controller-uid": frozenset({"Job", "CronJob"}),
}


class Workload(K8sObject):
    """A Deployment, StatefulSet, DaemonSet, ReplicaSet, ReplicationController, Pod, Job or
    CronJob."""

    def controller_label(self, key: str, value: Any) -> bool:
        """Whether this workload's controller gives its pods label ``key`` = ``value`` itself.

        A StatefulSet's pods are ``<name>-<ordinal>`` (``statefulset.kubernetes.io/pod-name``)
        with ``apps.kubernetes.io/pod-index`` = the ordinal; hashes and uids can be anything.
        """
        kinds = CONTROLLER_LABELS.get(key)
        if kinds is None or self.kind not in kinds:
            return False
        text = str(value)
        if key == "statefulset.kubernetes.io/pod-name":
            return re.fullmatch(rf"{re.escape(self.name)}-\d+", text) is not None
        if key == "apps.kubernetes.io/pod-index":
            return text.isdigit()
        if key in ("job-name", "batch.kubernetes.io/job-name") and self.kind == "Job":
            return text == self.name
        return True

    def selected_by(self, selector: Mapping[str, Any]) -> bool:
        """A Service-style selector (a plain map) matches this workload's pods: every pair is a
        pod template label, or a label the controller adds itself (:meth:`controller_label`)."""
        if not selector:
            return False
        labels = self.pod_labels
        for key, value in selector.items():
            if key in labels:
                if str(labels[key]) != str(value):
                    return False
            elif not self.controller_label(str(key), value):
                return False
        return True

    @cached_property
    def pod_path(self) -> tuple[PathPart, ...]:
        """Path to the pod template (its ``metadata``/``spec`` live below)."""
        if self.kind == "Pod":
            return ()
        if self.kind == "CronJob":
            return ("spec", "jobTemplate", "spec", "template")
        return ("spec", "template")

    @cached_property
    def pod_spec_path(self) -> tuple[PathPart, ...]:
        return (*self.pod_path, "spec")

    @property
    def is_batch(self) -> bool:
        return self.kind in BATCH_KINDS

    @property
    def pod_labels(self) -> Mapping[str, Any]:
        labels = self.get(*self.pod_path, "metadata", "labels")
        return labels if isinstance(labels, Mapping) else {}

    @property
    def replicas(self) -> int | None:
        """``spec.replicas`` as written (``None`` when unset: the API defaults it to 1)."""
        if self.kind not in SCALED_KINDS:
            return None
        return as_int(self.get("spec", "replicas"))

    @property
    def grace_period(self) -> int:
        """``terminationGracePeriodSeconds`` (30 when unset or unreadable)."""
        value = as_int(self.get(*self.pod_spec_path, "terminationGracePeriodSeconds"))
        return 30 if value is None else value

    def containers(self, *, init: bool = False) -> Iterator[Container]:
        key = "initContainers" if init else "containers"
        items = self.get(*self.pod_spec_path, key)
        if not isinstance(items, list):
            return
        for i, item in enumerate(items):
            if isinstance(item, Mapping):
                yield Container(self, (*self.pod_spec_path, key, i), item, init)

    def pod_containers(self) -> list[Container]:
        """The containers that run for the pod's whole life: the regular ones and the native
        sidecars (init containers with ``restartPolicy: Always``, Kubernetes >= 1.28), whose
        ports serve traffic like any other."""
        sidecars = [c for c in self.containers(init=True) if _is_native_sidecar(c)]
        return [*self.containers(), *sidecars]


def _is_native_sidecar(container: Container) -> bool:
    return container.data.get("restartPolicy") == "Always"


def objects_from(document: Document) -> Iterator[K8sObject]:
    """The Kubernetes objects of ``document`` (``kind: List`` items flattened)."""
    data = document.data
    if not isinstance(data, dict):
        return
    if data.get("kind") == "List" or str(data.get("kind", "")).endswith("List"):
        items = data.get("items")
        if isinstance(items, list):
            for i, item in enumerate(items):
                if isinstance(item, dict) and item.get("kind"):
                    yield _make(document, item, ("items", i))
        return
    if data.get("kind") and data.get("apiVersion"):
        yield _make(document, data, ())


def _make(document: Document, data: dict[str, Any], prefix: tuple[PathPart, ...]) -> K8sObject:
    if data.get("kind") in WORKLOAD_KINDS:
        return Workload(document, data, prefix)
    return K8sObject(document, data, prefix)
