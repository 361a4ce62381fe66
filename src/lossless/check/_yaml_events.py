"""YAML text to plain Python trees with the position of every key and item, parsed by libyaml.

Contract of :func:`parse_stream`:

- The text is tokenized and parsed by libyaml through PyYAML's C extension (``yaml._yaml.CParser``),
  and only the parser's events are used: no PyYAML resolver or constructor runs, so building a
  tree costs one Python step per event. Scalars follow the YAML 1.2 core schema (``null``/``~``,
  ``true``/``false``, decimal, ``0o`` and ``0x`` integers, floats; everything else, ``yes`` and
  timestamps included, is a string), as ruamel.yaml and the Kubernetes API server's JSON view do.
  Explicit ``!!str``/``!!int``/``!!float``/``!!bool``/``!!null`` tags are honoured; other tags
  keep the scalar's text.
- Each document yields a :class:`RawDocument`: the tree (``dict``/``list``/scalars), its
  positions and the duplicate keys met. Positions are packed ``line << 32 | column`` (both
  0-based) in one ``array('q')`` laid out in pre-order of the final
  tree: a mapping contributes its start, then per entry the key's position and the value's
  slots; a sequence its start, then each item's slots; a scalar its start. Walking a tree and its
  array together (see ``lossless.check.yaml_source.Document.locate``) gives any key or item.
- Duplicate keys: the last value wins and keeps the first key's place in the mapping, with the
  last key's position; each repeat is reported as ``(key, line, column, first_line)``.
- Anchors and aliases share one object (nothing is copied); merge keys (``<<``) are applied, the
  mapping's own keys winning over merged ones and earlier merged maps over later ones. Streams
  with aliases, merge keys, duplicate or complex keys take a slower path that records positions
  per object and lays the array out after the document is complete; the result is the same.
- Errors are raised: :class:`yaml.YAMLError` (with marks) for text that is not YAML,
  :class:`TooDeep` beyond :data:`MAX_DEPTH` levels. Line numbers in documents, duplicates and
  errors are shifted by ``line_offset`` (a chunk of a larger file).
"""

from __future__ import annotations

import re
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import yaml
from yaml import events as ev
from yaml._yaml import CParser

__all__ = ["MAX_DEPTH", "RawDocument", "TooDeep", "pack", "parse_stream", "unpack"]

#: Deeper nesting than this is refused (a real manifest nests about 15 levels).
MAX_DEPTH = 200

_COLUMN_BITS = 32
_COLUMN_MAX = (1 << _COLUMN_BITS) - 1

_MISSING: Any = object()
_SPECIAL: dict[str, Any] = {
    "": None,
    "~": None,
    "null": None,
    "Null": None,
    "NULL": None,
    "true": True,
    "True": True,
    "TRUE": True,
    "false": False,
    "False": False,
    "FALSE": False,
    ".inf": float("inf"),
    ".Inf": float("inf"),
    ".INF": float("inf"),
    "+.inf": float("inf"),
    "+.Inf": float("inf"),
    "+.INF": float("inf"),
    "-.inf": float("-inf"),
    "-.Inf": float("-inf"),
    "-.INF": float("-inf"),
    ".nan": float("nan"),
    ".NaN": float("nan"),
    ".NAN": float("nan"),
}
_INT = re.compile(r"[-+]?[0-9]+")
_INT_BASE = re.compile(r"0o[0-7]+|0x[0-9a-fA-F]+")
_FLOAT = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?")
_NUMERIC_START = frozenset("0123456789+-.")
_TAG = "tag:yaml.org,2002:"
_MERGE = "<<"


class TooDeep(ValueError):
    """The stream nests deeper than :data:`MAX_DEPTH` (``line`` is 0-based)."""

    def __init__(self, line: int) -> None:
        super().__init__(f"YAML nests deeper than {MAX_DEPTH} levels")
        self.line = line


class _Irregular(Exception):
    """Aliases, merge keys, duplicate or complex keys: take the per-object path."""


@dataclass
class RawDocument:
    """One parsed document: ``data``, packed ``positions`` and the duplicate keys met."""

    data: Any
    positions: array[int]  # empty for a shared tree too big to lay out (an alias bomb)
    start: int = 0  # packed position of the root node
    duplicates: list[tuple[str, int, int, int]] = field(default_factory=list)
    shared: bool = False  # aliases made some objects appear more than once
    #: 0-based lines of mapping keys that are themselves mappings or sequences (kept as text)
    complex_keys: list[int] = field(default_factory=list)


