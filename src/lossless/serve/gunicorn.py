"""gunicorn under the lifecycle: the drain sequence of DESIGN.md with a master and N workers.

Plain gunicorn closes its listeners the moment the master gets SIGTERM. Here:

1. Master, first SIGTERM/SIGINT: t0. The lifecycle (created before the fork, its drain state in
   shared memory) drains: every worker's readiness answers 503 at once and every response carries
   ``Connection: close``; deregistration hooks run in the master. Workers keep accepting for D.
2. At t0 + D (or at once on a second signal) the master closes its listeners and sends SIGTERM to
   the workers. Each worker first accepts what is already queued in the accept backlog (served
   with ``Connection: close``; closing the last copy of a listener would reset it), then closes
   its copy of the listeners (so new connections are refused, never queued into a backlog nobody
   reads), closes idle keep-alive connections, and
   finishes in-flight requests until the deadline; at the deadline it records what it cut and
   exits with the forced exit code. Shutdown hooks run in each worker, bounded by the deadline.
3. The master reaps workers as they exit (woken by SIGCHLD, not by a poll), SIGKILLs any left
   100 ms after the deadline (workers cut and name their requests at the deadline themselves),
   and exits 0, or the forced exit code when a worker was cut or killed.

A third signal kills the workers and exits at once. Workers ignore SIGINT: the master, which gets
Ctrl-C too, decides. Requires the gthread worker of gunicorn 27 (pinned in the extra). The same
master runs uvicorn workers for ``lossless serve APP --workers N`` (:mod:`lossless.serve.workers`).
A user's gunicorn config file (``-c``) is applied between our defaults and the explicit flags; its
hooks are chained after ours.
"""

from __future__ import annotations

import errno
import inspect
import math
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter
from gunicorn.workers.gthread import ThreadWorker

from lossless import drain, events
from lossless.errors import LosslessError
from lossless.lifecycle import Lifecycle, get_lifecycle
from lossless.serve._backlog import accept_backlog
from lossless.wsgi import LosslessWSGIMiddleware

_POLL = 0.005
#: The master's wait for its workers is woken by SIGCHLD. Should the kernel deliver a SIGCHLD to
#: another thread of the master (a drain hook's), Python runs its handler only when the main
#: thread next wakes: this bounds that case. Not the normal path.
_BACKSTOP = 0.1
#: Workers cut what is left at the deadline and log it themselves; the master SIGKILLs the ones
#: still alive this long after it (a backstop, not the normal path).
_KILL_GRACE = 0.1


class LosslessWorker(ThreadWorker):  # type: ignore[misc]
    """gunicorn's gthread worker, stopping the lifecycle's way (see module docstring)."""

    def init_signals(self) -> None:
        super().init_signals()
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the master decides what Ctrl-C means

    def run(self) -> None:
        import selectors

        self.poller.register(
            self.method_queue.fileno(), selectors.EVENT_READ, self.method_queue.run_callbacks
        )
        self.set_accept_enabled(True)
        while self.alive:
            self.notify()
            can_accept = self.nr_conns < self.worker_connections
            if can_accept != self._accepting:
                self.set_accept_enabled(can_accept)
            self.wait_for_and_dispatch_events(timeout=1.0)
            if not self.is_parent_alive():
                break
            self.murder_keepalived()
            self.murder_pending()

        lc = get_lifecycle()
        # Stop accepting and close our copy of the listeners now: the master closed its own.
        # First take what the kernel already queued: closing the last copy would reset it.
        self.set_accept_enabled(False)
        taken = accept_backlog(self.sockets, self._serve_accepted)
        for sock in self.sockets:
            sock.close()
        if taken:
            events.emit("backlog_accepted", connections=taken, t_plus=lc.since_t0())
        # Idle keep-alive connections: close them now; busy ones close after their response.
        self.murder_keepalived(force=True)
        while self.nr_conns > 0 and lc.remaining() > 0:
            self.notify()
            self.wait_for_and_dispatch_events(timeout=min(1.0, lc.remaining()))
            self.murder_keepalived(force=True)
            self.murder_pending()
        forced = False
        if self.nr_conns > 0:
            lc.cut_in_flight()
            forced = True
        self.murder_keepalived(force=True)
        self.tpool.shutdown(wait=False)
        self.poller.close()
        self.method_queue.close()
        lc.shutdown_sync()
        code = lc.stopped()
        if forced or code:
            # os._exit: request threads still running at the deadline must not delay the exit.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code or lc.settings.forced_exit_code)

    def _serve_accepted(self, client: socket.socket, addr: Any, listener: Any) -> None:
        from gunicorn.workers.gthread import TConn

        self.nr_conns += 1
        client.setblocking(True)
        self.enqueue_req(TConn(self.cfg, client, addr, listener.getsockname()))


