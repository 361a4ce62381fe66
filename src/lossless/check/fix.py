"""Safe fixes for findings, as minimal text edits that keep comments and formatting.

Contract:

- :func:`plan` runs the rules that have a fixer (see :data:`FIXERS`) over the inputs and returns
  one :class:`Edit` per fixable finding: a replacement of a range of the original file's text,
  nothing else in the file changes. Every edit is verified before it is offered: the edited file
  is parsed again and must hold exactly the intended value (the script with ``exec``, the exec
  form, the new object); an edit that cannot be verified is dropped with a note. Findings that are
  suppressed, that come from rendered Helm/kustomize output (fix the template instead) or whose
  fix would change behaviour (see each fixer) get no edit.
- :func:`apply` returns the new text of each file, edits applied from the end so offsets hold;
  overlapping edits keep the first. :func:`diff` renders them as unified diffs.

Fixers:

- LL301: a shell-form ``CMD``/``ENTRYPOINT`` that is one plain command (no variables, operators,
  globs or redirections) becomes its exec form, only when the other of the two is absent (an
  exec-form ENTRYPOINT would receive the CMD as arguments, changing behaviour).
- LL302: ``exec`` before the last command of an ``sh -c`` script (container ``command``/``args``
  or an exec-form Dockerfile instruction), when it is a plain command (not piped or backgrounded).
- LL303: ``exec`` before the last command of an entrypoint script, same condition.
- LL501: a PodDisruptionBudget (``maxUnavailable: 1``, the workload's ``matchLabels``) appended as
  a new document to the workload's file.
- LL202: ``terminationGracePeriodSeconds`` raised (in place, or added as the pod spec's first key)
  to the longest container's preStop + drain + margin, when every preStop's length is known.
- LL201: a 5 s preStop sleep added as the container's first keys after ``name`` (the native
  ``sleep`` action when ``--kube-version`` is 1.30 or later, else ``exec sleep``), when it fits
  the grace period, the container has no ``lifecycle`` block and, for ``exec``, the image has a
  ``sleep`` binary.

- LL102: the readiness (or liveness) probe's ``httpGet.path`` set to the app's own readiness (or
  liveness) route, only for a container run by ``lossless serve`` (``/readyz``, ``/livez``, or
  the ``LOSSLESS_READINESS_PATH``/``LOSSLESS_LIVENESS_PATH`` it is given).

Block-style mappings only: a flow-style mapping (``{...}``) to extend is left with a note.
"""

from __future__ import annotations

import bisect
import difflib
import json
import re
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lossless.check import dockerfile as dockerfile_mod
from lossless.check.config import Config
from lossless.check.dockerfile import Dockerfile, Instruction
from lossless.check.engine import Context, build_context
from lossless.check.k8s import K8sObject, Workload
from lossless.check.model import Hit, InputError, all_rules
from lossless.check.rules.entrypoint import effective, shell_c_script
from lossless.check.shell import Command, analyze
from lossless.check.yaml_source import MAX_FILE_BYTES, Source, load_documents

__all__ = ["FIXERS", "Edit", "Plan", "apply", "diff", "plan"]


@dataclass(frozen=True)
class Edit:
    """Replace ``text[start:end]`` of the file at ``path`` with ``new`` (fixes ``code``)."""

    path: str
    start: int
    end: int
    new: str
    code: str
    line: int


@dataclass
class Plan:
    """The edits to make, the original texts they apply to, notes on findings left alone."""

    edits: list[Edit] = field(default_factory=list)
    originals: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    errors: list[InputError] = field(default_factory=list)


