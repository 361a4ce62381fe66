"""Entrypoint: SIGTERM must reach the process that serves, not a shell in front of it."""

from __future__ import annotations

import posixpath
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from lossless.check.dockerfile import Dockerfile, Instruction
from lossless.check.model import Hit, Location, Severity, rule
from lossless.check.shell import ShellVerdict, analyze, is_shell
from lossless.check.yaml_source import display_path

if TYPE_CHECKING:
    from lossless.check.engine import Context

#: Init processes that forward signals to their whole process group: what they start is fine.
GROUP_FORWARDERS = {"dumb-init"}
#: Init processes that signal only their direct child (unless told otherwise).
CHILD_FORWARDERS = {"tini", "tini-static"}
_PATH = ("/usr/local/bin", "/usr/bin", "/bin", "/usr/local/sbin", "/usr/sbin", "/sbin")


def effective(dockerfile: Dockerfile) -> list[Instruction]:
    """The ENTRYPOINT, and the CMD (whose shell form matters even after an ENTRYPOINT)."""
    found = [dockerfile.last("ENTRYPOINT"), dockerfile.last("CMD")]
    return [i for i in found if i is not None]


def shell_c_script(argv: list[str]) -> tuple[str, int] | None:
    """``[sh, -c, SCRIPT, ...]`` (also ``-ec``, ``-xc``, ``bash -lc``) → (SCRIPT, its index)."""
    if not argv or not is_shell(argv[0]):
        return None
    for i, word in enumerate(argv[1:], start=1):
        if word.startswith("-") and not word.startswith("--") and "c" in word[1:]:
            return (argv[i + 1], i + 1) if i + 1 < len(argv) else None
        if not word.startswith("-"):
            return None
    return None


def _verdict_text(verdict: ShellVerdict) -> str:
    command = verdict.command.text if verdict.command is not None else "?"
    if len(command) > 60:
        command = command[:57] + "..."
    return f"its last command '{command}' {verdict.reason}"


@rule("LL301", "shell-form-entrypoint", family="entrypoint", severity=Severity.WARNING)
def shell_form_entrypoint(ctx: Context) -> Iterator[Hit]:
    """CMD or ENTRYPOINT in shell form.

    ## What it does
    Flags a `CMD` or `ENTRYPOINT` of the final image written in shell form
    (`CMD gunicorn app:app`) rather than exec form (`CMD ["gunicorn", "app:app"]`), unless the
    command starts with `exec`.

    ## Why is this bad?
    Shell form runs `/bin/sh -c "gunicorn app:app"`: the shell is PID 1 and receives SIGTERM.
    Whether the server ever sees the signal depends on the shell (some replace themselves with
    a single command, none do for `cd /app && gunicorn ...`). If it does not, the server never
    drains: it is SIGKILLed at the end of the grace period with its requests in flight.

    ## Example
    ```dockerfile
    CMD gunicorn --bind :8080 app:app
    ```

    ## Use instead
    ```dockerfile
    CMD ["gunicorn", "--bind", ":8080", "app:app"]
    ```
    """
    for dockerfile in ctx.dockerfiles:
        for instruction in effective(dockerfile):
            if instruction.exec_form is not None:
                continue
            text = instruction.args.strip()
            if not text or text.startswith("exec "):
                continue
            shown = text if len(text) <= 50 else text[:47] + "..."
            yield Hit(
                dockerfile.loc(instruction),
                f"shell-form {instruction.keyword} runs /bin/sh -c '{shown}' as PID 1: SIGTERM "
                "reaches the server only if that shell execs it; use the exec form",
                dockerfile,
            )


@rule("LL302", "shell-c-without-exec", family="entrypoint", severity=Severity.ERROR)
def shell_c_without_exec(ctx: Context) -> Iterator[Hit]:
    """`sh -c` entrypoint whose last command is not `exec`ed.

    ## What it does
    Flags an exec-form `CMD`/`ENTRYPOINT` such as `["sh", "-c", "migrate && gunicorn app"]`,
    and a container `command`/`args` such as `[sh, -c, "..."]`, when the script's last command
    is not run with `exec`. A script that is a single simple command is accepted (bash, dash
    and BusyBox ash replace themselves with it), as is a script that traps TERM and `wait`s,
    and one that ends in a polling loop (`while true; do ...; sleep 10; done`: the shell is the
    program, and `exec` would end the loop). A loop that restarts a server is flagged with
    advice that fits a loop (trap TERM and forward it).

    ## Why is this bad?
    The shell stays PID 1 and the server runs as its child. A shell does not forward SIGTERM
    to its children, so the server never starts draining; the kubelet SIGKILLs it at the end
    of the grace period and cuts every request in flight.

    ## Example
    ```yaml
    command: [sh, -c, "python manage.py migrate && gunicorn app.wsgi"]
    ```

    ## Use instead
    ```yaml
    command: [sh, -c, "python manage.py migrate && exec gunicorn app.wsgi"]
    ```
    """
    for dockerfile in ctx.dockerfiles:
        for instruction in effective(dockerfile):
            argv = instruction.exec_form
            found = shell_c_script(argv) if argv else None
            if found is None:
                continue
            verdict = analyze(found[0], inline=True)
            if not verdict.ok:
                yield Hit(
                    dockerfile.loc(instruction),
                    f"{instruction.keyword} runs '{argv[0] if argv else 'sh'} -c': "
                    f"{_verdict_text(verdict)}, so the shell stays PID 1 and does not forward "
                    f"SIGTERM; {verdict.advice}",
                    dockerfile,
                )
    for workload in ctx.workloads:
        if workload.is_batch:
            continue
        for container in workload.containers():
            command = container.get("command")
            args = container.get("args")
            argv = container.argv
            found = shell_c_script(argv) if isinstance(command, list) else None
            if found is None:
                continue
            verdict = analyze(found[0], inline=True)
            if verdict.ok:
                continue
            index = found[1]
            n_command = len(command) if isinstance(command, list) else 0
            if index < n_command:
                where = container.loc("command", index)
            elif isinstance(args, list):
                where = container.loc("args", index - n_command)
            else:
                where = container.loc("command")
            yield Hit(
                where,
                f"container '{container.name}' runs '{argv[0]} -c': {_verdict_text(verdict)}, "
                f"so the shell stays PID 1 and does not forward SIGTERM; {verdict.advice}",
                workload,
            )


