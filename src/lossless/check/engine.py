"""One run of the checker: read every input, build the object graph, run the rules, suppress.

:func:`run_check` is the library entry point (``lossless check`` is a thin shell around it). It
never raises on bad input: unreadable or invalid inputs become :class:`InputError` values in the
:class:`Report`, and every other input is still checked.

Rules receive a :class:`Context`: the objects of *all* inputs together (a Service in one file
selects the Deployment in another), with the relationships the rules share computed once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from lossless.check import dockerfile as dockerfile_mod
from lossless.check.config import Config
from lossless.check.dockerfile import Dockerfile, image_repository
from lossless.check.k8s import (
    KNOWN_KINDS,
    Container,
    K8sObject,
    Workload,
    as_int,
    labels_match,
    objects_from,
    selector_matches,
)
from lossless.check.model import Finding, Hit, InputError, Location, Rule, Suppression, all_rules
from lossless.check.yaml_source import (
    MAX_FILE_BYTES,
    Document,
    OriginMapper,
    collect,
    load_inputs,
)

__all__ = ["Context", "Report", "run_check"]


@dataclass
class Report:
    """The outcome of a run: findings (suppressed ones included), input errors, notes."""

    findings: list[Finding]
    errors: list[InputError]
    notes: list[str]
    rules: list[Rule]
    files: int = 0
    objects: int = 0

    @property
    def active(self) -> list[Finding]:
        """Findings that count (not suppressed)."""
        return [f for f in self.findings if f.suppression is None]

    def exit_code(self, config: Config) -> int:
        """2 on any input error (it wins: a partial check must not pass as a clean one), else 1
        when a finding at or above ``config.fail_on`` counts, else 0."""
        if self.errors:
            return 2
        threshold = config.fail_on
        if threshold is None:
            return 0
        return 1 if any(f.severity >= threshold for f in self.active) else 0


@dataclass
class Context:
    """Everything the rules see in one run."""

    config: Config
    objects: list[K8sObject] = field(default_factory=list)
    documents: list[Document] = field(default_factory=list)
    dockerfiles: list[Dockerfile] = field(default_factory=list)

    @cached_property
    def workloads(self) -> list[Workload]:
        return [o for o in self.objects if isinstance(o, Workload)]

    @cached_property
    def _by_kind(self) -> dict[str, list[K8sObject]]:
        table: dict[str, list[K8sObject]] = {}
        for obj in self.objects:
            table.setdefault(obj.kind, []).append(obj)
        return table

    def of_kind(self, kind: str) -> list[K8sObject]:
        return self._by_kind.get(kind, [])

    @cached_property
    def services(self) -> list[K8sObject]:
        return self.of_kind("Service")

    @cached_property
    def _label_index(self) -> dict[tuple[str, str], list[Workload]]:
        """Workloads by each of their pod labels, so selectors need not scan every workload."""
        index: dict[tuple[str, str], list[Workload]] = {}
        for workload in self.workloads:
            for key, value in workload.pod_labels.items():
                index.setdefault((str(key), str(value)), []).append(workload)
        return index

    def _candidates(self, labels: Any) -> list[Workload]:
        """Workloads that may match a selector whose required labels are ``labels``."""
        if isinstance(labels, dict) and labels:
            key, value = next(iter(labels.items()))
            return self._label_index.get((str(key), str(value)), [])
        return self.workloads

    @cached_property
    def _workloads_by_service(self) -> dict[int, list[Workload]]:
        table: dict[int, list[Workload]] = {}
        for service in self.services:
            selector = service.get("spec", "selector")
            if not isinstance(selector, dict) or not selector:
                continue
            table[id(service)] = [
                w
                for w in self._candidates(selector)
                if w.same_namespace(service) and labels_match(selector, w.pod_labels)
            ]
        return table

    @cached_property
    def _services_by_workload(self) -> dict[int, list[K8sObject]]:
        table: dict[int, list[K8sObject]] = {}
        for service in self.services:
            for workload in self._workloads_by_service.get(id(service), []):
                if not workload.is_batch:
                    table.setdefault(id(workload), []).append(service)
        return table

    def services_for(self, workload: Workload) -> list[K8sObject]:
        """Services whose selector matches the workload's pods (never for Jobs/CronJobs)."""
        return self._services_by_workload.get(id(workload), [])

    def workloads_for(self, service: K8sObject) -> list[Workload]:
        """Workloads whose pod template the Service selects (any kind, Jobs included)."""
        return self._workloads_by_service.get(id(service), [])

    @property
    def serving(self) -> Iterable[Workload]:
        """Service-backed, long-running workloads: what the serving rules apply to."""
        return (w for w in self.workloads if self.services_for(w))

    def serving_containers(self, workload: Workload) -> list[Container]:
        """Containers that receive the Services' traffic.

        Those exposing a targeted port; else those declaring any port; else the first container.
        """
        containers = list(workload.containers())
        targets: list[Any] = []
        for service in self.services_for(workload):
            for port in service.get("spec", "ports") or []:
                if isinstance(port, dict):
                    targets.append(port.get("targetPort", port.get("port")))
        chosen = [c for c in containers if any(c.exposes(t) for t in targets if t is not None)]
        if not chosen:
            chosen = [c for c in containers if c.ports]
        if not chosen and containers:
            chosen = containers[:1]
        return chosen

    @cached_property
    def _hpas(self) -> dict[tuple[str, str], list[K8sObject]]:
        table: dict[tuple[str, str], list[K8sObject]] = {}
        for hpa in self.of_kind("HorizontalPodAutoscaler"):
            ref = hpa.get("spec", "scaleTargetRef")
            if isinstance(ref, dict):
                key = (str(ref.get("kind")), str(ref.get("name")))
                table.setdefault(key, []).append(hpa)
        return table

    def hpa_for(self, workload: Workload) -> K8sObject | None:
        """The HorizontalPodAutoscaler whose ``scaleTargetRef`` names this workload."""
        for hpa in self._hpas.get((workload.kind, workload.name), []):
            if hpa.same_namespace(workload):
                return hpa
        return None

    def min_replicas(self, workload: Workload) -> int:
        """Replicas the workload runs at least: the HPA's ``minReplicas`` (1) when one manages it,
        else ``spec.replicas`` (1 when unset)."""
        hpa = self.hpa_for(workload)
        if hpa is not None:
            value = as_int(hpa.get("spec", "minReplicas"))
            return 1 if value is None else value
        replicas = workload.replicas
        return 1 if replicas is None else replicas

    @cached_property
    def _pdb_matches(self) -> dict[int, list[Workload]]:
        table: dict[int, list[Workload]] = {}
        for pdb in self.of_kind("PodDisruptionBudget"):
            selector = pdb.get("spec", "selector")
            labels = selector.get("matchLabels") if isinstance(selector, dict) else None
            table[id(pdb)] = [
                w
                for w in self._candidates(labels)
                if pdb.same_namespace(w) and selector_matches(selector, w.pod_labels)
            ]
        return table

    def workloads_for_pdb(self, pdb: K8sObject) -> list[Workload]:
        """Workloads whose pods the PodDisruptionBudget selects."""
        return self._pdb_matches.get(id(pdb), [])

    @cached_property
    def _pdbs_by_workload(self) -> dict[int, list[K8sObject]]:
        table: dict[int, list[K8sObject]] = {}
        for pdb in self.of_kind("PodDisruptionBudget"):
            for workload in self.workloads_for_pdb(pdb):
                table.setdefault(id(workload), []).append(pdb)
        return table

    def pdbs_for(self, workload: Workload) -> list[K8sObject]:
        return self._pdbs_by_workload.get(id(workload), [])

    def dockerfile_for(self, container: Container) -> Dockerfile | None:
        """The Dockerfile in the inputs that builds this container's image, by name.

        An image ``…/orders:tag`` matches ``orders/Dockerfile``, ``orders.Dockerfile`` or
        ``Dockerfile.orders`` (a convention, documented in docs/check.md).
        """
        if not container.image:
            return None
        name = image_repository(container.image).rsplit("/", 1)[-1].lower()
        for dockerfile in self.dockerfiles:
            parts = dockerfile.path.replace("\\", "/").split("/")
            filename = parts[-1].lower()
            names = {parts[-2].lower()} if len(parts) > 1 else set()
            for base in ("dockerfile", "containerfile"):
                if filename.endswith("." + base):
                    names.add(filename[: -len(base) - 1])
                if filename.startswith(base + "."):
                    names.add(filename[len(base) + 1 :])
            if name in names:
                return dockerfile
        return None


