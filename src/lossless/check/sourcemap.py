"""Mapping a finding in kustomize output back to its source file by YAML path.

kustomize re-serializes every object with its keys sorted, so "the same occurrence of the same
key" (what works for Helm templates, which keep their key order) lands on another key in the
source file. Both sides are YAML, so the exact way is structural: find the *path* of the
offending field in the rendered object (``spec.template.spec.containers[0].name``), then the
same object in the source file (same kind and name; else the only one of that kind) and the
deepest existing field along that path there. List items are matched by their ``name`` when they
have one (a patch may reorder containers; an item the base lacks maps to the list), else by
position.

:class:`SourceMap` caches each source file's objects; it never raises on a missing or broken
source file: :meth:`SourceMap.locate` returns ``None`` and the caller falls back.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from lossless.check.k8s import K8sObject, PathPart, objects_from
from lossless.check.model import Location
from lossless.check.yaml_source import STDIN, Source, display_path, load_documents, read_source

__all__ = ["SourceMap", "path_at"]


def _paths(node: Any, prefix: tuple[PathPart, ...]) -> Iterator[tuple[PathPart, ...]]:
    if isinstance(node, Mapping):
        for key, value in node.items():
            path = (*prefix, str(key))
            yield path
            yield from _paths(value, path)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            path = (*prefix, index)
            yield path
            yield from _paths(value, path)


def path_at(obj: K8sObject, location: Location) -> tuple[PathPart, ...] | None:
    """The path below ``obj`` of the key (or list item) at ``location``, or ``None``."""
    for path in _paths(obj.data, ()):
        here = obj.loc(*path)
        if (here.line, here.column) == (location.line, location.column):
            return path
    return None


class SourceMap:
    """Finds the source file of a kustomize origin and the line of a path in it."""

    def __init__(self, roots: Sequence[str] = ()) -> None:
        self._roots = [Path(r) for r in roots]
        self._objects: dict[str, list[K8sObject] | None] = {}

    def resolve(self, origin_path: str, rendered_path: str) -> Path | None:
        """The existing file an origin names: relative to the working directory, the rendered
        file's directory and its parents, or a source root."""
        candidates = [Path(origin_path)]
        if rendered_path != STDIN:
            parent = Path(rendered_path).resolve().parent
            candidates += [p / origin_path for p in [parent, *parent.parents][:6]]
        candidates += [root / origin_path for root in self._roots]
        for candidate in candidates:
            if candidate.is_file():
                return candidate
        return None

    def _load(self, path: Path) -> list[K8sObject] | None:
        key = os.path.realpath(path)
        if key not in self._objects:
            source = read_source(str(path))
            objects: list[K8sObject] | None = None
            if isinstance(source, Source):
                documents, errors = load_documents(source)
                if not errors:
                    objects = [o for d in documents for o in objects_from(d)]
            self._objects[key] = objects
        return self._objects[key]

    def locate(self, obj: K8sObject, location: Location, file: Path) -> Location | None:
        """``location`` (in rendered ``obj``) mapped into ``file`` by path; ``None`` if unknown."""
        path = path_at(obj, location)
        objects = self._load(file)
        if path is None or not objects:
            return None
        same_kind = [o for o in objects if o.kind == obj.kind]
        named = [o for o in same_kind if o.name == obj.name]
        if named:
            target = named[0]
        elif len(same_kind) == 1:
            target = same_kind[0]  # a namePrefix/nameSuffix renamed it
        else:
            return None
        source_path = _match_path(obj, target, path)
        found = target.loc(*source_path)
        shown = display_path(file)
        end = None
        if location.end_column is not None:
            end = found.column + (location.end_column - location.column)
        return Location(shown, found.line, found.column, found.line, end, rendered=location)


def _match_path(
    rendered: K8sObject, source: K8sObject, path: tuple[PathPart, ...]
) -> tuple[PathPart, ...]:
    """``path`` with list indices re-pointed at the source item of the same ``name``."""
    result: list[PathPart] = []
    for depth, part in enumerate(path):
        if isinstance(part, int):
            item = rendered.get(*path[: depth + 1])
            name = item.get("name") if isinstance(item, Mapping) else None
            items = source.get(*result)
            if name is not None and isinstance(items, list):
                matches = [
                    index
                    for index, candidate in enumerate(items)
                    if isinstance(candidate, Mapping) and candidate.get("name") == name
                ]
                if not matches:
                    # Added by a patch: the base has no such item; point at the list itself.
                    return tuple(result)
                part = matches[0]
        result.append(part)
    return tuple(result)