def _pre_request(worker: Any, req: Any) -> None:
    """gunicorn hook: from t0 on, answer with ``Connection: close`` (the app cannot: PEP 3333
    forbids hop-by-hop headers in WSGI apps)."""
    if get_lifecycle().draining:
        req.must_close = True


def _post_fork(server: Any, worker: Any) -> None:
    """In a new worker: instance-level callbacks (discovery registration) belong to the master,
    which runs them once for the whole pod; a worker must not run its inherited copies."""
    get_lifecycle().forget_ready_callbacks()


def _post_worker_init(worker: Any) -> None:
    app = worker.wsgi
    if isinstance(app, LosslessWSGIMiddleware):
        app.ensure_started()


class LosslessArbiter(Arbiter):  # type: ignore[misc]
    """gunicorn's master, with the lifecycle's signal meanings and a precise stop."""

    lifecycle: Lifecycle
    LISTENERS: list[Any]

    def __init__(self, app: Any, lifecycle: Lifecycle) -> None:
        self.lifecycle = lifecycle
        self._signals = drain.SignalCounter(lifecycle)
        self._delay_over = threading.Event()
        self._worker_forced = False
        super().__init__(app)

    # Signals (called from the main loop, not from the handler).
    def _stop_signal(self, sig: int) -> None:
        action = self._signals.handle(sig)
        if action is drain.Action.DRAIN:
            threading.Thread(target=self._wait_delay, daemon=True).start()
        elif action is drain.Action.EXIT_NOW:
            self._exit_now()

    def _wait_delay(self) -> None:
        self.lifecycle.wait_delay_sync()
        self._delay_over.set()
        self.wakeup()

    def handle_term(self) -> None:
        self._stop_signal(signal.SIGTERM)

    def handle_int(self) -> None:
        self._stop_signal(signal.SIGINT)

    def _poll_worker_readiness(self) -> None:
        """The master is READY (its ``on_ready`` callbacks, e.g. discovery registration, run)
        once a worker answers the readiness probe on the bound address."""
        lc = self.lifecycle
        if lc.started or lc.draining or not self.LISTENERS or not lc.wants_ready:
            return
        import http.client

        host, port = self.LISTENERS[0].sock.getsockname()[:2]
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1" if host == "0.0.0.0" else "::1"
        try:
            conn = http.client.HTTPConnection(host, port, timeout=0.5)
            conn.request("GET", lc.settings.readiness_path)
            ready = conn.getresponse().status == 200
            conn.close()
        except OSError:
            return
        if ready:
            lc.mark_ready()

    def maybe_promote_master(self) -> None:
        # Called at the top of every main-loop iteration: the place to end the drain delay.
        self._poll_worker_readiness()
        if self._delay_over.is_set() or (
            self.lifecycle.draining and self.lifecycle.delay_remaining() <= 0
        ):
            raise StopIteration
        if self.lifecycle.draining and not self._signals.count:
            # drain() was called from code in the master: serve through the delay, then stop.
            self._signals.drain_started_elsewhere()
            threading.Thread(target=self._wait_delay, daemon=True).start()
        super().maybe_promote_master()

    def manage_workers(self) -> None:
        """gunicorn's: replace workers that died, except from t0 on. A replacement would start
        draining at once, and its boot (gunicorn spreads spawns over up to 100 ms each) would
        delay the master's own stop; uvicorn workers also end by themselves at t0 + D."""
        if self.lifecycle.draining:
            return
        super().manage_workers()

    def _exit_now(self) -> None:
        lc = self.lifecycle
        lc.record_forced(f"third signal: {len(self.WORKERS)} worker(s) killed")
        self.kill_workers(signal.SIGKILL)
        os._exit(lc.settings.forced_exit_code)

    def halt(self, reason: str | None = None, exit_status: int = 0) -> None:
        self._stop_control_server()
        self.stop()
        lc = self.lifecycle
        if exit_status != 0:
            lc.record_forced(f"gunicorn halted: {reason}")
        code = lc.stopped()
        if self.pidfile is not None:
            self.pidfile.unlink()
        self.cfg.on_exit(self)
        sys.exit(code if code else exit_status)

    def stop(self, graceful: bool = True) -> None:
        """Close listeners, SIGTERM the workers, reap them as they exit until the deadline, then
        SIGKILL what is left. Further signals: the next one (third overall) exits at once."""
        lc = self.lifecycle
        lc.drain(reason="master stop")
        from gunicorn import sock

        sock.close_sockets(self.LISTENERS, not self.cfg.reuse_port)
        self.LISTENERS = []
        events.emit("listeners_closed", t_plus=lc.since_t0(), workers=len(self.WORKERS))
        self.kill_workers(signal.SIGTERM if graceful else signal.SIGQUIT)
        while self.WORKERS and lc.remaining() + _KILL_GRACE > 0:
            self._reap()
            self._poll_signals()
            if self.WORKERS:
                self._wait_signal(min(_BACKSTOP, lc.remaining() + _KILL_GRACE))
        if self.WORKERS:
            lc.record_forced(f"{len(self.WORKERS)} worker(s) SIGKILLed after the deadline")
            self.kill_workers(signal.SIGKILL)
            end = time.monotonic() + 1.0
            while self.WORKERS and time.monotonic() < end:
                self._reap()
                time.sleep(_POLL)
        if self._worker_forced:
            lc.record_forced("a worker cut requests at the deadline")

    def _wait_signal(self, timeout: float) -> None:
        """Sleep until a signal is queued (SIGCHLD: a worker exited) or ``timeout`` passes, so a
        worker's exit is reaped at once. gunicorn's own ``stop()`` sleeps 100 ms between reaps
        (and this class polled every 5 ms before): each tick was exit latency or wasted wakeups."""
        try:
            sig = self.SIG_QUEUE.get(timeout=max(timeout, 0.0))
        except Exception:
            return
        if sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            self._stop_signal(sig)

    def _poll_signals(self) -> None:
        while True:
            try:
                sig = self.SIG_QUEUE.get_nowait()
            except Exception:
                return
            if sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
                self._stop_signal(sig)

    def _reap(self) -> None:
        try:
            while True:
                wpid, status = os.waitpid(-1, os.WNOHANG)
                if not wpid:
                    return
                worker = self.WORKERS.pop(wpid, None)
                if worker is None:
                    continue
                code = os.waitstatus_to_exitcode(status)
                events.emit(
                    "worker_exited", worker=wpid, code=code, t_plus=self.lifecycle.since_t0()
                )
                if code != 0:
                    self._worker_forced = True
                worker.tmp.close()
                self.cfg.child_exit(self, worker)
        except OSError as exc:
            if exc.errno != errno.ECHILD:
                raise


