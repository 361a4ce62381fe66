"""Long-lived clients (``--streams``, ``--websockets``): what ends a session cleanly, what is a
failure, and the verdict of a rollout.

Client against real servers on 127.0.0.1 (an asyncio HTTP server, a ``websockets`` server):
1. an SSE stream ended by its terminating chunk is ``clean``; one closed without it is ``cut``;
   a connection closed before the response head is ``reset``; a 503 is ``http_error``;
   a closed port is ``refused``; each stream reconnects and records every session;
2. a WebSocket closed with 1012 is ``clean``, with 1011 ``close_error``; one whose TCP
   connection ends without a close frame is ``cut``;
3. a session still open when the run stops is recorded as ``stopped``.

streams.csv: written, read back, a corrupt line named by file and line, a cut last line warned.

End to end (``lossless verify`` as a subprocess, the app in tests/verify/stream_apps):
4. plain uvicorn: the SSE streams are cut at shutdown without their terminating chunk: failures
   with a cause (``stream_cut``) naming the replica, its phase and the time since its SIGTERM;
   the WebSockets are closed cleanly (1012) and reconnect (a reconnect the terminating
   replica refuses is ``listener_closed``); exit 1; the HTML report has a lane per stream;
5. the same app under ``lossless serve`` ending its streams itself at t0 + drain delay: 0 failures,
   every stream reconnected, exit 0;
6. the app left alone under ``lossless serve``, whose runtime ends streams at t0 + drain delay
   (``lossless.streams``): 0 failures, every stream reconnected.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from lossless.errors import LosslessError
from lossless.verify.load.longlived import run_long_lived
from lossless.verify.model import Clock, Endpoint
from lossless.verify.stream_records import (
    STREAMS,
    SessionWriter,
    StreamOutcome,
    StreamSession,
    read_sessions,
)
from tests.verify.conftest import (
    PYTHON,
    REPO,
    assert_nothing_left,
    assert_passed,
    run_cli,
    run_cli_at_once,
)
from tests.verify.ingress_apps.browser import Browser

APPS = REPO / "tests" / "verify" / "stream_apps"


class OneEndpoint:
    """An EndpointView with one client that always routes to ``endpoint``."""

    clients = 1

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint

    def pick(self, client: int) -> Endpoint | None:
        return self.endpoint


async def sessions_until(
    endpoint: Endpoint, count: int, *, streams: int = 0, websockets: int = 0
) -> list[StreamSession]:
    """Run the long-lived clients against ``endpoint`` until ``count`` sessions are recorded
    (bounded: 20 s), then stop them; every session recorded, the stopped ones included."""
    got: list[StreamSession] = []
    enough = asyncio.Event()
    stop = asyncio.Event()

    def on_session(s: StreamSession) -> None:
        got.append(s)
        if len(got) >= count:
            enough.set()

    task = asyncio.create_task(
        run_long_lived(
            OneEndpoint(endpoint),
            Clock(),
            streams=streams,
            websockets=websockets,
            stream_path="/stream",
            websocket_path="/ws",
            timeout=5.0,
            on_session=on_session,
            stop=stop,
            retry_delay=0.01,
        )
    )
    try:
        async with asyncio.timeout(20):
            await enough.wait()
    finally:
        stop.set()
        await task
    return got


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def http_server(handler: Handler) -> AsyncIterator[Endpoint]:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            await handler(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield Endpoint("r0", "127.0.0.1", port)
    finally:
        server.close()
        await server.wait_closed()


HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
EVENT = b"c\r\ndata: tick\n\n\r\n"


async def clean_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(HEAD + EVENT + EVENT + b"0\r\n\r\n")
    await writer.drain()


async def cut_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(HEAD + EVENT)
    await writer.drain()


async def no_response(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    pass


async def unavailable(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\nbusy")
    await writer.drain()


async def open_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(HEAD + EVENT)
    await writer.drain()
    await reader.read()  # until the client goes away


@pytest.mark.parametrize(
    ("handler", "outcome", "established"),
    [
        (clean_stream, StreamOutcome.CLEAN, True),
        (cut_stream, StreamOutcome.CUT, True),
        (no_response, StreamOutcome.RESET, False),
        (unavailable, StreamOutcome.HTTP_ERROR, True),
    ],
)
def test_sse_session_outcomes(handler: Handler, outcome: StreamOutcome, established: bool) -> None:
    async def main() -> list[StreamSession]:
        async with http_server(handler) as ep:
            return await sessions_until(ep, 3, streams=1)

    sessions = asyncio.run(main())
    first = sessions[:2]  # the third may be cut short by the stop
    assert [s.outcome for s in first] == [outcome, outcome], sessions
    assert [s.session for s in sessions] == list(range(len(sessions)))  # reconnects, numbered
    assert all(s.replica == "r0" and s.protocol == "sse" for s in sessions)
    assert all((s.established is not None) is established for s in first)
    if outcome is StreamOutcome.CLEAN:
        assert first[0].messages == 2 and not first[0].failed
    if outcome is StreamOutcome.HTTP_ERROR:
        assert first[0].status == 503 and first[0].failed


def test_refused_reconnects_are_recorded() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connect() is refused
        sessions = asyncio.run(
            sessions_until(Endpoint("r0", "127.0.0.1", port), 3, streams=1, websockets=1)
        )
    assert {s.outcome for s in sessions} == {StreamOutcome.REFUSED}
    assert {s.protocol for s in sessions} == {"sse", "websocket"}


def test_open_stream_is_recorded_as_stopped() -> None:
    async def main() -> list[StreamSession]:
        async with http_server(open_stream) as ep:
            got: list[StreamSession] = []
            stop = asyncio.Event()
            task = asyncio.create_task(
                run_long_lived(
                    OneEndpoint(ep),
                    Clock(),
                    streams=2,
                    websockets=0,
                    stream_path="/stream",
                    websocket_path="/ws",
                    timeout=5.0,
                    on_session=got.append,
                    stop=stop,
                )
            )
            await asyncio.sleep(0)
            stop.set()
            await task
            return got

    sessions = asyncio.run(main())
    assert sorted(s.stream for s in sessions) == [0, 1]
    assert {s.outcome for s in sessions} == {StreamOutcome.STOPPED}


# -- WebSocket ------------------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def ws_server(mode: str) -> AsyncIterator[Endpoint]:
    from websockets.asyncio.server import ServerConnection, serve

    async def handler(ws: ServerConnection) -> None:
        await ws.send("tick")
        if mode == "abort":
            ws.transport.abort()  # no close frame
        else:
            await ws.close(int(mode))

    async with serve(handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield Endpoint("r0", "127.0.0.1", port)


@pytest.mark.parametrize(
    ("mode", "outcome", "code"),
    [
        ("1012", StreamOutcome.CLEAN, 1012),
        ("1000", StreamOutcome.CLEAN, 1000),
        ("1011", StreamOutcome.CLOSE_ERROR, 1011),
        ("abort", StreamOutcome.CUT, 0),
    ],
)
def test_websocket_session_outcomes(mode: str, outcome: StreamOutcome, code: int) -> None:
    async def main() -> list[StreamSession]:
        async with ws_server(mode) as ep:
            return await sessions_until(ep, 3, websockets=1)

    sessions = asyncio.run(main())
    first = sessions[:2]
    assert [s.outcome for s in first] == [outcome, outcome], sessions
    assert all(s.status == 101 and s.close_code == code and s.messages == 1 for s in first)
    assert first[0].failed is outcome.is_failure


# -- streams.csv ----------------------------------------------------------------------------------
SESSION = StreamSession(
    "sse", 0, 1, 2, "v1-0", 1.5, 1.6, 3.25, StreamOutcome.CUT, 200, 0, 7, "a\nb"
)


def test_streams_csv_round_trip(tmp_path: Path) -> None:
    writer = SessionWriter(tmp_path)
    writer.write(SESSION)
    writer.close()
    (back,) = read_sessions(tmp_path) or []
    assert (back.protocol, back.session, back.replica, back.outcome) == ("sse", 1, "v1-0", "cut")
    assert (back.opened, back.established, back.end, back.messages) == (1.5, 1.6, 3.25, 7)
    assert back.detail == "a b"  # one line per session
    assert read_sessions(tmp_path / "none") is None
    with pytest.raises(LosslessError, match="cannot create"):
        SessionWriter(tmp_path)  # never overwrites a run


def test_streams_csv_corrupt_and_cut_lines(tmp_path: Path) -> None:
    writer = SessionWriter(tmp_path)
    writer.write(SESSION)
    writer.close()
    path = tmp_path / STREAMS
    text = path.read_text()
    path.write_text(text + "sse,0,2,0,v1-0,4.0")  # cut short by a crash
    warnings: list[str] = []
    assert len(read_sessions(tmp_path, warnings) or []) == 1
    assert warnings and f"{STREAMS}:3: incomplete last line" in warnings[0]
    path.write_text(text + "sse,0,2,0,v1-0,4.0,,5.0,exploded,0,0,0,\n")
    with pytest.raises(LosslessError, match=rf"{STREAMS}:3: corrupt stream session"):
        read_sessions(tmp_path)


# -- end to end -----------------------------------------------------------------------------------
# kube-proxy's worst case here: 0.6 s of lag + 1 s to its next sync = 1.6 s, inside the drain
# delay of 2 s, so a stream ended at t0 + D reconnects to a view without the old replica
COMMON = ("--replicas", "2", "--rate", "30", "--before", "2", "--after", "1",
          "--max-surge", "1", "--max-unavailable", "0", "--propagation-delay", "0.4±0.2",
          "--streams", "3", "--websockets", "2", "--cwd", str(APPS), "--json")  # fmt: skip
NAIVE = (
    f"{PYTHON} -m uvicorn streams_app:app --host 127.0.0.1 --port {{port}} --log-level warning "
    "--timeout-graceful-shutdown 1"
)
LOSSLESS = (
    f"{PYTHON} -m lossless serve streams_app:app --host 127.0.0.1 --port {{port}} "
    "--drain-delay 2 --shutdown-timeout 10"
)


def _doc(stdout: str) -> dict[str, Any]:
    doc = json.loads(stdout)
    assert isinstance(doc, dict)
    return doc


Run = tuple[Path, subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def stream_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    """The module's three rollouts (4., 5., 6.), run at the same time: each has its own
    replicas, ports and run directory, and mostly waits (drain delays, lags)."""
    base = tmp_path_factory.mktemp("streams")
    ready = ("--readiness-path", "/readyz", "--readiness-period", "0.5")
    args = {
        # a readiness probe, as for the lossless app: without one a replica is ready when it
        # starts, and on a busy machine a client with a short lag connected to v2-0 before
        # uvicorn listened (refused, "unexplained"): a start-up race, not these tests' subject
        "naive": ("--cmd", NAIVE, "--html", str(base / "report.html"),
                  "--readiness-path", "/", "--readiness-period", "0.2", *COMMON),
        "lossless": ("--cmd", LOSSLESS, "--env", "STREAM_END=drain", *ready, *COMMON),
        "runtime": ("--cmd", LOSSLESS, *ready, *COMMON),
    }  # fmt: skip
    results = run_cli_at_once(
        {name: ("verify", "--out", str(base / name), *a) for name, a in args.items()}
    )
    return {name: (base / name, result) for name, result in results.items()}


@pytest.fixture
def naive_run(stream_runs: dict[str, Run]) -> Run:
    """The rollout of the app under plain uvicorn (its run directory and the CLI's result)."""
    return stream_runs["naive"]


def test_plain_uvicorn_cuts_streams(naive_run: Run) -> None:
    """4. Failures with their causes; the HTML report draws the streams."""
    out, result = naive_run
    html = out.parent / "report.html"
    assert result.returncode == 1, result.stderr
    doc = _doc(result.stdout)
    streams = doc["streams"]
    assert streams["streams"] == 3 and streams["websockets"] == 2
    assert streams["failures"] > 0
    assert doc["counted_failures"] >= doc["failures"] + streams["failures"]
    assert "failed stream session" in doc["reasons"][0]
    # every SSE stream opened before the rollout was cut at shutdown without its last chunk
    assert streams["failures_by_outcome"].get("cut", 0) >= 3
    kinds = {c["kind"]: c for c in streams["causes"]}
    assert "stream_cut" in kinds, streams["causes"]
    cut = kinds["stream_cut"]["examples"][0]
    assert cut["replica"].startswith("v1-") and cut["phase"] in ("after-sigterm", "after-exit")
    assert cut["since_sigterm"] is not None and cut["since_sigterm"] > 0
    assert cut["since_endpoint_removed"] is not None
    assert "without a clean end" in kinds["stream_cut"]["cause"]
    # every failure is explained: the cuts, and reconnects refused by a terminating replica
    # that the client still routed to (or a view left empty by the rollout)
    assert set(kinds) <= {"stream_cut", "listener_closed", "no_endpoint"}, streams["causes"]
    sessions = read_sessions(out) or []
    assert len(sessions) == streams["sessions"]  # every session recorded, none dropped
    # uvicorn closes its WebSockets at shutdown with 1012: a clean end, then a reconnect
    first = [s for s in sessions if s.protocol == "websocket" and s.session == 0]
    assert len(first) == 2
    assert all(s.outcome is StreamOutcome.CLEAN and s.close_code == 1012 for s in first), first
    assert {s.name for s in sessions if s.protocol == "websocket" and s.session > 0} == {
        "websocket-0",
        "websocket-1",
    }
    page = html.read_text()
    assert "sse-0" in page and "websocket-1" in page and "Failed stream sessions" in page
    text = run_cli("report", str(out))
    assert text.returncode == 1
    assert "stream failures" in text.stdout
    assert "ended without a clean end" in text.stdout
    assert_nothing_left(out)


@pytest.mark.requires("chromium")
def test_chromium_draws_a_lane_per_stream(naive_run: Run, tmp_path: Path) -> None:
    """The report's figure has a lane per stream under the replicas' lanes, with its sessions'
    bars and failure marks, and no script error."""
    out, _ = naive_run
    with Browser(tmp_path) as browser:
        page = browser.load(out.parent / "report.html")
        assert page.errors == [], page.errors
        ticks = page.eval(
            "Array.from(document.querySelectorAll('#timeline .yaxislayer-above .ytick text'))"
            ".map(t => t.textContent)"
        )
        lanes = {"sse-0", "sse-1", "sse-2", "websocket-0", "websocket-1"}
        assert lanes <= set(ticks), ticks
        names = page.eval(
            "Array.from(document.querySelectorAll('#timeline .legendtext')).map(t => t.textContent)"
        )
        assert "stream session: open, then ended without a clean end" in names, names
        assert "stream failed" in names, names
        shot = page.screenshot(tmp_path / "streams.png")
    assert shot.stat().st_size > 20_000


def test_lossless_serve_ends_streams_cleanly(stream_runs: dict[str, Run]) -> None:
    """5. 0 failures, reconnects counted."""
    out, result = stream_runs["lossless"]
    doc = _doc(result.stdout)
    streams = doc["streams"]
    assert streams["failures"] == 0, (streams["causes"], out)
    assert doc["failures"] == 0, doc["causes"]
    assert_passed(result)
    # every stream's first session was on an old replica, which ended it: each reconnected
    assert streams["reconnects"] >= 5 and streams["clean_ends"] >= 5
    sessions = read_sessions(out) or []
    assert {s.name for s in sessions if s.session > 0} == {
        "sse-0", "sse-1", "sse-2", "websocket-0", "websocket-1",
    }  # fmt: skip
    last = {s.name: s for s in sorted(sessions, key=lambda s: s.session)}
    assert all(s.replica.startswith("v2-") for s in last.values()), last  # every v1 exited
    assert_nothing_left(out)


def test_bad_stream_flags(tmp_path: Path) -> None:
    result = run_cli("verify", "--cmd", NAIVE, "--streams", "-1", "--out", str(tmp_path / "x"))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "--streams" in result.stderr
    result = run_cli("verify", "--cmd", NAIVE, "--websockets", "1", "--websocket-path", "ws")
    assert result.returncode == 2 and "--websocket-path must start with /" in result.stderr


def test_lossless_serve_runtime_ends_streams(stream_runs: dict[str, Run]) -> None:
    """6. The app's streams never end by themselves; the runtime ends them at t0 + D (the
    terminating chunk, close 1012): 0 failures, every stream reconnected."""
    out, result = stream_runs["runtime"]
    doc = _doc(result.stdout)
    assert doc["streams"]["failures"] == 0, (doc["streams"]["causes"], out)
    assert_passed(result)
    assert doc["streams"]["reconnects"] >= 5
    assert_nothing_left(out)


# -- analysis and verdict on a recorded run -------------------------------------------------------
def _recorded_run(tmp_path: Path, sessions: list[StreamSession], traffic: str = "service") -> Path:
    """A run directory: one ok request, replica v1-0 deleted and SIGTERMed at 1.0 s (endpoint
    removed at once, every client's view at 1.5 s), exited at 2.0 s; ``sessions`` in
    streams.csv."""
    from lossless.verify.model import ErrorClass, Event, EventKind, Record
    from lossless.verify.results import RunWriter

    with RunWriter(tmp_path) as w:
        w.settings({"traffic": traffic, "long_lived": {"streams": 1, "websockets": 1}})
        for t, kind, client in [
            (0.0, EventKind.STARTED, None),
            (0.1, EventKind.READY, None),
            (0.1, EventKind.ENDPOINT_ADDED, None),
            (0.2, EventKind.VIEW_ADDED, 0),
            (1.0, EventKind.DELETING, None),
            (1.0, EventKind.ENDPOINT_REMOVED, None),
            (1.0, EventKind.SIGTERM, None),
            (1.5, EventKind.VIEW_REMOVED, 0),
            (2.0, EventKind.EXITED, None),
        ]:
            w.event(Event(t, kind, "v1-0", client))
        w.record(Record(0, 0.5, 0.5, 0.51, 0.52, 200, 2, ErrorClass.NONE, "v1-0", 1, False))
    writer = SessionWriter(tmp_path)
    for s in sessions:
        writer.write(s)
    writer.close()
    return tmp_path


def _session(
    stream: int, session: int, outcome: StreamOutcome, t: float, **kw: Any
) -> StreamSession:
    fields: dict[str, Any] = {"replica": "v1-0", "status": 200, "established": None}
    fields.update(kw)
    return StreamSession(
        fields.pop("protocol", "sse"), stream, session, 0, fields.pop("replica"), t - 0.5,
        fields.pop("established"), t, outcome, **fields,
    )  # fmt: skip


def test_analysis_explains_stream_failures_and_the_verdict_counts_them(tmp_path: Path) -> None:
    from lossless.verify.analysis.report import analyse_dir
    from lossless.verify.analysis.verdict import VerdictPolicy, judge

    sessions = [
        _session(0, 0, StreamOutcome.CUT, 1.6, established=0.2),  # cut after SIGTERM
        _session(0, 1, StreamOutcome.REFUSED, 1.2, status=0),  # still routed to it
        _session(0, 2, StreamOutcome.NO_ENDPOINT, 1.7, replica="", status=0),
        _session(1, 0, StreamOutcome.CLEAN, 1.1, protocol="websocket", established=0.2),
        _session(1, 1, StreamOutcome.STOPPED, 3.0, protocol="websocket", replica="v2-0"),
    ]
    report = analyse_dir(_recorded_run(tmp_path, sessions))
    sa = report.streams
    assert sa is not None
    assert (sa.sessions, sa.reconnects, sa.clean_ends, sa.stopped, sa.failures) == (5, 3, 1, 1, 3)
    kinds = {c.kind.value: c for c in sa.causes}
    assert set(kinds) == {"stream_cut", "listener_closed", "no_endpoint"}
    cut = kinds["stream_cut"].examples[0]
    assert (cut.phase, cut.since_sigterm, cut.since_endpoint_removed) == ("after-sigterm", 0.6, 0.6)
    assert "0.60 s after SIGTERM" in kinds["stream_cut"].cause
    assert "drain delay ≥ 1 s" in kinds["listener_closed"].fix  # 1.5 s - 1.0 s, rounded up
    verdict = judge(report, VerdictPolicy())
    assert verdict.outcome.value == "fail" and verdict.counted == 3
    assert "3 failed stream sessions" in verdict.reasons[0]
    assert judge(report, VerdictPolicy(max_failures=3)).outcome.value == "pass"


def test_ingress_503_without_a_replica(tmp_path: Path) -> None:
    from lossless.verify.analysis.report import analyse_dir

    sessions = [_session(0, 0, StreamOutcome.HTTP_ERROR, 1.2, replica="ingress", status=503)]
    sa = analyse_dir(_recorded_run(tmp_path, sessions, traffic="ingress")).streams
    assert sa is not None and [c.kind.value for c in sa.causes] == ["ingress_no_server"]


def test_streams_never_established_make_the_run_inconclusive(tmp_path: Path) -> None:
    from lossless.verify.analysis.report import analyse_dir
    from lossless.verify.analysis.verdict import VerdictPolicy, judge

    sessions = [_session(0, 0, StreamOutcome.STOPPED, 3.0, replica="v2-0")]
    verdict = judge(analyse_dir(_recorded_run(tmp_path, sessions)), VerdictPolicy())
    assert verdict.outcome.value == "inconclusive"
    assert any("no long-lived stream was ever established" in r for r in verdict.reasons)
