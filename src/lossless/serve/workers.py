"""Several uvicorn workers under one master: the gunicorn worker class that runs
:class:`lossless.serve.uvicorn.LosslessServer`.

Two ways to use it:

* ``lossless serve main:app --workers N`` (N > 1, ASGI): the master is
  :class:`lossless.serve.gunicorn.LosslessArbiter`, which owns the drain sequence. The lifecycle is
  created in the master before the fork, so its drain state (in shared memory) is the same in
  every worker: SIGTERM to the master is one t0 for all, every worker's readiness answers 503 at
  once and every response carries ``Connection: close``; each worker keeps serving until t0 + D,
  then takes its accept backlog, closes its copy of the listeners, ends its streams and finishes
  in flight, all under the one deadline. The master replaces a worker that dies (gunicorn's
  ``manage_workers``), reaps each one the moment it exits (woken by SIGCHLD) and exits with 0, or
  the forced exit code when a worker cut anything or had to be killed. Workers ignore SIGINT
  (the master, which gets Ctrl-C too, decides).
* ``gunicorn -k lossless.serve.workers.Worker main:app`` (drop-in, with your own
  ``gunicorn.conf.py``): plain gunicorn's master sends SIGTERM to every worker at once; each
  worker is then t0 for itself and runs the same sequence (D, backlog, streams, in flight,
  deadline) from ``LOSSLESS_*`` variables. gunicorn's ``graceful_timeout`` must exceed the
  shutdown timeout (the master SIGKILLs at it): a worker refuses to boot otherwise, with one line.

In both, a worker dies with its master (``PR_SET_PDEATHSIG``: SIGKILL when the master is killed
with ``kill -9``), and exits through ``os._exit`` once drained (interpreter teardown is most of
the exit latency). Why gunicorn's master and not uvicorn's ``Multiprocess`` supervisor:
docs/architecture.md, "Several uvicorn workers".
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
from typing import Any

import uvicorn
from gunicorn.arbiter import Arbiter
from gunicorn.workers.base import Worker as GunicornWorker

from lossless import events
from lossless.asgi import LosslessMiddleware
from lossless.lifecycle import get_lifecycle
from lossless.serve.uvicorn import LosslessServer

__all__ = ["Worker"]

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """Ask the kernel to SIGKILL this process when the thread that forked it exits (Linux);
    exit now if the parent is already gone."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


class Worker(GunicornWorker):  # type: ignore[misc]
    """A gunicorn worker serving an ASGI app on uvicorn with the lifecycle's drain sequence."""

    def init_process(self) -> None:
        die_with_parent(self.ppid)
        super().init_process()

    @property
    def managed(self) -> bool:
        """True under ``lossless serve`` (the master drives the drain), False under plain
        gunicorn (each worker drains on its own SIGTERM)."""
        return bool(getattr(self.app, "lossless_managed", False))

    def init_signals(self) -> None:
        # LosslessServer installs its own SIGTERM/SIGINT handlers; reset gunicorn's (as
        # uvicorn's UvicornWorker does) so they do not swallow them.
        for sig in self.SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        # Outside LosslessServer.serve() (booting, or drained and exiting) a stop signal only
        # marks the worker as stopping: the default action would kill it with -15, which the
        # master would count as a cut.
        for sig in (signal.SIGTERM, signal.SIGQUIT):
            signal.signal(sig, self.handle_exit)
        if self.managed:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGUSR1, self.handle_usr1)
        signal.siginterrupt(signal.SIGUSR1, False)

    def _config(self, app: Any) -> uvicorn.Config:
        cfg = self.cfg
        kwargs: dict[str, Any] = {
            "log_config": None,
            "timeout_keep_alive": cfg.keepalive,
            "limit_max_requests": self.max_requests or None,
            "forwarded_allow_ips": cfg.forwarded_allow_ips,
            "backlog": cfg.backlog,
        }
        if cfg.is_ssl:
            ssl = cfg.ssl_options
            kwargs.update(
                ssl_keyfile=ssl.get("keyfile"),
                ssl_certfile=ssl.get("certfile"),
                ssl_keyfile_password=ssl.get("password"),
                ssl_version=ssl.get("ssl_version"),
                ssl_cert_reqs=ssl.get("cert_reqs"),
                ssl_ca_certs=ssl.get("ca_certs"),
                ssl_ciphers=ssl.get("ciphers"),
            )
        kwargs.update(getattr(self.app, "uvicorn_options", {}))
        kwargs.update(
            app=app,
            lifespan=kwargs.get("lifespan", "auto"),
            timeout_notify=self.timeout,
            callback_notify=self._notify,
            timeout_graceful_shutdown=None,
        )
        return uvicorn.Config(**kwargs)

    async def _notify(self) -> None:
        self.notify()

    def run(self) -> None:
        if not self.managed:
            events.configure()  # under lossless serve the master already did
        lc = get_lifecycle()
        if not self.managed and self.cfg.graceful_timeout <= lc.settings.shutdown_timeout:
            events.emit(
                "refused",
                error=(
                    f"gunicorn graceful_timeout ({self.cfg.graceful_timeout:g} s) must exceed "
                    f"the lossless shutdown timeout ({lc.settings.shutdown_timeout:g} s): "
                    "raise --graceful-timeout or lower LOSSLESS_SHUTDOWN_TIMEOUT"
                ),
            )
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
        app = self.wsgi
        if not isinstance(app, LosslessMiddleware):
            app = LosslessMiddleware(app, lifecycle=lc)
        config = self._config(app)
        server = LosslessServer(config, lc)
        # Managed: only the master's SIGTERM at t0 + D; drop-in: SIGQUIT is gunicorn's "quick
        # stop" (its master sends it after Ctrl-C), counted like any drain signal.
        server.handled_signals = (
            (signal.SIGTERM,) if self.managed else (*server.handled_signals, signal.SIGQUIT)
        )
        sockets = [getattr(s, "sock", s) for s in self.sockets]
        loop_factory = config.get_loop_factory()
        if loop_factory is None:
            asyncio.run(server.serve(sockets=sockets))
        else:
            with asyncio.Runner(loop_factory=loop_factory) as runner:
                runner.run(server.serve(sockets=sockets))
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
        code = server.exit_code()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os._exit(code)