class _Files:
    """Original texts, read once."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan

    def text(self, path: str) -> str | None:
        if path not in self.plan.originals:
            try:
                self.plan.originals[path] = Path(path).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                return None
        return self.plan.originals[path]


Fixer = Callable[[Hit, Context, _Files], "Edit | str | None"]
FIXERS: dict[str, Fixer] = {}


def _fixer(code: str) -> Callable[[Fixer], Fixer]:
    def register(func: Fixer) -> Fixer:
        FIXERS[code] = func
        return func

    return register


def plan(
    operands: Sequence[str],
    config: Config,
    *,
    max_bytes: int = MAX_FILE_BYTES,
    jobs: int | None = None,
) -> Plan:
    """The verified edits for every fixable finding of ``operands`` (see the module docstring)."""
    result = Plan()
    context, errors, _, _ = build_context(operands, config, max_bytes=max_bytes, jobs=jobs)
    result.errors = errors
    files = _Files(result)
    for rule_ in all_rules():
        fixer = FIXERS.get(rule_.code)
        if fixer is None or not config.enabled(rule_.code):
            continue
        for hit in rule_.func(context):
            subject = hit.subject
            if isinstance(subject, K8sObject | Dockerfile) and rule_.code in subject.ignores:
                continue
            if isinstance(subject, K8sObject) and subject.origin is not None:
                result.notes.append(
                    f"{hit.location}: {rule_.code} not fixed: the file is rendered output "
                    f"({subject.origin.kind}); fix {subject.origin.path}"
                )
                continue
            outcome = fixer(hit, context, files)
            if isinstance(outcome, Edit):
                result.edits.append(outcome)
            elif outcome:
                result.notes.append(f"{hit.location}: {rule_.code} not fixed: {outcome}")
    return result


def apply(edits: Sequence[Edit], originals: dict[str, str]) -> dict[str, str]:
    """New text per file; an edit overlapping an earlier one (in input order) is skipped."""
    by_path: dict[str, list[Edit]] = {}
    for edit in edits:
        taken = by_path.setdefault(edit.path, [])
        if not any(
            (edit.start < e.end and e.start < edit.end) or edit.start == e.start for e in taken
        ):
            taken.append(edit)
    result: dict[str, str] = {}
    for path, chosen in by_path.items():
        text = originals[path]
        for edit in sorted(chosen, key=lambda e: e.start, reverse=True):
            text = text[: edit.start] + edit.new + text[edit.end :]
        result[path] = text
    return result


def diff(originals: dict[str, str], changed: dict[str, str]) -> str:
    """Unified diffs (``a/PATH``, ``b/PATH``) of every changed file, in path order."""
    out: list[str] = []
    for path in sorted(changed):
        out.extend(
            difflib.unified_diff(
                originals[path].splitlines(keepends=True),
                changed[path].splitlines(keepends=True),
                f"a/{path}",
                f"b/{path}",
            )
        )
    return "".join(line if line.endswith("\n") else line + "\n" for line in out)


# -- helpers ------------------------------------------------------------------------------------


def _offset(text: str, line: int, column: int) -> int:
    """Character offset of a 1-based line and column."""
    starts = [0] + [m.end() for m in re.finditer("\n", text)]
    return starts[min(line, len(starts)) - 1] + column - 1


def _line_of(text: str, offset: int) -> int:
    starts = [0] + [m.end() for m in re.finditer("\n", text)]
    return bisect.bisect_right(starts, offset)


def _with_exec(script: str, command: Command) -> tuple[str, int] | None:
    """``script`` with ``exec `` before ``command``, and where it went; None if not found."""
    lines = script.split("\n")
    if not 0 < command.line <= len(lines):
        return None
    row = lines[command.line - 1]
    column = row.rfind(command.text)
    if column < 0:
        return None
    offset = sum(len(line) + 1 for line in lines[: command.line - 1]) + column
    return script[:offset] + "exec " + script[offset:], offset


def _exec_fixable(script: str, inline: bool) -> tuple[str, Command] | str:
    verdict = analyze(script, inline=inline)
    if verdict.ok or verdict.command is None:
        return "the script already hands over the signal"
    if verdict.reason != "is not exec'ed":
        return f"its last command {verdict.reason}"
    done = _with_exec(script, verdict.command)
    if done is None:
        return "cannot find its last command in the text"
    return done[0], verdict.command


def _value_at(data: Any, path: Sequence[str | int]) -> Any:
    for part in path:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


# -- LL302 in manifests, LL301/LL302 in Dockerfiles, LL303 -----------------------------------


def _container_script(hit: Hit, workload: Workload) -> tuple[tuple[str | int, ...], str] | None:
    """The path (from the document root) and text of the ``sh -c`` script the hit points at."""
    for container in workload.containers():
        command = container.get("command")
        found = shell_c_script(container.argv) if isinstance(command, list) else None
        if found is None:
            continue
        index = found[1]
        n_command = len(command) if isinstance(command, list) else 0
        key: tuple[str | int, ...] = (
            ("command", index) if index < n_command else ("args", index - n_command)
        )
        if container.loc(*key) == hit.location:
            return (*workload.prefix, *container.path, *key), found[0]
    return None


@_fixer("LL302")
def fix_shell_c(hit: Hit, ctx: Context, files: _Files) -> Edit | str | None:
    subject = hit.subject
    if isinstance(subject, Dockerfile):
        return _fix_dockerfile_shell_c(hit, subject, files)
    if not isinstance(subject, Workload):
        return None
    found = _container_script(hit, subject)
    if found is None:
        return "cannot find the script"
    path, script = found
    fixable = _exec_fixable(script, inline=True)
    if isinstance(fixable, str):
        return fixable
    wanted, command = fixable
    document = subject.document
    text = files.text(document.source.path)
    if text is None or text != document.source.text:
        return "the file changed since it was read"
    start = _offset(text, hit.location.line, hit.location.column)
    # The command's text as written: try each occurrence after the scalar's start and keep the
    # one whose edit parses back to exactly the intended script.
    position = text.find(command.text, start)
    while position >= 0 and position - start < len(script) * 2 + 64:
        candidate = text[:position] + "exec " + text[position:]
        documents, errors = load_documents(Source(document.source.path, candidate))
        same = [d for d in documents if d.index == document.index]
        if not errors and same and _value_at(same[0].data, path) == wanted:
            return Edit(
                document.source.path, position, position, "exec ", "LL302", hit.location.line
            )
        position = text.find(command.text, position + 1)
    return "the script's text is escaped in the file; edit it by hand"


def _instruction_at(dockerfile: Dockerfile, line: int) -> Instruction | None:
    for instruction in effective(dockerfile):
        if instruction.line == line:
            return instruction
    return None


def _fix_dockerfile_shell_c(hit: Hit, dockerfile: Dockerfile, files: _Files) -> Edit | str:
    instruction = _instruction_at(dockerfile, hit.location.line)
    argv = instruction.exec_form if instruction is not None else None
    found = shell_c_script(argv) if argv else None
    if instruction is None or argv is None or found is None:
        return "cannot find the instruction"
    fixable = _exec_fixable(found[0], inline=True)
    if isinstance(fixable, str):
        return fixable
    wanted = list(argv)
    wanted[found[1]] = fixable[0]
    return _dockerfile_edit(
        dockerfile, instruction, files, fixable[1].text, "exec " + fixable[1].text, wanted, "LL302"
    )


def _dockerfile_edit(
    dockerfile: Dockerfile,
    instruction: Instruction,
    files: _Files,
    old: str,
    new: str,
    wanted: list[str],
    code: str,
) -> Edit | str:
    """Replace the last ``old`` on the instruction's line with ``new``, verified by parsing."""
    text = files.text(dockerfile.path)
    if text is None:
        return "cannot read the Dockerfile"
    line_start = _offset(text, instruction.line, 1)
    line_end = text.find("\n", line_start)
    line_end = len(text) if line_end < 0 else line_end
    column = text.rfind(old, line_start, line_end)
    if column < 0:
        return "the instruction spans several lines; edit it by hand"
    candidate = text[:column] + new + text[column + len(old) :]
    parsed = dockerfile_mod.parse(dockerfile.path, candidate)
    again = parsed.last(instruction.keyword)
    if again is None or again.exec_form != wanted:
        return "the edit does not parse back as intended"
    return Edit(dockerfile.path, column, column + len(old), new, code, instruction.line)


