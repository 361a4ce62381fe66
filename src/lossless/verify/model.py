"""The shared vocabulary of the verifier: endpoints, request records, lifecycle timeline events.

This module is the contract between the lab (which starts, probes and deletes replicas and decides
what each client can see), the load generator (which sends requests and records one
:class:`Record` per request) and the analysis (which joins failed records with the timeline).

Times: every ``t``/time field is seconds since the run's origin, a ``time.monotonic()`` value held
by :class:`Clock`; the origin is shared by the lab and the load generator of one run, so records and
timeline events are directly comparable.
"""

from __future__ import annotations

import dataclasses
import enum
import time
from typing import Protocol


class Clock:
    """Run-relative monotonic time. ``now()`` is seconds since the clock was created."""

    def __init__(self, origin: float | None = None) -> None:
        self.origin = time.monotonic() if origin is None else origin
        self.wall_origin = time.time()

    def now(self) -> float:
        return time.monotonic() - self.origin


@dataclasses.dataclass(frozen=True, slots=True)
class Endpoint:
    """One replica's address as clients see it. ``name`` identifies the replica (e.g. ``v1-0``).

    ``serving``/``terminating`` are the EndpointSlice conditions (kubernetes
    ``pkg/controller/endpointslice`` ``podToEndpoint``): ``serving`` is the pod's readiness,
    ``terminating`` is set once the pod is being deleted, and ``ready = serving and not
    terminating``. A terminating pod stays in the slice, with the readiness its probe still
    reports, until its process is gone."""

    name: str
    host: str
    port: int
    serving: bool = True
    terminating: bool = False

    @property
    def ready(self) -> bool:
        return self.serving and not self.terminating


class EndpointView(Protocol):
    """How clients learn endpoints (a traffic model). The load generator calls ``pick`` each time
    it opens a new connection; ``client`` is the index of the simulated client (a kube-proxy node,
    an ingress, a caller with a registry cache) the request belongs to, ``0 <= client < clients``.

    ``pick`` returns the endpoint to connect to, or ``None`` when that client sees no endpoint (the
    request then fails with :attr:`ErrorClass.NO_ENDPOINT`). It must be cheap and non-blocking.
    """

    clients: int

    def pick(self, client: int) -> Endpoint | None: ...


class ErrorClass(enum.StrEnum):
    """Why a request failed. The first group is the service's fault; the last group is the load
    generator's own artefacts, counted apart from the service (they say the measurement is
    unreliable, not that the service dropped anything)."""

    NONE = ""
    REFUSED = "refused"  # connect() got ECONNREFUSED: nothing listens on the endpoint
    CONNECT_TIMEOUT = "connect_timeout"  # connect() did not complete in time
    RESET = "reset"  # connection reset or closed before any response byte
    TRUNCATED = "truncated"  # response started but the body ended early
    HTTP_502 = "502"
    HTTP_503 = "503"
    HTTP_504 = "504"
    HTTP_5XX = "5xx"  # any other 5xx
    TIMEOUT = "timeout"  # no complete response within the client timeout
    NO_ENDPOINT = "no_endpoint"  # the client's view had no endpoint to send to
    # gRPC calls (--grpc, lossless.verify.load.grpc_client; the code is in Record.grpc): a call
    # whose channel could not connect is ``refused``; once connected, a failing status is one of
    UNAVAILABLE = "unavailable"  # UNAVAILABLE: connection lost, server stopped, GOAWAY race
    CANCELLED = "cancelled"  # CANCELLED
    DEADLINE_EXCEEDED = "deadline_exceeded"  # DEADLINE_EXCEEDED: no status within the timeout
    GRPC_ERROR = "grpc_error"  # UNKNOWN, INTERNAL, UNIMPLEMENTED, DATA_LOSS
    # generator artefacts:
    SCHEDULE_LAG = "schedule_lag"  # sent later than the lag budget after its intended time
    FD_EXHAUSTED = "fd_exhausted"  # EMFILE/ENFILE/EADDRNOTAVAIL in the generator itself

    @property
    def is_artefact(self) -> bool:
        return self in (ErrorClass.SCHEDULE_LAG, ErrorClass.FD_EXHAUSTED)


