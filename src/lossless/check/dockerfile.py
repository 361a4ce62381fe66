"""Dockerfiles: instructions with positions, stages, the final image's base and entrypoint.

:func:`parse` never raises: unknown instructions are kept as they are, and a JSON array that does
not parse is treated as shell form (what Docker does). Continuation lines (with the ``escape``
parser directive honoured) are joined; heredoc bodies are skipped. Paths of files copied into the
image are resolved against the build context, assumed to be the Dockerfile's directory (then its
ancestors up to the working directory, for ``docker build -f sub/Dockerfile .``).
"""

from __future__ import annotations

import json
import posixpath
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from lossless.check.k8s import split_suppressions
from lossless.check.model import Location

__all__ = ["Dockerfile", "Instruction", "Stage", "base_lacks_sleep", "image_repository", "parse"]

_IGNORE_COMMENT = re.compile(r"^#\s*lossless/ignore:\s*(.*)$")


@dataclass(frozen=True)
class Instruction:
    """One instruction: upper-case ``keyword``, raw ``args``, 1-based position of the keyword."""

    keyword: str
    args: str
    line: int
    column: int = 1

    @property
    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form instruction, or ``None`` for shell form."""
        text = self.args.strip()
        if not text.startswith("["):
            return None
        try:
            value = json.loads(text)
        except ValueError:
            return None
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
        return None


@dataclass
class Stage:
    """A build stage: its ``FROM`` image (or earlier stage name) and alias."""

    base: str
    alias: str | None
    instructions: list[Instruction] = field(default_factory=list)
    from_line: int = 1


@dataclass
class Dockerfile:
    """A parsed Dockerfile; ``ignores`` come from ``# lossless/ignore: LL301: reason`` comments."""

    path: str
    stages: list[Stage]
    ignores: dict[str, str] = field(default_factory=dict)
    ignore_errors: list[str] = field(default_factory=list)

    @property
    def ref(self) -> str:
        return f"Dockerfile {self.path}"

    def loc(self, instruction: Instruction) -> Location:
        end = instruction.column + len(instruction.keyword)
        return Location(self.path, instruction.line, instruction.column, instruction.line, end)

    @property
    def final(self) -> Stage | None:
        return self.stages[-1] if self.stages else None

    def chain(self) -> list[Stage]:
        """The final stage and the stages it is built ``FROM``, root first."""
        chain: list[Stage] = []
        stage = self.final
        names = {s.alias.lower(): s for s in self.stages if s.alias}
        while stage is not None and stage not in chain:
            chain.insert(0, stage)
            stage = names.get(stage.base.lower())
        return chain

    def final_base(self) -> str:
        """The external image the final stage derives from (``scratch`` included)."""
        chain = self.chain()
        return chain[0].base if chain else ""

    def last(self, keyword: str) -> Instruction | None:
        """The ``CMD`` or ``ENTRYPOINT`` instruction in effect in the final image, if any."""
        found: Instruction | None = None
        found_stage = -1
        for number, stage in enumerate(self.chain()):
            for instruction in stage.instructions:
                if instruction.keyword == keyword:
                    found, found_stage = instruction, number
                elif (
                    keyword == "CMD"
                    and instruction.keyword == "ENTRYPOINT"
                    and found_stage < number
                ):
                    found = None  # an ENTRYPOINT resets the CMD inherited from a base
        return found

    def copied_file(self, image_path: str) -> Path | None:
        """The file in the build context that ``COPY``/``ADD`` put at ``image_path``, if any."""
        result: Path | None = None
        for context in self._contexts():
            workdir = "/"
            for stage in self.chain():
                for ins in stage.instructions:
                    if ins.keyword == "WORKDIR":
                        workdir = posixpath.join(workdir, ins.args.strip().strip("\"'"))
                    elif ins.keyword in ("COPY", "ADD"):
                        found = _copy_source(ins, image_path, workdir, context)
                        if found is not None:
                            result = found
            if result is not None:
                return result
        return None

    def workdir_of_final(self) -> str:
        workdir = "/"
        for stage in self.chain():
            for ins in stage.instructions:
                if ins.keyword == "WORKDIR":
                    workdir = posixpath.join(workdir, ins.args.strip().strip("\"'"))
        return workdir

    def _contexts(self) -> list[Path]:
        here = Path(self.path).resolve().parent
        cwd = Path.cwd().resolve()
        contexts = [here]
        if here.is_relative_to(cwd):
            contexts += [p for p in here.parents if p.is_relative_to(cwd)]
        return contexts


