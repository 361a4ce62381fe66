"""``lossless run [OPTIONS] -- CMD ARGS...``: the drain sequence for a process we cannot change.

:class:`Supervisor` runs ``CMD`` as a child in its own process group and is safe as PID 1:

1. **Start.** The child starts with every signal unblocked and at its default disposition. The
   supervisor blocks every signal it handles and collects them synchronously (``sigtimedwait``),
   so none is lost, not even at PID 1; it is a child subreaper, so orphaned grandchildren are
   reparented to it and reaped. Readiness (``/readyz`` on ``--probe-port``) passes once the child
   runs and its own health (``--health-url``/``--health-tcp``) passes; registration in service
   discovery happens then.
2. **Forwarding.** Every catchable signal other than SIGTERM/SIGINT and SIGCHLD is forwarded to
   the child's process group at once (SIGHUP, SIGUSR1, SIGQUIT, SIGWINCH...), as dumb-init does.
3. **First SIGTERM (or SIGINT), t0.** Readiness answers 503 at once, ``on_drain`` hooks
   (deregistration) start, and the child keeps running untouched for the drain delay D, so
   connections that still arrive while endpoint removal propagates are served.
4. **t0 + D.** The child's process group gets ``--stop-signal`` (default SIGTERM; nginx wants
   SIGQUIT): the child stops accepting and finishes what it has in flight, in its own way.
5. **Deadline** (t0 + shutdown timeout). Whatever is left of the group gets SIGKILL, recorded as
   forced (event ``forced``).
6. **Exit.** When the child has exited and nothing is left of its group or of the orphans, the
   supervisor exits with the child's exit code, or 128 + N when a signal N killed it (137 after
   SIGKILL), exactly as tini and dumb-init do.

A second SIGTERM skips what is left of D (the stop signal goes out at once); a third kills the
group at once. When the child exits by itself, readiness goes 503 and deregistration runs at once,
the rest of its group gets the stop signal, then SIGKILL at the deadline, and its code propagates.

Not covered: processes that leave the child's process group *and* are not reparented to the
supervisor (it only sees its own descendants); a terminal's job control for interactive children.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import time
from collections.abc import Callable, Sequence

from lossless import drain, events
from lossless.errors import LosslessError
from lossless.lifecycle import DRAIN_STATE_ENV, Lifecycle
from lossless.supervise import _checks, _process
from lossless.supervise._probe_server import ProbeServer

#: Signals that drive the drain sequence instead of being forwarded (as in ``lossless serve``).
DRAIN_SIGNALS = frozenset(drain.HANDLED_SIGNALS)

#: Longest the supervisor sleeps without looking at its child (a lost SIGCHLD, a drain started
#: through the admin endpoint).
_MAX_WAIT = 0.25


def forwarded_signals() -> frozenset[int]:
    """Every signal the supervisor forwards to the child's group."""
    reserved = _process.UNFORWARDED | DRAIN_SIGNALS | {signal.SIGCHLD}
    return frozenset(int(s) for s in signal.valid_signals() if s not in reserved)


