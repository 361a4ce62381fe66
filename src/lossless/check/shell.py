"""Just enough shell analysis to tell whether a script hands PID 1 to the real process.

A shell that runs a server as a child, instead of replacing itself with ``exec``, stays PID 1:
SIGTERM reaches the shell, which does not forward it, so the server never drains and is
SIGKILLed at the end of the grace period. This module finds a script's *final command* and says
whether it is ``exec``ed.

It is a line-oriented approximation, not a parser: continuation lines are joined, comments
dropped (quote-aware), commands split on ``;``, ``&&``, ``||``, ``|`` and ``&``, control words
(``then``, ``do``, ``fi``, ``done``, case patterns...) skipped, trailing ``exit`` ignored. A script
that traps TERM and ``wait``s for its children is taken as forwarding signals itself.

Shell functions are followed: docker-library's entrypoints define ``_main() { ...; exec "$@"; }``
and end with ``_main "$@"``, which execs. A script that ends in a polling loop (``while ...;
do ...; sleep N; done``) is the process itself: ``exec`` would end the loop, so it is not
flagged; a loop that restarts a server is, with advice that fits a loop.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

__all__ = ["Command", "ShellVerdict", "analyze", "final_command", "is_shell", "split_commands"]

_SHELLS = {"sh", "bash", "ash", "dash", "zsh", "ksh", "busybox"}
_SKIP_WORDS = {"fi", "done", "esac", "}", ")", ";;", "else", "then", "do", "{", "(", "in"}
_LEADING_WORDS = ("then ", "do ", "else ", "{ ", "( ", "! ")
_REDIRECT = re.compile(r"^\d*[<>]")
_TRAP_TERM = re.compile(r"\btrap\b[^\n]*\b(?:SIG)?(?:TERM|15)\b")
_CASE_PATTERN = re.compile(r"^\(?[^\s()]+\)\s*")


def is_shell(word: str) -> bool:
    """``sh``, ``/bin/bash``, ``/usr/bin/env bash``'s last word..."""
    return word.rsplit("/", 1)[-1] in _SHELLS


@dataclass(frozen=True)
class Command:
    """One simple command: its text, 1-based line in the script, and how it was separated."""

    text: str
    line: int
    background: bool = False
    piped: bool = False
    #: The function whose body holds this command (``None`` at the top level).
    function: str | None = None
    #: The loop (``while``/``until``/``for``) body holding it, as the loop's first line; else 0.
    loop: int = 0

    @property
    def words(self) -> list[str]:
        try:
            return shlex.split(self.text, comments=False)
        except ValueError:
            return self.text.split()

    @property
    def is_exec(self) -> bool:
        """``exec PROGRAM ...``: the shell is replaced (``exec >log`` only redirects: not that)."""
        words = self.words
        while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
            words = words[1:]
        if len(words) < 2 or words[0] != "exec":
            return False
        rest = [w for w in words[1:] if not w.startswith("-")]
        return any(not _REDIRECT.match(w) for w in rest)


def _strip_comment(line: str) -> str:
    out = []
    quote = ""
    prev = " "
    for ch in line:
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and prev.isspace():
            break
        out.append(ch)
        prev = ch
    return "".join(out)


def _logical_lines(script: str) -> list[tuple[int, str]]:
    lines: list[tuple[int, str]] = []
    buffer = ""
    start = 0
    heredoc: str | None = None
    for number, raw in enumerate(script.splitlines(), start=1):
        if heredoc is not None:
            if raw.strip() == heredoc:
                heredoc = None
            continue
        text = raw if buffer else _strip_comment(raw)
        if not buffer:
            start = number
        if text.rstrip().endswith("\\"):
            buffer += text.rstrip()[:-1] + " "
            continue
        buffer += text
        match = re.search(r"<<-?\s*['\"]?(\w+)['\"]?", buffer)
        if match:
            heredoc = match.group(1)
        if buffer.strip():
            lines.append((start, buffer.strip()))
        buffer = ""
    if buffer.strip():
        lines.append((start, buffer.strip()))
    return lines


_FUNCTION = re.compile(r"^(?:function\s+)?([A-Za-z_][\w-]*)\s*(?:\(\s*\))?\s*(\{)?\s*$")
_FUNCTION_KEYWORD = re.compile(r"^function\s+[A-Za-z_][\w-]*")


def _braces(text: str) -> int:
    """Net ``{``/``}`` words in ``text`` (a brace group or a function body)."""
    words = re.split(r"[\s;]+", text)
    return words.count("{") - words.count("}")


