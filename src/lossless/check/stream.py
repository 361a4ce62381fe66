"""Checking YAML inputs part by part, with the findings of one run over all of them.

Contract of :func:`check_yaml`:

- The YAML inputs are cut into *parts* (:func:`plan_parts`, :func:`cut`): a big file (over
  ``yaml_source.CHUNK_BYTES``) into pieces at its ``---`` lines, preferably where the namespace
  changes, one part each; on one core, the other files form one part; on several, files that
  may be joined (as far as a cheap look at their text tells: a shared ``namespace:``, or a
  directory holding objects without one) share a part and the rest are one part per file. The
  pieces of a big file that seems to hold objects without a namespace are *shipped*: parsed in
  the part, checked in the parent with the rendered objects.
- Each part is read, parsed, turned into objects and checked by every enabled rule on its own
  (in a ``fork`` process pool on ``jobs`` cores when there is enough YAML); then its trees are
  dropped. Only its findings, errors and a summary of its *units* come back.
- A unit is a set of objects of the part closed under :meth:`Context.related`. Rules join only
  related objects, so a unit's findings are final unless (a) objects of another part (or of a
  rendered chart or kustomization) are related to it: the same namespace, or the same group when
  one of them has no namespace; or (b) a run-wide fact it read is not what the part saw
  (:attr:`Context.workload_groups`). Such units are *split*: the parts holding them are read
  again in the parent and checked together with the rendered objects, and only the findings
  about split units are taken from that run (the others came from the part already).
- So findings, their order after sorting, errors and the object count are those of one run over
  all objects (:func:`lossless.check.engine.check_context`), while memory is bounded by the
  largest part (plus the findings, and the parts re-read for split units). Only the read of a
  part that stopped on an error truncates a file, as the whole-file parse does: a piece after a
  piece that failed is not taken.
"""

from __future__ import annotations

import bisect
import itertools
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from lossless.check import yaml_source
from lossless.check.dockerfile import Dockerfile
from lossless.check.k8s import PASSIVE_KINDS, K8sObject
from lossless.check.model import Finding, InputError, Location, Rule, Suppression
from lossless.check.yaml_source import STDIN, Document, Input, Source

__all__ = ["Part", "PartResult", "Setup", "check_yaml", "plan_parts"]

#: A scope of :meth:`Context.related`: ``("ns", namespace)`` or ``("g", group)``.
Node = tuple[str, Any]


@dataclass(frozen=True)
class Piece:
    """Bytes ``first``..``last`` of a big file (lines from ``line``), its ``order``-th piece."""

    path: str
    shown: str
    first: int
    last: int
    line: int
    order: int


@dataclass(frozen=True)
class Part:
    """What one task checks: whole ``files``, or one ``piece`` of a big file."""

    files: tuple[Input, ...] = ()
    piece: Piece | None = None
    #: parsed in the part but checked in the parent (its objects are likely related to others)
    ship: bool = False


@dataclass
class Unit:
    """Objects of one part that are related (see the module docstring)."""

    nodes: set[Node] = field(default_factory=set)
    #: groups of its objects that have a namespace (related to that group's unset objects)
    ns_groups: set[Any] = field(default_factory=set)
    #: groups of its Services (LL601 reads whether such a group has workloads)
    service_groups: set[Any] = field(default_factory=set)


#: A finding without its rule object: ``(code, message, location, subject, suppression)``.
RawFinding = tuple[str, str, Location, str, Suppression | None]


@dataclass
class PartResult:
    """What comes back from checking one part."""

    part: Part
    errors: list[InputError] = field(default_factory=list)
    #: ``(unit index or None for a finding about no object, finding)``, in rule order
    findings: list[tuple[int | None, RawFinding]] = field(default_factory=list)
    units: list[Unit] = field(default_factory=list)
    unset_groups: set[Any] = field(default_factory=set)
    workload_groups: set[Any] = field(default_factory=set)
    objects: int = 0
    failed: bool = False  # a piece that stopped on an error: later pieces are not taken
    documents: list[Document] | None = None  # a shipped part's documents


# -- planning ------------------------------------------------------------------------------------


def _hints(path: str) -> tuple[set[str], bool]:
    """The namespaces a file names and whether it seems to hold an object without one (a guess
    from the text: it only decides which files share a part, never a finding)."""
    try:
        with open(path, "rb") as fh:
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return set(), False
    return set(_NAMESPACE_IN.findall(text)), text_has_unset(text)


