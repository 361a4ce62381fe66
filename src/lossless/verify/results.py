"""The run directory: record first, analyse later (as vegeta's ``attack`` and ``report`` do).

A run directory holds three files, all written while the run is going on:

``records.csv``
    One row per request (:class:`~lossless.verify.model.Record`), in completion order, after a
    header row naming the columns (:data:`RECORD_COLUMNS`). Times are run-relative seconds with
    microsecond precision; an empty cell is ``None``; ``reused`` is ``0``/``1``; ``kind`` is the
    request's index in settings' ``requests`` (the request mix). Files written before the
    ``kind`` column existed are read with ``kind`` 0. ``grpc`` is a gRPC call's status code,
    empty for HTTP requests (files without the column are read with ``None``).
``timeline.jsonl``
    One :class:`~lossless.verify.model.Event` per line as a JSON object
    (``t``, ``kind``, ``replica``, ``client``, ``detail``).
``settings.json``
    A free-form JSON object given by the lab (rate, strategy, replicas...). When the writer is
    given the run's :class:`~lossless.verify.model.Clock` it also holds ``wall_origin``: the
    Unix time of the clock's origin, which turns run-relative times into wall-clock times (the
    vegeta export needs it).

The writer flushes timeline events at once and records at least every
:data:`FLUSH_INTERVAL` seconds, so a crash loses at most that much; the reader accepts a last
``records.csv`` line cut short by such a crash (and says so in ``Run.warnings``).
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import heapq
import io
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO, TypeVar

from lossless.errors import LosslessError
from lossless.verify.fields import opt_float, time_cell
from lossless.verify.model import Clock, ErrorClass, Event, EventKind, Record

T = TypeVar("T")

__all__ = [
    "RECORD_COLUMNS",
    "Run",
    "RunWriter",
    "export_vegeta_csv",
    "read_run",
]

RECORDS = "records.csv"
TIMELINE = "timeline.jsonl"
SETTINGS = "settings.json"

RECORD_COLUMNS = (
    "seq",
    "intended",
    "sent",
    "first_byte",
    "end",
    "status",
    "bytes",
    "error",
    "replica",
    "conn_id",
    "reused",
    "client",
    "kind",
    "grpc",
)
# records.csv written before the request mix (no ``kind`` column: every request is kind 0)
_COLUMNS_V1 = RECORD_COLUMNS[:-2]
# records.csv written before gRPC load (no ``grpc`` column: no record is a gRPC call)
_COLUMNS_V2 = RECORD_COLUMNS[:-1]

FLUSH_INTERVAL = 0.25  # seconds between flushes of records.csv while records keep coming


class RunWriter:
    """Streams one run into ``directory`` (created if needed).

    ``record``, ``event`` and ``settings`` may be called at any time until ``close``; ``settings``
    merges its dict into settings.json (rewritten atomically). ``close`` flushes and closes the
    files and is idempotent; the writer is also a context manager. Writing after ``close`` raises
    :class:`RuntimeError`. A directory that already holds a run is refused
    (:class:`~lossless.errors.LosslessError`): a previous run is never overwritten.
    """

    def __init__(self, directory: str | os.PathLike[str], *, clock: Clock | None = None) -> None:
        self.dir = Path(directory)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            if (self.dir / RECORDS).exists():
                raise LosslessError(
                    f"{self.dir}: already holds a run ({RECORDS}); choose a new one"
                )
            # both stay open for the run; close() closes them
            self._records: TextIO = open(self.dir / RECORDS, "x", newline="", encoding="utf-8")  # noqa: SIM115
            self._timeline: TextIO = open(self.dir / TIMELINE, "x", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise LosslessError(f"{self.dir}: cannot create the run directory: {exc}") from exc
        self._csv = csv.writer(self._records, lineterminator="\n")
        self._csv.writerow(RECORD_COLUMNS)
        self._settings: dict[str, Any] = {}
        if clock is not None:
            self._settings["wall_origin"] = clock.wall_origin
        self._write_settings()
        self._last_flush = time.monotonic()
        self._closed = False

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"RunWriter for {self.dir} is closed; it cannot write any more")

    def record(self, r: Record) -> None:
        """Append one record (usable directly as ``run_load(on_record=writer.record)``)."""
        self._check_open()
        self._csv.writerow(
            (
                r.seq,
                time_cell(r.intended),
                time_cell(r.sent),
                time_cell(r.first_byte),
                time_cell(r.end),
                r.status,
                r.bytes,
                r.error.value,
                r.replica,
                r.conn_id,
                1 if r.reused else 0,
                r.client,
                r.kind,
                "" if r.grpc is None else r.grpc,
            )
        )
        now = time.monotonic()
        if now - self._last_flush >= FLUSH_INTERVAL:
            self._records.flush()
            self._last_flush = now

    def event(self, e: Event) -> None:
        """Append one timeline event and flush."""
        self._check_open()
        line: dict[str, object] = {
            "t": round(e.t, 6),
            "kind": e.kind.value,
            "replica": e.replica,
            "client": e.client,
            "detail": e.detail,
        }
        self._timeline.write(json.dumps(line, separators=(",", ":")) + "\n")
        self._timeline.flush()

    def settings(self, d: dict[str, Any]) -> None:
        """Merge ``d`` (JSON-serialisable) into settings.json."""
        self._check_open()
        self._settings.update(d)
        self._write_settings()

    def _write_settings(self) -> None:
        tmp = self.dir / (SETTINGS + ".tmp")
        tmp.write_text(json.dumps(self._settings, indent=2, sort_keys=True) + "\n", "utf-8")
        os.replace(tmp, self.dir / SETTINGS)

    def flush(self) -> None:
        self._check_open()
        self._records.flush()
        self._timeline.flush()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._records.close()
        self._timeline.close()


@dataclasses.dataclass
class Run:
    """A run read back: records sorted by ``seq``, events sorted by ``t``."""

    dir: Path
    records: list[Record]
    events: list[Event]
    settings: dict[str, Any]
    warnings: list[str] = dataclasses.field(default_factory=list)

    @property
    def wall_origin(self) -> float:
        """Unix time of the run's clock origin (0.0 when the writer was not given the clock)."""
        value = self.settings.get("wall_origin", 0.0)
        return float(value) if isinstance(value, int | float) else 0.0