@dataclasses.dataclass(slots=True)
class Record:
    """Exactly one per request, failures included (``status`` 0 for transport failures).

    Times are run-relative seconds (see :class:`Clock`); ``first_byte``/``end`` are ``None`` when
    never reached. ``replica`` is the endpoint name the connection was opened to (or the replica a
    proxy reported in an ``x-lossless-replica`` response header), ``""`` when unknown.

    As the load generator fills them (lossless.verify.load.generator): ``sent`` is when it started the
    request (connect initiated, or the write on a pooled connection); ``end`` is when the outcome
    was known, failures included (response complete, or the error observed), so it is set on
    every record it returns; ``bytes`` counts response body bytes; ``conn_id`` numbers
    connections from 1 (0: no connection was opened, e.g. ``no_endpoint``).

    gRPC calls (lossless.verify.load.grpc_client) set ``grpc`` to the call's status code,
    ``status`` to 200 when the server answered with a status (OK or an application code such as
    NOT_FOUND) and 0 otherwise, ``conn_id`` to the channel (one HTTP/2 connection) and
    ``bytes`` to the response message's size.
    """

    seq: int
    intended: float
    sent: float
    first_byte: float | None
    end: float | None
    status: int
    bytes: int
    error: ErrorClass
    replica: str
    conn_id: int
    reused: bool
    client: int = 0
    kind: int = 0  # index of the request's kind in the run's request mix (settings' "requests")
    grpc: int | None = None  # gRPC calls: the status code (0 OK, 14 UNAVAILABLE...); else None

    @property
    def ok(self) -> bool:
        return self.error is ErrorClass.NONE and 0 < self.status < 500

    @property
    def lag(self) -> float:
        return self.sent - self.intended


class EventKind(enum.StrEnum):
    """Timeline event kinds. A replica's life reads: created → started → ready → endpoint_added
    (→ view_added per client) … deleting (t0) → endpoint_removed (→ view_removed per client) and in
    parallel prestop_start → prestop_end → sigterm → (sigkill) → exited."""

    RUN_START = "run_start"
    ROLLOUT_START = "rollout_start"
    ROLLOUT_END = "rollout_end"
    RUN_END = "run_end"
    CREATED = "created"  # pod object created (process about to start)
    STARTED = "started"  # process spawned (pid known)
    READY = "ready"  # readiness probe reached successThreshold (or no probe: process started)
    NOT_READY = "not_ready"  # readiness probe reached failureThreshold
    AVAILABLE = "available"  # ready for minReadySeconds
    ENDPOINT_ADDED = "endpoint_added"  # entered the ready endpoint set (control plane)
    VIEW_ADDED = "view_added"  # one client learned the endpoint (``client`` set)
    DELETING = "deleting"  # t0 of deletion: both tracks start here
    ENDPOINT_REMOVED = "endpoint_removed"  # left the ready set (control plane)
    VIEW_REMOVED = "view_removed"  # one client stopped routing to it (``client`` set)
    PRESTOP_START = "prestop_start"
    PRESTOP_END = "prestop_end"
    SIGTERM = "sigterm"
    SIGKILL = "sigkill"
    EXITED = "exited"  # process ended (``detail`` holds the exit code or signal)
    LISTENER_CLOSED = "listener_closed"  # first refused connect seen by a probe, if observed
    NOTE = "note"
    # -- issue 16 (lab/restart.py, lab/probes_liveness.py, lab/sidecar.py, lab/faults.py,
    # upgrades.py): a container that exits while its pod stays is restarted, so EXITED keeps
    # meaning "the pod's main container is gone for good"
    CONTAINER_EXITED = "container_exited"  # exited, the pod stays; ``detail``: code, back-off
    RESTARTED = "restarted"  # the container started again (``detail``: restart count, pid)
    STARTUP_SUCCEEDED = "startup_succeeded"  # the startup probe passed: other probes begin
    PROBE_KILL = "probe_kill"  # a liveness or startup probe reached failureThreshold
    SIDECAR_STARTED = "sidecar_started"
    SIDECAR_SIGTERM = "sidecar_sigterm"
    SIDECAR_EXITED = "sidecar_exited"
    FAULT = "fault"  # an injected fault begins (``detail``: what, and its spec)
    FAULT_END = "fault_end"  # a fault with a duration ends (SIGCONT, proxy resumed)
    UPGRADE_START = "upgrade_start"  # upgrade k of N begins (``detail``: "k/N vA→vB")
    UPGRADE_END = "upgrade_end"  # its old pods are gone and every client caught up


@dataclasses.dataclass(slots=True)
class Event:
    """One lifecycle timeline entry. ``replica`` is ``""`` for run-level events; ``client`` is the
    client index for view events, else ``None``; ``detail`` is free text (exit code, reason)."""

    t: float
    kind: EventKind
    replica: str = ""
    client: int | None = None
    detail: str = ""