def pack(line: int, column: int) -> int:
    return line << _COLUMN_BITS | column


def unpack(packed: int) -> tuple[int, int]:
    return packed >> _COLUMN_BITS, packed & _COLUMN_MAX


def _plain(value: str) -> Any:
    """A plain scalar's value under the YAML 1.2 core schema."""
    special = _SPECIAL.get(value, _MISSING)
    if special is not _MISSING:
        return special
    if value[0] in _NUMERIC_START:
        if _INT.fullmatch(value):
            return int(value)
        if _FLOAT.fullmatch(value):
            return float(value)
        if _INT_BASE.fullmatch(value):
            return int(value, 0)
    return value


def _tagged(value: str, tag: str) -> Any:
    name = tag[len(_TAG) :] if tag.startswith(_TAG) else ""
    try:
        if name == "int":
            return int(value, 0) if _INT_BASE.fullmatch(value) else int(value)
        if name == "float":
            return float(value)
    except ValueError:
        return value
    if name == "bool":
        return _SPECIAL.get(value, value)
    if name == "null":
        return None
    return value


def _scalar(event: Any, intern: Callable[[str, str], str]) -> Any:
    value: str = event.value
    tag = event.tag
    if tag is not None and tag != "!":
        return _tagged(value, tag)
    if not event.style and tag is None:
        result = _plain(value)
        if type(result) is not str:
            return result
    # Keys and values repeat across objects: share one string object.
    return intern(value, value)


def parse_stream(
    text: str | BinaryIO, line_offset: int = 0, slim: frozenset[str] = frozenset()
) -> list[RawDocument]:
    """Every document of ``text`` (or of a binary file, read from its current position); see
    the module docstring (raises on bad input).

    A document (a mapping) whose ``kind`` is in ``slim`` keeps only :data:`SLIM_KEEP`, with
    their positions, as soon as it is complete (see :func:`slimmed`).
    """
    start = 0 if isinstance(text, str) else text.tell()
    try:
        return _fast(text, line_offset, slim)
    except _Irregular:
        if not isinstance(text, str):
            text.seek(start)
        return _careful(text, line_offset, slim)


#: The keys a slimmed document keeps.
SLIM_KEEP = frozenset({"apiVersion", "kind", "metadata"})


def slimmed(root: dict[Any, Any], positions: array[int]) -> tuple[dict[Any, Any], array[int]]:
    """``root`` with only its :data:`SLIM_KEEP` keys, and the matching position array (the
    kept entries' slots copied in order; see the module docstring for the layout)."""
    kept: dict[Any, Any] = {}
    out: array[int] = positions[:1]
    slot = 1
    for key, value in root.items():
        size = 1 + _slot_count(value)
        if key in SLIM_KEEP:
            kept[key] = value
            out.extend(positions[slot : slot + size])
        slot += size
    return kept, out


def _slot_count(node: Any) -> int:
    if type(node) is dict:
        return 1 + sum(1 + _slot_count(v) for v in node.values())
    if type(node) is list:
        return 1 + sum(_slot_count(v) for v in node)
    return 1