class Supervisor:
    """One child under the drain sequence (see the module docstring for the whole contract).

    Block :func:`forwarded_signals`, the drain signals and SIGCHLD in the main thread before any
    thread starts (every thread inherits the mask, so only :meth:`run` collects them), create it,
    :meth:`start` it, then :meth:`run` (blocking, in the main thread) returns the exit code. It is
    not reusable. ``stop_signal`` goes to the child's group at t0 + D; ``lifecycle``
    carries D, the deadline, checks and hooks, exactly as for ``lossless serve``.
    """

    def __init__(
        self,
        argv: Sequence[str],
        lifecycle: Lifecycle,
        *,
        stop_signal: int = signal.SIGTERM,
        env: dict[str, str] | None = None,
    ) -> None:
        self.argv = tuple(argv)
        self.lifecycle = lifecycle
        self.stop_signal = stop_signal
        self.env = env
        self.child: _process.Child | None = None
        self.signals = drain.SignalCounter(lifecycle)
        self.stop_sent_at: float | None = None
        self.killed = False
        self._exit_seen = False
        self._orphans_signalled = False
        self._forwarded = forwarded_signals()
        self._waited = self._forwarded | DRAIN_SIGNALS | {signal.SIGCHLD}

    # -- start ------------------------------------------------------------------------------
    def start(self) -> _process.Child:
        """Spawn the child (raises :class:`LosslessError` when it cannot start) and register the
        readiness check that follows it."""
        _process.become_subreaper()
        self.child = child = _process.spawn(self.argv, self.env)
        events.emit("child_started", child=child.pid, argv=list(self.argv))

        def process_running() -> str:
            if child.running:
                return f"pid {child.pid} running"
            raise RuntimeError(f"pid {child.pid} exited with {child.exit_code}")

        self.lifecycle.add_check("process", process_running, timeout=1.0)
        return child

    def abort(self) -> None:
        """Kill the child's group and reap it (start-up failed after the child started)."""
        child = self.child
        if child is None or not child.running:
            return
        child.signal_group(signal.SIGKILL)
        try:
            child.status = os.waitpid(child.pid, 0)[1]
        except ChildProcessError:
            pass

    # -- main loop --------------------------------------------------------------------------
    def run(self) -> int:
        """Supervise until the child and everything left of its group is gone; return the
        child's exit code (128 + N for a signal)."""
        child = self.child
        if child is None:
            raise RuntimeError("Supervisor.run() called before start()")
        lc = self.lifecycle
        while True:
            self._reap(child)
            self._advance(child)
            if not child.running and not self._leftovers(child):
                break
            info = signal.sigtimedwait(self._waited, self._wait_time())
            if info is not None and info.si_signo in self._waited:
                self._on_signal(child, info.si_signo)
            # else: no signal. CPython (3.11 at least) returns an *uninitialised* siginfo, not
            # None, when the wait was interrupted (EINTR: the supervisor was stopped and
            # continued, SIGSTOP/SIGCONT) and its timeout passed meanwhile; no signal was
            # taken then (pending ones stay pending for the next wait). Forwarding its garbage
            # si_signo crashed the supervisor (os.killpg: EINVAL).
        code = child.exit_code
        assert code is not None
        lc.shutdown_sync()
        t0 = lc.t0
        events.emit(
            "stopped",
            exit_code=code,
            forced=len(lc.forced) or None,
            drain_duration=None if t0 is None else round(time.monotonic() - t0, 6),
            t_plus=lc.since_t0(),
        )
        return code

    def _wait_time(self) -> float:
        lc = self.lifecycle
        wait = _MAX_WAIT
        if lc.draining:
            if self.stop_sent_at is None:
                wait = min(wait, lc.delay_remaining())
            if not self.killed:
                wait = min(wait, lc.remaining())
        return max(wait, 0.0)

    def _reap(self, child: _process.Child) -> None:
        was_running = child.running
        _process.reap(child)
        if was_running and not child.running:
            self._on_child_exit(child)

    def _advance(self, child: _process.Child) -> None:
        """The time-driven steps: stop signal at t0 + D, SIGKILL at the deadline."""
        lc = self.lifecycle
        if not lc.draining:
            return
        if child.running and self.stop_sent_at is None and lc.delay_remaining() <= 0:
            self._send_stop(child)
        if not self.killed and lc.remaining() <= 0 and (child.running or self._leftovers(child)):
            what = "child" if child.running else "what was left of the child's process group"
            self._kill(child, f"{what} (pid {child.pid}) killed at the deadline")

    def _leftovers(self, child: _process.Child) -> bool:
        return child.group_alive() or bool(_process.direct_children())

    # -- actions ----------------------------------------------------------------------------
    def _on_signal(self, child: _process.Child, sig: int) -> None:
        name = drain.signal_name(sig)
        if sig == signal.SIGCHLD:
            return  # reaped at the top of the loop
        if sig not in DRAIN_SIGNALS:
            if child.running:
                child.signal_group(sig)
                events.emit("signal_forwarded", signal=name, child=child.pid)
            return
        if self.signals.handle(sig) is drain.Action.EXIT_NOW and not self.killed:
            self._kill(child, f"child (pid {child.pid}) killed by signal {self.signals.count}")

    def _send_stop(self, child: _process.Child) -> None:
        lc = self.lifecycle
        self.stop_sent_at = time.monotonic()
        child.signal_group(self.stop_signal)
        events.emit(
            "stop_signal_sent",
            signal=drain.signal_name(self.stop_signal),
            child=child.pid,
            drain_delay=lc.settings.delay,
            t_plus=lc.since_t0(),
        )

    def _kill(self, child: _process.Child, what: str) -> None:
        self.killed = True
        child.signal_group(signal.SIGKILL)
        for pid in _process.direct_children():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.lifecycle.record_forced(what)

    def _on_child_exit(self, child: _process.Child) -> None:
        lc = self.lifecycle
        status = child.status
        assert status is not None
        died_of = drain.signal_name(os.WTERMSIG(status)) if os.WIFSIGNALED(status) else None
        events.emit(
            "child_exited",
            logging.WARNING if not lc.draining else logging.INFO,
            child=child.pid,
            exit_code=child.exit_code,
            signal=died_of,
            t_plus=lc.since_t0(),
        )
        if not lc.draining:
            # Nothing is left to serve: readiness 503 and deregistration now, no drain delay.
            lc.drain(reason="child exited")
            lc.skip_delay()
        if not self.killed and not self._orphans_signalled:
            self._orphans_signalled = True
            others = _process.direct_children()
            if child.group_alive() or others:
                child.signal_group(self.stop_signal)
                for pid in others:
                    try:
                        os.kill(pid, self.stop_signal)
                    except ProcessLookupError:
                        pass
                events.emit(
                    "leftovers_signalled",
                    signal=drain.signal_name(self.stop_signal),
                    orphans=len(others) or None,
                    t_plus=lc.since_t0(),
                )


