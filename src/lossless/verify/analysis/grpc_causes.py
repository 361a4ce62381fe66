"""The analysis rules of gRPC calls (``lossless verify --grpc``), by replica and phase.

:class:`~lossless.verify.analysis.core.Analyzer` asks :func:`grpc_kind` about every failed gRPC
call (``Record.grpc`` set) after its own first rules (``never_listened``, ``naive``,
``no_endpoint``, ``killed``) and before the HTTP ones. A call whose channel could not connect is
``refused`` and goes on through the HTTP rules (``listener_closed``, ``not_ready``...) as a
refused connection does; the statuses a connected call can end with get their own causes here:

- ``grpc_stopped`` (UNAVAILABLE or CANCELLED on a replica being deleted): the server stopped with
  calls in flight or still arriving on its connections (``server.stop(0)`` answers every running
  call ``UNAVAILABLE: Cancelling all calls``; a stop without a drain delay sends GOAWAY while
  clients still send);
- ``grpc_deadline`` (DEADLINE_EXCEEDED): no status within the call's deadline; on a stopping
  replica the server stopped answering, elsewhere it was slow;
- ``grpc_unavailable`` (UNAVAILABLE or CANCELLED on a replica that was not being deleted): the
  connection was lost or the call cancelled while the replica was meant to serve;
- ``grpc_error`` (UNKNOWN, INTERNAL, UNIMPLEMENTED, DATA_LOSS): the server answered with an
  error status (UNIMPLEMENTED: the method does not exist on that replica).

A refused call counts as ``listener_closed`` too when its connection attempt ended after the
replica's SIGTERM although the call started before (a new channel connects lazily, after the
call was started). Each sentence names the replicas and, per replica, the phases the calls were
sent in (:data:`~lossless.verify.analysis.core.PHASES`).
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from lossless.verify.analysis.kinds import CauseKind
from lossless.verify.model import ErrorClass, EventKind, Record

if TYPE_CHECKING:
    from lossless.verify.analysis.core import FailureContext, _Group, _ReplicaTimeline

__all__ = ["EXPLAIN", "grpc_kind"]

_TERMINATING = frozenset({"terminating-before-sigterm", "after-sigterm", "after-exit"})
_STOP_STATUSES = frozenset({ErrorClass.UNAVAILABLE, ErrorClass.CANCELLED})
#: gRPC status code numbers -> names, for the sentences.
STATUS_NAMES = {
    0: "OK",
    1: "CANCELLED",
    2: "UNKNOWN",
    3: "INVALID_ARGUMENT",
    4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND",
    6: "ALREADY_EXISTS",
    7: "PERMISSION_DENIED",
    8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION",
    10: "ABORTED",
    11: "OUT_OF_RANGE",
    12: "UNIMPLEMENTED",
    13: "INTERNAL",
    14: "UNAVAILABLE",
    15: "DATA_LOSS",
    16: "UNAUTHENTICATED",
}


def grpc_kind(r: Record, ctx: FailureContext, tl: _ReplicaTimeline | None) -> CauseKind | None:
    """The cause of the failed gRPC call ``r`` (None: not a gRPC call, or let the HTTP rules
    decide, as for a call refused at connect)."""
    if r.grpc is None:
        return None
    stopping = ctx.phase in _TERMINATING
    if not stopping and tl is not None and r.end is not None:
        start = tl.at(EventKind.DELETING)
        stopping = start is not None and r.end >= start
    if r.error is ErrorClass.REFUSED:
        sigterm = None if tl is None else tl.at(EventKind.SIGTERM)
        late = sigterm is not None and r.end is not None and r.end >= sigterm
        return CauseKind.LISTENER_CLOSED if late and ctx.phase not in _TERMINATING else None
    if r.error in _STOP_STATUSES:
        return CauseKind.GRPC_STOPPED if stopping else CauseKind.GRPC_UNAVAILABLE
    if r.error is ErrorClass.DEADLINE_EXCEEDED:
        return CauseKind.GRPC_DEADLINE
    if r.error is ErrorClass.GRPC_ERROR:
        return CauseKind.GRPC_ERROR
    return None


def _statuses(g: _Group) -> str:
    codes = Counter(STATUS_NAMES.get(r.grpc, str(r.grpc)) for r in g.records if r.grpc is not None)
    return ", ".join(f"{name} {n}" for name, n in codes.most_common())


def _phases(g: _Group) -> str:
    """'v1-0 (after-sigterm 3), v1-1 (ready 1)': per replica, the phases the calls were sent in."""
    parts = []
    for name in g.names:
        phases = Counter(c.phase for c in g.contexts if c.replica == name)
        inner = ", ".join(f"{phase} {n}" for phase, n in phases.most_common())
        parts.append(f"{name} ({inner})")
    return ", ".join(parts) if parts else "no replica"


def _calls(g: _Group) -> str:
    return f"{g.n} call" if g.n == 1 else f"{g.n} calls"


def _ended_after_sigterm(g: _Group) -> str:
    """'0.0 to 0.4 s after SIGTERM': when the calls ended (they may have started before)."""
    after = [
        c.since_sigterm + (r.end - r.sent)
        for r, c in zip(g.records, g.contexts, strict=True)
        if c.since_sigterm is not None and r.end is not None
    ]
    if not after:
        return g.window
    low, high = f"{max(0.0, min(after)):.1f}", f"{max(0.0, max(after)):.1f}"
    return f"{low} s after SIGTERM" if low == high else f"{low} to {high} s after SIGTERM"


def explain_stopped(g: _Group) -> tuple[str, str]:
    return (
        f"the gRPC server stopped with calls in flight or still arriving: {_calls(g)} ended "
        f"{_statuses(g)} {_ended_after_sigterm(g)}; by replica and the phase they were sent "
        f"in: {_phases(g)}",
        "keep serving for a drain delay after SIGTERM, then stop with a grace period "
        "(server.stop(grace)) so running calls finish: lossless.grpc.serve does both "
        "(LOSSLESS_DRAIN_DELAY ≥ the time clients need to stop routing to the replica)",
    )


def explain_deadline(g: _Group) -> tuple[str, str]:
    stopping = sum(1 for c in g.contexts if c.phase in _TERMINATING)
    where = (
        "the replica stopped answering while it was being deleted"
        if stopping * 2 >= g.n
        else "the replica was serving but too slow"
    )
    return (
        f"{_calls(g)} got DEADLINE_EXCEEDED ({where}); by replica and phase: {_phases(g)}",
        "a stopping server must answer every call it accepted before it exits (stop with a "
        "grace period); on a serving replica find the slow path or raise --timeout",
    )


def explain_unavailable(g: _Group) -> tuple[str, str]:
    return (
        f"{_calls(g)} ended {_statuses(g)} on a replica that was not being deleted "
        f"({g.window}); by replica and phase: {_phases(g)}",
        "look for a crash or restart of the replica at that time in its log "
        "(replicas/<name>.log in the results); a call must only fail while nothing serves",
    )


def explain_error(g: _Group) -> tuple[str, str]:
    return (
        f"the server answered an error status to {_calls(g)} ({_statuses(g)}); by replica "
        f"and phase: {_phases(g)}",
        "UNIMPLEMENTED: check the method name given to --grpc (SERVICE/METHOD) and that "
        "every version serves it; UNKNOWN/INTERNAL: the handler raised, see the replica's log",
    )


#: CauseKind -> the function writing its sentence and fix (used by the Analyzer).
EXPLAIN = {
    CauseKind.GRPC_STOPPED: explain_stopped,
    CauseKind.GRPC_DEADLINE: explain_deadline,
    CauseKind.GRPC_UNAVAILABLE: explain_unavailable,
    CauseKind.GRPC_ERROR: explain_error,
}