def _fast(text: str | BinaryIO, line_offset: int, slim: frozenset[str]) -> list[RawDocument]:
    """Trees whose event order is their pre-order: positions are appended as events arrive."""
    parser = CParser(text)
    get: Callable[[], Any] = parser.get_event
    cache: dict[str, str] = {}
    intern = cache.setdefault
    scalar_event, alias_event = ev.ScalarEvent, ev.AliasEvent
    map_start, seq_start = ev.MappingStartEvent, ev.SequenceStartEvent
    map_end, seq_end = ev.MappingEndEvent, ev.SequenceEndEvent
    doc_end, stream_end = ev.DocumentEndEvent, ev.StreamEndEvent
    documents: list[RawDocument] = []
    positions: array[int] = array("q")
    append = positions.append
    stack: list[Any] = []
    current: Any = None  # the open container (dict or list), None at the document level
    is_map = False
    key: Any = _MISSING  # pending key of the open mapping
    root: Any = None
    shift = line_offset << _COLUMN_BITS
    special_get = _SPECIAL.get
    numeric = _NUMERIC_START
    while True:
        event = get()
        kind = type(event)
        if kind is scalar_event:
            mark = event.start_mark
            append(shift + (mark.line << 32) + mark.column)
            value = event.value
            if event.tag is not None:
                value = _scalar(event, intern)
            elif event.style:
                value = intern(value, value)
            else:
                special = special_get(value, _MISSING)
                if special is not _MISSING:
                    value = special
                elif value[0] in numeric:
                    value = _plain(value)
                else:
                    value = intern(value, value)
            if is_map:
                if key is _MISSING:
                    if value in current or (value == _MERGE and not event.style):
                        raise _Irregular
                    key = value
                    continue
                current[key] = value
                key = _MISSING
            elif current is not None:
                current.append(value)
            else:
                root = value
        elif kind is map_start or kind is seq_start:
            if is_map and key is _MISSING:
                raise _Irregular  # a complex (non-scalar) key
            mark = event.start_mark
            append(shift + (mark.line << 32) + mark.column)
            node: Any = {} if kind is map_start else []
            if is_map:
                current[key] = node
                key = _MISSING
            elif current is not None:
                current.append(node)
            else:
                root = node
            stack.append(current)
            if len(stack) > MAX_DEPTH:
                raise TooDeep(mark.line + line_offset)
            current = node
            is_map = kind is map_start
        elif kind is map_end or kind is seq_end:
            current = stack.pop()
            is_map = type(current) is dict
        elif kind is alias_event:
            raise _Irregular
        elif kind is doc_end:
            if slim and type(root) is dict and root.get("kind") in slim and positions:
                root, positions = slimmed(root, positions)
            documents.append(RawDocument(root, positions, positions[0] if positions else 0))
            positions = array("q")
            append = positions.append
            root = None
        elif kind is stream_end:
            return documents


class _Frame:
    __slots__ = ("anchor", "explicit", "is_map", "key", "key_pos", "merges", "node")

    def __init__(self, node: Any, anchor: str | None) -> None:
        self.node = node
        self.is_map = type(node) is dict
        self.key: Any = _MISSING
        self.key_pos = 0
        self.merges: list[dict[Any, Any]] = []
        self.explicit: set[Any] = set()
        self.anchor = anchor