# -- the command ------------------------------------------------------------------------------
def add_run_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from lossless.lifecycle_args import add_settings_arguments

    parser = subparsers.add_parser(
        "run",
        help="run any command as PID 1 with the lossless drain sequence (delay, forward, reap)",
        description=(
            "Run CMD as a child: probes on --probe-port, signals forwarded, zombies reaped. On "
            "SIGTERM readiness goes 503 at once, the child keeps serving for the drain delay, "
            "then gets --stop-signal, then SIGKILL at the deadline. Exits with the child's code."
        ),
    )
    parser.add_argument("child_argv", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]")
    parser.add_argument(
        "--stop-signal",
        default="TERM",
        metavar="SIGNAL",
        help="what the child gets at t0 + D (default TERM; nginx wants QUIT)",
    )
    parser.add_argument(
        "--probe-port",
        type=int,
        metavar="PORT",
        help="serve /livez /readyz /startupz here (default: no probe server)",
    )
    parser.add_argument("--probe-host", default="0.0.0.0", metavar="HOST")
    parser.add_argument(
        "--port",
        type=int,
        metavar="PORT",
        help="the port the child serves on (for path-only --health-url, --health-tcp -, "
        "and registration)",
    )
    health = parser.add_mutually_exclusive_group()
    health.add_argument(
        "--health-url",
        metavar="URL|PATH",
        help="readiness follows this HTTP GET (200-399 passes); a PATH goes to 127.0.0.1:--port",
    )
    health.add_argument(
        "--health-tcp",
        metavar="[HOST:]PORT",
        help="readiness follows a TCP connect (- for the child's --port)",
    )
    _add_discovery_arguments(parser)
    add_settings_arguments(parser)
    parser.set_defaults(func=run_command)


def _discovery() -> object | None:
    try:
        cli: object = importlib.import_module("lossless.discovery.cli")
    except ImportError:
        return None
    if not (hasattr(cli, "add_arguments") and hasattr(cli, "attach_from_args")):
        return None
    return cli


def _add_discovery_arguments(parser: argparse.ArgumentParser) -> None:
    """Service-discovery flags from :mod:`lossless.discovery.cli` when it is part of the build;
    otherwise a ``--registry`` that explains it is not."""
    cli = _discovery()
    if cli is not None:
        add: Callable[[argparse.ArgumentParser], None] = cli.add_arguments  # type: ignore[attr-defined]
        add(parser)
        return
    parser.add_argument(
        "--registry",
        action="append",
        metavar="URL",
        help="register in service discovery (needs the lossless.discovery module)",
    )