def _copy_source(ins: Instruction, image_path: str, workdir: str, context: Path) -> Path | None:
    exec_form = ins.exec_form
    try:
        words = exec_form if exec_form is not None else shlex.split(ins.args)
    except ValueError:
        return None
    if any(w.startswith("--from") for w in words):
        return None
    words = [w for w in words if not w.startswith("--")]
    if len(words) < 2:
        return None
    *sources, dest = words
    dest = posixpath.join(workdir, dest)
    dest_is_dir = words[-1].endswith("/") or len(sources) > 1 or words[-1] in (".", "./")
    target = posixpath.normpath(posixpath.join(workdir, image_path))
    for src in sources:
        local = (context / src).resolve()
        if not local.is_relative_to(context) and src not in (".", "./"):
            continue
        if local.is_dir():
            rel = posixpath.relpath(target, posixpath.normpath(dest))
            if not rel.startswith(".."):
                candidate = local / rel
                if candidate.is_file():
                    return candidate
        elif local.is_file():
            where = posixpath.join(dest, local.name) if dest_is_dir else dest
            if posixpath.normpath(where) == target:
                return local
    return None


def _logical(text: str, escape: str) -> list[tuple[int, int, str]]:
    """Logical lines: (1-based line, 1-based column of the keyword, text)."""
    result: list[tuple[int, int, str]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        raw = lines[i]
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            i += 1
            continue
        start, column = i + 1, len(raw) - len(raw.lstrip()) + 1
        buffer = raw.strip()
        while buffer.endswith(escape) and i + 1 < len(lines):
            buffer = buffer[:-1]
            i += 1
            nxt = lines[i].strip()
            if nxt.startswith("#"):
                continue
            buffer += " " + nxt
        heredoc = re.search(r"<<-?\s*['\"]?(\w+)['\"]?", buffer)
        if heredoc and buffer.split(None, 1)[0].upper() in ("RUN", "COPY", "ADD"):
            marker = heredoc.group(1)
            while i + 1 < len(lines) and lines[i + 1].strip() != marker:
                i += 1
            i += 1
        result.append((start, column, buffer))
        i += 1
    return result


def parse(path: str, text: str) -> Dockerfile:
    """Parse ``text`` (read from ``path``) into stages; see the module docstring."""
    escape = "\\"
    ignores: dict[str, str] = {}
    errors: list[str] = []
    for raw in text.splitlines():
        stripped = raw.strip()
        directive = re.match(r"^#\s*escape\s*=\s*(\S)", stripped)
        if directive:
            escape = directive.group(1)
        match = _IGNORE_COMMENT.match(stripped)
        if match:
            for entry in split_suppressions(match.group(1)):
                code, sep, reason = entry.strip().partition(":")
                code = code.strip().upper()
                if not re.fullmatch(r"LL\d{3}", code):
                    errors.append(f"'{entry.strip()}' does not start with a rule code")
                elif not sep or not reason.strip():
                    errors.append(f"suppression of {code} has no reason ('{code}: why')")
                else:
                    ignores[code] = reason.strip()
    stages: list[Stage] = []
    for line, column, logical in _logical(text, escape):
        keyword, _, args = logical.partition(" ")
        keyword = keyword.upper()
        instruction = Instruction(keyword, args.strip(), line, column)
        if keyword == "FROM":
            words = [w for w in args.split() if not w.startswith("--")]
            base = words[0] if words else ""
            alias = words[2] if len(words) >= 3 and words[1].lower() == "as" else None
            stages.append(Stage(base, alias, [], line))
        elif stages:
            stages[-1].instructions.append(instruction)
    return Dockerfile(path, stages, ignores, errors)


def image_repository(image: str) -> str:
    """``ghcr.io/acme/orders:1.2@sha256:…`` → ``ghcr.io/acme/orders``."""
    image = image.split("@", 1)[0]
    last = image.rsplit("/", 1)
    if ":" in last[-1]:
        image = image[: image.rfind(":")]
    return image


def base_lacks_sleep(image: str) -> bool:
    """Whether ``image`` ships no ``sleep`` (nor shell): scratch, distroless, Chainguard static,
    or Ubuntu chiseled images.

    Chiseled images (Canonical's ``ubuntu/*:*_chiseled`` and ``chiselled``, Microsoft's
    ``mcr.microsoft.com/dotnet/*:8.0-jammy-chiseled``) and tags that say ``distroless``
    (``8.0-azurelinux3.0-distroless``) hold only the runtime's files. Distroless ``:debug`` tags
    and Chainguard ``-dev`` tags include BusyBox, so they do not count.
    """
    lower = image.lower()
    if lower == "scratch":
        return True
    tag = lower.split("@", 1)[0].rsplit("/", 1)[-1].partition(":")[2]
    repo = image_repository(lower)
    if "debug" in tag or tag.endswith("-dev") or tag == "dev":
        return False
    return (
        "distroless" in repo
        or "distroless" in tag
        or any(word in repo or word in tag for word in ("chiseled", "chiselled"))
        or repo.endswith("chainguard/static")
        or repo.endswith("chainguard-images/static")
        or repo.endswith("wolfi-base/static")
    )