def split_commands(script: str) -> list[Command]:
    """The simple commands of ``script`` in order (see the module docstring for the limits)."""
    commands: list[Command] = []
    in_case = False
    function: str | None = None
    depth = 0  # brace depth inside the current function
    pending_function: str | None = None  # "name()" seen, its "{" not yet
    loops: list[int] = []  # first lines of the loops we are in
    for number, line in _logical_lines(script):
        if re.match(r"^case\b", line):
            in_case = True
        if re.match(r"^esac\b", line):
            in_case = False
        header = _FUNCTION.match(line)
        if function is None and header and ("(" in line or _FUNCTION_KEYWORD.match(line)):
            if header.group(2):
                function, depth = header.group(1), 1
            else:
                pending_function = header.group(1)
            continue
        if pending_function is not None and line.strip() == "{":
            function, depth, pending_function = pending_function, 1, None
            continue
        pending_function = None
        if function is not None:
            depth += _braces(line)
            if depth <= 0:
                function, depth = None, 0
                continue
        for part, sep in _split_line(line):
            text = part.strip()
            if re.match(r"^(while|until|for)\b", text):
                loops.append(number)
            if re.match(r"^done\b", text) and loops:
                loops.pop()
            if in_case:
                text = _CASE_PATTERN.sub("", text, count=1) if text.endswith(")") else text
                text = _CASE_PATTERN.sub("", text, count=1) if ")" in text[:40] else text
            changed = True
            while changed:
                changed = False
                for word in _LEADING_WORDS:
                    if text.startswith(word):
                        text = text[len(word) :].strip()
                        changed = True
            if not text or text in _SKIP_WORDS or re.fullmatch(r"[\w-]+\s*\(\)\s*\{?", text):
                continue
            if re.match(r"^(if|while|until|elif|case|for)\b", text):
                continue
            commands.append(
                Command(
                    text,
                    number,
                    background=sep == "&",
                    piped=sep == "|",
                    function=function,
                    loop=loops[-1] if loops else 0,
                )
            )
    return commands


def _split_line(line: str) -> list[tuple[str, str]]:
    """Split on command separators outside quotes; each part with the separator that ends it."""
    parts: list[tuple[str, str]] = []
    current: list[str] = []
    quote = ""
    i = 0
    while i < len(line):
        ch = line[i]
        if quote:
            if ch == quote:
                quote = ""
            current.append(ch)
        elif ch in "'\"":
            quote = ch
            current.append(ch)
        elif line.startswith(";;", i):
            parts.append(("".join(current), ";"))
            current = []
            i += 1
        elif line.startswith("&&", i) or line.startswith("||", i):
            parts.append(("".join(current), line[i : i + 2]))
            current = []
            i += 1
        elif ch in ";&|" and not (ch == "&" and i > 0 and line[i - 1] in "<>"):
            if ch == "&" and i + 1 < len(line) and line[i + 1] == ">":
                current.append(ch)
            else:
                parts.append(("".join(current), ch))
                current = []
        else:
            current.append(ch)
        i += 1
    parts.append(("".join(current), ""))
    return parts


def _last(commands: list[Command]) -> Command | None:
    commands = list(commands)
    while commands and commands[-1].words[0] in ("exit", "wait", "return"):
        commands.pop()
    return commands[-1] if commands else None


def _program(command: Command) -> str:
    words = command.words
    while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
        words = words[1:]
    return words[0] if words else ""


def final_command(script: str) -> Command | None:
    """The last command the script runs (trailing ``exit``/``wait`` skipped), or ``None``.

    A call of a function the script defines is followed into the function's body (up to a
    few levels), so ``_main "$@"`` yields ``_main``'s last command.
    """
    commands = [c for c in split_commands(script) if c.words]
    last = _last([c for c in commands if c.function is None])
    for _ in range(5):
        if last is None:
            return None
        body = [c for c in commands if c.function == _program(last)]
        if not body or last.function == _program(last):
            return last
        last = _last(body)
    return last


@dataclass(frozen=True)
class ShellVerdict:
    """``ok`` when signals reach the real process; else the offending command and why."""

    ok: bool
    command: Command | None = None
    reason: str = ""
    #: What to do about it (the rules append it to their message).
    advice: str = "prefix it with exec"


def analyze(script: str, *, inline: bool) -> ShellVerdict:
    """Does the real process receive SIGTERM when this script is PID 1?

    ``inline`` is for ``sh -c STRING``: bash, dash (≥ 0.5.11) and BusyBox ash replace themselves
    with the command when the string is one simple command, so that case is accepted; a script
    file gets no such optimisation.
    """
    if _TRAP_TERM.search(script) and re.search(r"\bwait\b", script):
        return ShellVerdict(True, reason="traps TERM and waits")
    commands = [c for c in split_commands(script) if c.words]
    last = final_command(script)
    if last is None:
        return ShellVerdict(True, reason="runs nothing")
    if last.is_exec:
        return ShellVerdict(True, last)
    if last.loop:
        body = [c for c in commands if c.loop == last.loop]
        if any(_program(c) == "sleep" for c in body):
            return ShellVerdict(True, last, "ends in a polling loop that the shell runs itself")
        return ShellVerdict(
            False,
            last,
            "is run in a loop that restarts it",
            "trap TERM and forward it to the child (exec would end the loop)",
        )
    if last.background:
        return ShellVerdict(False, last, "runs in the background")
    if last.piped or any(c.piped for c in commands if c.line == last.line):
        return ShellVerdict(False, last, "is part of a pipeline (a pipeline cannot be exec'ed)")
    if inline and len(commands) == 1 and last.function is None:
        return ShellVerdict(True, last, "single command: the shell execs it")
    return ShellVerdict(False, last, "is not exec'ed")