def entry_script(dockerfile: Dockerfile, argv: list[str]) -> Path | None:
    """The script file (in the build context) that this entrypoint argv starts, if any."""
    while argv:
        program = argv[0].rsplit("/", 1)[-1]
        if program in GROUP_FORWARDERS or program == "lossless":
            return None
        if program in CHILD_FORWARDERS:
            if "-g" in argv:
                return None
            rest = argv[1:]
            argv = rest[rest.index("--") + 1 :] if "--" in rest else rest
            continue
        break
    if not argv:
        return None
    if is_shell(argv[0]):
        if len(argv) < 2 or argv[1].startswith("-"):
            return None
        argv = argv[1:]
    target = argv[0]
    workdir = dockerfile.workdir_of_final()
    candidates = (
        [target]
        if "/" in target
        else [posixpath.join(workdir, target), *(posixpath.join(d, target) for d in _PATH)]
    )
    for candidate in candidates:
        found = dockerfile.copied_file(posixpath.join(workdir, candidate))
        if found is not None:
            return found
    return None


def _is_shell_script(path: Path, text: str) -> bool:
    first = text.split("\n", 1)[0]
    if first.startswith("#!"):
        return any(is_shell(word) for word in first[2:].split())
    return path.suffix == ".sh"


@rule("LL303", "entrypoint-script-without-exec", family="entrypoint", severity=Severity.ERROR)
def entrypoint_script_without_exec(ctx: Context) -> Iterator[Hit]:
    """Entrypoint shell script whose final command is not `exec`ed.

    ## What it does
    Follows the final image's `ENTRYPOINT` (or `CMD` when there is none) to a shell script that
    the Dockerfile copies from the checked tree (`COPY docker-entrypoint.sh /usr/local/bin/`),
    also through `tini --`, and flags the script when its final command is not run with `exec`
    (a script that traps TERM and `wait`s is accepted). Shell functions are followed: the
    docker-library pattern `_main() { ...; exec "$@"; }` called as `_main "$@"` execs. A
    script that ends in a polling loop (`while ...; sleep N; done`) is accepted. The finding
    points at the script line.

    ## Why is this bad?
    The script's shell is PID 1 and the server its child. The shell does not forward SIGTERM,
    so the server never drains and is SIGKILLed at the end of the grace period, cutting every
    request in flight. `tini` only signals its direct child: the shell.

    ## Example
    ```sh
    #!/bin/sh
    set -e
    python manage.py migrate
    gunicorn app.wsgi --bind :8080
    ```

    ## Use instead
    ```sh
    #!/bin/sh
    set -e
    python manage.py migrate
    exec gunicorn app.wsgi --bind :8080
    ```
    """
    for dockerfile in ctx.dockerfiles:
        entrypoint = dockerfile.last("ENTRYPOINT")
        instruction = entrypoint or dockerfile.last("CMD")
        if instruction is None:
            continue
        argv = instruction.exec_form
        if argv is None:
            try:
                argv = shlex.split(instruction.args)
            except ValueError:
                continue
        script = entry_script(dockerfile, argv)
        if script is None:
            continue
        try:
            text = script.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        if not _is_shell_script(script, text):
            continue
        verdict = analyze(text, inline=False)
        if verdict.ok or verdict.command is None:
            continue
        shown = display_path(script)
        lines = text.splitlines()
        row = verdict.command.line
        raw = lines[row - 1] if 0 < row <= len(lines) else ""
        column = len(raw) - len(raw.lstrip()) + 1
        yield Hit(
            Location(shown, row, column, row, len(raw.rstrip()) + 1),
            f"entrypoint script {shown} ({instruction.keyword} of {dockerfile.path}:"
            f"{instruction.line}): {_verdict_text(verdict)}, so the shell stays PID 1 and does "
            f"not forward SIGTERM; {verdict.advice}",
            dockerfile,
        )
