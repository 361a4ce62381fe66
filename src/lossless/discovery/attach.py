"""Drive a :class:`~lossless.discovery.registrar.Registrar` from the lifecycle.

:func:`attach` wires one registrar to one :class:`~lossless.lifecycle.Lifecycle`:

1. **Register when ready.** With ``required=True`` (the default) a critical readiness check
   named ``registry`` is added: it registers as soon as startup is done, the listener accepts
   connections and every *other* critical check passes, and it passes only once the
   registration succeeded, so the instance becomes READY in the same round as it becomes
   discoverable (a rolling update then never counts an undiscoverable instance as available).
   With ``required=False`` registration starts when the instance is READY and never holds
   readiness back; the ``registry`` check is then optional and only reports.
2. **Retry with backoff** while the registry is unreachable: 0.1 s doubling up to 5 s, each
   attempt bounded by ``timeout``; each failure is logged (``registry_unreachable``).
3. **Keep alive** from one background thread every ``registrar.keepalive_interval`` seconds
   (lease keepalive, session check, TTL pass). When the registry lost the registration (registry
   restarted without its data, lease or session expired) it is re-created at once (``reregistered``),
   but only while READY — never from t0 on.
4. **Deregister at t0** (an ``on_drain`` hook, so before the drain delay D starts elapsing):
   the keepalive stops, no (re-)registration can start any more, and the registrar's
   ``deregister`` runs, bounded by ``timeout``. If it fails or times out the drain goes on
   unchanged; the failure is logged (``deregister_failed``: the registry, the error, how long
   the stale registration can live) and recorded with :meth:`Lifecycle.record_forced`, so the
   process exits with the forced exit code (1) and the deadline still holds.
5. **Close** in a shutdown hook: waits (bounded by the deadline) for the deregistration, stops
   the keepalive thread, closes the registrar's connections.

Once registered, the ``registry`` check never fails again, even when the registry becomes
unreachable: readiness that depends on a shared registry would take every replica out of the
load balancer at once when the registry has an outage (the same amplifier as a liveness check
that depends on a database). Registry trouble after startup shows in the check's output and in
the log instead.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import random
import socket
import threading
import time

from lossless import events
from lossless.discovery.registrar import Registrar, RegistryError
from lossless.lifecycle import Lifecycle, State

#: First retry delay after a failed registration, doubled per failure up to BACKOFF_MAX.
BACKOFF_INITIAL = 0.1
BACKOFF_MAX = 5.0
#: How long the readiness check waits, within one round, for the other critical checks.
_OTHERS_WAIT = 1.0


def backoff(attempt: int, *, initial: float = BACKOFF_INITIAL, cap: float = BACKOFF_MAX) -> float:
    """Delay before retry number ``attempt`` (1-based): exponential, capped, with up to 20 %
    jitter below the nominal value so restarted fleets do not retry in lockstep."""
    nominal = min(cap, initial * 2 ** max(0, attempt - 1))
    return float(nominal * random.uniform(0.8, 1.0))


class Attachment:
    """One registrar driven by one lifecycle; created by :func:`attach`. Thread-safe.

    The attributes ``registered_at``, ``deregistered_at`` (``time.monotonic()``) and
    ``registrations`` (how many successful register calls) are for tests and metrics.
    """

    def __init__(
        self,
        lifecycle: Lifecycle,
        registrar: Registrar,
        *,
        required: bool,
        timeout: float,
        listening: tuple[str, int] | None,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"registry timeout must be positive, got {timeout}")
        self.lifecycle = lifecycle
        self.registrar = registrar
        self.required = required
        self.timeout = timeout
        self.listening = listening
        self.check_name = "registry"
        self.registered_at: float | None = None
        self.deregistered_at: float | None = None
        self.registrations = 0
        self._op = threading.Lock()  # one registrar call at a time
        self._flags = threading.Lock()
        self._draining = False
        self._registered = False
        self._ever_registered = False
        self._attempted = False
        self._failures = 0
        self._next_attempt = 0.0
        self._last_error = ""
        self._keepalive_failing = False
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._drain_started = False
        self._deregistration_done = threading.Event()
        self._reported = False

    # -- state ----------------------------------------------------------------------------------
    @property
    def registered(self) -> bool:
        """True while the registry holds the registration, as far as the last call knows."""
        return self._registered

    def status(self) -> str:
        """One line for the ``registry`` check's output."""
        desc = self.registrar.describe()
        if self._draining:
            return f"deregistered from {desc}" if self.deregistered_at else f"deregistering {desc}"
        if self._registered:
            suffix = f" (keepalive failing: {self._last_error})" if self._keepalive_failing else ""
            return f"registered in {desc}{suffix}"
        if self._ever_registered:
            return f"re-registering in {desc}: {self._last_error or 'registration lost'}"
        if self._failures:
            retry = max(0.0, self._next_attempt - time.monotonic())
            return (
                f"not registered in {desc}: {self._last_error} "
                f"(attempt {self._failures}, retry in {retry:.1f} s)"
            )
        return f"not registered in {desc} yet"

    # -- registration ---------------------------------------------------------------------------
    def _eligible(self, *, first: bool) -> str | None:
        """``None`` when a (re-)registration may start now, else why not."""
        lc = self.lifecycle
        if self._draining or lc.draining:
            return "draining"
        if not lc.started:
            return "startup hooks still running"
        if self.listening is not None and not _accepts(*self.listening):
            return f"nothing accepts connections on {self.listening[0]}:{self.listening[1]} yet"
        if first and self.required:
            for result in lc.health.results():
                if result.critical and result.name != self.check_name and not result.ok:
                    return f"waiting for check {result.name!r} ({result.output})"
            return None
        if lc.state is not State.READY:
            return f"instance is {lc.state.value}, not ready"
        return None

    def _try_register(self) -> bool:
        """One registration attempt, unless draining. Never raises."""
        with self._op:
            if self._draining or self.lifecycle.draining:
                return False
            self._attempted = True
            start = time.monotonic()
            try:
                self.registrar.register(self.timeout)
            except Exception as exc:
                error = str(exc) if isinstance(exc, RegistryError) else repr(exc)
                self._failures += 1
                delay = backoff(self._failures)
                self._next_attempt = time.monotonic() + delay
                self._last_error = error
                events.emit(
                    "registry_unreachable",
                    logging.WARNING,
                    registry=self.registrar.describe(),
                    error=error,
                    attempt=self._failures,
                    retry_in=round(delay, 3),
                )
                return False
            again = self._ever_registered
            self._registered = self._ever_registered = True
            self._failures = 0
            self._last_error = ""
            self._keepalive_failing = False
            self.registrations += 1
            self.registered_at = time.monotonic()
        events.emit(
            "reregistered" if again else "registered",
            registry=self.registrar.describe(),
            kind=self.registrar.kind,
            duration=round(time.monotonic() - start, 6),
            expires_after=self.registrar.expires_after,
        )
        return True

    def check(self) -> str:
        """The ``registry`` readiness check (runs in the health checker's thread pool)."""
        if self._ever_registered or not self.required:
            if self._ever_registered:
                return self.status()
            raise RuntimeError(self.status())  # optional: reported, never fails readiness
        end = time.monotonic() + _OTHERS_WAIT
        why = self._eligible(first=True)
        while why is not None and why != "draining" and time.monotonic() < end:
            time.sleep(0.01)  # the other checks of this round are still being evaluated
            why = self._eligible(first=True)
        if why is not None:
            raise RuntimeError(f"not registered: {why}")
        if time.monotonic() < self._next_attempt:
            raise RuntimeError(self.status())
        if self._try_register():
            self._start_thread()
            return self.status()
        raise RuntimeError(self.status())

    # -- background keepalive -------------------------------------------------------------------
    def _start_thread(self) -> None:
        with self._flags:
            if self._thread is not None or self._stop.is_set():
                return
            self._thread = threading.Thread(
                target=self._run, name=f"lossless-registrar-{self.registrar.kind}", daemon=True
            )
            self._thread.start()

    def _sleep(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; ``False`` when the loop must end (stop or t0)."""
        if seconds > 0:
            self._wake.wait(seconds)
            self._wake.clear()
        return not (self._stop.is_set() or self._draining)

    def _run(self) -> None:
        while not (self._stop.is_set() or self._draining):
            if not self._registered:
                why = self._eligible(first=not self._ever_registered)
                if why == "draining":
                    return
                if why is not None:
                    if not self._sleep(0.05):
                        return
                    continue
                if not self._sleep(self._next_attempt - time.monotonic()):
                    return
                self._try_register()
                continue
            if not self._sleep(self.registrar.keepalive_interval):
                return
            self._keepalive()

    def _keepalive(self) -> None:
        with self._op:
            if self._draining:
                return
            try:
                holds = self.registrar.keepalive(self.timeout)
            except Exception as exc:
                error = str(exc) if isinstance(exc, RegistryError) else repr(exc)
                if not self._keepalive_failing:
                    events.emit(
                        "registry_keepalive_failed",
                        logging.WARNING,
                        registry=self.registrar.describe(),
                        error=error,
                        expires_after=self.registrar.expires_after,
                    )
                self._keepalive_failing = True
                self._last_error = error
                return
            if self._keepalive_failing:
                self._keepalive_failing = False
                events.emit("registry_keepalive_recovered", registry=self.registrar.describe())
            if holds:
                return
            self._registered = False
            self._next_attempt = 0.0
            self._last_error = "registration lost (registry restarted, lease or session expired)"
        events.emit(
            "registration_lost",
            logging.WARNING,
            registry=self.registrar.describe(),
            reason=self._last_error,
        )

    # -- t0 and shutdown ------------------------------------------------------------------------
    async def on_drain(self) -> None:
        """The t0 hook: stop keeping alive, never register again, deregister (bounded)."""
        with self._flags:
            if self._drain_started:
                return
            self._drain_started = True
            self._draining = True
        self._wake.set()
        start = time.monotonic()
        done: concurrent.futures.Future[str | None] = concurrent.futures.Future()
        threading.Thread(
            target=self._deregister, args=(start + self.timeout, done), daemon=True
        ).start()
        try:
            error = await asyncio.wait_for(asyncio.wrap_future(done), self.timeout)
        except TimeoutError:
            error = f"no answer within the registry timeout ({self.timeout:g} s)"
        self._report(error, start)

    def _deregister(self, end: float, done: concurrent.futures.Future[str | None]) -> None:
        error: str | None = None
        if not self._attempted:
            done.set_result("skip")
            return
        if not self._op.acquire(timeout=max(0.0, end - time.monotonic())):
            done.set_result("a registry call still running did not return in time")
            return
        try:
            self.registrar.deregister(max(0.001, end - time.monotonic()))
            self._registered = False
        except RegistryError as exc:
            error = str(exc)
        except Exception as exc:
            error = repr(exc)
        finally:
            self._op.release()
        if not done.done():
            done.set_result(error)

    def _report(self, error: str | None, start: float) -> None:
        with self._flags:
            if self._reported:
                return
            self._reported = True
        lc = self.lifecycle
        desc = self.registrar.describe()
        duration = round(time.monotonic() - start, 6)
        if error == "skip":
            events.emit("deregister_skipped", registry=desc, reason="never registered")
        elif error is None:
            self.deregistered_at = time.monotonic()
            events.emit("deregistered", registry=desc, duration=duration, t_plus=lc.since_t0())
        else:
            expires = self.registrar.expires_after
            events.emit(
                "deregister_failed",
                logging.ERROR,
                registry=desc,
                error=error,
                duration=duration,
                expires_after=expires,
                t_plus=lc.since_t0(),
            )
            if self._ever_registered:
                lc.record_forced(
                    f"deregistration from {desc} failed ({error}); callers may keep routing "
                    f"here until the registration expires, within {expires:g} s"
                )
        self._deregistration_done.set()

    async def on_shutdown(self) -> None:
        """Shutdown hook: wait for the deregistration (bounded by the deadline), then stop the
        keepalive thread and close the registrar."""
        if not self._drain_started:
            await self.on_drain()  # shutdown without a drain (embedded use)
        while not self._deregistration_done.is_set() and self.lifecycle.remaining() > 0.05:
            await asyncio.sleep(0.005)
        self._stop.set()
        self._wake.set()
        closer = threading.Thread(target=self._close, daemon=True)
        closer.start()
        end = time.monotonic() + min(1.0, max(0.0, self.lifecycle.remaining() - 0.05))
        while closer.is_alive() and time.monotonic() < end:
            await asyncio.sleep(0.005)

    def _close(self) -> None:
        try:
            self.registrar.close()
        except Exception as exc:
            events.emit(
                "registry_close_failed",
                logging.WARNING,
                registry=self.registrar.describe(),
                error=repr(exc),
            )

    def close(self) -> None:
        """Stop the keepalive thread and close the registrar without deregistering (tests)."""
        self._stop.set()
        self._wake.set()
        self._close()


def _accepts(host: str, port: int) -> bool:
    """True when something accepts TCP connections on ``host:port`` (a 0.2 s attempt)."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host in ("::", "[::]"):
        host = "::1"
    try:
        socket.create_connection((host.strip("[]"), port), timeout=0.2).close()
    except OSError:
        return False
    return True


def attach(
    lifecycle: Lifecycle,
    registrar: Registrar,
    *,
    required: bool = True,
    timeout: float = 2.0,
    listening: tuple[str, int] | None = None,
) -> Attachment:
    """Register ``registrar``'s instance when ``lifecycle`` is ready and deregister it at t0
    (see the module docstring for the whole sequence and the failure policy).

    - ``required``: readiness waits for the registration (a critical ``registry`` check).
    - ``timeout``: seconds each registry call may take; it also bounds the deregistration at
      t0 (the lifecycle's own bound for the hook is ``timeout`` + 0.5 s).
    - ``listening``: ``(host, port)`` that must accept TCP connections before registering, so
      that callers never learn an address before its listener is open (uvicorn runs the
      lifespan startup, hence the lifecycle's startup, before it binds).

    Call it before the lifecycle starts (``lossless serve`` does): a required registration
    added later cannot hold back a READY that already happened, so it then registers at once.
    Returns the :class:`Attachment`; nothing else needs to be called.
    """
    att = Attachment(lifecycle, registrar, required=required, timeout=timeout, listening=listening)
    name, n = "registry", 1
    while True:
        try:
            lifecycle.add_check(name, att.check, critical=required, timeout=timeout + 1.5)
            break
        except ValueError:  # a check of that name exists: a second registrar
            n += 1
            name = f"registry-{n}"
    att.check_name = name
    lifecycle.on_ready(att._start_thread)
    lifecycle.on_drain(att.on_drain, name=f"deregister:{name}", timeout=timeout + 0.5)
    lifecycle.on_shutdown(att.on_shutdown)
    if lifecycle.state is State.READY:
        att._start_thread()
    return att
