"""The cause kinds of the analysis: one stable identifier per explanation of failed requests.

A kind names *why* requests failed (the analysis joins each failure with the timeline and picks
the first rule that matches, see :mod:`lossless.verify.analysis.core` and
:mod:`lossless.verify.analysis.proxy`); its value is what ``--json``, the HTML report and
``lossless report`` print, and it never changes meaning once released.
"""

from __future__ import annotations

import enum

__all__ = ["CauseKind"]


class CauseKind(enum.StrEnum):
    """Why a group of requests failed (values are the stable identifiers in reports)."""

    # the lab's rules (lossless.verify.analysis.core)
    NEVER_LISTENED = "never_listened"  # the replica never answered on its port at all
    NAIVE = "naive"  # the naive stop-start strategy: nothing served while a replica restarted
    NO_ENDPOINT = "no_endpoint"  # the client's view was empty
    KILLED = "killed"  # SIGKILL with the request in flight
    KEEPALIVE_RESET = "keepalive_reset"  # reset on a reused connection at shutdown
    NOT_DEREGISTERED = "not_deregistered"  # --traffic registry: still listed after SIGTERM
    LISTENER_CLOSED = "listener_closed"  # refused while clients still routed to the replica
    DRAINING_5XX = "draining_5xx"  # the terminating replica answered 5xx
    CUT_IN_FLIGHT = "cut_in_flight"  # cut by the replica's stop
    NOT_READY = "not_ready"  # sent before the replica could serve
    SLOW = "slow"  # client timeout on a serving replica
    UNEXPLAINED = "unexplained"
    # the lab under stress (lossless.verify.analysis.faults; an injected fault is "fault:N")
    PROBE_KILL = "probe_kill"  # the kubelet killed the container after a failed liveness probe
    CRASHED = "crashed"  # the container exited by itself (restartPolicy restarts it)
    SIDECAR_FIRST = "sidecar_first"  # a plain sidecar stopped before the app it fronts
    # the long-lived clients (lossless.verify.analysis.streams)
    STREAM_CUT = "stream_cut"  # a terminating replica ended a stream without a clean end
    # the proxy's rules (lossless.verify.analysis.proxy)
    INGRESS_SILENT_CLOSE = "ingress_silent_close"
    INGRESS_NO_SERVER = "ingress_no_server"
    INGRESS_CONNECT_FAILED = "ingress_connect_failed"
    INGRESS_BACKEND_CLOSED = "ingress_backend_closed"
    INGRESS_TIMEOUT = "ingress_timeout"
    # requests the client saw succeed only because the proxy retried them (counted against the
    # verdict unless --allow-retries)
    INGRESS_RETRIED = "ingress_retried"
    # gRPC calls (lossless.verify.analysis.grpc_causes): statuses of connected calls
    GRPC_STOPPED = "grpc_stopped"  # UNAVAILABLE/CANCELLED: the server stopped with calls running
    GRPC_DEADLINE = "grpc_deadline"  # DEADLINE_EXCEEDED
    GRPC_UNAVAILABLE = "grpc_unavailable"  # UNAVAILABLE/CANCELLED while the replica should serve
    GRPC_ERROR = "grpc_error"  # UNKNOWN, INTERNAL, UNIMPLEMENTED, DATA_LOSS answered