_SHELL_SYNTAX = re.compile(r"[$`|&;<>*?(){}\[\]~\\#!\n]|^\s*\w+=")


@_fixer("LL301")
def fix_shell_form(hit: Hit, ctx: Context, files: _Files) -> Edit | str | None:
    dockerfile = hit.subject
    if not isinstance(dockerfile, Dockerfile):
        return None
    instruction = _instruction_at(dockerfile, hit.location.line)
    if instruction is None:
        return "cannot find the instruction"
    other = "CMD" if instruction.keyword == "ENTRYPOINT" else "ENTRYPOINT"
    if dockerfile.last(other) is not None:
        return f"the image also has {other}: the exec form would change how they combine"
    args = instruction.args.strip()
    if _SHELL_SYNTAX.search(args):
        return "the command uses shell syntax; write its exec form by hand"
    try:
        words = shlex.split(args)
    except ValueError:
        return "the command does not split into words"
    if not words:
        return None
    return _dockerfile_edit(dockerfile, instruction, files, args, json.dumps(words), words, "LL301")


@_fixer("LL303")
def fix_entrypoint_script(hit: Hit, ctx: Context, files: _Files) -> Edit | str | None:
    path = hit.location.path
    text = files.text(path)
    if text is None:
        return "cannot read the script"
    fixable = _exec_fixable(text, inline=False)
    if isinstance(fixable, str):
        return fixable
    wanted, command = fixable
    done = _with_exec(text, command)
    if done is None or done[0] != wanted or not analyze(wanted, inline=False).ok:
        return "the edit does not hand over the signal"
    return Edit(path, done[1], done[1], "exec ", "LL303", command.line)


