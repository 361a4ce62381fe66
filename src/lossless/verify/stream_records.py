"""Long-lived client sessions (``--streams``, ``--websockets``): one record per session.

A *stream* is one simulated long-lived client (an SSE / chunked HTTP stream, or a WebSocket
connection) that stays open and reconnects whenever it ends; a *session* is one connection of it,
from the connect to its end. Every session yields exactly one :class:`StreamSession`, the ones
still open when the run stops included (outcome ``stopped``), so none is ever silently dropped.

They are written to ``streams.csv`` in the run directory (next to ``records.csv``), a header row
naming the columns (:data:`SESSION_COLUMNS`) then one row per session in completion order, times
in run-relative seconds (µs), flushed at once. A run without long-lived clients has no such file.
"""

from __future__ import annotations

import csv
import dataclasses
import enum
import io
import os
from pathlib import Path
from typing import TextIO

from lossless.errors import LosslessError
from lossless.verify.fields import opt_float, time_cell

__all__ = [
    "CLEAN_CLOSE_CODES",
    "SESSION_COLUMNS",
    "STREAMS",
    "SessionWriter",
    "StreamOutcome",
    "StreamSession",
    "read_sessions",
]

STREAMS = "streams.csv"

# WebSocket close codes that end a connection cleanly (RFC 6455 §7.4.1): normal closure, going
# away (a server shutting down) and service restart (1012, IANA registry: "the client should
# reconnect"); lossless serve closes with 1012 at t0 + drain delay.
CLEAN_CLOSE_CODES = frozenset({1000, 1001, 1012})


class StreamOutcome(enum.StrEnum):
    """How a session ended. ``clean`` and ``stopped`` are not failures; every other value is."""

    CLEAN = (
        "clean"  # the server ended it cleanly: terminating chunk, full body, close 1000/1001/1012
    )
    STOPPED = "stopped"  # still open when the run stopped (the generator closed it)
    NO_ENDPOINT = "no_endpoint"  # the client's view had no endpoint
    REFUSED = "refused"  # connect() refused (or unreachable)
    CONNECT_TIMEOUT = "connect_timeout"  # no connection or no response head within the timeout
    RESET = "reset"  # reset or closed before the response head / handshake
    HTTP_ERROR = "http_error"  # a response other than 2xx (SSE) / 101 (WebSocket): ``status``
    CUT = "cut"  # ended without a clean end: no terminating chunk, no close frame, reset mid-stream
    CLOSE_ERROR = "close_error"  # a WebSocket close frame with another code (``close_code``)

    @property
    def is_failure(self) -> bool:
        return self not in (StreamOutcome.CLEAN, StreamOutcome.STOPPED)


@dataclasses.dataclass(frozen=True, slots=True)
class StreamSession:
    """One connection of one long-lived client.

    ``protocol`` is ``sse`` or ``websocket``; ``stream`` numbers the clients of that protocol from
    0; ``session`` numbers the connections of one stream from 0 (``session > 0``: a reconnect);
    ``client`` is the simulated client whose view picked the endpoint; ``replica`` the endpoint's
    name (or the ``x-lossless-replica`` header a proxy adds), ``""`` without one. ``opened``:
    connect initiated; ``established``: response head (SSE) or handshake (WebSocket) complete,
    ``None`` if never; ``end``: when the outcome was known. ``status`` is the HTTP status (0: no
    response), ``close_code`` the WebSocket close code received (0: none), ``messages`` the SSE
    events (blank-line separated) or WebSocket messages received, ``detail`` free text."""

    protocol: str
    stream: int
    session: int
    client: int
    replica: str
    opened: float
    established: float | None
    end: float
    outcome: StreamOutcome
    status: int = 0
    close_code: int = 0
    messages: int = 0
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.outcome.is_failure

    @property
    def name(self) -> str:
        """``sse-0``, ``websocket-1``: the stream's label in reports."""
        return f"{self.protocol}-{self.stream}"


SESSION_COLUMNS = tuple(f.name for f in dataclasses.fields(StreamSession))


class SessionWriter:
    """Appends sessions to ``streams.csv`` in ``directory`` (refusing an existing one: a run is
    never overwritten); every row is flushed at once. ``close`` is idempotent; writing after it
    raises RuntimeError."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.path = Path(directory) / STREAMS
        try:
            self._file: TextIO = open(self.path, "x", newline="", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise LosslessError(f"{self.path}: cannot create: {exc}") from exc
        self._csv = csv.writer(self._file, lineterminator="\n")
        self._csv.writerow(SESSION_COLUMNS)
        self._file.flush()
        self._closed = False

    def write(self, s: StreamSession) -> None:
        if self._closed:
            raise RuntimeError(f"SessionWriter for {self.path} is closed")
        self._csv.writerow(
            (
                s.protocol,
                s.stream,
                s.session,
                s.client,
                s.replica,
                time_cell(s.opened),
                time_cell(s.established),
                time_cell(s.end),
                s.outcome.value,
                s.status,
                s.close_code,
                s.messages,
                " ".join(s.detail.split()),
            )
        )
        self._file.flush()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._file.close()


def _parse(row: list[str]) -> StreamSession:
    if len(row) != len(SESSION_COLUMNS):
        raise ValueError(f"expected {len(SESSION_COLUMNS)} columns, got {len(row)}")
    protocol, stream, session, client, replica, opened, established, end, outcome = row[:9]
    status, close_code, messages, detail = row[9:]
    if protocol not in ("sse", "websocket"):
        raise ValueError(f"protocol must be sse or websocket, got {protocol!r}")
    return StreamSession(
        protocol=protocol,
        stream=int(stream),
        session=int(session),
        client=int(client),
        replica=replica,
        opened=float(opened),
        established=opt_float(established),
        end=float(end),
        outcome=StreamOutcome(outcome),
        status=int(status),
        close_code=int(close_code),
        messages=int(messages),
        detail=detail,
    )


def read_sessions(
    directory: str | os.PathLike[str], warnings: list[str] | None = None
) -> list[StreamSession] | None:
    """The sessions of ``directory``'s ``streams.csv`` sorted by ``opened``, or ``None`` when the
    run has no such file (no long-lived clients). A last line cut short by a crash is ignored
    and reported in ``warnings``; any other corrupt line raises LosslessError ``FILE:LINE: …``."""
    path = Path(directory) / STREAMS
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise LosslessError(f"{path}: cannot read: {exc}") from None
    lines = text.split("\n")
    cut = lines.pop()
    if cut and warnings is not None:
        warnings.append(f"{path}:{len(lines) + 1}: incomplete last line ignored (run interrupted?)")
    if not lines or tuple(next(csv.reader([lines[0]]))) != SESSION_COLUMNS:
        raise LosslessError(f"{path}:1: not a streams file (expected {','.join(SESSION_COLUMNS)})")
    sessions: list[StreamSession] = []
    for number, row in enumerate(csv.reader(io.StringIO("\n".join(lines[1:]))), start=2):
        try:
            sessions.append(_parse(row))
        except ValueError as exc:
            raise LosslessError(f"{path}:{number}: corrupt stream session: {exc}") from None
    sessions.sort(key=lambda s: (s.opened, s.protocol, s.stream))
    return sessions