def _attach_discovery(lifecycle: Lifecycle, args: argparse.Namespace) -> None:
    cli = _discovery()
    if cli is None:
        return
    attach: Callable[[Lifecycle, argparse.Namespace, int], object]
    attach = cli.attach_from_args  # type: ignore[attr-defined]
    # The child's --port is what gets advertised (and probed before registering); without it
    # discovery refuses port 0 with a one-line error.
    attach(lifecycle, args, args.port if args.port is not None else 0)


def _command(args: argparse.Namespace) -> list[str]:
    command = list(args.child_argv)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise LosslessError("no command given: use lossless run [OPTIONS] -- CMD [ARGS...]")
    return command


def run_command(args: argparse.Namespace) -> int:
    """``lossless run``: validate, bind the probe port, start the child, supervise it."""
    # Block the handled signals first: a SIGTERM that came before the child started would
    # otherwise kill the supervisor outright (Python's default disposition).
    supervisor_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _waited_signals())
    try:
        return _run(args)
    finally:
        while signal.sigtimedwait(_waited_signals(), 0) is not None:
            pass
        signal.pthread_sigmask(signal.SIG_SETMASK, supervisor_mask)


def _waited_signals() -> frozenset[int]:
    return forwarded_signals() | DRAIN_SIGNALS | {signal.SIGCHLD}


def _run(args: argparse.Namespace) -> int:
    from lossless.lifecycle_args import settings_from_args

    command = _command(args)
    settings = settings_from_args(args)
    try:
        stop_signal = _process.signal_number(args.stop_signal)
    except ValueError as exc:
        raise LosslessError(f"--stop-signal: {exc}") from None
    if stop_signal in (signal.SIGSTOP, signal.SIGCHLD):
        raise LosslessError(f"--stop-signal {stop_signal.name} cannot stop a process")
    for flag, port in (("--probe-port", args.probe_port), ("--port", args.port)):
        if port is not None and not 0 <= port < 65536:
            raise LosslessError(f"{flag} {port} is out of range")
    events.configure()
    lifecycle = Lifecycle(settings)
    timeout = settings.check_timeout
    if args.health_url:
        host, port, path, https = _checks.parse_http_target(args.health_url, args.port)
        lifecycle.add_check("health_url", _checks.http_check(host, port, path, https, timeout))
    elif args.health_tcp:
        host, port = _checks.parse_tcp_target(args.health_tcp, args.port)
        lifecycle.add_check("health_tcp", _checks.tcp_check(host, port, timeout))
    if getattr(args, "registry", None) and _discovery() is None:
        raise LosslessError("--registry: service discovery is not part of this build")
    probe_server = None
    if args.probe_port is not None:
        probe_server = ProbeServer(args.probe_host, args.probe_port, lifecycle)
    # Every descendant's lifecycle (each worker of any server, with the middleware) maps this
    # file and sees t0 the instant we write it (docs/run.md, "Servers under lossless run").
    # Our D, timeout and stream close window too: the middleware in each worker ends its open streams at
    # t0 + D (lossless.streams), when we signal the server, and lossless serve closes its
    # listeners then. The child's own flags still win over these variables.
    env = {
        **os.environ,
        DRAIN_STATE_ENV: lifecycle.share_drain_state(),
        settings.ENV["drain_delay"]: repr(settings.delay),
        settings.ENV["shutdown_timeout"]: repr(settings.shutdown_timeout),  # D must fit in it
        settings.ENV["stream_close_window"]: repr(settings.stream_window),
    }
    supervisor = Supervisor(command, lifecycle, stop_signal=stop_signal, env=env)
    try:
        child = supervisor.start()  # forks: before any thread of ours starts
        _attach_discovery(lifecycle, args)
    except BaseException:
        if probe_server is not None:
            probe_server.close()
        supervisor.abort()
        lifecycle.unshare_drain_state()
        raise
    events.emit(
        "run",
        child=child.pid,
        probe_port=probe_server.port if probe_server else None,
        stop_signal=stop_signal.name,
        drain_delay=settings.delay,
        shutdown_timeout=settings.shutdown_timeout,
    )
    if probe_server is not None:
        probe_server.start()
    lifecycle.startup_sync()
    try:
        return supervisor.run()
    finally:
        lifecycle.unshare_drain_state()
        if probe_server is not None:
            probe_server.close()
