"""HAProxy's access log as the lab configures it: the format and its parser.

The log format (:data:`LOG_FORMAT`) carries the request's ``x-lossless-seq`` header (captured in
the frontend), so every proxy log line joins the client's record of the same request. This module
is pure (no process control): offline analysis imports it alone.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from lossless.verify.fields import absent_int, unsigned_int

__all__ = ["CONN_ERRORS", "LOG_FORMAT", "ProxyLogEntry", "parse_log_line"]

# One access log line per request, space separated, every field non-empty (HAProxy prints "-"
# for an empty sample). The seq comes from `capture request header x-lossless-seq`, the only
# capture of the frontend (index 0).
LOG_FORMAT = (
    "lossless %Ts.%ms %[capture.req.hdr(0)] %ST %tsc %rc %s %Ti %TR %Tw %Tc %Tr %Ta %Tt %B "
    "%cp %bp %sp %rt %sc %[bc_err] %[fc_err]"
)
_LOG_FIELDS = 22

# HAProxy's connection error codes (bc_err / fc_err, "fc_err" in configuration.txt) that the
# analysis names; others are shown as their number.
CONN_ERRORS: dict[int, str] = {
    0: "",
    1: "connection closed by peer",
    10: "connection refused",
    11: "connection reset",
    12: "network unreachable",
    13: "host unreachable",
    16: "connect timeout",
}


@dataclasses.dataclass(frozen=True, slots=True)
class ProxyLogEntry:
    """One HAProxy access log line (times in ms as HAProxy logs them, -1: not reached).

    ``accepted`` is the Unix time HAProxy accepted the request; ``seq`` the request's
    ``x-lossless-seq`` (None without one); ``status`` the status sent to the client (-1: none);
    ``termination`` the 4-character termination state (``----`` normal, ``SC--`` connect to
    the server failed, ``SH--`` server closed before the headers, ``CD--`` client aborted...);
    ``retries`` the retries HAProxy made and ``redispatched`` whether it moved to another server;
    ``server`` the last server tried (``""``: none). ``backend_port`` is HAProxy's source port to
    the server (requests on one backend connection share it: a reused pooled connection);
    ``client_port`` the client's source port; ``bc_err``/``fc_err`` HAProxy's connection error
    codes (:data:`CONN_ERRORS`)."""

    accepted: float
    seq: int | None
    status: int
    termination: str
    retries: int
    redispatched: bool
    server: str
    ti: int
    treq: int
    tw: int
    tc: int
    tr: int
    ta: int
    tt: int
    bytes: int
    client_port: int
    backend_port: int
    server_port: int
    request_counter: int
    server_conns: int
    bc_err: int
    fc_err: int

    def to_json(self, origin: float = 0.0) -> dict[str, Any]:
        """As a JSON object; ``t`` is ``accepted - origin`` (run-relative with the run's
        ``wall_origin``)."""
        out = dataclasses.asdict(self)
        out["t"] = round(self.accepted - origin, 3)
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> ProxyLogEntry:
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [n for n in names if n not in obj]
        if missing:
            raise ValueError(f"missing field(s) {', '.join(missing)}")
        return cls(**{n: obj[n] for n in names})


def parse_log_line(line: str) -> ProxyLogEntry | None:
    """Parse one line written in :data:`LOG_FORMAT`; None for any other line (HAProxy's own
    messages). Raises ValueError for a line that claims the format but does not fit it."""
    parts = line.split()
    if not parts or parts[0] != "lossless":
        return None
    if len(parts) != _LOG_FIELDS:
        raise ValueError(f"expected {_LOG_FIELDS} fields, got {len(parts)}")
    (_, accepted, seq, status, term, retries, server, ti, treq, tw, tc, tr, ta, tt) = parts[:14]
    (nbytes, cport, bport, sport, counter, sconns, bc_err, fc_err) = parts[14:]
    return ProxyLogEntry(
        accepted=float(accepted),
        seq=int(seq) if seq.isdigit() else None,
        status=absent_int(status),
        termination=term,
        retries=int(retries.lstrip("+")),
        redispatched=retries.startswith("+"),
        server="" if server.startswith("<") else server,
        ti=absent_int(ti),
        treq=absent_int(treq),
        tw=absent_int(tw),
        tc=absent_int(tc),
        tr=absent_int(tr),
        ta=absent_int(ta),
        tt=absent_int(tt),
        bytes=absent_int(nbytes),
        client_port=absent_int(cport),
        backend_port=unsigned_int(bport),
        server_port=unsigned_int(sport),
        request_counter=absent_int(counter),
        server_conns=absent_int(sconns),
        bc_err=unsigned_int(bc_err),
        fc_err=unsigned_int(fc_err),
    )