def _parse_record(row: list[str], columns: int = len(RECORD_COLUMNS)) -> Record:
    if len(row) != columns:
        raise ValueError(f"expected {columns} columns, got {len(row)}")
    kind = row[12] if columns > 12 else "0"
    grpc = row[13] if columns > 13 else ""
    seq, intended, sent, first_byte, end, status, nbytes, error, replica, conn, reused, client = (
        row[:12]
    )
    if reused not in ("0", "1"):
        raise ValueError(f"reused must be 0 or 1, got {reused!r}")
    return Record(
        seq=int(seq),
        intended=float(intended),
        sent=float(sent),
        first_byte=opt_float(first_byte),
        end=opt_float(end),
        status=int(status),
        bytes=int(nbytes),
        error=ErrorClass(error),
        replica=replica,
        conn_id=int(conn),
        reused=reused == "1",
        client=int(client),
        kind=int(kind),
        grpc=None if grpc == "" else int(grpc),
    )


def _read_records(path: Path, warnings: list[str]) -> list[Record]:
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        raise LosslessError(f"{path}: missing (not a run directory?)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LosslessError(f"{path}: cannot read: {exc}") from None
    lines = text.split("\n")
    cut = lines.pop()  # "" when the file ends with a newline, else a line cut short by a crash
    if cut:
        warnings.append(f"{path}:{len(lines) + 1}: incomplete last line ignored (run interrupted?)")
    if not lines:
        raise LosslessError(f"{path}:1: empty, expected the header row {','.join(RECORD_COLUMNS)}")
    header = next(csv.reader([lines[0]]))
    if tuple(header) not in (RECORD_COLUMNS, _COLUMNS_V1, _COLUMNS_V2):
        raise LosslessError(f"{path}:1: not a records file (header {','.join(header)!r})")
    records: list[Record] = []
    for number, row in enumerate(csv.reader(io.StringIO("\n".join(lines[1:]))), start=2):
        try:
            records.append(_parse_record(row, len(header)))
        except ValueError as exc:
            raise LosslessError(f"{path}:{number}: corrupt record: {exc}") from None
    records.sort(key=lambda r: r.seq)
    return records


def read_jsonl(
    path: Path,
    parse: Callable[[dict[str, Any]], T],
    *,
    what: str,
    missing: str = "missing (not a run directory?)",
    truncated_tail_ok: bool = False,
) -> list[T]:
    """``parse(obj)`` for every JSON object line of ``path`` (blank lines skipped). Raises
    LosslessError ``FILE:LINE: corrupt WHAT: reason`` for a line that is not an object or that
    ``parse`` rejects (ValueError, KeyError, TypeError), and ``FILE: MISSING`` / ``FILE: cannot
    read`` for the file. With ``truncated_tail_ok`` a last line cut short by a crash is dropped."""
    try:
        lines = path.read_text("utf-8").splitlines()
    except FileNotFoundError:
        raise LosslessError(f"{path}: {missing}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LosslessError(f"{path}: cannot read: {exc}") from None
    out: list[T] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            if not isinstance(obj, dict):
                raise ValueError("not a JSON object")
            out.append(parse(obj))
        except (ValueError, KeyError, TypeError) as exc:
            if truncated_tail_ok and number == len(lines) and not line.endswith("}"):
                break
            reason = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            raise LosslessError(f"{path}:{number}: corrupt {what}: {reason}") from None
    return out


def _parse_event(obj: dict[str, Any]) -> Event:
    client = obj.get("client")
    if client is not None and not isinstance(client, int):
        raise ValueError(f"client must be an integer or null, got {client!r}")
    return Event(
        t=float(obj["t"]),
        kind=EventKind(obj["kind"]),
        replica=str(obj.get("replica", "")),
        client=client,
        detail=str(obj.get("detail", "")),
    )


def _read_events(path: Path) -> list[Event]:
    events = read_jsonl(path, _parse_event, what="event")
    events.sort(key=lambda e: e.t)
    return events


def _read_settings(path: Path) -> dict[str, Any]:
    try:
        obj = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise LosslessError(f"{path}: missing (not a run directory?)") from None
    except json.JSONDecodeError as exc:
        raise LosslessError(f"{path}:{exc.lineno}: corrupt settings: {exc.msg}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LosslessError(f"{path}: cannot read: {exc}") from None
    if not isinstance(obj, dict):
        raise LosslessError(f"{path}:1: corrupt settings: not a JSON object")
    return obj


def read_run(directory: str | os.PathLike[str], *, records: bool = True) -> Run:
    """Read a run directory written by :class:`RunWriter` (``records=False``: its timeline and
    settings only, ``Run.records`` empty, for an analysis that streams the records itself).

    Raises :class:`~lossless.errors.LosslessError` with a one-line message naming the file (and
    line) when the directory or one of its files is missing or corrupt.
    """
    path = Path(directory)
    if not path.is_dir():
        what = "not a directory" if path.exists() else "no such run directory"
        raise LosslessError(f"{path}: {what}")
    warnings: list[str] = []
    kept = _read_records(path / RECORDS, warnings) if records else []
    events = _read_events(path / TIMELINE)
    settings = _read_settings(path / SETTINGS)
    return Run(dir=path, records=kept, events=events, settings=settings, warnings=warnings)


# -- vegeta ---------------------------------------------------------------------------------------
def _go_csv_field(field: str) -> str:
    """Quote ``field`` exactly as Go's encoding/csv Writer does (fieldNeedsQuotes)."""
    if field == "":
        return field
    if field == "\\." or any(c in field for c in ',"\r\n') or field[0] in (" ", "\t"):
        return '"' + field.replace('"', '""') + '"'
    return field


def export_vegeta_csv(
    run: Run,
    path: str | os.PathLike[str],
    *,
    attack: str = "lossless",
    url: str | None = None,
) -> None:
    """Write ``run``'s records as vegeta's CSV results (``vegeta encode -to csv``, v12.11+).

    Columns, no header row, one request per line in ``seq`` order: timestamp (ns since the Unix
    epoch, when the request was sent), HTTP code (0 for a transport failure), latency (ns, from
    sent to the outcome), bytes out (the request's body), bytes in (response body), error (our error class,
    e.g. ``reset`` or ``503``; empty on success), body (base64; empty: bodies are not kept),
    attack name, seq, method (the request's kind, settings' ``requests``), URL (``url``, else settings' ``url``, else empty), headers (base64 of
    the MIME header block; holds ``X-Lossless-Replica`` when the replica is known). Quoting follows
    Go's encoding/csv. ``vegeta report`` and ``vegeta plot`` read the file.
    """
    export = VegetaExport(path, attack=attack, url=url)
    export.open(run)
    for r in run.records:
        export.add(r)
    export.close()


class VegetaExport:
    """:func:`export_vegeta_csv` as a record sink, for an analysis that streams the records:
    ``open(run)`` (its settings: the URL, the request kinds, the clock origin) creates the file,
    ``add(record)`` in any order, ``close()`` writes the rest and closes it; :attr:`written`
    counts the rows. Rows are written in ``seq`` order through a reorder buffer: a record waits
    only until every lower seq has come, so the buffer holds the requests in flight at a time
    (records.csv is in completion order), not the run. LosslessError when the file cannot be
    written."""

    def __init__(
        self, path: str | os.PathLike[str], *, attack: str = "lossless", url: str | None = None
    ) -> None:
        self.path = path
        self.attack = attack
        self.url = url
        self.written = 0
        self._next = 0
        self._waiting: list[tuple[int, str]] = []  # a heap of (seq, row)
        self._file: TextIO | None = None

    def open(self, run: Run) -> None:
        self._origin_ns = round(run.wall_origin * 1e9)
        self._target = self.url if self.url is not None else str(run.settings.get("url", ""))
        kinds = run.settings.get("requests")
        self._methods: list[str] = []
        self._sizes: list[int] = []
        if isinstance(kinds, list):
            self._methods = [str(k.get("method", "GET")) for k in kinds if isinstance(k, dict)]
            self._sizes = [int(k.get("body_bytes", 0)) for k in kinds if isinstance(k, dict)]
        try:
            self._file = open(self.path, "w", encoding="utf-8", newline="")  # noqa: SIM115
        except OSError as exc:
            raise LosslessError(f"{self.path}: cannot write: {exc}") from None

    def add(self, r: Record) -> None:
        heapq.heappush(self._waiting, (r.seq, self._row(r)))
        while self._waiting and self._waiting[0][0] <= self._next:
            seq, row = heapq.heappop(self._waiting)
            self._write(row)
            self._next = max(self._next, seq + 1)

    def close(self) -> None:
        while self._waiting:  # seqs after a gap (an interrupted run): in order all the same
            self._write(heapq.heappop(self._waiting)[1])
        if self._file is not None:
            self._file.close()
            self._file = None

    def _write(self, row: str) -> None:
        assert self._file is not None, "VegetaExport.open() first"
        try:
            self._file.write(row)
        except OSError as exc:
            raise LosslessError(f"{self.path}: cannot write: {exc}") from None
        self.written += 1

    def _row(self, r: Record) -> str:
        latency = 0 if r.end is None else max(0, round((r.end - r.sent) * 1e9))
        headers = ""
        if r.replica:
            block = f"X-Lossless-Replica: {r.replica}\r\n\r\n".encode()
            headers = base64.b64encode(block).decode("ascii")
        sizes, methods = self._sizes, self._methods
        fields = (
            str(self._origin_ns + round(r.sent * 1e9)),
            str(r.status),
            str(latency),
            str(sizes[r.kind] if r.kind < len(sizes) else 0),
            str(r.bytes),
            r.error.value,
            "",
            self.attack,
            str(r.seq),
            methods[r.kind] if r.kind < len(methods) else "GET",
            self._target,
            headers,
        )
        return ",".join(_go_csv_field(f) for f in fields) + "\n"
