"""Rendering the inputs people actually have: Helm chart directories and kustomizations.

A Helm chart directory (``Chart.yaml`` next to ``templates/``) is not YAML until rendered, and a
kustomization directory is only a recipe: checking their files as plain YAML either fails or
checks nothing. :func:`discover` finds them among the command-line operands (an operand that is
one, or a directory holding them), and :func:`render` runs the real tool:

- a kustomization with ``kustomize build`` (or ``kubectl kustomize`` when kustomize is not on
  PATH), through a throw-away wrapper kustomization that adds ``buildMetadata:
  [originAnnotations]``, so every object says which file it came from; the origin paths are
  rewritten relative to the working directory;
- a chart with ``helm template NAME DIR`` (NAME is the directory's name), whose ``# Source:``
  comments name the template of each object.

Only the *roots* are rendered: a kustomization that another kustomization in the same tree uses
as a resource or component (a base) is rendered through it, not on its own.

Guarantees: nothing here raises on bad input. When the tool is missing, the result is an
:class:`~lossless.check.model.InputError` whose one-line message says what to run instead (the
run exits 2, never 0 having checked nothing); when the tool fails, its first error line is
reported the same way. A render is bounded by ``timeout`` seconds.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from lossless.check import _yaml_events
from lossless.check.model import InputError

__all__ = ["KUSTOMIZATION_FILES", "Rendered", "Target", "discover", "render"]

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
_SKIP_DIRS = {"node_modules", "__pycache__", "venv"}
_ORIGIN_PATH = re.compile(r"^(\s+path:\s*)(\S.*?)\s*$")
# kubectl logs through klog: 'E1130 20:52:02.489017   13010 run.go:72] "command failed" err=...'
_KLOG_PREFIX = re.compile(r"^[EWIF]\d{4} [\d:.]+\s+\d+ \S+\] ")
_RENDER_TIMEOUT = 120.0


@dataclass(frozen=True)
class Target:
    """A directory to render: ``kind`` is ``kustomize`` or ``helm``."""

    path: Path
    kind: str
    #: Directories whose YAML files this render reads (its own and, for kustomize, its bases).
    owns: tuple[Path, ...] = ()

    @property
    def shown(self) -> str:
        return _display(self.path)


@dataclass(frozen=True)
class Rendered:
    """The rendered YAML of a target, as the text of one input named ``path``."""

    target: Target
    path: str
    text: str
    #: Files the render read (resolved), from the kustomize origin annotations.
    sources: frozenset[Path] = frozenset()


def is_kustomization(directory: Path) -> bool:
    return any((directory / name).is_file() for name in KUSTOMIZATION_FILES)


def is_chart(directory: Path) -> bool:
    return (directory / "Chart.yaml").is_file() and (directory / "templates").is_dir()


def discover(operands: Sequence[str]) -> list[Target]:
    """The chart and kustomization roots among ``operands`` (see the module docstring).

    An operand naming a ``kustomization.yaml`` or ``Chart.yaml`` file stands for its directory.
    """
    found: list[Target] = []
    for operand in operands:
        if operand == "-":
            continue
        path = Path(operand)
        if path.is_file() and path.name in (*KUSTOMIZATION_FILES, "Chart.yaml"):
            path = path.parent
        if path.is_dir():
            found += _roots(path)
    unique: dict[Path, Target] = {}
    for target in found:
        unique.setdefault(target.path.resolve(), target)
    return list(unique.values())


def _roots(top: Path) -> list[Target]:
    charts: list[Target] = []
    kustomizations: list[Path] = []
    for dirpath, dirnames, _ in os.walk(top):
        current = Path(dirpath)
        if is_chart(current):
            charts.append(Target(current, "helm"))
            dirnames[:] = []  # subcharts are rendered with their parent
            continue
        if is_kustomization(current):
            kustomizations.append(current)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in _SKIP_DIRS)
    references = {d.resolve(): _referenced_dirs(d) for d in kustomizations}
    used: set[Path] = set().union(*references.values()) if references else set()
    roots = []
    for directory in kustomizations:
        if directory.resolve() in used:
            continue
        owned = {directory.resolve()}
        pending = [directory.resolve()]
        while pending:  # the bases of the bases, bounded by the set
            for base in _referenced_dirs(pending.pop()):
                if base not in owned:
                    owned.add(base)
                    pending.append(base)
        roots.append(Target(directory, "kustomize", tuple(sorted(owned))))
    return [Target(c.path, c.kind, (c.path.resolve(),)) for c in charts] + roots


def _referenced_dirs(directory: Path) -> set[Path]:
    """Directories a kustomization uses as resources, bases or components (resolved)."""
    for name in KUSTOMIZATION_FILES:
        file = directory / name
        if file.is_file():
            break
    else:  # pragma: no cover - is_kustomization() said there is one
        return set()
    try:
        documents = _yaml_events.parse_stream(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError, ValueError):
        return set()
    data = documents[0].data if documents else None
    if not isinstance(data, dict):
        return set()
    found: set[Path] = set()
    for key in ("resources", "bases", "components"):
        entries = data.get(key)
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, str) and "://" not in entry:
                candidate = (directory / entry).resolve()
                if candidate.is_dir():
                    found.add(candidate)
    return found


def owned_by(targets: Sequence[Target], rendered: Sequence[Rendered], path: str) -> bool:
    """Whether ``path`` (a YAML file met by the directory walk) is read through a render.

    Everything under a chart; for a kustomization, the files directly in its directory and its
    bases' (the kustomization files, patches, resources) and every file its output names as an
    origin. A YAML file in a subdirectory that no kustomization uses is still checked as plain
    YAML: rendering must not hide it.
    """
    resolved = Path(path).resolve()
    for target in targets:
        if target.kind == "helm":
            if any(resolved.is_relative_to(d) for d in target.owns):
                return True
        elif resolved.parent in target.owns:
            return True
    return any(resolved in r.sources for r in rendered)


def render(target: Target, *, timeout: float = _RENDER_TIMEOUT) -> Rendered | InputError:
    """Render ``target`` with the real tool; see the module docstring for the guarantees."""
    if target.kind == "helm":
        return _render_helm(target, timeout)
    return _render_kustomize(target, timeout)


def _render_helm(target: Target, timeout: float) -> Rendered | InputError:
    name = target.path.resolve().name
    helm = shutil.which("helm")
    if helm is None:
        return InputError(
            target.shown,
            f"a Helm chart, and helm is not on PATH: install helm, or run "
            f"'helm template {name} {target.shown} | lossless check -'",
        )
    result, problem = _run([helm, "template", name, str(target.path)], timeout)
    if result is None:
        return InputError(target.shown, f"helm template failed: {problem}")
    return Rendered(target, str(Path(target.shown) / "Chart.yaml"), result)


def _render_kustomize(target: Target, timeout: float) -> Rendered | InputError:
    kustomize = shutil.which("kustomize")
    kubectl = shutil.which("kubectl")
    if kustomize is None and kubectl is None:
        return InputError(
            target.shown,
            "a kustomization, and neither kustomize nor kubectl is on PATH: install one, or run "
            f"'kubectl kustomize {target.shown} | lossless check -'",
        )
    with tempfile.TemporaryDirectory(prefix="lossless-kustomize-") as tmp:
        wrapper = Path(tmp)
        relative = os.path.relpath(target.path.resolve(), wrapper.resolve())
        (wrapper / "kustomization.yaml").write_text(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
            f"resources:\n- {relative}\nbuildMetadata: [originAnnotations]\n",
            encoding="utf-8",
        )
        if kustomize is not None:
            argv = [kustomize, "build", str(wrapper)]
        else:
            assert kubectl is not None
            argv = [kubectl, "kustomize", str(wrapper)]
        result, problem = _run(argv, timeout)
        if result is None:
            tool = "kustomize build" if kustomize is not None else "kubectl kustomize"
            return InputError(target.shown, f"{tool} failed: {problem}")
        sources: set[Path] = set()
        lines = _rebase_origins(result.splitlines(), wrapper.resolve(), sources)
        text = "\n".join(lines) + "\n"
    name = next(n for n in KUSTOMIZATION_FILES if (target.path / n).is_file())
    return Rendered(target, str(Path(target.shown) / name), text, frozenset(sources))


def _rebase_origins(lines: list[str], wrapper: Path, sources: set[Path]) -> list[str]:
    """Origin paths are relative to the wrapper: make them relative to the working directory
    (and collect them, resolved, in ``sources``)."""
    return list(_rebased(lines, wrapper, sources))


def _rebased(lines: list[str], wrapper: Path, sources: set[Path]) -> Iterator[str]:
    in_origin = False
    for line in lines:
        if line.strip().startswith("config.kubernetes.io/origin:"):
            in_origin = True
            yield line
            continue
        match = _ORIGIN_PATH.match(line) if in_origin else None
        if match:
            in_origin = False
            source = Path(os.path.normpath(wrapper / match.group(2).strip("'\"")))
            sources.add(source.resolve())
            yield match.group(1) + _display(source)
            continue
        yield line


def _run(argv: list[str], timeout: float) -> tuple[str | None, str]:
    """``(stdout, "")`` of ``argv``, or ``(None, why)``: one line saying why it failed.

    The tool runs in its own process group; on timeout the whole group is killed (kustomize
    may run git for remote bases) and reaped before this returns.
    """
    try:
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError as exc:
        return None, f"cannot run {argv[0]}: {exc.strerror or exc}"
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        return None, f"timed out after {timeout:g} s"
    except BaseException:  # Ctrl-C: leave nothing behind
        _kill_group(proc)
        raise
    if proc.returncode != 0:
        lines = [ln.strip() for ln in err.decode("utf-8", "replace").splitlines() if ln.strip()]
        detail = _KLOG_PREFIX.sub("", lines[0]) if lines else f"exit status {proc.returncode}"
        return None, detail[:300]
    return out.decode("utf-8", "replace"), ""


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()


def _display(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:  # pragma: no cover - another drive on Windows
        return str(path)
