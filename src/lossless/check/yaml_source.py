"""Reading inputs: files, directories and stdin; YAML parsed in C with exact positions, bounded.

Contract:

- :func:`collect` expands the command-line operands into :class:`Input` items (YAML or
  Dockerfile); directories are walked recursively in sorted order, skipping hidden directories,
  ``node_modules`` and Helm chart sources (a directory holding ``Chart.yaml``: its templates are
  not YAML until rendered).
- :func:`read_source` reads one input, refusing files larger than ``max_bytes`` and text that is not
  UTF-8.
- :func:`load_documents` parses a multi-document YAML stream with libyaml (PyYAML's C parser,
  event by event) into plain ``dict``/``list``/scalar trees (YAML 1.2 core schema: ``yes`` stays a
  string), and records the position of every key and item in a compact array, so
  :meth:`Document.locate` gives any field's exact line and column. Duplicate keys are recorded
  (the last value and its position win, as in most YAML loaders) instead of raising; merge keys
  (``<<``) are applied. A document whose aliases expand to more than ``max_nodes`` nodes (a
  "billion laughs" bomb), that nests deeper than :data:`MAX_DEPTH`, or that is not YAML, becomes
  an :class:`~lossless.check.model.InputError` with a line number; documents read before the error
  are kept, later ones are not read.
- :func:`load_inputs` reads and parses many inputs, on all cores when there are many (a process
  pool; one big file is split at its ``---`` lines), and returns results in input order, exactly
  as the serial path would.
- :func:`find_origin` reads where a rendered document came from: the ``# Source:`` comment Helm
  writes before each document, or kustomize's ``config.kubernetes.io/origin`` annotation.
- :class:`OriginMapper` maps a location in rendered output back into that source file when the
  file exists on disk (see its docstring for the heuristic).

Nothing here raises on bad input: errors come back as values.
"""

from __future__ import annotations

import bisect
import itertools
import os
import re
import sys
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, overload

import yaml

from lossless.check import _yaml_events
from lossless.check.model import InputError, Location

__all__ = [
    "MAX_FILE_BYTES",
    "MAX_NODES",
    "Document",
    "DuplicateKey",
    "Input",
    "Origin",
    "OriginMapper",
    "Source",
    "collect",
    "display_path",
    "find_origin",
    "is_dockerfile_name",
    "load_documents",
    "load_inputs",
    "read_source",
]

#: Inputs larger than this are refused (a rendered chart of several hundred objects is ~1 MB).
MAX_FILE_BYTES = 16 * 1024 * 1024
#: A document whose aliases expand to more nodes than this is refused (alias bomb).
MAX_NODES = 1_000_000
#: Deeper nesting than this is refused (real manifests nest about 15 levels).
MAX_DEPTH = _yaml_events.MAX_DEPTH

STDIN = "-"
_SKIP_DIRS = {"node_modules", "__pycache__", "venv"}
_YAML_SUFFIXES = (".yaml", ".yml")
# Helm actions that only an unrendered chart template contains.
_HELM_ACTION = re.compile(
    r"\{\{-?[^}]*(?:\.Values\b|\.Release\b|\.Chart\b|\.Capabilities\b|\binclude\s+\"|"
    r"\btoYaml\b|\btpl\s)"
)
_DOC_BOUNDARY = re.compile(r"^(?:---|\.\.\.)(?:\s|$)")
_DOC_BOUNDARY_NL = re.compile(r"\n(?:---|\.\.\.)(?=[ \t\r\n]|\Z)")
_DOC_BOUNDARY_FIRST = re.compile(r"(?:---|\.\.\.)(?:[ \t\r\n]|\Z)")
DOC_START = re.compile(r"^---(?:[ \t].*)?$", re.M)
_HELM_SOURCE = re.compile(r"^#\s*Source:\s*(\S+)\s*$")
KUSTOMIZE_ORIGIN = "config.kubernetes.io/origin"


def is_dockerfile_name(name: str) -> bool:
    """``Dockerfile``, ``Containerfile``, ``*.Dockerfile``, ``Dockerfile.*`` (any case)."""
    lower = name.lower()
    for base in ("dockerfile", "containerfile"):
        if lower == base or lower.endswith("." + base) or lower.startswith(base + "."):
            return True
    return False