# -- LL501 ------------------------------------------------------------------------------------

_PDB = """\
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {name}{namespace}
spec:
  maxUnavailable: 1
  unhealthyPodEvictionPolicy: AlwaysAllow
  selector:
    matchLabels:
{labels}"""


@_fixer("LL501")
def fix_missing_pdb(hit: Hit, ctx: Context, files: _Files) -> Edit | str | None:
    workload = hit.subject
    if not isinstance(workload, Workload):
        return None
    if workload.prefix:
        return "the workload is an item of a List"
    labels = workload.get("spec", "selector", "matchLabels")
    expressions = workload.get("spec", "selector", "matchExpressions")
    if not isinstance(labels, dict) or not labels or expressions:
        return "the workload's selector is not plain matchLabels"
    if not all(isinstance(v, str | int) and isinstance(k, str) for k, v in labels.items()):
        return "the workload's selector is not plain matchLabels"
    path = workload.document.source.path
    text = files.text(path)
    if text is None or text != workload.document.source.text:
        return "the file changed since it was read"
    taken = {(o.namespace, o.name) for o in ctx.of_kind("PodDisruptionBudget")}
    name = workload.name if (workload.namespace, workload.name) not in taken else None
    name = name or f"{workload.name}-pdb"
    block = _PDB.format(
        name=json.dumps(name),
        namespace=f"\n  namespace: {json.dumps(workload.namespace)}" if workload.namespace else "",
        labels="".join(f"      {json.dumps(k)}: {json.dumps(str(v))}\n" for k, v in labels.items()),
    )
    prefix = "" if text.endswith("\n") or not text else "\n"
    new = prefix + block
    documents, errors = load_documents(Source(path, text + new))
    added = documents[-1].data if documents and not errors else None
    if not isinstance(added, dict) or added.get("kind") != "PodDisruptionBudget":
        return "the new PodDisruptionBudget does not parse back"
    if _value_at(added, ("spec", "selector", "matchLabels")) != {
        str(k): str(v) for k, v in labels.items()
    }:
        return "the new PodDisruptionBudget does not parse back"
    return Edit(path, len(text), len(text), new, "LL501", _line_of(text, len(text)))


# -- LL202, LL201: block-style mappings edited in place -------------------------------------


def _block_key_line(text: str, line: int, column: int) -> bool:
    """Whether the key at 1-based ``line``/``column`` starts a block-style line (``key:`` or
    ``- key:`` with only indentation before)."""
    row = text.split("\n")[line - 1] if line >= 1 else ""
    before = row[: column - 1]
    return before.strip() in ("", "-") and before.replace("-", " ").strip() == ""


