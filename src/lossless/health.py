"""Health checks evaluated in the background, so a probe is O(1).

A check is a sync or async callable returning anything (a string becomes its output) or raising
(the exception text becomes its output, and the check fails). Each check has a timeout; checks run
on an interval in one background thread with its own event loop, all concurrently, and probes only
read the last results. Hence a slow or hanging dependency never piles up probe requests and never
slows a probe: a check still running when its timeout passes is reported failed (``timeout``) and
is not started again until the hung call returns.

A sync check runs on a thread of its own that lives as long as the check: every call of that
check runs on the same thread, so thread-local state (Django's database connection with
``CONN_MAX_AGE``, a SQLAlchemy ``scoped_session``, a client kept in ``threading.local``) is
opened once and reused, not once per interval. Calls are never stacked on that thread (a call
still running is reported ``timeout`` and not started again), and a call is still cut by its
timeout (the verdict does not wait; the thread is released when the call returns).

``critical`` readiness checks decide readiness; optional ones are reported and never fail it.
Liveness checks (``liveness=True``) must not depend on other services (a failing database would
otherwise restart every replica at once); the runtime's default liveness check is the event loop's
responsiveness, registered by the ASGI middleware.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import os
import queue
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import Any

CheckFn = Callable[[], Any] | Callable[[], Awaitable[Any]]


@dataclasses.dataclass(frozen=True, slots=True)
class CheckResult:
    """The outcome of one evaluation of one check."""

    name: str
    ok: bool
    output: str
    critical: bool
    duration: float
    checked_at: float  # time.monotonic(); 0.0 while pending

    @property
    def pending(self) -> bool:
        """True while the check has not been evaluated yet."""
        return self.checked_at == 0.0


@dataclasses.dataclass(slots=True)
class Check:
    name: str
    fn: CheckFn
    critical: bool = True
    timeout: float = 1.0
    liveness: bool = False
    _running: Future[Any] | None = None
    _started: float = 0.0
    _runner: _CheckThread | None = None

    def call_sync(self) -> Future[Any]:
        """Run the (sync) check on its own thread; see :class:`_CheckThread`."""
        runner = self._runner
        if runner is None or not runner.usable():
            runner = self._runner = _CheckThread(self.name, self.fn)
        return runner.submit()


class _CheckThread:
    """The thread of one sync check: started on first use, it runs every call of that check in
    order, so thread-local state is reused. A forked child gets a new one (threads do not
    survive a fork). :meth:`stop` ends it after the call it is running, if any."""

    def __init__(self, name: str, fn: Callable[[], Any]) -> None:
        self._fn = fn
        self._stopped = False
        self._pid = os.getpid()
        self._calls: queue.SimpleQueue[Future[Any] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=self._run, name=f"lossless-check-{name}", daemon=True
        )
        self._thread.start()

    def usable(self) -> bool:
        return not self._stopped and self._pid == os.getpid() and self._thread.is_alive()

    def submit(self) -> Future[Any]:
        future: Future[Any] = Future()
        self._calls.put(future)
        return future

    def stop(self) -> None:
        self._stopped = True
        self._calls.put(None)

    def _run(self) -> None:
        while (future := self._calls.get()) is not None:
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(self._fn())
            except BaseException as exc:
                future.set_exception(exc)


class Health:
    """A set of checks and their latest results.

    :meth:`start` begins background evaluation (idempotent, and fork-aware: a forked child that
    calls it gets its own thread); :meth:`evaluate` runs one round synchronously. Readers
    (:meth:`results`, :meth:`readiness_ok`, :meth:`liveness_ok`) never block on a check.
    """

    def __init__(self, *, interval: float = 1.0, default_timeout: float = 1.0) -> None:
        self.interval = interval
        self.default_timeout = default_timeout
        self._checks: dict[str, Check] = {}
        self._results: dict[str, CheckResult] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._owner_pid = 0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._listeners: list[Callable[[], None]] = []

    # -- registration ---------------------------------------------------------------------------
    def add(
        self,
        name: str,
        fn: CheckFn,
        *,
        critical: bool = True,
        timeout: float | None = None,
        liveness: bool = False,
    ) -> None:
        """Register a check. Names are unique; ``timeout`` defaults to the health's default."""
        if name in self._checks:
            raise ValueError(f"a check named {name!r} is already registered")
        if not callable(fn):
            raise TypeError(f"check {name!r} is not callable")
        t = self.default_timeout if timeout is None else timeout
        if t <= 0:
            raise ValueError(f"check {name!r}: timeout must be positive, got {t}")
        with self._lock:
            self._checks[name] = Check(name, fn, critical, t, liveness)
        self._wake.set()

    def checks(self) -> list[Check]:
        """The registered checks, in registration order."""
        with self._lock:
            return list(self._checks.values())

    def on_evaluated(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (from the checker thread) after every round of evaluation."""
        self._listeners.append(callback)

    # -- reading --------------------------------------------------------------------------------
    def results(self, *, liveness: bool = False) -> list[CheckResult]:
        """Latest results of the readiness (or liveness) checks, in registration order; a check
        not evaluated yet appears failed with output ``pending``."""
        out: list[CheckResult] = []
        with self._lock:
            for check in self._checks.values():
                if check.liveness != liveness:
                    continue
                result = self._results.get(check.name)
                if result is None:
                    result = CheckResult(check.name, False, "pending", check.critical, 0.0, 0.0)
                out.append(result)
        return out

    def readiness_ok(self) -> bool:
        """True when every critical readiness check passed in its latest evaluation."""
        return all(r.ok for r in self.results() if r.critical)

    def liveness_ok(self) -> bool:
        return all(r.ok for r in self.results(liveness=True) if r.critical)

    # -- evaluation -----------------------------------------------------------------------------
    def start(self) -> None:
        """Start the background checker thread in this process (no-op when already running)."""
        pid = os.getpid()
        if self._thread is not None and self._owner_pid == pid and self._thread.is_alive():
            return
        self._owner_pid = pid
        self._lock = threading.Lock()  # a lock inherited over fork may be held by a dead thread
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lossless-health", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop background evaluation and the threads of the sync checks (each after the call
        it is running)."""
        self._stop.set()
        self._wake.set()
        with self._lock:
            runners = [c._runner for c in self._checks.values() if c._runner is not None]
        for runner in runners:
            runner.stop()

    def evaluate(self) -> None:
        """Run one round now, in the calling thread (with a private event loop)."""
        asyncio.run(self._round())

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            while not self._stop.is_set():
                loop.run_until_complete(self._round())
                self._wake.wait(self.interval)
                self._wake.clear()
        finally:
            loop.close()

    async def _round(self) -> None:
        with self._lock:
            checks = list(self._checks.values())
        if checks:
            await asyncio.gather(*(self._evaluate(c) for c in checks))
        for callback in self._listeners:
            callback()

    async def _evaluate(self, check: Check) -> None:
        start = time.monotonic()
        if check._running is not None and not check._running.done():
            # A previous call still hangs: report it, never stack another call on top.
            self._store(
                check, False, f"timeout (still running after {start - check._started:.1f} s)", start
            )
            return
        try:
            if inspect.iscoroutinefunction(check.fn):
                value = await asyncio.wait_for(check.fn(), check.timeout)
            else:
                future = check.call_sync()
                check._running, check._started = future, start
                value = await asyncio.wait_for(asyncio.wrap_future(future), check.timeout)
                if inspect.isawaitable(value):
                    value = await asyncio.wait_for(
                        value, max(0.0, start + check.timeout - time.monotonic())
                    )
        except TimeoutError:
            self._store(check, False, f"timeout after {check.timeout:g} s", start)
        except Exception as exc:  # a failing check is data, not an error of ours
            self._store(
                check,
                False,
                f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__,
                start,
            )
        else:
            if value is False:
                self._store(check, False, "failed", start)
            else:
                self._store(check, True, value if isinstance(value, str) and value else "ok", start)

    def _store(self, check: Check, ok: bool, output: str, start: float) -> None:
        now = time.monotonic()
        with self._lock:
            self._results[check.name] = CheckResult(
                check.name, ok, output, check.critical, now - start, now
            )


def _call_in_thread(fn: Callable[[], Any]) -> Future[Any]:
    """Run a sync check in a fresh daemon thread: a hung call then costs one parked thread, never
    a blocked pool shared with the other checks."""
    future: Future[Any] = Future()

    def target() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(fn())
        except BaseException as exc:
            future.set_exception(exc)

    threading.Thread(target=target, name="lossless-check", daemon=True).start()
    return future