@dataclass(frozen=True)
class Input:
    """One thing to read: ``path`` (``-`` for stdin) and its ``kind`` (``yaml``/``dockerfile``)."""

    path: str
    kind: str
    explicit: bool = True


def collect(operands: Sequence[str]) -> tuple[list[Input], list[InputError], list[str]]:
    """Expand operands into inputs; returns ``(inputs, errors, notes)``.

    A missing operand is an error; a Helm chart directory met during a walk is skipped with a note
    (render it first). Each file is listed once even when named twice.
    """
    inputs: list[Input] = []
    errors: list[InputError] = []
    notes: list[str] = []
    seen: set[str] = set()

    def add(item: Input) -> None:
        key = item.path if item.path == STDIN else os.path.realpath(item.path)
        if key not in seen:
            seen.add(key)
            inputs.append(item)

    for operand in operands:
        if operand == STDIN:
            add(Input(STDIN, "yaml"))
            continue
        path = Path(operand)
        if path.is_dir():
            for found in _walk(path, notes):
                add(found)
        elif path.is_file():
            kind = "dockerfile" if is_dockerfile_name(path.name) else "yaml"
            add(Input(operand, kind))
        elif path.exists():
            errors.append(InputError(operand, "not a regular file or directory"))
        else:
            errors.append(InputError(operand, "no such file or directory"))
    return inputs, errors, notes


def _walk(root: Path, notes: list[str]) -> Iterator[Input]:
    for dirpath, dirnames, filenames in os.walk(root):
        current = Path(dirpath)
        if "Chart.yaml" in filenames and "templates" in dirnames:
            notes.append(
                f"skipped Helm chart {current}: render it first "
                f"(helm template {current} | lossless check -)"
            )
            dirnames[:] = []
            continue
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in _SKIP_DIRS)
        for name in sorted(filenames):
            full = str(current / name)
            if is_dockerfile_name(name):
                yield Input(full, "dockerfile", explicit=False)
            elif name.endswith(_YAML_SUFFIXES):
                yield Input(full, "yaml", explicit=False)


#: The text of a file at least this big is not kept once parsed (:meth:`Source.release`).
RELEASE_BYTES = 2 * 1024 * 1024


class Source:
    """The text of one input and where it came from (``path`` as shown to the user).

    The text of a big file may be released once the file is parsed (:meth:`release`): the
    positions are in the documents, and the few uses of the text after that (mapping a finding
    back to a template, a fix) read the file again. When the file changed in the meantime, the
    text reads as empty, so nothing is mapped or edited against a file the check did not see.
    """

    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self._text: str | None = text
        self._digest: int | None = None

    def __repr__(self) -> str:
        return f"Source(path={self.path!r})"

    @property
    def text(self) -> str:
        if self._text is None:
            try:
                size = os.stat(self.path).st_size
            except OSError:
                size = 0
            again = read_source(self.path, max_bytes=size)
            same = isinstance(again, Source) and hash(again.text) == self._digest
            self._text = again.text if isinstance(again, Source) and same else ""
        return self._text

    def release(self) -> None:
        """Forget the text of a file on disk of at least :data:`RELEASE_BYTES` (not stdin)."""
        if self.path == STDIN or self._text is None or len(self._text) < RELEASE_BYTES:
            return
        self._digest = hash(self._text)
        self._text = None
        self.__dict__.pop("lines", None)

    @cached_property
    def lines(self) -> Sequence[str]:
        """The lines of the text (of the whole file: indexes are 0-based line numbers)."""
        return self.text.splitlines()

    def __getstate__(self) -> dict[str, Any]:
        # Sent between processes without the derived line list (rebuilt on first use).
        return {"path": self.path, "_text": self._text, "_digest": self._digest}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