def _insert_keys(
    workload: Workload,
    mapping_path: tuple[str | int, ...],
    lines: list[str],
    files: _Files,
    code: str,
) -> Edit | str:
    """Insert ``lines`` (YAML at the mapping's indentation, unindented here) as the first keys of
    the block mapping at ``mapping_path``, verified by parsing."""
    document = workload.document
    path = document.source.path
    text = files.text(path)
    mapping = workload.get(*mapping_path)
    if text is None or text != document.source.text:
        return "the file changed since it was read"
    if not isinstance(mapping, dict) or not mapping:
        return "the mapping to edit is empty or not a mapping"
    first = next(iter(mapping))
    if not isinstance(first, str):
        return "the mapping has a non-text key"
    line, column, _ = document.locate(workload.prefix, (*mapping_path, first))
    if not _block_key_line(text, line + 1, column + 1):
        return "the mapping is written in flow style; edit it by hand"
    row_start = _offset(text, line + 1, 1)
    indent = " " * column
    if text[row_start : row_start + column].strip() == "-":
        # "- first: ..." : the new keys go on the next line, aligned with ``first``.
        row_end = text.find("\n", row_start)
        if row_end < 0:
            return "the mapping ends the file without a newline"
        at = row_end + 1
        following = [k for k in mapping if k != first]
        if following:
            next_line, _, _ = document.locate(workload.prefix, (*mapping_path, following[0]))
            if next_line != line + 1:
                return f"the value of '{first}' spans several lines; edit it by hand"
    else:
        at = row_start
    new = "".join(f"{indent}{item}\n" for item in lines)
    candidate = text[:at] + new + text[at:]
    documents, errors = load_documents(Source(path, candidate))
    same = [d for d in documents if d.index == document.index]
    if errors or not same:
        return "the edit does not parse back"
    edited = _value_at(same[0].data, (*workload.prefix, *mapping_path))
    if not isinstance(edited, dict):
        return "the edit does not parse back"
    added = {k: v for k, v in edited.items() if k not in mapping}
    kept = {k: v for k, v in edited.items() if k in mapping}
    if kept != mapping or not added:
        return "the edit does not parse back as intended"
    return Edit(path, at, at, new, code, _line_of(text, at))