def _careful(text: str | BinaryIO, line_offset: int, slim: frozenset[str]) -> list[RawDocument]:
    """Any stream: positions recorded per object, laid out in pre-order once a document ends."""
    parser = CParser(text)
    cache: dict[str, str] = {}
    intern = cache.setdefault
    documents: list[RawDocument] = []
    shift = line_offset << _COLUMN_BITS
    starts: dict[int, int] = {}  # id(container) -> packed start
    keys: dict[int, dict[Any, int]] = {}  # id(mapping) -> key -> packed key position
    items: dict[int, list[int]] = {}  # id(sequence) -> packed item positions
    anchors: dict[str, Any] = {}
    anchor_pos: dict[str, int] = {}
    duplicates: list[tuple[str, int, int, int]] = []
    complex_keys: list[int] = []
    stack: list[_Frame] = []
    root: Any = None
    root_pos = 0
    shared = False

    def place(value: Any, packed: int) -> None:
        nonlocal root, root_pos
        if not stack:
            root, root_pos = value, packed
            return
        frame = stack[-1]
        if not frame.is_map:
            frame.node.append(value)
            items[id(frame.node)].append(packed)
            return
        if frame.key is _MISSING:
            if isinstance(value, dict | list):
                value = repr(value)  # a complex key: kept as text, never looked up by rules
                complex_keys.append(packed >> _COLUMN_BITS)
            frame.key, frame.key_pos = value, packed
            return
        key, mapping = frame.key, frame.node
        frame.key = _MISSING
        if key == _MERGE:
            sources = value if isinstance(value, list) else [value]
            frame.merges.extend(s for s in sources if isinstance(s, dict))
            return
        if key in frame.explicit:
            first = keys[id(mapping)][key]
            line, column = unpack(frame.key_pos)
            duplicates.append((str(key), line, column, first >> _COLUMN_BITS))
        frame.explicit.add(key)
        mapping[key] = value
        keys[id(mapping)][key] = frame.key_pos

    while True:
        event: Any = parser.get_event()
        kind = type(event)
        if kind is ev.ScalarEvent:
            mark = event.start_mark
            packed = shift + pack(mark.line, mark.column)
            value: Any = _scalar(event, intern)
            if event.anchor is not None:
                anchors[event.anchor] = value
                anchor_pos[event.anchor] = packed
            place(value, packed)
        elif kind is ev.MappingStartEvent or kind is ev.SequenceStartEvent:
            mark = event.start_mark
            packed = shift + pack(mark.line, mark.column)
            node: Any = {} if kind is ev.MappingStartEvent else []
            starts[id(node)] = packed
            if kind is ev.MappingStartEvent:
                keys[id(node)] = {}
            else:
                items[id(node)] = []
            frame = _Frame(node, event.anchor)
            if event.anchor is not None:
                anchors[event.anchor] = node
                anchor_pos[event.anchor] = packed
            place(node, packed)
            stack.append(frame)
            if len(stack) > MAX_DEPTH:
                raise TooDeep(mark.line + line_offset)
        elif kind is ev.MappingEndEvent or kind is ev.SequenceEndEvent:
            frame = stack.pop()
            for source in frame.merges:
                for key, value in source.items():
                    if key not in frame.node:
                        frame.node[key] = value
                        keys[id(frame.node)][key] = keys.get(id(source), {}).get(key, 0)
        elif kind is ev.AliasEvent:
            if event.anchor not in anchors:
                raise yaml.composer.ComposerError(
                    None, None, f"found undefined alias {event.anchor!r}", event.start_mark
                )
            shared = True
            mark = event.start_mark
            target = anchors[event.anchor]
            place(target, shift + pack(mark.line, mark.column))
        elif kind is ev.DocumentEndEvent:
            documents.append(
                RawDocument(root, array("q"), root_pos, list(duplicates), shared, complex_keys)
            )
            positions = _layout(root, root_pos, starts, keys, items, shared)
            # (a tree with aliases is kept whole: the loader measures it for alias bombs)
            if slim and not shared and type(root) is dict and root.get("kind") in slim:
                documents[-1].data, positions = slimmed(root, positions)
            documents[-1].positions = positions
            duplicates.clear()
            complex_keys = []
            root, shared = None, False
        elif kind is ev.StreamEndEvent:
            return documents


def _layout(
    root: Any,
    root_pos: int,
    starts: dict[int, int],
    keys: dict[int, dict[Any, int]],
    items: dict[int, list[int]],
    shared: bool,
) -> array[int]:
    """The pre-order position array of a finished tree (an alias bomb is not expanded here: the
    caller measures the tree first and drops ``shared`` documents that are too big)."""
    out: array[int] = array("q")
    if shared and _too_big(root):
        return out
    stack: list[tuple[Any, int]] = [(root, root_pos)]
    while stack:
        node, packed = stack.pop()
        out.append(packed)
        if type(node) is dict:
            positions = keys.get(id(node), {})
            pending: list[tuple[Any, int]] = []
            for key, value in node.items():
                pending.append((_KeySlot, positions.get(key, packed)))
                pending.append((value, starts.get(id(value), 0)))
            stack.extend(reversed(pending))
        elif type(node) is list:
            item_positions = items.get(id(node), [])
            pending = []
            for i, value in enumerate(node):
                where = item_positions[i] if i < len(item_positions) else packed
                pending.append((value, starts.get(id(value), where)))
            stack.extend(reversed(pending))
    return out


class _KeySlotType:
    """Marks a key's slot in :func:`_layout`'s work list (a scalar slot, nothing below it)."""


_KeySlot = _KeySlotType()

#: Above this many expanded nodes a shared (aliased) tree is not laid out; the loader refuses it.
LAYOUT_LIMIT = 1_000_000


def _too_big(root: Any) -> bool:
    memo: dict[int, int] = {}

    def size(obj: Any) -> int:
        if type(obj) is dict:
            children: Any = list(obj.values())
            base = 1 + len(obj)
        elif type(obj) is list:
            children, base = obj, 1
        else:
            return 1
        known = memo.get(id(obj))
        if known is not None:
            return known
        memo[id(obj)] = LAYOUT_LIMIT + 1
        total = base
        for child in children:
            total += size(child)
            if total > LAYOUT_LIMIT:
                break
        memo[id(obj)] = total
        return total

    return size(root) > LAYOUT_LIMIT
