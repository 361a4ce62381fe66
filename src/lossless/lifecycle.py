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
middleware reads it. The drain state lives in a small anonymous shared-memory block, so processes
forked after the lifecycle was created (gunicorn workers) see the master's t0 at once.
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
import struct
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any, TypeVar

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


class _SharedCell:
    """Drain state shared with forked children: draining flag, skip-delay flag, t0."""

    _FORMAT = "<BBxxxxxxd"

    def __init__(self) -> None:
        self._mem = mmap.mmap(-1, struct.calcsize(self._FORMAT))

    def draining(self) -> bool:
        return self._mem[0] != 0

    def read(self) -> tuple[bool, bool, float]:
        draining, skip, t0 = struct.unpack_from(self._FORMAT, self._mem, 0)
        return bool(draining), bool(skip), float(t0)

    def write(self, draining: bool, skip: bool, t0: float) -> None:
        struct.pack_into(self._FORMAT, self._mem, 0, int(draining), int(skip), t0)


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
        self._shared = _SharedCell()
        self._lock = threading.RLock()
        self._local = State.STARTING
        self._startup_done = False
        self._startup_hooks: list[Hook] = []
        self._shutdown_hooks: list[Hook] = []
        self._drain_hooks: list[tuple[str, Hook, float | None]] = []
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
        self._drain_hooks.append((label, fn, timeout))
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
        s = self.settings
        events.emit(
            "draining",
            t_plus=0.0,
            reason=reason,
            drain_delay=s.delay,
            shutdown_timeout=s.shutdown_timeout,
            in_flight=self.in_flight,
        )
        for name, hook, timeout in self._drain_hooks:
            bound = min(s.drain_hook_timeout if timeout is None else timeout, self.remaining())
            thread = threading.Thread(
                target=self._run_drain_hook, args=(name, hook, bound), name=name, daemon=True
            )
            thread.start()
            self._drain_hook_threads.append(thread)
        return True

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
        process under the lifecycle exits while a drain hook runs. Idempotent."""
        for thread in self._drain_hook_threads:
            thread.join(max(self.remaining(), 0.0) + 0.05)
        self._cut_drain_hooks()

    async def wait_drain_hooks_async(self) -> None:
        """:meth:`wait_drain_hooks` without blocking the event loop (5 ms resolution)."""
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
        token = -next(self._ids)  # negative: never equal to a hot-path key (see track_scope)
        self._inflight[token] = (what, time.monotonic())
        return token

    def request_finished(self, token: int) -> None:
        if self._inflight.pop(token, None) is not None and self.drain_flag[0]:
            with self._lock:
                self.served_during_drain += 1

    def _finished_slow_path(self) -> None:
        """After a hot-path request ended while draining: count it as served during the drain."""
        if self.drain_flag[0]:
            with self._lock:
                self.served_during_drain += 1

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


def get_lifecycle() -> Lifecycle:
    """The process-wide lifecycle: the one ``lossless serve`` created, or a new one from the
    ``LOSSLESS_*`` environment on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Lifecycle()
        return _default


def set_lifecycle(lifecycle: Lifecycle | None) -> None:
    """Make ``lifecycle`` the process-wide one (``None`` forgets it; tests use this)."""
    global _default
    with _default_lock:
        _default = lifecycle