class LosslessApplication(BaseApplication):  # type: ignore[misc]
    """A gunicorn application serving the app ``load_app()`` returns under the lifecycle: a WSGI
    app on the gthread :class:`LosslessWorker`, or (``asgi=True``) an ASGI app on uvicorn workers
    (:class:`lossless.serve.workers.Worker`, which reads ``uvicorn_options``).

    Like gunicorn, the app is imported in each worker after the fork (``preload=False``, the
    default): threads it starts and connections it opens at import belong to that worker. With
    ``preload=True`` the master imports it once before forking (gunicorn's ``--preload``). The
    master itself needs only the lifecycle (settings and drain state in shared memory), created
    from flags and ``LOSSLESS_*`` variables before the fork, never the app. A worker that cannot
    import the app prints one line and exits with gunicorn's "app failed to load" code, which
    stops the master."""

    #: Tells the uvicorn worker that this master drives the drain sequence.
    lossless_managed = True

    def __init__(
        self,
        load_app: Callable[[], Any],
        lifecycle: Lifecycle,
        options: dict[str, Any],
        *,
        preload: bool = False,
        defaults: dict[str, Any] | None = None,
        config_file: str | None = None,
        asgi: bool = False,
        uvicorn_options: dict[str, Any] | None = None,
    ) -> None:
        self.load_app = load_app
        self.lifecycle = lifecycle
        self.options = {**options, "preload_app": True} if preload else options
        self.defaults = dict(defaults or {})
        self.config_file = config_file
        self.asgi = asgi
        self.uvicorn_options = dict(uvicorn_options or {})
        # Read the user's file before gunicorn's loader, which turns our errors into exit 1.
        self._user_config = None if config_file is None else _read_config_file(config_file)
        super().__init__()

    def load_config(self) -> None:
        """Our defaults, then the user's config file (``-c``), then the explicit flags; then the
        settings the drain sequence needs, with the user's hooks chained after ours."""
        for key, value in self.defaults.items():
            self.cfg.set(key, value)
        if self.config_file is not None and self._user_config is not None:
            self._load_user_config(self.config_file, self._user_config)
        for key, value in self.options.items():
            self.cfg.set(key, value)
        worker = "lossless.serve.workers.Worker" if self.asgi else _dotted(LosslessWorker)
        self.cfg.set("worker_class", worker)
        self.cfg.set("graceful_timeout", math.ceil(self.lifecycle.settings.shutdown_timeout))
        for name, ours in (
            ("pre_request", _pre_request),
            ("post_worker_init", _post_worker_init),
            ("post_fork", _post_fork),
        ):
            self.cfg.set(name, _chain(ours, self.cfg.settings[name].get()))

    def _load_user_config(self, path: str, namespace: dict[str, Any]) -> None:
        for key, value in namespace.items():
            if key not in self.cfg.settings:
                continue
            if key == "worker_class":
                raise LosslessError(
                    f"{path}: worker_class cannot be honoured: lossless serve runs its own "
                    "workers (use gunicorn -k lossless.serve.workers.Worker to keep yours)"
                )
            if key == "graceful_timeout":
                events.emit(
                    "config_overridden",
                    setting="graceful_timeout",
                    file=path,
                    reason="it follows --shutdown-timeout",
                )
                continue
            try:
                self.cfg.set(key.lower(), value)
            except Exception as exc:
                raise LosslessError(f"{path}: invalid value for {key}: {exc}") from None

    def load(self) -> Any:
        from gunicorn.errors import AppImportError

        from lossless.errors import LosslessError

        try:
            app = self.load_app()
        except LosslessError as exc:
            raise AppImportError(f"lossless serve: {exc}") from None
        if self.asgi:
            from lossless.asgi import LosslessMiddleware

            if not isinstance(app, LosslessMiddleware):
                app = LosslessMiddleware(app, lifecycle=self.lifecycle)
            return app
        if not isinstance(app, LosslessWSGIMiddleware):
            app = LosslessWSGIMiddleware(app, lifecycle=self.lifecycle)
        return app

    def run(self) -> None:
        LosslessArbiter(self, self.lifecycle).run()


def _read_config_file(path: str) -> dict[str, Any]:
    """Run a gunicorn config file; a one-line error naming the file and line when it fails."""
    import runpy
    import traceback

    try:
        return runpy.run_path(path, run_name="__config__")
    except SyntaxError as exc:
        raise LosslessError(f"{path}:{exc.lineno}: {exc.msg}") from None
    except Exception as exc:
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == path]
        where = f"{path}:{frames[-1].lineno}" if frames else path
        raise LosslessError(f"{where}: {type(exc).__name__}: {exc}") from None


def _chain(ours: Callable[..., Any], theirs: Callable[..., Any]) -> Callable[..., Any]:
    """A gunicorn hook that runs ours, then the user's (from their config file)."""
    if getattr(theirs, "__module__", "").startswith("gunicorn."):
        return ours  # gunicorn's default no-op

    def both(*args: Any) -> None:
        ours(*args)
        theirs(*args)

    # gunicorn checks a hook's arity: give the chain the same signature as ours.
    both.__signature__ = inspect.signature(ours)  # type: ignore[attr-defined]
    return both


def _dotted(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"
