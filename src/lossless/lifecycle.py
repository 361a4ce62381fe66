"""The lifecycle of one service instance and its drain sequence (DESIGN.md, "the contract").

States: ``STARTING → READY → DRAINING → STOPPING → STOPPED``.

* ``STARTING``: startup hooks run; readiness answers 503.
* ``READY``: startup hooks are done and every critical check passed once; ``on_ready`` callbacks
  (service-discovery registration) run here. Readiness then follows the critical checks.
* ``DRAINING`` from t0 (SIGTERM, or :meth:`Lifecycle.drain`): readiness answers 503 at once while
  liveness keeps answering 200; ``on_drain`` callbacks (deregistration) run at t0, each bounded by
  its own timeout; the server keeps accepting and serving for the drain delay D, every HTTP/1.1
  response carrying ``Connection: close``; at t0 + D the server integration closes its listeners
  and idle keep-alive connections and waits for in-flight requests until the deadline.
* ``STOPPING``: shutdown hooks, in reverse order of registration, each bounded by what is left of
  the deadline.
* ``STOPPED``: the process exits with ``exit_code`` or, if the deadline forced anything,
  ``forced_exit_code`` (and the log names what was cut).

One deadline covers everything: t0 + ``shutdown_timeout``.

The lifecycle is framework-free and thread-safe. Servers drive it (``lossless serve`` does);
middleware reads it. The drain state lives in a small shared-memory block, so processes forked
after the lifecycle was created (gunicorn workers) see the master's t0 at once. ``lossless run``
shares it with every descendant of its child, whatever the server, through a file named in
``LOSSLESS_DRAIN_STATE`` (:meth:`Lifecycle.share_drain_state`): a lifecycle created in a process
that has this variable maps it, so every worker of any server sees t0 at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import inspect
import itertools
import logging
import mmap
import os
import struct
import tempfile
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any, NamedTuple, Protocol, TypeVar

from lossless import events
from lossless.health import CheckFn, Health, _call_in_thread
from lossless.settings import Settings
from lossless.streams import StreamRegistry

Hook = Callable[[], Any] | Callable[[], Awaitable[Any]]
H = TypeVar("H", bound=Hook)


class State(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    STOPPING = "stopping"
    STOPPED = "stopped"


#: Names the file that holds the drain state of a ``lossless run`` supervisor; set by it in the
#: environment of its child, so every descendant's lifecycle shares the supervisor's t0.
DRAIN_STATE_ENV = "LOSSLESS_DRAIN_STATE"


class _SharedCell:
    """Drain state shared with other processes: draining flag, skip-delay flag, t0.

    Anonymous shared memory by default (inherited by forked children). With ``path``, a mapping
    of that file or memfd (``MAP_SHARED``), so descendants that open it share the state too,
    however they were started.
    """

    _FORMAT = "<BBxxxxxxd"
    SIZE = struct.calcsize(_FORMAT)

    def __init__(self, path: str | None = None) -> None:
        #: The file behind the cell, or ``None`` for anonymous memory.
        self.path = path
        if path is None:
            self._mem = mmap.mmap(-1, self.SIZE)
            return
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            if os.fstat(fd).st_size != self.SIZE:
                raise OSError(f"{path} is not a lossless drain state ({self.SIZE} bytes)")
            self._mem = mmap.mmap(fd, self.SIZE)
        finally:
            os.close(fd)

    @classmethod
    def from_env(cls) -> _SharedCell:
        """The cell named by ``LOSSLESS_DRAIN_STATE`` when set and usable, else a private one
        (a set but unusable variable is logged: the drain would otherwise go unseen)."""
        path = os.environ.get(DRAIN_STATE_ENV)
        if path:
            try:
                return cls(path)
            except OSError as exc:
                events.emit(
                    "drain_state_unusable",
                    logging.ERROR,
                    path=path,
                    error=exc.strerror or str(exc),
                    hint="this process will not see the supervisor's t0",
                )
        return cls()

    @classmethod
    def create_named(cls, source: _SharedCell) -> tuple[_SharedCell, str, int | None]:
        """A copy of ``source`` that other processes can open by name: a memfd named through
        ``/proc/<pid>/fd/<fd>`` (nothing on any filesystem, gone with this process even after a
        SIGKILL), else a file in the temp directory. Returns the cell, the name, and the memfd
        to keep open (``None`` for a file, which the caller removes)."""
        content = bytes(source._mem[: cls.SIZE])
        if hasattr(os, "memfd_create"):
            fd = os.memfd_create("lossless-drain", os.MFD_CLOEXEC)
            os.write(fd, content)
            path = f"/proc/{os.getpid()}/fd/{fd}"
            if _same_file(path, fd):
                return cls(f"/proc/self/fd/{fd}")._named(path), path, fd
            # /proc is not this PID namespace's (unshare without --mount-proc): a file instead.
            os.close(fd)
        directory = "/dev/shm" if os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()
        fd, path = tempfile.mkstemp(prefix="lossless-drain-", dir=directory)
        try:
            os.write(fd, content)
        finally:
            os.close(fd)
        return cls(path), path, None

    def _named(self, path: str) -> _SharedCell:
        self.path = path
        return self

    def draining(self) -> bool:
        return self._mem[0] != 0

    def read(self) -> tuple[bool, bool, float]:
        draining, skip, t0 = struct.unpack_from(self._FORMAT, self._mem, 0)
        return bool(draining), bool(skip), float(t0)

    def write(self, draining: bool, skip: bool, t0: float) -> None:
        struct.pack_into(self._FORMAT, self._mem, 0, int(draining), int(skip), t0)


def _same_file(path: str, fd: int) -> bool:
    """Whether ``path`` names the open file ``fd`` (``/proc`` may belong to another PID
    namespace than ours)."""
    try:
        named, held = os.stat(path), os.fstat(fd)
    except OSError:
        return False
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)


@dataclasses.dataclass(slots=True)
class InFlight:
    """One request being served: what it is and when it started (``time.monotonic()``)."""

    description: str
    started: float


def _describe(what: object) -> str:
    """``METHOD /path`` for an ASGI scope or WSGI environ, else ``str(what)``."""
    if isinstance(what, Mapping):
        method = what.get("method") or what.get("REQUEST_METHOD")
        path = what.get("path") or what.get("PATH_INFO")
        if method and path:
            return f"{method} {path}"
    return str(what)


class FastPath(NamedTuple):
    """What a middleware may touch on every request without a call (see
    :meth:`Lifecycle.fast_path`). Keys of ``in_flight`` that are positive belong to the caller
    (e.g. ``id(scope)``, unique while the request runs); negative ones are tokens of
    :meth:`Lifecycle.request_started`. Values are ``(what, started)``: a description (string,
    ASGI scope or WSGI environ) and its ``time.monotonic()``."""

    in_flight: dict[int, tuple[object, float]]
    #: Byte 0 is non-zero from t0 on.
    drain_flag: mmap.mmap
    #: Call after removing an entry while ``drain_flag[0]`` is set (counts it as served during
    #: the drain).
    finished_while_draining: Callable[[], None]


class Lifecycle:
    """One instance's states, hooks, in-flight requests and drain deadline.

    Create one per process (``lossless serve`` creates it before the app is imported, and
    :func:`get_lifecycle` returns it); pass it to the middleware, or let the middleware find it.
    """

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = (settings or Settings.from_env()).resolved()
        self.health = Health(
            interval=self.settings.check_interval, default_timeout=self.settings.check_timeout
        )
        self.health.on_evaluated(self._maybe_ready)
        self.health.on_evaluated(self._join_drain_started_elsewhere)
        self._shared = _SharedCell.from_env()
        #: True when this process maps a supervisor's drain state (``LOSSLESS_DRAIN_STATE``:
        #: ``lossless run``), which signals this process's server at t0 + D.
        self.supervised = self._shared.path is not None
        self._shared_fd: int | None = None
        self._owned_path: str | None = None
        self._lock = threading.RLock()
        self._local = State.STARTING
        self._startup_done = False
        self._startup_hooks: list[Hook] = []
        self._shutdown_hooks: list[Hook] = []
        # (name, hook, timeout, pid of the registering process)
        self._drain_hooks: list[tuple[str, Hook, float | None, int]] = []
        self._drain_hooks_begun = False
        self._ready_callbacks: list[Callable[[], Any]] = []
        # token -> (what, started): a tuple, not an object, to keep request_started cheap.
        self._inflight: dict[int, tuple[object, float]] = {}
        #: Byte 0 is non-zero from t0 on: the cheapest "are we draining?" for hot paths.
        self.drain_flag: mmap.mmap = self._shared._mem
        self._ids = itertools.count(1)
        self._skip = threading.Event()
        self.served_during_drain = 0
        self.forced: list[str] = []
        self._drain_hook_threads: list[threading.Thread] = []
        #: Open ASGI streaming responses of this process (see :mod:`lossless.streams`).
        self.streams = StreamRegistry(self.settings.stream_end)
        self._drain_events: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Event]
        self._drain_events = weakref.WeakKeyDictionary()
        self._drain_watchers: set[asyncio.Task[None]] = set()
        self._cut_hooks: set[str] = set()

    # -- registration -----------------------------------------------------------------------
    def on_startup(self, fn: H) -> H:
        """Register a startup hook (sync or async); hooks run in order before READY."""
        self._startup_hooks.append(fn)
        return fn

    def on_shutdown(self, fn: H) -> H:
        """Register a shutdown hook; hooks run in reverse order in STOPPING, each bounded by what
        is left of the deadline."""
        self._shutdown_hooks.append(fn)
        return fn

    def on_drain(self, fn: H, *, name: str | None = None, timeout: float | None = None) -> H:
        """Register a hook that runs at t0 (deregistration, flushing a buffer, acknowledging a
        queue). Each starts at t0 in its own thread, bounded by ``timeout`` (default
        ``drain_hook_timeout``) and by the deadline, and is awaited before the process exits,
        whatever the drain delay D is (:meth:`wait_drain_hooks`). Its start, end, failure or
        timeout is logged (``drain_hook_started``, ``drain_hook_done``, ``drain_hook_failed``,
        ``drain_hook_timeout``). Under a multi-process server hooks run once, in the process that
        received the signal (the master)."""
        label = name or str(getattr(fn, "__name__", "hook"))
        self._drain_hooks.append((label, fn, timeout, os.getpid()))
        return fn

    def on_ready(self, fn: Callable[[], Any]) -> Callable[[], Any]:
        """Call ``fn`` once, from the checker thread, when the instance first becomes READY."""
        self._ready_callbacks.append(fn)
        return fn

    @property
    def wants_ready(self) -> bool:
        """True when ``on_ready`` callbacks are registered (someone needs to learn of READY)."""
        return bool(self._ready_callbacks)

    def forget_ready_callbacks(self) -> None:
        """Drop the ``on_ready`` callbacks: a forked gunicorn worker must not run the
        instance-level ones (discovery registration) it inherited; its master runs them."""
        self._ready_callbacks.clear()

    def add_check(
        self,
        name: str,
        fn: CheckFn,
        *,
        critical: bool = True,
        timeout: float | None = None,
        liveness: bool = False,
    ) -> None:
        """Register a health check; see :class:`lossless.health.Health.add`."""
        self.health.add(name, fn, critical=critical, timeout=timeout, liveness=liveness)

    def check(
        self, name: str | None = None, *, critical: bool = True, timeout: float | None = None
    ) -> Callable[[H], H]:
        """Decorator form of :meth:`add_check` for readiness checks."""

        def register(fn: H) -> H:
            self.add_check(name or fn.__name__, fn, critical=critical, timeout=timeout)
            return fn

        return register

    def renewed(self, settings: Settings | None = None) -> Lifecycle:
        """A new lifecycle in STARTING, with this one's settings (or ``settings``) and every
        check, hook and callback registered on this one so far: the app's lifecycle as it was
        after import, for a test that runs it again (:mod:`lossless.testing`). Its drain state
        is private, never shared with this one."""
        fresh = Lifecycle(settings or self.settings)
        fresh._shared = _SharedCell()
        fresh.drain_flag = fresh._shared._mem
        for check in self.health.checks():
            fresh.add_check(
                check.name,
                check.fn,
                critical=check.critical,
                timeout=check.timeout,
                liveness=check.liveness,
            )
        fresh._startup_hooks = list(self._startup_hooks)
        fresh._shutdown_hooks = list(self._shutdown_hooks)
        fresh._drain_hooks = [(n, h, t, os.getpid()) for n, h, t, _pid in self._drain_hooks]
        fresh._ready_callbacks = list(self._ready_callbacks)
        return fresh

    # -- state ------------------------------------------------------------------------------
    @property
    def state(self) -> State:
        draining, _skip, _t0 = self._shared.read()
        local = self._local
        if draining and local in (State.STARTING, State.READY):
            return State.DRAINING
        return local

    @property
    def started(self) -> bool:
        """True once the startup hooks have finished."""
        return self._startup_done

    @property
    def draining(self) -> bool:
        """True from t0 on (DRAINING, STOPPING, STOPPED)."""
        return self._shared.draining()

    def is_ready(self) -> bool:
        """What readiness answers: READY and every critical check passing."""
        return self.state is State.READY and self.health.readiness_ok()

    @property
    def t0(self) -> float | None:
        """``time.monotonic()`` at the start of the drain, or ``None``."""
        draining, _skip, t0 = self._shared.read()
        return t0 if draining else None

    @property
    def deadline(self) -> float | None:
        t0 = self.t0
        return None if t0 is None else t0 + self.settings.shutdown_timeout

    @property
    def delay_end(self) -> float | None:
        """When listeners close: t0 + D, or t0 once the delay was skipped."""
        draining, skip, t0 = self._shared.read()
        if not draining:
            return None
        return t0 if skip else t0 + self.settings.delay

    def remaining(self) -> float:
        """Seconds left before the deadline (the full timeout before t0; never negative)."""
        deadline = self.deadline
        if deadline is None:
            return self.settings.shutdown_timeout
        return max(0.0, deadline - time.monotonic())

    def since_t0(self) -> float | None:
        t0 = self.t0
        return None if t0 is None else round(time.monotonic() - t0, 6)

    def _set(self, state: State, **fields: Any) -> None:
        with self._lock:
            self._local = state
        events.emit(state.value, t_plus=self.since_t0(), **fields)

    # -- startup ----------------------------------------------------------------------------
    async def startup(self) -> None:
        """Run the startup hooks in order, then start background checks. READY follows as soon
        as every critical check passes (at once when there are none). A failing hook raises."""
        events.emit(
            "starting", startup_hooks=len(self._startup_hooks), checks=len(self.health.results())
        )
        for hook in self._startup_hooks:
            await _call(hook)
        self._startup_done = True
        self.health.start()
        self._maybe_ready()

    def startup_sync(self) -> None:
        """:meth:`startup` for threads without a running event loop (WSGI workers)."""
        asyncio.run(self.startup())

    def mark_ready(self) -> bool:
        """Declare READY from outside: for supervisors whose readiness is decided elsewhere (the
        gunicorn master once a worker answers ready, ``lossless run`` once its child is healthy).
        Runs the ``on_ready`` callbacks once. Returns ``False`` (and does nothing) once draining."""
        self._startup_done = True
        with self._lock:
            if self._local is not State.STARTING or self.draining:
                return False
            self._local = State.READY
        self._fire_ready()
        return True

    def _fire_ready(self) -> None:
        events.emit("ready")
        for callback in self._ready_callbacks:
            try:
                callback()
            except Exception as exc:
                events.emit("ready_callback_failed", logging.ERROR, error=repr(exc))

    def _maybe_ready(self) -> None:
        with self._lock:
            if self._local is not State.STARTING or not self._startup_done or self.draining:
                return
            if not self.health.readiness_ok():
                return
            self._local = State.READY
        self._fire_ready()

    # -- drain ------------------------------------------------------------------------------
    def drain(self, reason: str = "drain() called") -> bool:
        """Begin the drain sequence at t0 = now, from any thread (not from a signal handler's
        stack in the middle of I/O: servers call it from their loop).

        First readiness answers 503 and responses start carrying ``Connection: close``; then each
        ``on_drain`` hook (deregistration) starts in its own thread, bounded by its timeout. The
        server integration then serves on for the drain delay D, closes its listeners and idle
        connections, and waits for in-flight requests until the deadline (t0 +
        ``shutdown_timeout``). ``drain`` itself returns at once; it does not stop the process.

        Returns ``True`` when this call started the drain, ``False`` when it had already begun
        (the call is then a no-op: a drain cannot be undone or restarted).
        """
        with self._lock:
            if self.draining:
                return False
            self._shared.write(True, False, time.monotonic())
            self._drain_hooks_begun = True
        self._begin_drain(reason, t_plus=0.0)
        return True

    def join_drain(self, reason: str = "drain started by another process") -> bool:
        """For a process whose t0 was set by another one sharing its drain state (a worker
        under ``lossless run``, a supervisor whose child's app called :meth:`drain`): log
        ``draining`` and start the ``on_drain`` hooks registered *in this process* (inherited
        copies of a forking parent's hooks are the parent's to run). Returns ``True`` when this
        call did that; ``False`` (no-op) before t0 or when it was already done here. The health
        checker calls it after every round, so hooks start within one check interval of t0."""
        with self._lock:
            if not self.draining or self._drain_hooks_begun:
                return False
            self._drain_hooks_begun = True
        self._begin_drain(reason, t_plus=self.since_t0(), own_only=True)
        return True

    def _join_drain_started_elsewhere(self) -> None:
        if not self._drain_hooks_begun and self.draining:
            self.join_drain()

    def _begin_drain(self, reason: str, *, t_plus: float | None, own_only: bool = False) -> None:
        s = self.settings
        events.emit(
            "draining",
            t_plus=t_plus,
            reason=reason,
            drain_delay=s.delay,
            shutdown_timeout=s.shutdown_timeout,
            in_flight=self.in_flight,
        )
        pid = os.getpid()
        for name, hook, timeout, owner in self._drain_hooks:
            if own_only and owner != pid:
                continue
            bound = min(s.drain_hook_timeout if timeout is None else timeout, self.remaining())
            thread = threading.Thread(
                target=self._run_drain_hook, args=(name, hook, bound), name=name, daemon=True
            )
            thread.start()
            self._drain_hook_threads.append(thread)

    def share_drain_state(self) -> str:
        """Move the drain state to shared memory that other processes can open by name, and
        return the name, for ``LOSSLESS_DRAIN_STATE`` in the environment of a child: every
        lifecycle created in a descendant then reads (and, with :meth:`drain`, writes) the same
        t0. The name is ``/proc/<pid>/fd/<fd>`` of a memfd held by this process (Linux; a file
        in the temp directory elsewhere): it needs no cleanup and exists as long as this
        process does. When the state already comes from ``LOSSLESS_DRAIN_STATE`` (a ``lossless
        run`` under another), that name is passed on. Call before the child starts; idempotent;
        :meth:`unshare_drain_state` releases it."""
        if self._shared.path is not None:
            return self._shared.path
        with self._lock:
            self._shared, path, self._shared_fd = _SharedCell.create_named(self._shared)
            self._owned_path = None if self._shared_fd is not None else path
            self.drain_flag = self._shared._mem
        return path

    def unshare_drain_state(self) -> None:
        """Release what :meth:`share_drain_state` created (processes that mapped it keep their
        mapping). No-op when this lifecycle did not create one."""
        fd, self._shared_fd = self._shared_fd, None
        path, self._owned_path = self._owned_path, None
        if fd is not None:
            os.close(fd)
        if path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def _run_drain_hook(self, name: str, hook: Hook, bound: float) -> None:
        start = time.monotonic()
        events.emit(
            "drain_hook_started", hook=name, timeout=round(bound, 6), t_plus=self.since_t0()
        )

        try:
            asyncio.run(_call_bounded(hook, bound))
        except TimeoutError:
            if self.remaining() <= 0.01:  # cut by the deadline, not by its own timeout
                self._cut_hooks.add(name)
                self.record_forced(f"drain hook {name} cut at the deadline")
                return
            events.emit(
                "drain_hook_timeout",
                logging.WARNING,
                hook=name,
                timeout=bound,
                t_plus=self.since_t0(),
            )
        except Exception as exc:
            events.emit(
                "drain_hook_failed",
                logging.WARNING,
                hook=name,
                error=repr(exc),
                t_plus=self.since_t0(),
            )
        else:
            events.emit(
                "drain_hook_done",
                hook=name,
                duration=round(time.monotonic() - start, 6),
                t_plus=self.since_t0(),
            )

    async def wait_draining(self) -> None:
        """Return at t0 (at once when the drain has begun), in any process that shares this
        lifecycle (gunicorn and multi-worker uvicorn workers see their master's t0). For apps
        that want to end a stream on their own (send a last SSE event, then return) before the
        server ends it at t0 + D. One 10 ms watcher per event loop, however many callers wait."""
        if self.drain_flag[0]:
            return
        loop = asyncio.get_running_loop()
        event = self._drain_events.get(loop)
        if event is None:
            event = self._drain_events[loop] = asyncio.Event()
            self._drain_watchers.add(loop.create_task(self._watch_drain(event)))
        await event.wait()

    async def _watch_drain(self, event: asyncio.Event) -> None:
        while not self.drain_flag[0]:
            await asyncio.sleep(0.01)
        event.set()

    def stream_end_at(self, offset: float) -> float | None:
        """When a stream whose share of the close window is ``offset`` (0..1) ends: t0 + D +
        offset x window; ``None`` before t0."""
        end = self.delay_end
        if end is None:
            return None
        return end + offset * self.settings.stream_window

    def drain_hooks_running(self) -> list[str]:
        """Names of the ``on_drain`` hooks started at t0 that have not finished yet."""
        return [t.name for t in self._drain_hook_threads if t.is_alive()]

    def wait_drain_hooks(self) -> None:
        """Block until every ``on_drain`` hook started at t0 has ended (done, failed or cut at its
        own timeout, each logged), and never past the deadline: a hook still running then is
        recorded as forced. Called by :meth:`shutdown` and :meth:`stopped`, so whatever D is, no
        process under the lifecycle exits while a drain hook runs. A process whose t0 was set
        by another one (a forked worker) and that has not started its own hooks yet starts them
        now (:meth:`join_drain`), so a short drain delay never skips them. Idempotent."""
        self.join_drain()
        for thread in self._drain_hook_threads:
            thread.join(max(self.remaining(), 0.0) + 0.05)
        self._cut_drain_hooks()

    async def wait_drain_hooks_async(self) -> None:
        """:meth:`wait_drain_hooks` without blocking the event loop (5 ms resolution)."""
        self.join_drain()
        while self.drain_hooks_running() and self.remaining() > 0:
            await asyncio.sleep(min(0.005, self.remaining()))
        self._cut_drain_hooks()

    def _cut_drain_hooks(self) -> None:
        for thread in self._drain_hook_threads:
            if thread.is_alive() and thread.name not in self._cut_hooks:
                self._cut_hooks.add(thread.name)
                self.record_forced(f"drain hook {thread.name} cut at the deadline")

    def skip_delay(self) -> None:
        """End the drain delay now (a second signal does this). No-op before t0."""
        with self._lock:
            draining, skip, t0 = self._shared.read()
            if not draining or skip:
                return
            self._shared.write(True, True, t0)
        self._skip.set()
        events.emit("drain_delay_skipped", t_plus=self.since_t0())

    def delay_remaining(self) -> float:
        end = self.delay_end
        return 0.0 if end is None else max(0.0, end - time.monotonic())

    async def wait_delay(self) -> None:
        """Sleep until t0 + D, returning early if the delay is skipped."""
        while (left := self.delay_remaining()) > 0:
            await asyncio.sleep(min(left, 0.005))

    def wait_delay_sync(self) -> None:
        while (left := self.delay_remaining()) > 0:
            self._skip.wait(min(left, 0.05))

    # -- in-flight work ---------------------------------------------------------------------
    def request_started(self, what: object = "request") -> int:
        """Count a request as in flight until :meth:`request_finished` with the returned token.
        ``what`` describes it when it has to be logged: a string, an ASGI scope or a WSGI
        environ (formatted as ``METHOD /path`` only then).

        This is on every request's path, so it takes no lock: ``next`` on a counter and dict
        assignment are atomic under the GIL."""
        token = -next(self._ids)  # negative: never equal to a hot-path key (see FastPath)
        self._inflight[token] = (what, time.monotonic())
        return token

    def request_finished(self, token: int) -> None:
        if self._inflight.pop(token, None) is not None and self.drain_flag[0]:
            self._count_served_during_drain()

    def _count_served_during_drain(self) -> None:
        with self._lock:
            self.served_during_drain += 1

    def fast_path(self) -> FastPath:
        """The in-flight registry and the drain flag, for a middleware's per-request path
        (no call, no lock; see :class:`FastPath`). Take it again after
        :meth:`share_drain_state`."""
        return FastPath(self._inflight, self.drain_flag, self._count_served_during_drain)

    @contextlib.contextmanager
    def track(self, what: object = "request") -> Iterator[None]:
        token = self.request_started(what)
        try:
            yield
        finally:
            self.request_finished(token)

    @property
    def in_flight(self) -> int:
        return len(self._inflight)

    def in_flight_requests(self) -> list[InFlight]:
        return [InFlight(_describe(w), t) for w, t in self._inflight.copy().values()]

    def record_forced(self, what: str) -> None:
        """Note something the deadline cut (a request, a hook, a worker); it is logged and makes
        the exit code ``forced_exit_code``."""
        self.forced.append(what)
        events.emit("forced", logging.ERROR, what=what, t_plus=self.since_t0())

    def cut_in_flight(self) -> int:
        """Record every request still in flight as cut by the deadline; return how many."""
        now = time.monotonic()
        cut = self.in_flight_requests()
        for item in cut:
            self.record_forced(f"request {item.description} cut after {now - item.started:.3f} s")
        return len(cut)

    # -- shutdown ---------------------------------------------------------------------------
    async def shutdown(self) -> None:
        """Enter STOPPING and run the shutdown hooks in reverse order, each bounded by what is
        left of the deadline; a hook cut by it is recorded as forced. Idempotent."""
        with self._lock:
            if self._local in (State.STOPPING, State.STOPPED):
                return
        self._set(State.STOPPING, in_flight=self.in_flight)
        await self.wait_drain_hooks_async()
        for hook in reversed(self._shutdown_hooks):
            name = getattr(hook, "__qualname__", repr(hook))
            left = self.remaining()
            try:
                await _call_bounded(hook, left)
            except TimeoutError:
                self.record_forced(f"shutdown hook {name} cut at the deadline")
            except Exception as exc:
                events.emit("shutdown_hook_failed", logging.ERROR, hook=name, error=repr(exc))
        self.health.stop()

    def shutdown_sync(self) -> None:
        asyncio.run(self.shutdown())

    def stopped(self) -> int:
        """Wait for the drain hooks (bounded by the deadline, see :meth:`wait_drain_hooks`), enter
        STOPPED and return the exit code the process should use."""
        self.wait_drain_hooks()
        code = self.settings.forced_exit_code if self.forced else self.settings.exit_code
        t0 = self.t0
        self._set(
            State.STOPPED,
            exit_code=code,
            forced=len(self.forced) or None,
            served_during_drain=self.served_during_drain,
            drain_duration=None if t0 is None else round(time.monotonic() - t0, 6),
        )
        return code


async def _call(hook: Hook) -> Any:
    result = hook()
    if inspect.isawaitable(result):
        result = await result
    return result


async def _call_bounded(hook: Hook, timeout: float) -> Any:
    """Run ``hook`` for at most ``timeout`` seconds, raising ``TimeoutError`` past it. A sync
    hook runs in its own daemon thread, so a hook that blocks cannot block the caller past the
    bound (the blocked call is abandoned, not killed)."""
    timeout = max(timeout, 0.001)
    if inspect.iscoroutinefunction(hook):
        return await asyncio.wait_for(hook(), timeout)
    start = time.monotonic()
    result = await asyncio.wait_for(asyncio.wrap_future(_call_in_thread(hook)), timeout)
    if inspect.isawaitable(result):
        left = timeout - (time.monotonic() - start)
        result = await asyncio.wait_for(result, max(left, 0.001))
    return result


_default: Lifecycle | None = None
_default_lock = threading.Lock()


class Follower(Protocol):
    """Something that uses the process-wide lifecycle and must learn when it is replaced."""

    def use_lifecycle(self, lifecycle: Lifecycle) -> None: ...


_followers: weakref.WeakSet[Any] = weakref.WeakSet()


def get_lifecycle() -> Lifecycle:
    """The process-wide lifecycle: the one ``lossless serve`` created, the one given to the
    first middleware constructed with ``lifecycle=`` (see :func:`adopt_lifecycle`), or a new one
    from the ``LOSSLESS_*`` environment on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Lifecycle()
        return _default


def set_lifecycle(lifecycle: Lifecycle | None) -> None:
    """Make ``lifecycle`` the process-wide one (``None`` forgets it). Middleware that found its
    lifecycle through :func:`get_lifecycle` follows the new one (``lossless.testing`` uses this
    to give every test a fresh lifecycle)."""
    global _default
    with _default_lock:
        _default = lifecycle
        followers = list(_followers)
    if lifecycle is not None:
        for follower in followers:
            follower.use_lifecycle(lifecycle)


def follow_default(follower: Follower) -> Lifecycle:
    """Return the process-wide lifecycle and keep ``follower`` (weakly referenced) informed of
    :func:`set_lifecycle` calls."""
    lifecycle = get_lifecycle()
    with _default_lock:
        _followers.add(follower)
    return lifecycle


def adopt_lifecycle(lifecycle: Lifecycle, user: str) -> None:
    """Called by a middleware given ``lifecycle=`` explicitly. With no process-wide lifecycle
    yet, ``lifecycle`` becomes it, so :func:`get_lifecycle` elsewhere in the app returns it
    instead of silently creating a second one that nothing drives. When another one already
    exists (``lossless serve`` created it, or code called :func:`get_lifecycle` first), two
    lifecycles drain independently: that is logged as ``lifecycle_conflict`` (ERROR), naming
    ``user``."""
    global _default
    with _default_lock:
        if _default is None:
            _default = lifecycle
            return
        existing = _default
    if existing is not lifecycle:
        events.emit(
            "lifecycle_conflict",
            logging.ERROR,
            user=user,
            hint="this middleware was given its own Lifecycle, but the process already has one "
            "(lossless serve's, or get_lifecycle() ran first): checks, hooks and drains "
            "registered on one are invisible to the other; pass get_lifecycle() instead",
        )