def _needed_grace(workload: Workload, margin: int) -> int | None:
    from lossless.check.rules.shutdown import declared_drain, prestop

    needed = 0.0
    for container in workload.containers():
        hook = prestop(container)
        drain = declared_drain(container)
        if hook is not None and hook.seconds is None:
            return None  # an httpGet or unknown hook: its length is not known
        sleep = hook.seconds if hook is not None and hook.seconds is not None else 0.0
        app = drain.seconds if drain is not None else 0.0
        needed = max(needed, sleep + app + margin)
    return int(-(-needed // 1))


@_fixer("LL202")
def fix_grace_period(hit: Hit, ctx: Context, files: _Files) -> Edit | str | None:
    workload = hit.subject
    if not isinstance(workload, Workload):
        return None
    needed = _needed_grace(workload, ctx.config.grace_margin)
    if needed is None:
        return "a preStop hook of unknown length"
    key = (*workload.pod_spec_path, "terminationGracePeriodSeconds")
    if workload.get(*key) is None:
        return _insert_keys(
            workload,
            workload.pod_spec_path,
            [f"terminationGracePeriodSeconds: {needed}"],
            files,
            "LL202",
        )
    path = workload.document.source.path
    text = files.text(path)
    if text is None or text != workload.document.source.text:
        return "the file changed since it was read"
    line, column, length = workload.document.locate(workload.prefix, key)
    start = _offset(text, line + 1, column + 1) + length
    match = re.compile(r"""(\s*:\s*)(["']?)\d+\2""").match(text, start)
    if match is None:
        return "the value is not a plain number"
    value_start = start + len(match.group(1))
    new = f"{needed}"
    candidate = text[:value_start] + new + text[match.end() :]
    documents, errors = load_documents(Source(path, candidate))
    same = [d for d in documents if d.index == workload.document.index]
    if errors or not same or _value_at(same[0].data, (*workload.prefix, *key)) != needed:
        return "the edit does not parse back as intended"
    return Edit(path, value_start, match.end(), new, "LL202", line + 1)


#: The preStop sleep the LL201 fix adds: long enough for endpoint removal to reach kube-proxy
#: and most ingress controllers (DESIGN.md's default drain delay).
PRESTOP_SLEEP = 5


@_fixer("LL201")
def fix_prestop(hit: Hit, ctx: Context, files: _Files) -> Edit | str | None:
    from lossless.check.dockerfile import base_lacks_sleep
    from lossless.check.rules.shutdown import declared_drain

    workload = hit.subject
    if not isinstance(workload, Workload):
        return None
    container = next((c for c in workload.containers() if c.loc("name") == hit.location), None)
    if container is None:
        return "cannot find the container"
    if container.get("lifecycle") is not None:
        return "the container has a lifecycle block; add the preStop hook to it by hand"
    drain = declared_drain(container)
    needed = PRESTOP_SLEEP + (drain.seconds if drain is not None else 0) + ctx.config.grace_margin
    if needed > workload.grace_period:
        return (
            f"a {PRESTOP_SLEEP} s preStop sleep does not fit the {workload.grace_period} s grace "
            "period; raise terminationGracePeriodSeconds first"
        )
    version = ctx.config.kube_version
    if version is not None and version >= (1, 30):
        hook = ["lifecycle:", "  preStop:", f"    sleep: {{seconds: {PRESTOP_SLEEP}}}"]
    elif base_lacks_sleep(container.image):
        return (
            f"image {container.image} has no sleep binary; set --kube-version 1.30 or later to "
            "use the native sleep action"
        )
    else:
        hook = ["lifecycle:", "  preStop:", f'    exec: {{command: [sleep, "{PRESTOP_SLEEP}"]}}']
    return _insert_keys(workload, container.path, hook, files, "LL201")


# -- LL102 ------------------------------------------------------------------------------------

_SCALAR_VALUE = re.compile(r"""(\s*:[ \t]*)("[^"\n]*"|'[^'\n]*'|[^\s,}\]#]+)""")


def _replace_scalar(
    workload: Workload, key: tuple[str | int, ...], value: str, files: _Files, code: str
) -> Edit | str:
    """Replace the one-line scalar value of ``key`` (a path below the workload) with ``value``."""
    document = workload.document
    path = document.source.path
    text = files.text(path)
    if text is None or text != document.source.text:
        return "the file changed since it was read"
    line, column, length = document.locate(workload.prefix, key)
    start = _offset(text, line + 1, column + 1) + length
    match = _SCALAR_VALUE.match(text, start)
    if match is None:
        return "the value is not a one-line scalar"
    value_start = start + len(match.group(1))
    candidate = text[:value_start] + value + text[match.end() :]
    documents, errors = load_documents(Source(path, candidate))
    same = [d for d in documents if d.index == document.index]
    if errors or not same or _value_at(same[0].data, (*workload.prefix, *key)) != value:
        return "the edit does not parse back as intended"
    return Edit(path, value_start, match.end(), value, code, line + 1)


@_fixer("LL102")
def fix_readiness_path(hit: Hit, ctx: Context, files: _Files) -> Edit | str | None:
    """Only for an app served by ``lossless serve``, whose routes are known: ``/readyz`` and
    ``/livez`` (or ``LOSSLESS_READINESS_PATH`` / ``LOSSLESS_LIVENESS_PATH``)."""
    workload = hit.subject
    if not isinstance(workload, Workload):
        return None
    container = next(
        (c for c in workload.containers() if c.loc("livenessProbe") == hit.location), None
    )
    if container is None:
        return "cannot find the container"
    if re.search(r"\blossless\s+serve\b", " ".join(container.argv)) is None:
        return "which path the app serves for readiness is not known (not `lossless serve`)"
    env = container.env
    readiness = str(env.get("LOSSLESS_READINESS_PATH") or "/readyz")
    liveness = str(env.get("LOSSLESS_LIVENESS_PATH") or "/livez")
    shared = container.get("readinessProbe", "httpGet", "path")
    if not isinstance(shared, str) or container.get("livenessProbe", "httpGet", "path") != shared:
        return "the probes are not httpGet probes on one path"
    if shared != readiness:
        probe, new = "readinessProbe", readiness
    elif shared != liveness:
        probe, new = "livenessProbe", liveness
    else:
        return "the readiness and liveness paths of the app are the same"
    return _replace_scalar(
        workload, (*container.path, probe, "httpGet", "path"), new, files, "LL102"
    )
