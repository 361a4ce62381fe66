"""The child process of ``lossless run``: spawning it, signalling its group, reaping everything.

Linux semantics, as tini and dumb-init use them:

* the child starts in its own process group (``setpgid(0, 0)``) with every signal unblocked and
  at its default disposition, whatever the supervisor blocks or ignores, and with a parent-death
  signal (SIGKILL), so a supervisor killed outright does not leave it running;
* the supervisor marks itself a *child subreaper* (``PR_SET_CHILD_SUBREAPER``), so orphaned
  grandchildren are reparented to it even when it is not PID 1, and it reaps them;
* a signal blocked by the supervisor is never dropped by the kernel, even at PID 1 (where signals
  at their default disposition are ignored): the supervisor collects them with ``sigtimedwait``.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import shutil
import signal
from collections.abc import Mapping, Sequence

from lossless._prctl import PR_SET_CHILD_SUBREAPER, die_with_parent, prctl
from lossless.errors import LosslessError

#: Signals the supervisor never blocks, forwards or collects. SIGKILL and SIGSTOP cannot be
#: caught. The synchronous ones (SIGFPE, SIGILL, SIGSEGV, SIGBUS, SIGABRT, SIGTRAP, SIGSYS) report
#: a fault of the supervisor itself, and SIGTTIN/SIGTTOU must keep stopping it on a terminal: the
#: same list as tini's. SIGPIPE stays ignored (Python's setting) so that a closed log pipe never
#: kills the supervisor nor is mistaken for a signal to forward.
UNFORWARDED = frozenset(
    {
        signal.SIGKILL,
        signal.SIGSTOP,
        signal.SIGFPE,
        signal.SIGILL,
        signal.SIGSEGV,
        signal.SIGBUS,
        signal.SIGABRT,
        signal.SIGTRAP,
        signal.SIGSYS,
        signal.SIGTTIN,
        signal.SIGTTOU,
        signal.SIGPIPE,
    }
)


def become_subreaper() -> bool:
    """Make orphaned descendants children of this process (Linux >= 3.4); ``False`` if not
    possible (then only PID 1 gets them, as without tini ``-s``)."""
    fn = prctl()
    return fn is not None and int(fn(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0


def signal_number(text: str) -> signal.Signals:
    """``TERM``, ``SIGTERM`` or ``15`` → ``signal.SIGTERM``; ``ValueError`` otherwise."""
    raw = text.strip().upper()
    if raw.isdigit():
        return signal.Signals(int(raw))
    name = raw if raw.startswith("SIG") else "SIG" + raw
    try:
        return signal.Signals[name]
    except KeyError:
        raise ValueError(f"unknown signal {text!r}") from None


def exit_code(status: int) -> int:
    """The shell's view of a wait status: the exit code, or 128 + N for a death by signal N."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    return 1


@dataclasses.dataclass(slots=True)
class Child:
    """The supervised process; ``pid`` is also its process group id."""

    pid: int
    argv: tuple[str, ...]
    status: int | None = None  # the raw wait status once reaped

    @property
    def running(self) -> bool:
        return self.status is None

    @property
    def exit_code(self) -> int | None:
        return None if self.status is None else exit_code(self.status)

    def signal_group(self, sig: int) -> bool:
        """Send ``sig`` to the child's process group; ``False`` when the group is gone."""
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            return False
        except PermissionError:
            return False
        return True

    def group_alive(self) -> bool:
        """True while any process (not yet reaped) is left in the child's process group."""
        return self.signal_group(0)


def spawn(argv: Sequence[str], env: Mapping[str, str] | None = None) -> Child:
    """Start ``argv`` in a new process group, with all signals unblocked and at their default
    disposition, and ``PR_SET_PDEATHSIG`` = SIGKILL so that it does not outlive a supervisor
    killed with SIGKILL outside a container. Raises :class:`LosslessError` (one line) when it
    cannot start. Call it before starting threads (it forks)."""
    if not argv:
        raise LosslessError("no command given: use lossless run [OPTIONS] -- CMD [ARGS...]")
    program = argv[0]
    if os.sep not in program and shutil.which(program) is None:
        raise LosslessError(f"command not found: {program!r}")
    args = list(argv)
    environ = dict(os.environ if env is None else env)
    prctl()  # looked up here: the child only makes the system call
    defaults = [s for s in signal.valid_signals() if s not in (signal.SIGKILL, signal.SIGSTOP)]
    parent = os.getpid()
    errors_r, errors_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # the child: only what exec needs, then exec or report errno and exit
        code = 127
        try:
            os.close(errors_r)
            os.setpgid(0, 0)
            die_with_parent()
            if os.getppid() != parent:
                code = 137  # the supervisor died before prctl took effect
                raise SystemExit
            for sig in defaults:
                try:
                    signal.signal(sig, signal.SIG_DFL)
                except (OSError, ValueError):
                    pass
            signal.pthread_sigmask(signal.SIG_SETMASK, ())
            os.execvpe(program, args, environ)
        except OSError as exc:
            os.write(errors_w, str(exc.errno or 0).encode())
        except BaseException:
            pass
        finally:
            os._exit(code)
    os.close(errors_w)
    try:
        report = os.read(errors_r, 64)  # empty: exec succeeded (the pipe closed on exec)
    finally:
        os.close(errors_r)
    if report:
        os.waitpid(pid, 0)
        err = int(report or b"0")
        if err == errno.ENOENT:
            raise LosslessError(f"command not found: {program!r}")
        if err == errno.EACCES:
            raise LosslessError(f"command is not executable: {program!r}")
        raise LosslessError(f"cannot start {program!r}: {os.strerror(err)}")
    return Child(pid, tuple(argv))


def reap(child: Child) -> list[tuple[int, int]]:
    """Reap every exited child of this process without blocking (the supervised one and any
    reparented orphan); record the supervised child's status. Returns ``(pid, status)`` pairs."""
    reaped: list[tuple[int, int]] = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
        reaped.append((pid, status))
        if pid == child.pid:
            child.status = status
    return reaped


def direct_children() -> list[int]:
    """Live (non-zombie) processes whose parent is this process: the child, and orphans that
    were reparented here, including those that left the child's process group."""
    me = os.getpid()
    found: list[int] = []
    try:
        # /proc of another PID namespace (unshare without --mount-proc) would name strangers.
        if int(os.readlink("/proc/self")) != me:
            return found
        entries = os.listdir("/proc")
    except (OSError, ValueError):
        return found
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me and fields[0] != "Z":
            found.append(int(entry))
    return found