class PieceSource(Source):
    """The source of documents parsed from one piece of a big file (lines ``line_offset``... of
    it): ``text`` is the piece's, and ``lines`` are indexed by line numbers of the whole file
    (lines outside the piece read as empty), which is all that positions inside its documents
    need. Nothing reads the whole file again for it."""

    def __init__(self, path: str, text: str, line_offset: int) -> None:
        super().__init__(path, text)
        self.line_offset = line_offset

    def release(self) -> None:
        """A piece's text is kept: it is what its lines come from."""

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "line_offset": self.line_offset}

    @cached_property
    def lines(self) -> Sequence[str]:
        return _LineWindow(self.text.splitlines(), self.line_offset)


class _LineWindow(Sequence[str]):
    """Lines of a piece addressed by their line numbers in the whole file."""

    def __init__(self, lines: list[str], offset: int) -> None:
        self._lines = lines
        self._offset = offset

    def __len__(self) -> int:
        return self._offset + len(self._lines)

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[str]: ...

    def __getitem__(self, index: int | slice) -> str | Sequence[str]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        inside = index - self._offset
        return self._lines[inside] if inside >= 0 else ""


def read_source(path: str, *, max_bytes: int = MAX_FILE_BYTES) -> Source | InputError:
    """Read ``path`` (``-``: stdin) as UTF-8 text, refusing more than ``max_bytes`` bytes."""
    limit = f"{max_bytes / 1024 / 1024:.0f} MiB"
    try:
        if path == STDIN:
            data = sys.stdin.buffer.read(max_bytes + 1)
        else:
            size = os.stat(path).st_size
            if size > max_bytes:
                return InputError(
                    path,
                    f"file is {size / 1024 / 1024:.1f} MiB, over the {limit} limit "
                    "(raise it with --max-file-size)",
                )
            with open(path, "rb") as fh:
                data = fh.read(max_bytes + 1)
    except OSError as exc:
        return InputError(path, f"cannot read: {exc.strerror or exc}")
    if len(data) > max_bytes:
        return InputError(path, f"input is over the {limit} limit (raise it with --max-file-size)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return InputError(path, f"not UTF-8 text (byte {exc.start})")
    if "\x00" in text:
        return InputError(path, "binary file (contains NUL bytes)")
    return Source(path, text)


@dataclass(frozen=True)
class DuplicateKey:
    """A key repeated in one mapping: 0-based positions of the repeat and of the first one."""

    key: str
    line: int
    column: int
    first_line: int


@dataclass(frozen=True)
class Origin:
    """Where a rendered document came from: ``kind`` is ``helm`` or ``kustomize``."""

    path: str
    kind: str


PathPart = str | int


@dataclass
class Document:
    """One YAML document of a source: ``data`` is a plain tree, positions via :meth:`locate`.

    ``start``/``end`` are the 0-based line range the document spans in the source.
    """

    source: Source
    index: int
    data: Any
    start: int
    end: int
    duplicates: list[DuplicateKey] = field(default_factory=list)
    helm_source: str | None = None
    positions: array[int] = field(default_factory=lambda: array("q"), repr=False)
    #: 0-based lines of mapping keys that are mappings or sequences (``name: {{ app }}``)
    complex_keys: list[int] = field(default_factory=list)

    def locate(self, prefix: Sequence[PathPart], path: Sequence[PathPart]) -> tuple[int, int, int]:
        """Where the deepest existing step of ``path`` (below the node at ``prefix``) is written.

        Returns 0-based ``(line, column, length)``: a key's position and length, an item's
        position and 1, or the ``prefix`` node's own start and 0 when not even the first step
        exists. ``prefix`` must exist (it is an object found in this document).
        """
        positions = self.positions
        if not positions:
            return self.start, 0, 0
        sizes: dict[int, int] | None = self.__dict__.get("_sizes")
        if sizes is None:
            sizes = self.__dict__["_sizes"] = {}
        node, slot = self.data, 0
        for part in prefix:
            found = _step(node, slot, part, sizes)
            if found is None:
                break
            node, slot = found[0], found[2]
        line, column = _yaml_events.unpack(positions[slot])
        length = 0
        for part in path:
            found = _step(node, slot, part, sizes)
            if found is None:
                break
            node, where, slot = found
            line, column = _yaml_events.unpack(positions[where])
            length = len(part) if isinstance(part, str) else 1
        return line, column, length

    def __getstate__(self) -> dict[str, Any]:
        # The size cache is keyed by object ids, which mean nothing in another process.
        state = self.__dict__.copy()
        state.pop("_sizes", None)
        return state


def _step(
    node: Any, slot: int, part: PathPart, sizes: dict[int, int]
) -> tuple[Any, int, int] | None:
    """One step down from the node at ``slot``: ``(child, slot of its key or item, its slot)``.

    ``sizes`` caches the slot count of the sibling subtrees skipped (by ``id``; the document
    keeps them alive), so locating many fields of one object walks each sibling once.
    """
    slot += 1
    if isinstance(part, int):
        if type(node) is not list or not 0 <= part < len(node):
            return None
        for item in node[:part]:
            slot += _cached_slots(item, sizes)
        return node[part], slot, slot
    if type(node) is not dict or part not in node:
        return None
    for key, value in node.items():
        if key == part:
            return value, slot, slot + 1
        slot += 1 + _cached_slots(value, sizes)
    return None  # pragma: no cover - part is in node


def _cached_slots(node: Any, sizes: dict[int, int]) -> int:
    if type(node) is not dict and type(node) is not list:
        return 1
    known = sizes.get(id(node))
    if known is None:
        known = sizes[id(node)] = _slots(node)
    return known


def _slots(node: Any) -> int:
    """How many position slots a subtree takes (see ``_yaml_events``)."""
    if type(node) is dict:
        return 1 + sum(1 + _slots(v) for v in node.values())
    if type(node) is list:
        return 1 + sum(_slots(v) for v in node)
    return 1


def expanded_size(data: Any, limit: int) -> int:
    """Number of nodes ``data`` would have with every alias expanded, stopping past ``limit``.

    Shared subtrees (what an alias yields) are counted once per reference but computed once, so
    this is linear in the real number of nodes even for an alias bomb.
    """
    memo: dict[int, int] = {}

    def size(obj: Any) -> int:
        if isinstance(obj, dict):
            children: Any = list(obj.keys()) + list(obj.values())
        elif isinstance(obj, list):
            children = obj
        else:
            return 1
        known = memo.get(id(obj))
        if known is not None:
            return known
        memo[id(obj)] = limit + 1  # a cycle counts as "too big"
        total = 1
        for child in children:
            total += size(child)
            if total > limit:
                break
        memo[id(obj)] = total
        return total

    return size(data)


def load_documents(
    source: Source,
    *,
    max_nodes: int = MAX_NODES,
    slim: frozenset[str] = frozenset(),
    file: str | None = None,
) -> tuple[list[Document], list[InputError]]:
    """Parse every YAML document of ``source``; see the module docstring for the contract.

    A document whose top-level ``kind`` is in ``slim`` keeps only its ``apiVersion``, ``kind``
    and ``metadata`` (with their positions): kinds no rule reads the body of are not held whole
    (a CRD's schema, a ConfigMap's data). Duplicate keys anywhere in it are still reported.

    ``file``: the file ``source`` was just read from. A big ASCII text is then parsed from the
    file (libyaml reads it in pieces) instead of from the whole UTF-8 copy of the text that
    PyYAML would make, unless the file's size no longer matches the text.
    """
    unrendered = unrendered_helm_line(source.text)
    if unrendered is not None:
        return [], [unrendered_error(source.path, unrendered)]
    text = source.text
    if file is not None and (len(text) < RELEASE_BYTES or not text.isascii()):
        file = None
    documents, errors, _, _ = _parse_chunk(source, text, 0, 0, max_nodes, slim, file)
    return documents, errors


def unrendered_error(path: str, line: int) -> InputError:
    return InputError(
        path,
        "unrendered Helm template ('{{' ... '}}'): render it first, "
        "e.g. helm template CHART | lossless check -",
        line + 1,
    )


def _parse_chunk(
    source: Source,
    text: str,
    line_offset: int,
    index: int,
    max_nodes: int,
    slim: frozenset[str] = frozenset(),
    file: str | None = None,
) -> tuple[list[Document], list[InputError], bool, int]:
    """Documents of ``text`` (lines ``line_offset``... of ``source``), numbered from ``index``;
    parsed from ``file`` instead when it holds exactly ``text`` (ASCII: as many bytes).

    Also returns whether the stream stopped early on an error (later text is not trusted) and
    the index after the last document read (empty documents count).
    """
    documents: list[Document] = []
    errors: list[InputError] = []
    raws: list[_yaml_events.RawDocument] = []
    failed = False
    try:
        raws = _parse(text, file, line_offset, slim)
    except _yaml_events.TooDeep as exc:
        errors.append(
            InputError(source.path, "YAML nests too deeply to be a manifest", exc.line + 1)
        )
        failed = True
        raws = _before(text, exc.line - line_offset, line_offset)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 + line_offset if mark is not None else None
        problem = exc.problem or exc.context or "parse error"
        if "{{" in text:
            problem += " (an unrendered Helm template? render it with helm template first)"
        errors.append(InputError(source.path, f"not valid YAML: {problem}", line))
        failed = True
        # Keep the documents before the error: parse the text up to the failing document.
        if line is not None:
            raws = _before(text, line - 1 - line_offset, line_offset)
    except (yaml.YAMLError, ValueError, TypeError, RecursionError) as exc:
        errors.append(InputError(source.path, f"not valid YAML: {_one_line(exc)}"))
        failed = True
    boundaries, line_count = _boundaries(text)
    # Only Helm output has '# Source:' comments; a big file need not be split into lines.
    lines = text.splitlines() if "# Source:" in text else []
    for raw in raws:
        data = raw.data
        if not isinstance(data, dict | list):
            index += 1
            continue
        start_line = (raw.start >> 32) - line_offset
        if raw.shared and (not raw.positions or expanded_size(data, max_nodes) > max_nodes):
            errors.append(_bomb(source.path, max_nodes, start_line + line_offset + 1))
            # A bomb makes every later document suspect too: stop reading this stream.
            failed = True
            break
        before = bisect.bisect_left(boundaries, start_line)
        start = boundaries[before - 1] + 1 if before else 0
        after = bisect.bisect_right(boundaries, start_line)
        end = boundaries[after] if after < len(boundaries) else line_count
        helm = None
        for i in range(start, min(start_line, len(lines))):
            match = _HELM_SOURCE.match(lines[i].strip())
            if match:
                helm = match.group(1)
        duplicates = [DuplicateKey(*d) for d in raw.duplicates]
        documents.append(
            Document(
                source,
                index,
                data,
                start + line_offset,
                end + line_offset,
                duplicates,
                helm,
                raw.positions,
                raw.complex_keys,
            )
        )
        index += 1
    return documents, errors, failed, index


def _parse(
    text: str, file: str | None, line_offset: int, slim: frozenset[str]
) -> list[_yaml_events.RawDocument]:
    if file is not None:
        try:
            handle = open(file, "rb")  # noqa: SIM115 - closed below
        except OSError:
            file = None
    if file is None:
        return _yaml_events.parse_stream(text, line_offset, slim)
    with handle:
        bom = 3 if handle.read(3) == b"\xef\xbb\xbf" else 0
        if os.fstat(handle.fileno()).st_size != len(text) + bom:
            return _yaml_events.parse_stream(text, line_offset, slim)  # changed since read
        handle.seek(bom)
        return _yaml_events.parse_stream(handle, line_offset, slim)


def _boundaries(text: str) -> tuple[list[int], int]:
    """0-based numbers of the ``---``/``...`` lines of ``text``, and its number of lines."""
    boundaries: list[int] = [0] if _DOC_BOUNDARY_FIRST.match(text) else []
    line, last = 0, 0
    # "\n" first: a literal prefix the regex engine finds fast (5x a multi-line "^" on 50 MiB).
    for match in _DOC_BOUNDARY_NL.finditer(text):
        line += text.count("\n", last, match.end())
        last = match.end()
        boundaries.append(line)
    total = text.count("\n") + (0 if text.endswith("\n") or not text else 1)
    return boundaries, total


def _bomb(path: str, max_nodes: int, line: int | None) -> InputError:
    return InputError(
        path,
        f"YAML aliases expand to more than {max_nodes:,} nodes (an alias bomb?); document skipped",
        line,
    )


def _before(text: str, error_line: int, line_offset: int) -> list[_yaml_events.RawDocument]:
    """The documents that end before ``error_line`` (0-based, in ``text``), parsed again."""
    cut = 0
    for match in DOC_START.finditer(text):
        if text.count("\n", 0, match.start()) >= error_line:
            break
        cut = match.start()
    if cut == 0:
        return []
    try:
        return _yaml_events.parse_stream(text[:cut], line_offset)
    except (yaml.YAMLError, ValueError):
        return []


# -- many inputs, many cores ---------------------------------------------------------------------

#: A YAML file larger than this is parsed in pieces (split at ``---`` lines) when in parallel.
CHUNK_BYTES = 2 * 1024 * 1024
#: A big file is cut into this many pieces per core: each piece's parsed documents are pickled
#: back whole, so smaller pieces keep less in flight in the parent (its peak memory).
PIECES_PER_JOB = 4
#: Below this many bytes of YAML in total, a process pool costs more than it saves.
PARALLEL_MIN_BYTES = 512 * 1024


@dataclass
class Loaded:
    """One input read and parsed: ``source`` (or the error that stopped reading it), documents
    and parse errors. Dockerfiles are read but not parsed here."""

    input: Input
    source: Source | InputError
    documents: list[Document] = field(default_factory=list)
    errors: list[InputError] = field(default_factory=list)


def default_jobs() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def load_inputs(
    inputs: Sequence[Input],
    *,
    max_bytes: int = MAX_FILE_BYTES,
    max_nodes: int = MAX_NODES,
    jobs: int | None = None,
    slim: frozenset[str] = frozenset(),
) -> list[Loaded]:
    """Read and parse ``inputs``, in input order; see the module docstring.

    With ``jobs`` > 1 (default: every core) and enough YAML to be worth it, files (and pieces of
    big files) are parsed in a process pool; the results are the same as the serial path's,
    errors included. ``slim``: see :func:`load_documents`.
    """
    jobs = default_jobs() if jobs is None else max(1, jobs)
    sizes = [file_size(item) for item in inputs]
    if jobs == 1 or sum(sizes) < PARALLEL_MIN_BYTES:
        return [load_one(item, max_bytes, max_nodes, slim) for item in inputs]
    return _load_parallel(inputs, sizes, jobs, max_bytes, max_nodes, slim)


def file_size(item: Input) -> int:
    """The size of a YAML input on disk (0 for stdin, Dockerfiles and unreadable files)."""
    if item.kind != "yaml" or item.path == STDIN:
        return 0
    try:
        return os.stat(item.path).st_size
    except OSError:
        return 0


def load_one(
    item: Input, max_bytes: int, max_nodes: int, slim: frozenset[str] = frozenset()
) -> Loaded:
    """Read and parse one input (see :func:`load_documents`)."""
    source = read_source(item.path, max_bytes=max_bytes)
    if isinstance(source, InputError) or item.kind != "yaml":
        return Loaded(item, source)
    file = None if item.path == STDIN else item.path
    documents, errors = load_documents(source, max_nodes=max_nodes, slim=slim, file=file)
    return Loaded(item, source, documents, errors)


def parse_piece(
    source: Source, text: str, line_offset: int, max_nodes: int, slim: frozenset[str]
) -> tuple[list[Document], list[InputError], bool, int]:
    """The documents of ``text``, a piece of ``source`` from line ``line_offset`` (positions
    and errors name lines of the whole file); also whether it stopped on an error and how many
    documents (empty ones included) it holds."""
    return _parse_chunk(source, text, line_offset, 0, max_nodes, slim)


def _load_parallel(
    inputs: Sequence[Input],
    sizes: list[int],
    jobs: int,
    max_bytes: int,
    max_nodes: int,
    slim: frozenset[str],
) -> list[Loaded]:
    import multiprocessing
    from concurrent.futures import Future, ProcessPoolExecutor

    results: list[Loaded | None] = [None] * len(inputs)
    pending: list[tuple[int, Future[Any]]] = []
    chunked: dict[int, tuple[Source, list[Future[Any]]]] = {}
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=_worker_init) as pool:
        for i, item in enumerate(inputs):
            if item.kind != "yaml" or item.path == STDIN:
                results[i] = load_one(item, max_bytes, max_nodes, slim)
            elif sizes[i] > CHUNK_BYTES:
                loaded = _load_split(item, pool, jobs, max_bytes, max_nodes, slim)
                if isinstance(loaded, Loaded):
                    results[i] = loaded
                else:
                    chunked[i] = loaded
            else:
                pending.append((i, pool.submit(load_one, item, max_bytes, max_nodes, slim)))
        for i, future in pending:
            results[i] = future.result()
        for i, (source, futures) in chunked.items():
            results[i] = _join_chunks(inputs[i], source, futures)
    return [r for r in results if r is not None]


