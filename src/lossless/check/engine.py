"""One run of the checker: read every input, build the object graph, run the rules, suppress.

:func:`run_check` is the library entry point (``lossless check`` is a thin shell around it). It
never raises on bad input: unreadable or invalid inputs become :class:`InputError` values in the
:class:`Report`, and every other input is still checked.

Rules receive a :class:`Context`: the objects of all inputs, with the relationships the rules
share computed once. Objects are joined (a Service to the pods it selects, a PDB or an HPA to its
workload) only when they belong together (:meth:`Context.related`): in one *group* (the
directory of a plain file, one kustomization or Helm chart rendered by
:mod:`lossless.check.render`, one Helm release of a rendered stream) with compatible
namespaces, or in the same explicit namespace. So a Service in ``k8s/web-svc.yaml`` selects the
Deployment in ``k8s/web.yaml``, but not one in an unrelated directory given in the same run.
"""

from __future__ import annotations

import contextlib
import gc
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from lossless.check import dockerfile as dockerfile_mod
from lossless.check import render as render_mod
from lossless.check.config import Config
from lossless.check.dockerfile import Dockerfile, image_repository
from lossless.check.k8s import (
    CONTROLLER_LABELS,
    PASSIVE_KINDS,
    SCALED_KINDS,
    Container,
    K8sObject,
    Workload,
    as_int,
    objects_from,
    selector_matches,
)
from lossless.check.model import Finding, Hit, InputError, Location, Rule, Suppression, all_rules
from lossless.check.sourcemap import SourceMap
from lossless.check.yaml_source import (
    MAX_FILE_BYTES,
    MAX_NODES,
    Document,
    Input,
    OriginMapper,
    Source,
    collect,
    default_jobs,
    load_documents,
    load_inputs,
    read_source,
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
    #: The group of every object read from a rendered source (by ``id`` of the source).
    source_groups: dict[int, tuple[str, str]] = field(default_factory=dict)
    #: Dockerfiles that images are looked up in (:meth:`dockerfile_for`) when not ``dockerfiles``
    #: (a part of the run sees every Dockerfile but reports none; see ``check/stream.py``).
    lookup_dockerfiles: list[Dockerfile] | None = None
    _related_index: dict[int, tuple[Any, set[str], set[Any], set[Any]]] = field(
        default_factory=dict, repr=False
    )
    _workload_groups: set[Any] | None = field(default=None, repr=False)
    #: group by (id of a document's source, its Helm source): the documents keep sources alive
    _groups: dict[tuple[int, str | None], tuple[str, str]] = field(default_factory=dict, repr=False)

    @property
    def workload_groups(self) -> set[Any]:
        """The groups (:meth:`group_of`) holding a workload: of these objects, or of the whole
        run when set (a run-wide fact for a context holding a part of the run)."""
        if self._workload_groups is None:
            self._workload_groups = {self.group_of(w) for w in self.workloads}
        return self._workload_groups

    @workload_groups.setter
    def workload_groups(self, groups: set[Any]) -> None:
        self._workload_groups = groups

    def group_of(self, obj: K8sObject) -> tuple[str, str]:
        """What ``obj`` belongs with: its render, its Helm chart in a rendered stream (named by
        ``# Source:``), else the directory of its file."""
        document = obj.document
        key = (id(document.source), document.helm_source)
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = self._group(document)
        return group

    def _group(self, document: Document) -> tuple[str, str]:
        source = document.source
        rendered = self.source_groups.get(id(source))
        if rendered is not None:
            return rendered
        helm = document.helm_source
        if helm:
            return ("helm", f"{source.path}::{helm.split('/', 1)[0]}")
        return ("dir", os.path.dirname(source.path))

    def related(self, a: K8sObject, b: K8sObject) -> bool:
        """Whether two objects may be joined: the same explicit namespace, or compatible
        namespaces (equal or one unset) within one group."""
        if a.namespace is not None and b.namespace is not None:
            return a.namespace == b.namespace
        if self.group_of(a) != self.group_of(b):
            return False
        # Two Helm releases of one chart in one stream: their instance labels differ.
        ra, rb = _release(a), _release(b)
        return ra is None or rb is None or ra == rb

    def any_related(self, objects: Sequence[K8sObject], obj: K8sObject) -> bool:
        """``any(self.related(o, obj) for o in objects)`` in O(1) after one pass over
        ``objects`` (indexed per list, so rules stay linear in the number of objects)."""
        key = id(objects)
        index = self._related_index.get(key)
        if index is None:
            namespaces = {o.namespace for o in objects if o.namespace is not None}
            unset = {self.group_of(o) for o in objects if o.namespace is None}
            every = {self.group_of(o) for o in objects}
            index = self._related_index[key] = (objects, namespaces, unset, every)
        _, namespaces, unset, every = index
        group = self.group_of(obj)
        if obj.namespace is not None:
            return obj.namespace in namespaces or group in unset
        return group in every

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

    # Joins are looked up through indexes keyed by *scope*, so that a selector's candidates are
    # only the objects it may be related to (:meth:`related`): N copies of an app in N namespaces
    # cost N lookups, not N². Every object is indexed under its group (``"g"``) and under its
    # namespace (``"ns"``), or, when it has none, under ``"u"`` + its group.

    def _scopes(self, obj: K8sObject) -> tuple[tuple[str, Any], tuple[str, Any]]:
        group = self.group_of(obj)
        own = ("ns", obj.namespace) if obj.namespace is not None else ("u", group)
        return ("g", group), own

    def _near(self, obj: K8sObject) -> tuple[tuple[str, Any], ...]:
        """The scopes holding every object that may be related to ``obj`` (disjoint)."""
        group = self.group_of(obj)
        if obj.namespace is None:
            return (("g", group),)
        return (("ns", obj.namespace), ("u", group))

    @cached_property
    def _order(self) -> dict[int, int]:
        return {id(obj): i for i, obj in enumerate(self.objects)}

    def _gather(self, index: Mapping[Any, list[Any]], near: K8sObject, key: Any) -> list[Any]:
        """The entries of ``index`` under ``key`` in the scopes near ``near``, in input order."""
        found = [index[(scope, key)] for scope in self._near(near) if (scope, key) in index]
        if not found:
            return []
        if len(found) == 1:
            return found[0]
        order = self._order
        return sorted((o for part in found for o in part), key=lambda o: order[id(o)])

    @cached_property
    def _label_index(self) -> dict[tuple[tuple[str, Any], Any], list[Workload]]:
        """Workloads by scope and each of their pod labels (and by scope alone, key ``None``),
        so selectors need not scan every workload."""
        index: dict[tuple[tuple[str, Any], Any], list[Workload]] = {}
        for workload in self.workloads:
            scopes = self._scopes(workload)
            for scope in scopes:
                index.setdefault((scope, None), []).append(workload)
            for key, value in workload.pod_labels.items():
                label = (str(key), str(value))
                for scope in scopes:
                    index.setdefault((scope, label), []).append(workload)
        return index

    def _candidates(self, labels: Any, near: K8sObject) -> list[Workload]:
        """Workloads that may match a selector whose required labels are ``labels`` and may be
        related to ``near`` (a superset, in input order)."""
        if isinstance(labels, Mapping):
            for key, value in labels.items():
                if str(key) not in CONTROLLER_LABELS:
                    return self._gather(self._label_index, near, (str(key), str(value)))
        return self._gather(self._label_index, near, None)

    @cached_property
    def _workloads_by_service(self) -> dict[int, list[Workload]]:
        table: dict[int, list[Workload]] = {}
        for service in self.services:
            selector = service.get("spec", "selector")
            if not isinstance(selector, dict) or not selector:
                continue
            table[id(service)] = [
                w
                for w in self._candidates(selector, service)
                if self.related(w, service) and w.selected_by(selector)
            ]
        return table

    @cached_property
    def _services_by_workload(self) -> dict[int, list[K8sObject]]:
        table: dict[int, list[K8sObject]] = {}
        for service in self.services:
            if metrics_only(service):
                continue
            for workload in self._workloads_by_service.get(id(service), []):
                if not workload.is_batch:
                    table.setdefault(id(workload), []).append(service)
        return table

    def services_for(self, workload: Workload) -> list[K8sObject]:
        """Traffic Services whose selector matches the workload's pods (never for Jobs or
        CronJobs; metrics-only Services, :func:`metrics_only`, do not count)."""
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
    def _hpas(self) -> dict[tuple[tuple[str, Any], tuple[str, str]], list[K8sObject]]:
        """HPAs by scope (see :meth:`_scopes`) and the ``(kind, name)`` of their target."""
        table: dict[tuple[tuple[str, Any], tuple[str, str]], list[K8sObject]] = {}
        for hpa in self.of_kind("HorizontalPodAutoscaler"):
            ref = hpa.get("spec", "scaleTargetRef")
            if isinstance(ref, dict):
                target = (str(ref.get("kind")), str(ref.get("name")))
                for scope in self._scopes(hpa):
                    table.setdefault((scope, target), []).append(hpa)
        return table

    def hpa_for(self, workload: Workload) -> K8sObject | None:
        """The HorizontalPodAutoscaler whose ``scaleTargetRef`` names exactly this workload
        (kind and name) among the related objects (:meth:`related`), one of the same group
        first."""
        key = id(workload)
        if key not in self._hpa_cache:
            self._hpa_cache[key] = self._find_hpa(workload)
        return self._hpa_cache[key]

    @cached_property
    def _hpa_cache(self) -> dict[int, K8sObject | None]:
        return {}

    def _find_hpa(self, workload: Workload) -> K8sObject | None:
        candidates = [
            hpa
            for hpa in self._gather(self._hpas, workload, (workload.kind, workload.name))
            if self.related(hpa, workload)
        ]
        group = self.group_of(workload)
        candidates.sort(key=lambda hpa: self.group_of(hpa) != group)
        return candidates[0] if candidates else None

    def min_replicas(self, workload: Workload) -> int:
        """Replicas the workload runs at least: the HPA's ``minReplicas`` (1) when one manages it,
        else ``spec.replicas`` (1 when unset)."""
        hpa = self.hpa_for(workload)
        if hpa is not None:
            value = as_int(hpa.get("spec", "minReplicas"))
            return 1 if value is None else value
        replicas = workload.replicas
        return 1 if replicas is None else replicas

    def pods_behind(self, service: K8sObject) -> int:
        """Pods the Service routes to at least: the replicas of every long-running workload it
        selects, added up (v1, v2 and v3 Deployments behind one Service count together)."""
        return sum(self.min_replicas(w) for w in self.workloads_for(service) if not w.is_batch)

    def serving_pods(self, workload: Workload) -> int:
        """The most pods any of the workload's Services routes to (:meth:`pods_behind`)."""
        return max((self.pods_behind(s) for s in self.services_for(workload)), default=0)

    def siblings(self, workload: Workload) -> list[Workload]:
        """The long-running workloads behind the same Services as ``workload`` (itself first)."""
        found: dict[int, Workload] = {id(workload): workload}
        for service in self.services_for(workload):
            for other in self.workloads_for(service):
                if not other.is_batch and other.kind in SCALED_KINDS | {"Pod"}:
                    found.setdefault(id(other), other)
        return list(found.values())

    @cached_property
    def _pdb_matches(self) -> dict[int, list[Workload]]:
        table: dict[int, list[Workload]] = {}
        for pdb in self.of_kind("PodDisruptionBudget"):
            selector = pdb.get("spec", "selector")
            labels = selector.get("matchLabels") if isinstance(selector, dict) else None
            table[id(pdb)] = [
                w
                for w in self._candidates(labels, pdb)
                if self.related(pdb, w) and selector_matches(selector, w.pod_labels)
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
        known = self.dockerfiles if self.lookup_dockerfiles is None else self.lookup_dockerfiles
        for dockerfile in known:
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


_RELEASE_LABELS = ("app.kubernetes.io/instance", "release")


def _release(obj: K8sObject) -> str | None:
    """The Helm release an object of a rendered chart belongs to, when its labels (or, for a
    Service, its selector) say so."""
    if not obj.document.helm_source:
        return None
    for labels in (obj.metadata.get("labels"), obj.get("spec", "selector")):
        if isinstance(labels, Mapping):
            for key in _RELEASE_LABELS:
                if key in labels:
                    return str(labels[key])
    return None


_METRICS = re.compile(r"(?:^|[-_.])(?:metrics|prometheus|prom)$")


def metrics_only(service: K8sObject) -> bool:
    """A Service that only exposes metrics to a scraper: its name ends in ``metrics``
    (``argocd-metrics``, ``kube-state-metrics``), or every port is named so (``metrics``,
    ``http-metrics``). A missed scrape is retried at the next interval, not a failed request, so
    such Services do not make their pods "Service-backed"."""
    if _METRICS.search(service.name) or service.name.endswith("metrics"):
        return True
    ports = service.get("spec", "ports")
    if not isinstance(ports, list) or not ports:
        return False
    names = [str(p.get("name") or "") for p in ports if isinstance(p, Mapping)]
    return bool(names) and all(_METRICS.search(n) for n in names)


def build_context(
    operands: Sequence[str],
    config: Config,
    *,
    max_bytes: int = MAX_FILE_BYTES,
    jobs: int | None = None,
) -> tuple[Context, list[InputError], list[str], int]:
    """Read and parse every operand; returns the context, input errors, notes, files read.

    Helm charts and kustomizations among the operands are rendered (:mod:`render`); the files
    they consist of are read through the render, not as plain YAML. The other inputs are parsed
    on ``jobs`` cores (default: all) when there are many; the result is the same. Every tree is
    held at once: :func:`run_check` checks part by part instead (``check/stream.py``).
    """
    context, inputs, errors, notes, files = _start(operands, config)
    # Passive kinds (RBAC, ConfigMaps, CRDs...) are read for their metadata only: their bodies,
    # often most of an operator bundle, are not held.
    for loaded in load_inputs(inputs, max_bytes=max_bytes, jobs=jobs, slim=PASSIVE_KINDS):
        source = loaded.source
        if isinstance(source, InputError):
            errors.append(source)
            continue
        if loaded.input.kind == "dockerfile":
            context.dockerfiles.append(dockerfile_mod.parse(loaded.input.path, source.text))
            continue
        errors.extend(loaded.errors)
        add_documents(context, loaded.documents, errors)
        source.release()  # a big file's text is read again only if needed
    return context, errors, notes, files


def _start(
    operands: Sequence[str], config: Config
) -> tuple[Context, list[Input], list[InputError], list[str], int]:
    """The context holding the rendered charts and kustomizations among ``operands``, the other
    inputs, errors and notes so far, and the number of files read."""
    targets = render_mod.discover(operands)
    inputs, errors, notes = collect(operands)
    rendered_charts = {f"skipped Helm chart {t.path}:" for t in targets if t.kind == "helm"}
    notes = [n for n in notes if not any(n.startswith(c) for c in rendered_charts)]
    context = Context(config)
    renders: list[render_mod.Rendered] = []
    for target in targets:
        rendered = render_mod.render(target)
        if isinstance(rendered, InputError):
            errors.append(rendered)
            continue
        renders.append(rendered)
        output = Source(rendered.path, rendered.text)
        context.source_groups[id(output)] = (target.kind, str(target.path.resolve()))
        documents, problems = load_documents(output, slim=PASSIVE_KINDS)
        errors.extend(problems)
        add_documents(context, documents, errors)
    inputs = [
        i for i in inputs if i.kind != "yaml" or not render_mod.owned_by(targets, renders, i.path)
    ]
    return context, inputs, errors, notes, len(inputs) + len(targets)


def add_documents(context: Context, documents: list[Document], errors: list[InputError]) -> None:
    """Add parsed documents (and their objects) to ``context``; an unrendered template is an
    input error instead."""
    for document in documents:
        source = document.source
        # Only a template can make a mapping a key (complex keys are rare: test them first).
        if document.complex_keys and "{{" in source.text:
            # `name: {{ app }}` is YAML for a mapping whose key is a mapping: a template that
            # was not rendered (Jinja, gomplate, Ansible...), not a manifest to check.
            line = min(document.complex_keys)
            text = source.lines[line].strip() if 0 <= line < len(source.lines) else ""
            shown = f" ('{text[:60]}')" if text else ""
            errors.append(
                InputError(
                    source.path,
                    f"unrendered template{shown}: '{{{{ ... }}}}' outside quotes is not a "
                    "value; render the template first and check its output",
                    line + 1,
                )
            )
            continue
        context.documents.append(document)
        context.objects.extend(objects_from(document))


def run_check(
    operands: Sequence[str],
    config: Config,
    *,
    max_bytes: int = MAX_FILE_BYTES,
    jobs: int | None = None,
    on_part: Callable[[Any], None] | None = None,
) -> Report:
    """Check ``operands`` (files, directories, ``-``) under ``config``; see the module docstring.

    YAML inputs are checked part by part (``check/stream.py``: a part's trees are dropped once
    its rules ran), on ``jobs`` cores (default: all) when there are many; the report is the same
    as one run over all objects (:func:`check_context`). ``on_part`` is called with each part's
    result as it is taken. Automatic garbage collection is paused for the run
    (:func:`gc_paused`).
    """
    with gc_paused():
        return _run_check(operands, config, max_bytes=max_bytes, jobs=jobs, on_part=on_part)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Automatic (cyclic) garbage collection off inside the block, restored after.

    Parsing builds millions of small containers, none in a cycle (only a recursive YAML alias
    makes one, freed when collection resumes), and every automatic collection walks all of them
    again: 5 of 14 s of parsing a 50 MiB file. Reference counting still frees everything else.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _run_check(
    operands: Sequence[str],
    config: Config,
    *,
    max_bytes: int,
    jobs: int | None,
    on_part: Callable[[Any], None] | None = None,
) -> Report:
    from lossless.check import stream

    context, inputs, errors, notes, files = _start(operands, config)
    enabled = enabled_rules(config)
    yaml_inputs = []
    for item in inputs:
        if item.kind != "dockerfile":
            yaml_inputs.append(item)
            continue
        source = read_source(item.path, max_bytes=max_bytes)
        if isinstance(source, InputError):
            errors.append(source)
        else:
            context.dockerfiles.append(dockerfile_mod.parse(item.path, source.text))
    setup = stream.Setup(
        config, enabled, context.dockerfiles, max_bytes, MAX_NODES, config.source_roots
    )
    jobs = default_jobs() if jobs is None else max(1, jobs)
    findings, problems, objects = stream.check_yaml(
        context, yaml_inputs, setup, jobs, on_result=on_part
    )
    errors.extend(problems)
    findings.sort(key=Finding.sort_key)
    errors.sort(key=lambda e: (e.path, e.line or 0))
    return Report(findings, errors, notes, enabled, files, objects)


def enabled_rules(config: Config) -> list[Rule]:
    """The rules ``config`` enables, with its severities, in code order."""
    return [
        r.with_severity(config.severity.get(r.code, r.severity))
        for r in all_rules()
        if config.enabled(r.code)
    ]


def check_context(
    context: Context, errors: list[InputError], notes: list[str], files: int
) -> Report:
    """The report of one run of every enabled rule over all of ``context`` at once (the
    reference :func:`run_check`'s part-by-part run must equal; see ``check/stream.py``)."""
    enabled = enabled_rules(context.config)
    findings = [f for f, _ in rule_findings(context, enabled, context.config.source_roots)]
    findings.sort(key=Finding.sort_key)
    errors = sorted(errors, key=lambda e: (e.path, e.line or 0))
    return Report(findings, errors, notes, enabled, files, len(context.objects))


def rule_findings(
    context: Context, rules: Sequence[Rule], source_roots: Sequence[str]
) -> Iterator[tuple[Finding, Any]]:
    """Every finding of ``rules`` over ``context``, in rule order, with the subject of its hit."""
    mapper = OriginMapper(source_roots)
    sources = SourceMap(source_roots)
    # The output of a render we ran exists on no disk: a position in it helps nobody.
    renders = {d.source.path for d in context.documents if id(d.source) in context.source_groups}
    for rule_ in rules:
        for hit in rule_.func(context):
            found = _finding(rule_, hit, mapper, sources)
            rendered = found.location.rendered
            if rendered is not None and rendered.path in renders:
                found = replace(found, location=replace(found.location, rendered=None))
            yield found, hit.subject


def _finding(rule_: Rule, hit: Hit, mapper: OriginMapper, sources: SourceMap) -> Finding:
    subject = hit.subject
    location: Location = hit.location
    suppression = None
    ref = ""
    if isinstance(subject, K8sObject):
        ref = subject.ref
        origin = subject.origin
        if origin is not None and location.path == subject.document.source.path:
            mapped = None
            if origin.kind == "kustomize":  # YAML on both sides: map by path (sourcemap.py)
                file = sources.resolve(origin.path, subject.document.source.path)
                if file is not None:
                    mapped = sources.locate(subject, location, file)
            location = mapped or mapper.map(location, subject.document, origin)
    if isinstance(subject, K8sObject | Dockerfile):
        if isinstance(subject, Dockerfile):
            ref = subject.ref
        reason = subject.ignores.get(rule_.code)
        if reason is not None:
            suppression = Suppression(reason)
    return Finding(rule_, hit.message, location, rule_.severity, ref, suppression)