def plan_parts(
    inputs: Sequence[Input], sizes: Sequence[int], parallel: bool, piece_bytes: int
) -> tuple[list[Part], list[Input]]:
    """Parts for the YAML ``inputs`` (their byte ``sizes``) but the big ones, and the big
    ones (over ``piece_bytes``: to be cut by :func:`cut`)."""
    big = [item for item, size in zip(inputs, sizes, strict=True) if size > piece_bytes]
    rest = [item for item, size in zip(inputs, sizes, strict=True) if size <= piece_bytes]
    if not rest:
        return [], big
    if not parallel:
        return [Part(tuple(rest))], big
    uf = _UnionFind()
    find, union = uf.find, uf.union
    hints = {}
    for item in rest:
        if item.path == STDIN:
            continue
        namespaces, unset = hints[item.path] = _hints(item.path)
        for namespace in namespaces:
            union(("file", item.path), ("ns", namespace))
        if unset:
            union(("file", item.path), ("dir", os.path.dirname(item.path)))
    unset_dirs = {os.path.dirname(p) for p, (_, unset) in hints.items() if unset}
    for path, (namespaces, _) in hints.items():
        if namespaces and os.path.dirname(path) in unset_dirs:
            union(("file", path), ("dir", os.path.dirname(path)))
    groups: dict[Any, list[Input]] = {}
    for item in rest:
        key = ("stdin",) if item.path == STDIN else find(("file", item.path))
        groups.setdefault(key, []).append(item)
    return [Part(tuple(files)) for files in groups.values()], big


_DOC_AT = re.compile(r"\n---(?:[ \t][^\n]*)?(?=\n|\Z)")  # a literal prefix: fast on 50 MiB
_FIRST_DOC = re.compile(r"---(?:[ \t][^\n]*)?(?:\n|\Z)")
_NAMESPACE_IN = re.compile(r"\n[ \t]+namespace:[ \t]*[\"']?([^\s\"'#]*)")
_METADATA_IN = re.compile(r"\nmetadata:[^\n]*\n((?:[ \t][^\n]*\n)*)")
#: How many ``---`` lines past a piece's size a cut may move to fall between two namespaces.
CUT_SEARCH = 512


def doc_starts(text: str) -> list[int]:
    """Offsets of the ``---`` lines of ``text`` (as ``yaml_source.DOC_START`` finds them)."""
    starts = [m.start() + 1 for m in _DOC_AT.finditer(text)]
    if _FIRST_DOC.match(text):
        starts.insert(0, 0)
    return starts


def text_has_unset(text: str) -> bool:
    """Whether ``text`` seems to hold an object without a namespace (a guess, see
    :func:`_hints`)."""
    blocks = _METADATA_IN.findall(text)
    kinds = text.count("\nkind:") + text.startswith("kind:")
    if text.startswith("metadata:") or kinds > len(blocks):
        return True
    return any("namespace:" not in block for block in blocks)