def build_context(
    operands: Sequence[str],
    config: Config,
    *,
    max_bytes: int = MAX_FILE_BYTES,
    jobs: int | None = None,
) -> tuple[Context, list[InputError], list[str], int]:
    """Read and parse every operand (on ``jobs`` cores, default all); returns the context, input
    errors, notes, files read."""
    inputs, errors, notes = collect(operands)
    context = Context(config)
    for loaded in load_inputs(inputs, max_bytes=max_bytes, jobs=jobs):
        source = loaded.source
        if isinstance(source, InputError):
            errors.append(source)
            continue
        if loaded.input.kind == "dockerfile":
            context.dockerfiles.append(dockerfile_mod.parse(loaded.input.path, source.text))
            continue
        errors.extend(loaded.errors)
        for document in loaded.documents:
            context.documents.append(document)
            context.objects.extend(objects_from(document))
    return context, errors, notes, len(inputs)


def run_check(
    operands: Sequence[str],
    config: Config,
    *,
    max_bytes: int = MAX_FILE_BYTES,
    jobs: int | None = None,
) -> Report:
    """Check ``operands`` (files, directories, ``-``) under ``config``; see the module docstring.

    Inputs are parsed on ``jobs`` cores (default: all) when there are many; the report is the same.
    """
    from lossless.check import rules  # registers every rule

    rules.load()
    context, errors, notes, files = build_context(operands, config, max_bytes=max_bytes, jobs=jobs)
    enabled = [
        r.with_severity(config.severity.get(r.code, r.severity))
        for r in all_rules()
        if config.enabled(r.code)
    ]
    mapper = OriginMapper(config.source_roots)
    findings: list[Finding] = []
    for rule_ in enabled:
        for hit in rule_.func(context):
            findings.append(_finding(rule_, hit, mapper))
    findings.sort(key=Finding.sort_key)
    errors.sort(key=lambda e: (e.path, e.line or 0))
    return Report(findings, errors, notes, enabled, files, len(context.objects))


def _finding(rule_: Rule, hit: Hit, mapper: OriginMapper) -> Finding:
    subject = hit.subject
    location: Location = hit.location
    suppression = None
    ref = ""
    if isinstance(subject, K8sObject):
        ref = subject.ref
        origin = subject.origin
        if origin is not None and location.path == subject.document.source.path:
            location = mapper.map(location, subject.document, origin)
    if isinstance(subject, K8sObject | Dockerfile):
        if isinstance(subject, Dockerfile):
            ref = subject.ref
        reason = subject.ignores.get(rule_.code)
        if reason is not None:
            suppression = Suppression(reason)
    return Finding(rule_, hit.message, location, rule_.severity, ref, suppression)


def known_kind(kind: str) -> bool:
    return kind in KNOWN_KINDS
