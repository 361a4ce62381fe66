"""Reading inputs: files, directories and stdin, YAML with positions, bounded against bad input.

Contract:

- :func:`collect` expands the command-line operands into :class:`Input` items (YAML or
  Dockerfile); directories are walked recursively in sorted order, skipping hidden directories,
  ``node_modules`` and Helm chart sources (a directory holding ``Chart.yaml``: its templates are
  not YAML until rendered).
- :func:`read_source` reads one input, refusing files larger than ``max_bytes`` and text that is not
  UTF-8.
- :func:`load_documents` parses a multi-document YAML stream with ruamel.yaml's round-trip loader,
  so every mapping and sequence knows the line and column of its keys and items. Duplicate keys are
  recorded (the last value wins, as in most YAML loaders) instead of raising. A document whose
  aliases expand to more than ``max_nodes`` nodes (a "billion laughs" bomb), that nests too deeply,
  or that is not YAML, becomes an :class:`~lossless.check.model.InputError` with a line number;
  documents read before the error are kept.
- :func:`find_origin` reads where a rendered document came from: the ``# Source:`` comment Helm
  writes before each document, or kustomize's ``config.kubernetes.io/origin`` annotation.
- :class:`OriginMapper` maps a location in rendered output back into that source file when the
  file exists on disk (see its docstring for the heuristic).

Nothing here raises on bad input: errors come back as values.
"""

from __future__ import annotations

import io
import os
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.constructor import RoundTripConstructor
from ruamel.yaml.error import MarkedYAMLError, YAMLError

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
    "read_source",
]

#: Inputs larger than this are refused (a rendered chart of several hundred objects is ~1 MB).
MAX_FILE_BYTES = 16 * 1024 * 1024
#: A document whose aliases expand to more nodes than this is refused (alias bomb).
MAX_NODES = 1_000_000

STDIN = "-"
_SKIP_DIRS = {"node_modules", "__pycache__", "venv"}
_YAML_SUFFIXES = (".yaml", ".yml")
# Helm actions that only an unrendered chart template contains.
_HELM_ACTION = re.compile(
    r"\{\{-?[^}]*(?:\.Values\b|\.Release\b|\.Chart\b|\.Capabilities\b|\binclude\s+\"|"
    r"\btoYaml\b|\btpl\s)"
)
_DOC_BOUNDARY = re.compile(r"^(?:---|\.\.\.)(?:\s|$)")
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


@dataclass
class Source:
    """The text of one input and where it came from (``path`` as shown to the user)."""

    path: str
    text: str
    lines: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.lines = self.text.splitlines()


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


@dataclass
class Document:
    """One YAML document of a source: ``data`` is the round-trip tree (positions via ``.lc``).

    ``start``/``end`` are the 0-based line range the document spans in the source.
    """

    source: Source
    index: int
    data: Any
    start: int
    end: int
    duplicates: list[DuplicateKey] = field(default_factory=list)
    helm_source: str | None = None


class _Constructor(RoundTripConstructor):  # type: ignore[misc]
    """Round-trip constructor that records duplicate keys instead of raising (last one wins)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.duplicates: list[DuplicateKey] = []

    def check_mapping_key(
        self, node: Any, key_node: Any, mapping: Any, key: Any, value: Any
    ) -> bool:
        if key in mapping:
            first = mapping.lc.key(key) if isinstance(mapping, CommentedMap) else (None, None)
            self.duplicates.append(
                DuplicateKey(
                    str(key),
                    key_node.start_mark.line,
                    key_node.start_mark.column,
                    first[0] if first[0] is not None else node.start_mark.line,
                )
            )
        # True: store it like a first occurrence, so the last value (and its position) wins.
        return True


def _yaml() -> YAML:
    yaml = YAML(typ="rt", pure=True)
    yaml.Constructor = _Constructor
    return yaml


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
    source: Source, *, max_nodes: int = MAX_NODES
) -> tuple[list[Document], list[InputError]]:
    """Parse every YAML document of ``source``; see the module docstring for the contract."""
    text = source.text
    unrendered = _unrendered_helm_line(source)
    if unrendered is not None:
        return [], [
            InputError(
                source.path,
                "unrendered Helm template ('{{' ... '}}'): render it first, "
                "e.g. helm template CHART | lossless check -",
                unrendered + 1,
            )
        ]
    boundaries = [i for i, line in enumerate(source.lines) if _DOC_BOUNDARY.match(line)]
    yaml = _yaml()
    documents: list[Document] = []
    errors: list[InputError] = []
    stream = yaml.load_all(io.StringIO(text))
    index = 0
    while True:
        try:
            data = next(stream)
        except StopIteration:
            break
        except MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark is not None else None
            problem = exc.problem or exc.context or "parse error"
            if "{{" in text:
                problem += " (an unrendered Helm template? render it with helm template first)"
            errors.append(InputError(source.path, f"not valid YAML: {problem}", line))
            break
        except RecursionError:
            errors.append(InputError(source.path, "YAML nests too deeply to be a manifest"))
            break
        except (YAMLError, ValueError, TypeError) as exc:
            errors.append(InputError(source.path, f"not valid YAML: {_one_line(exc)}"))
            break
        constructor = yaml.constructor
        duplicates = list(constructor.duplicates)
        constructor.duplicates.clear()
        if data is None or not isinstance(data, CommentedMap | CommentedSeq):
            index += 1
            continue
        try:
            nodes = expanded_size(data, max_nodes)
        except RecursionError:
            nodes = max_nodes + 1
        if nodes > max_nodes:
            errors.append(
                InputError(
                    source.path,
                    f"YAML aliases expand to more than {max_nodes:,} nodes "
                    "(an alias bomb?); document skipped",
                    data.lc.line + 1,
                )
            )
            # A bomb makes every later document suspect too: stop reading this stream.
            break
        start_line = data.lc.line
        start = max((b for b in boundaries if b < start_line), default=-1) + 1
        end = min((b for b in boundaries if b > start_line), default=len(source.lines))
        helm = None
        for i in range(start, start_line):
            match = _HELM_SOURCE.match(source.lines[i].strip())
            if match:
                helm = match.group(1)
        documents.append(Document(source, index, data, start, end, duplicates, helm))
        index += 1
    return documents, errors


def _unrendered_helm_line(source: Source) -> int | None:
    """0-based line of the first Helm action, or ``None`` when the text looks rendered."""
    for number, line in enumerate(source.lines):
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