def _load_split(
    item: Input, pool: Any, jobs: int, max_bytes: int, max_nodes: int, slim: frozenset[str]
) -> Loaded | tuple[Source, list[Any]]:
    """Submit one big file in ``jobs`` times :data:`PIECES_PER_JOB` pieces (at least
    :data:`CHUNK_BYTES` each) cut at ``---`` lines. Each piece's strings are copied once more in
    the parent, but fewer, bigger pieces keep more pickled bytes in flight: 4 per core held the
    parent's peak lowest on a 50 MiB file (421 MiB with 1 piece per core, 373 MiB with 4)."""
    source = read_source(item.path, max_bytes=max_bytes)
    if isinstance(source, InputError):
        return Loaded(item, source)
    unrendered = unrendered_helm_line(source.text)
    if unrendered is not None:
        return Loaded(item, source, [], [unrendered_error(source.path, unrendered)])
    text = source.text
    source.release()  # workers read their pieces from the file; `text` goes with this call
    piece_size = max(CHUNK_BYTES, -(-len(text) // (jobs * PIECES_PER_JOB)))
    cuts = [0]
    for match in DOC_START.finditer(text):
        if match.start() - cuts[-1] >= piece_size:
            cuts.append(match.start())
    cuts.append(len(text))
    # Workers read their piece from the file (no copy of the text goes through the pool); the
    # text was decoded without its BOM, so byte offsets count it back in.
    try:
        with open(item.path, "rb") as fh:
            bom = 3 if fh.read(3) == b"\xef\xbb\xbf" else 0
    except OSError as exc:
        return Loaded(item, InputError(item.path, f"cannot read: {exc.strerror or exc}"))
    ascii_only = text.isascii()
    futures = []
    line = 0
    for begin, stop in itertools.pairwise(cuts):
        if ascii_only:
            first, last = begin + bom, stop + bom
        else:
            first = bom + len(text[:begin].encode())
            last = first + len(text[begin:stop].encode())
        futures.append(
            pool.submit(_load_range, source.path, item.path, first, last, line, max_nodes, slim)
        )
        line += text.count("\n", begin, stop)
    return source, futures


def _load_range(
    shown: str,
    path: str,
    first: int,
    last: int,
    line_offset: int,
    max_nodes: int,
    slim: frozenset[str],
) -> tuple[list[Document], list[InputError], bool, int]:
    """Bytes ``first``..``last`` of a big file, read and parsed in a worker."""
    with open(path, "rb") as fh:
        fh.seek(first)
        piece = fh.read(last - first).decode("utf-8")
    return parse_piece(Source(shown, ""), piece, line_offset, max_nodes, slim)


def _join_chunks(item: Input, source: Source, futures: list[Any]) -> Loaded:
    loaded = Loaded(item, source)
    index = 0
    for future in futures:
        documents, errors, failed, count = future.result()
        for document in documents:
            document.source = source
            document.index += index
        loaded.documents.extend(documents)
        loaded.errors.extend(errors)
        index += count
        if failed:
            break
    return loaded


def _worker_init() -> None:
    # Ctrl-C goes to the whole process group: the parent stops the pool, workers do not print.
    import gc
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    gc.disable()  # a worker only parses: acyclic trees (see engine.gc_paused)


def unrendered_helm_line(text: str) -> int | None:
    """0-based line of the first Helm action, or ``None`` when the text looks rendered."""
    if "{{" not in text:
        return None
    for number, line in enumerate(text.splitlines()):
        stripped = line.lstrip()
        if stripped.startswith("#") or "{{" not in line:
            continue
        if _HELM_ACTION.search(line):
            return number
    return None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def find_origin(document: Document, metadata: Any) -> Origin | None:
    """The Helm template (``# Source:``) or kustomize origin path of an object, if recorded."""
    annotations = metadata.get("annotations") if isinstance(metadata, dict) else None
    if isinstance(annotations, dict):
        origin = annotations.get(KUSTOMIZE_ORIGIN)
        if isinstance(origin, str):
            for line in origin.splitlines():
                key, _, value = line.partition(":")
                if key.strip() == "path" and value.strip():
                    return Origin(value.strip().strip("'\""), "kustomize")
    if document.helm_source:
        return Origin(document.helm_source, "helm")
    return None


class OriginMapper:
    """Maps a rendered location back to its Helm template or kustomize source file.

    The file is looked up relative to the working directory, the rendered file's directory and its
    ancestors, and each ``roots`` entry. When it is found, the rendered line's key (``name:``,
    ``- name:``, ``readinessProbe:``) is matched to the same occurrence of that key in the source
    file (templates and kustomize's re-serialization keep keys but not line numbers). When the file
    is not found or the key cannot be matched, the location names the source path with the line
    counted from the start of the rendered document (approximate, and said so in the docs). The
    rendered position is always kept in ``Location.rendered``.
    """

    def __init__(self, roots: Sequence[str] = ()) -> None:
        self._roots = [Path(r) for r in roots]
        self._files: dict[tuple[str, str], list[str] | None] = {}

    def _source_lines(self, origin: Origin, rendered_path: str) -> tuple[str, list[str] | None]:
        cache_key = (origin.path, rendered_path)
        candidates: list[Path] = [Path(origin.path)]
        if rendered_path != STDIN:
            parent = Path(rendered_path).resolve().parent
            candidates += [p / origin.path for p in [parent, *parent.parents][:6]]
        candidates += [root / origin.path for root in self._roots]
        for candidate in candidates:
            if candidate.is_file():
                shown = display_path(candidate)
                if cache_key not in self._files:
                    try:
                        text = candidate.read_text(encoding="utf-8", errors="replace")
                        self._files[cache_key] = text.splitlines()
                    except OSError:
                        self._files[cache_key] = None
                return shown, self._files[cache_key]
        return origin.path, None

    def map(self, location: Location, document: Document, origin: Origin) -> Location:
        shown, lines = self._source_lines(origin, document.source.path)
        rendered_lines = document.source.lines
        row = location.line - 1
        relative = max(1, row - document.start + 1)
        if document.helm_source is not None and origin.kind == "helm":
            # The '# Source:' line itself is not part of the template.
            comment_rows = [
                i
                for i in range(document.start, min(row, len(rendered_lines)))
                if _HELM_SOURCE.match(rendered_lines[i].strip())
            ]
            if comment_rows:
                relative = max(1, row - comment_rows[-1])
        line, column = relative, location.column
        if lines is not None and 0 <= row < len(rendered_lines):
            key = _line_key(rendered_lines[row])
            if key:
                occurrence = sum(
                    1 for i in range(document.start, row) if _line_key(rendered_lines[i]) == key
                )
                matches = [i for i, text in enumerate(lines) if _line_key(text) == key]
                if matches:
                    target = matches[min(occurrence, len(matches) - 1)]
                    line = target + 1
                    found = lines[target].find(key.rstrip(":"))
                    if found < 0:
                        found = len(lines[target]) - len(lines[target].lstrip())
                    column = found + 1
        end_column = None
        if location.end_column is not None:
            end_column = column + (location.end_column - location.column)
        return Location(shown, line, column, line, end_column, rendered=location)


def _line_key(text: str) -> str:
    """``'  - name: web'`` → ``'name:'``; ``'  port: 80'`` → ``'port:'``; else the stripped text."""
    stripped = text.strip()
    if stripped.startswith("- "):
        stripped = stripped[2:].lstrip()
    key, sep, _ = stripped.partition(":")
    if sep and key and " " not in key.strip("\"'"):
        return key.strip("\"'") + ":"
    return stripped


def display_path(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:  # pragma: no cover - another drive on Windows
        return str(path)