def cut(
    item: Input, max_bytes: int, pieces: int, piece_bytes: int, ship: bool = False
) -> list[Part] | tuple[Source | InputError, list[InputError]]:
    """A big file as pieces (parts) of at least ``piece_bytes`` cut at ``---`` lines, about
    ``pieces`` of them (0: ``piece_bytes`` each); or, when it cannot be read or is an unrendered
    Helm template, the error (``(source or error, errors)``).

    A cut moves forward (up to :data:`CUT_SEARCH` documents) to a ``---`` line between two
    documents that name different namespaces, so that a namespace rarely spans two pieces.
    When the file (or ``ship``: another input of its directory) seems to hold objects without a
    namespace, which are related to every object of the directory, the pieces are *shipped*:
    parsed in parts but checked in the parent (:attr:`Part.ship`).
    """
    source = yaml_source.read_source(item.path, max_bytes=max_bytes)
    if isinstance(source, InputError):
        return source, []
    unrendered = yaml_source.unrendered_helm_line(source.text)
    if unrendered is not None:
        return source, [yaml_source.unrendered_error(source.path, unrendered)]
    text = source.text
    source.release()
    ship = ship or text_has_unset(text)
    size = max(piece_bytes, -(-len(text) // pieces)) if pieces else piece_bytes
    starts = doc_starts(text)

    def namespace(k: int) -> str | None:
        end = starts[k + 1] if k + 1 < len(starts) else len(text)
        found = _NAMESPACE_IN.search(text, starts[k], end)
        return found.group(1) if found else None

    cuts = [0]
    i = 0
    while True:
        i = bisect.bisect_left(starts, cuts[-1] + size, lo=i)
        if i >= len(starts):
            break
        best = i
        for j in range(max(i, 1), min(len(starts), i + CUT_SEARCH)):
            if namespace(j - 1) != namespace(j):
                best = j
                break
        cuts.append(starts[best])
        i = best + 1
    cuts.append(len(text))
    try:
        with open(item.path, "rb") as fh:
            bom = 3 if fh.read(3) == b"\xef\xbb\xbf" else 0
    except OSError as exc:
        return InputError(item.path, f"cannot read: {exc.strerror or exc}"), []
    ascii_only = text.isascii()
    parts = []
    line = 0
    for order, (begin, stop) in enumerate(itertools.pairwise(cuts)):
        if ascii_only:
            first, last = begin + bom, stop + bom
        else:
            first = bom + len(text[:begin].encode())
            last = first + len(text[begin:stop].encode())
        piece = Piece(item.path, source.path, first, last, line, order)
        parts.append(Part(piece=piece, ship=ship))
        line += text.count("\n", begin, stop)
    return parts


# -- checking one part ---------------------------------------------------------------------------


@dataclass
class Setup:
    """What every part is checked with (inherited by ``fork`` workers, never pickled)."""

    config: Any
    rules: list[Rule]
    dockerfiles: list[Dockerfile]
    max_bytes: int
    max_nodes: int
    source_roots: Sequence[str] = ()


def read_part(part: Part, setup: Setup) -> tuple[list[Document], list[InputError], bool, int]:
    """The documents of ``part``, its read/parse errors, whether it stopped on an error, and its
    number of documents (empty ones included, for a piece)."""
    if part.piece is not None:
        piece = part.piece
        with open(piece.path, "rb") as fh:
            fh.seek(piece.first)
            text = fh.read(piece.last - piece.first).decode("utf-8")
        source = yaml_source.PieceSource(piece.shown, text, piece.line)
        return yaml_source.parse_piece(source, text, piece.line, setup.max_nodes, PASSIVE_KINDS)
    documents: list[Document] = []
    errors: list[InputError] = []
    for item in part.files:
        loaded = yaml_source.load_one(item, setup.max_bytes, setup.max_nodes, PASSIVE_KINDS)
        if isinstance(loaded.source, InputError):
            errors.append(loaded.source)
            continue
        errors.extend(loaded.errors)
        documents.extend(loaded.documents)
        loaded.source.release()
    return documents, errors, False, 0


def check_part(part: Part, setup: Setup) -> PartResult:
    """Read and check ``part`` alone (see the module docstring); its trees are dropped on
    return."""
    from lossless.check import engine

    documents, errors, failed, _ = read_part(part, setup)
    if part.ship:
        return PartResult(part, errors, failed=failed, documents=documents)
    context = engine.Context(setup.config, lookup_dockerfiles=setup.dockerfiles)
    engine.add_documents(context, documents, errors)
    del documents
    result = PartResult(part, errors, failed=failed, objects=len(context.objects))
    units, unit_of = units_of(context)
    result.units = units
    result.unset_groups = {context.group_of(o) for o in context.objects if o.namespace is None}
    result.workload_groups = context.workload_groups
    for finding, subject in engine.rule_findings(context, setup.rules, setup.source_roots):
        unit = unit_of.get(id(subject)) if subject is not None else None
        raw: RawFinding = (
            finding.code,
            finding.message,
            finding.location,
            finding.subject,
            finding.suppression,
        )
        result.findings.append((unit, raw))
    return result


def units_of(context: Any) -> tuple[list[Unit], dict[int, int]]:
    """The units of a context's objects, and the unit index of each object (by ``id``)."""
    objects = context.objects
    unset = {context.group_of(o) for o in objects if o.namespace is None}
    uf = _UnionFind()
    own: list[tuple[Any, Node]] = []
    for obj in objects:
        group = context.group_of(obj)
        node: Node = ("ns", obj.namespace) if obj.namespace is not None else ("g", group)
        uf.find(node)
        if obj.namespace is not None and group in unset:
            uf.union(node, ("g", group))
        own.append((obj, node))
    index: dict[Any, int] = {}
    units: list[Unit] = []
    unit_of: dict[int, int] = {}
    for obj, node in own:
        root = uf.find(node)
        if root not in index:
            index[root] = len(units)
            units.append(Unit())
        unit = units[index[root]]
        unit.nodes.add(node)
        if obj.namespace is not None:
            unit.ns_groups.add(context.group_of(obj))
        if obj.kind == "Service":
            unit.service_groups.add(context.group_of(obj))
        unit_of[id(obj)] = index[root]
    return units, unit_of


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[Any, Any] = {}

    def find(self, x: Any) -> Any:
        parent = self.parent
        root = parent.setdefault(x, x)
        while root != x:
            parent[x] = parent.setdefault(root, root)
            x, root = root, parent[root]
        return root

    def union(self, a: Any, b: Any) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[ra] = rb


# -- running the parts and putting the results together ------------------------------------------

_SETUP: Setup | None = None


def _worker_init(setup: Setup) -> None:
    import gc
    import signal

    global _SETUP
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops the pool on Ctrl-C
    gc.disable()  # acyclic trees (see engine.gc_paused)
    _SETUP = setup


def _check_in_worker(part: Part) -> PartResult:
    assert _SETUP is not None
    return check_part(part, _SETUP)


def run_parts(
    parts: Sequence[Part],
    setup: Setup,
    jobs: int,
    on_result: Callable[[PartResult], None] | None = None,
) -> Iterator[PartResult]:
    """Check ``parts``, in a pool of ``jobs`` processes when more than one (stdin is read by
    the parent), yielding their results in order. ``on_result`` is called as each result is
    taken (the part's trees are gone by then)."""
    if jobs <= 1 or len(parts) <= 1:
        for part in parts:
            result = check_part(part, setup)
            if on_result is not None:
                on_result(result)
            yield result
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("fork")
    local = [any(i.path == STDIN for i in p.files) for p in parts]
    with ProcessPoolExecutor(
        jobs, mp_context=context, initializer=_worker_init, initargs=(setup,)
    ) as pool:
        futures = [
            None if here else pool.submit(_check_in_worker, part)
            for part, here in zip(parts, local, strict=True)
        ]
        try:
            for part, future in zip(parts, futures, strict=True):
                result = check_part(part, setup) if future is None else future.result()
                if on_result is not None:
                    on_result(result)
                yield result
        except BaseException:
            # Ctrl-C (or an error): the parts not started are dropped, not run to the end.
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def split_roots(
    partitions: Sequence[tuple[list[Unit], set[Any]]], unset_groups: set[Any]
) -> tuple[_UnionFind, set[Any], set[Any]]:
    """Which components are split across partitions or read a run-wide fact wrongly.

    ``partitions``: each one's units and the groups where it saw workloads; ``unset_groups``:
    the groups holding an object without a namespace in the whole run. Returns the union-find
    over scopes, the roots of the split components, and the run's workload groups.
    """
    workload_groups: set[Any] = set().union(*(wg for _, wg in partitions))
    uf = _UnionFind()
    for units, _ in partitions:
        for unit in units:
            first = next(iter(unit.nodes))
            for node in unit.nodes:
                uf.union(node, first)
            for group in unit.ns_groups:
                if group in unset_groups:
                    uf.union(("g", group), first)
    owners: dict[Any, int] = {}
    split: set[Any] = set()
    for number, (units, local_groups) in enumerate(partitions):
        for unit in units:
            root = uf.find(next(iter(unit.nodes)))
            if owners.setdefault(root, number) != number:
                split.add(root)
            if any((g in local_groups) != (g in workload_groups) for g in unit.service_groups):
                split.add(root)
    return uf, split, workload_groups


def check_yaml(
    context: Any,
    inputs: Sequence[Input],
    setup: Setup,
    jobs: int,
    *,
    on_result: Callable[[PartResult], None] | None = None,
) -> tuple[list[Finding], list[InputError], int]:
    """Check the YAML ``inputs`` part by part, together with the objects already in ``context``
    (rendered charts and kustomizations, and the run's Dockerfiles); see the module docstring.

    Returns every finding (unsorted), the input errors and the number of objects checked.
    ``on_result`` is called with each part's result as it is taken (tests, progress).
    """
    from lossless.check import engine

    piece_bytes = yaml_source.CHUNK_BYTES
    sizes = [yaml_source.file_size(item) for item in inputs]
    parallel = jobs > 1 and sum(sizes) >= yaml_source.PARALLEL_MIN_BYTES
    parts, big = plan_parts(inputs, sizes, parallel, piece_bytes)
    errors: list[InputError] = []
    unset_dirs = {
        os.path.dirname(item.path)
        for item in inputs
        if item not in big and item.path != STDIN and big_dir(item, big) and _hints(item.path)[1]
    }
    for item in big:
        pieces = jobs * yaml_source.PIECES_PER_JOB if parallel else 0
        ship = os.path.dirname(item.path) in unset_dirs
        cutted = cut(item, setup.max_bytes, pieces, piece_bytes, ship)
        if isinstance(cutted, list):
            parts.extend(cutted)
        else:
            source, problems = cutted
            if isinstance(source, InputError):
                errors.append(source)
            errors.extend(problems)
    accepted: list[PartResult] = []
    failed_files: set[str] = set()
    for result in run_parts(parts, setup, jobs if parallel else 1, on_result):
        piece = result.part.piece
        if piece is not None:
            if piece.path in failed_files:
                continue  # the file stopped on an error in an earlier piece
            if result.failed:
                failed_files.add(piece.path)
        errors.extend(result.errors)
        if result.documents is None:
            accepted.append(result)
            continue
        engine.add_documents(context, result.documents, errors)
    own_units, _ = units_of(context)
    partitions = [(own_units, context.workload_groups)]
    partitions += [(r.units, r.workload_groups) for r in accepted]
    unset = {context.group_of(o) for o in context.objects if o.namespace is None}
    unset = unset.union(*(r.unset_groups for r in accepted))
    uf, split, workload_groups = split_roots(partitions, unset)
    rules = {r.code: r for r in setup.rules}
    findings: list[Finding] = []
    again: list[Part] = []
    objects = len(context.objects)
    for result in accepted:
        objects += result.objects
        roots = [uf.find(next(iter(u.nodes))) in split for u in result.units]
        if any(roots):
            again.append(result.part)
        for unit, raw in result.findings:
            if unit is None or not roots[unit]:
                findings.append(rebuild(raw, rules))
    # Split units: their parts read again and checked here with the rendered objects.
    reread_sources: set[int] = set()
    reread_paths: set[str] = set()
    # A fresh context: the rendered one's cached indexes do not hold the re-read objects.
    context = engine.Context(
        context.config,
        objects=list(context.objects),
        documents=list(context.documents),
        dockerfiles=context.dockerfiles,
        source_groups=context.source_groups,
    )
    for part in again:
        documents, _, _, _ = read_part(part, setup)
        reread_sources.update(id(d.source) for d in documents)
        reread_paths.update(d.source.path for d in documents)
        engine.add_documents(context, documents, [])
    context.workload_groups = workload_groups

    def counts(subject: Any, location: Location) -> bool:
        """Whether a finding of this run is new: always for rendered or shipped objects and
        Dockerfiles; for an object of a re-read part only when its unit is split; never for
        a finding about no object in a re-read file (its part reported it)."""
        if not isinstance(subject, K8sObject):
            return isinstance(subject, Dockerfile) or location.path not in reread_paths
        if id(subject.document.source) not in reread_sources:
            return True
        return uf.find(node_of(context, subject)) in split

    for finding, subject in engine.rule_findings(context, setup.rules, setup.source_roots):
        if counts(subject, finding.location):
            findings.append(finding)
    return findings, errors, objects


def big_dir(item: Input, big: Sequence[Input]) -> bool:
    """Whether ``item`` is in the directory of one of the ``big`` files."""
    return any(os.path.dirname(item.path) == os.path.dirname(b.path) for b in big)


def node_of(context: Any, obj: Any) -> Node:
    """The scope an object is indexed under (its namespace, or its group when it has none)."""
    return ("ns", obj.namespace) if obj.namespace is not None else ("g", context.group_of(obj))


def rebuild(raw: RawFinding, rules: dict[str, Rule]) -> Finding:
    """A part's finding with the run's rule object."""
    code, message, location, subject, suppression = raw
    rule_ = rules[code]
    return Finding(rule_, message, location, rule_.severity, subject, suppression)
