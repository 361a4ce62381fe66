"""gRPC load (``lossless verify --grpc``): real gRPC servers (tests/grpc/grpc_app.py), real
channels, real signals.

1. the generator alone against one real server: every call recorded with its status code
   (OK, UNIMPLEMENTED), a closed port is ``refused``;
2. a server stopping gracefully (GOAWAY) while the client's view moves to another replica: the
   next calls open a new channel to the replica of the current view, none fails;
3. a plain ``grpc.server`` stopped without grace with calls in flight: UNAVAILABLE, recorded;
4. end to end, the project's gRPC integration (``lossless.grpc.serve``) rolls out with 0 failed
   calls; a plain ``grpc.server`` that stops at SIGTERM fails with a diagnosis by replica and
   phase; both leave nothing behind;
5. bad flags: one-line errors, exit 2.
"""

from __future__ import annotations

import asyncio
import csv
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from lossless.errors import LosslessError
from lossless.verify.load.generator import run
from lossless.verify.load.grpc_client import GrpcTarget, run_grpc_load
from lossless.verify.model import Clock, Endpoint, ErrorClass, EventKind, Record
from lossless.verify.results import RunWriter, read_run
from tests.conftest import free_port
from tests.supervise._proc import Proc
from tests.verify.conftest import (
    PYTHON,
    REPO,
    assert_nothing_left,
    assert_passed,
    load_json,
    run_cli,
)
from tests.verify.misbehaving import refusing_port

Spawn = Callable[..., Proc]
APP = str(REPO / "tests" / "grpc" / "grpc_app.py")
SLOW = GrpcTarget.parse("t.Test/Slow")
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE.value[0]


class View:
    """A traffic model whose endpoints the test sets (``clients`` clients, same view)."""

    def __init__(self, *endpoints: Endpoint, clients: int = 2) -> None:
        self.endpoints = list(endpoints)
        self.clients = clients

    def pick(self, client: int) -> Endpoint | None:
        return self.endpoints[client % len(self.endpoints)] if self.endpoints else None


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """Start processes that are always stopped at teardown (as tests/grpc's fixture)."""
    started: list[Proc] = []

    def start(argv: list[str], env: dict[str, str] | None = None) -> Proc:
        proc = Proc(argv, env)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()


def serving(port: int, timeout: float = 15.0) -> None:
    """Wait until the server on ``port`` answers a call."""
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout)
        channel.unary_unary("/t.Test/Slow")(b"", timeout=timeout)
    finally:
        channel.close()


def start_server(spawn: Spawn, mode: str, **env: str) -> tuple[Proc, Endpoint]:
    port = free_port()
    proc = spawn([sys.executable, APP, mode, str(port)], env=env)
    serving(port)
    return proc, Endpoint(f"{mode}-{port}", "127.0.0.1", port)


def load(view: View, target: GrpcTarget, **kwargs: object) -> list[Record]:
    async def main() -> list[Record]:
        return await run_grpc_load(view, Clock(), target, **kwargs)  # type: ignore[arg-type]

    return run(main())


def test_every_call_is_recorded_with_its_status_code(spawn: Spawn) -> None:
    _, ep = start_server(spawn, "aio")
    records = load(View(ep), SLOW, rate=200, duration=1.0, new_conn_ratio=0.2)
    assert [r.seq for r in records] == list(range(200))
    assert all(r.grpc == 0 and r.status == 200 and r.bytes == 4 for r in records)
    assert {r.error for r in records} <= {ErrorClass.NONE, ErrorClass.SCHEDULE_LAG}
    # two clients share two pinned channels; fresh calls got one-shot channels of their own
    pinned = Counter(r.conn_id for r in records if r.reused)
    assert 1 <= len(pinned) <= 4, pinned
    assert len({r.conn_id for r in records}) > 20

    missing = load(View(ep), GrpcTarget.parse("/t.Test/Nope"), rate=50, duration=0.2)
    assert {(r.error, r.grpc, r.status) for r in missing} == {
        (ErrorClass.GRPC_ERROR, grpc.StatusCode.UNIMPLEMENTED.value[0], 200)
    }

    with refusing_port() as closed_port:  # bound, not listening: refused
        closed = Endpoint("closed", "127.0.0.1", closed_port)
        refused = load(View(closed), SLOW, rate=50, duration=0.2)
    assert {(r.error, r.grpc, r.status) for r in refused} == {(ErrorClass.REFUSED, UNAVAILABLE, 0)}
    assert {r.replica for r in refused} == {"closed"}

    nothing = load(View(), SLOW, rate=50, duration=0.1)
    assert {(r.error, r.conn_id) for r in nothing} == {(ErrorClass.NO_ENDPOINT, 0)}


def test_goaway_moves_the_next_calls_to_the_current_view(spawn: Spawn) -> None:
    """1. calls flow to A on pinned channels 2. the view switches to B (A stays listed nowhere)
    3. A gets SIGTERM: lossless.grpc (no drain delay) finishes its calls and sends GOAWAY
    Result: the next calls open channels to B, and no call fails but the one race grpcio leaves
    (below).

    A is a sync ``grpc.server``: a ``grpc.aio`` server's ``stop(grace)`` cancels a call that
    crossed its GOAWAY now and then (CANCELLED; docs/grpc.md, Limits), which is not what this
    test is about."""
    a_proc, a = start_server(spawn, "sync", LOSSLESS_DRAIN_DELAY="0")
    _, b = start_server(spawn, "aio")
    view = View(a, clients=2)
    target = GrpcTarget.parse("t.Test/Slow", b"0.02")

    clock = Clock()
    stopped_at: list[float] = []

    async def main() -> list[Record]:
        stop = asyncio.Event()
        seen: list[Record] = []

        def on_record(r: Record) -> None:
            seen.append(r)
            if len(seen) == 60:  # A has served: move the view, then stop A
                view.endpoints = [b]
                stopped_at.append(clock.now())
                a_proc.signal(signal.SIGTERM)
            if r.replica == b.name and sum(x.replica == b.name for x in seen) >= 60:
                stop.set()

        return await run_grpc_load(
            view, clock, target, rate=200, duration=30, new_conn_ratio=0, on_record=on_record,
            stop=stop,
        )  # fmt: skip

    records = run(main())
    assert a_proc.wait_exit() == 0
    failed = [r for r in records if not r.ok and not r.error.is_artefact]
    # The one loss grpcio allows (docs/grpc.md, Limits), named here instead of hidden: a call
    # sent on a pinned channel to A just as A's stop begins (before its client processed the
    # GOAWAY) can end CANCELLED; at most one per client's channel, and nothing else.
    for r in failed:
        assert r.error is ErrorClass.CANCELLED and r.replica == a.name and r.reused, r
        assert -0.05 <= r.sent - stopped_at[0] <= 0.5, (r.sent - stopped_at[0], r)
    assert len(failed) <= 2, Counter((r.error, r.replica) for r in failed)
    assert {r.replica for r in records} == {a.name, b.name}
    # the channels to A were retired: after B's first call no call went to A on a new channel
    first_b = min(r.sent for r in records if r.replica == b.name)
    late_a = [r for r in records if r.replica == a.name and r.sent > first_b and not r.reused]
    assert not late_a


def test_a_server_stopping_without_grace_fails_the_calls_in_flight(spawn: Spawn) -> None:
    proc, ep = start_server(spawn, "plain")
    target = GrpcTarget.parse("t.Test/Slow", b"0.3")

    async def main() -> list[Record]:
        stop = asyncio.Event()

        def on_record(r: Record) -> None:
            if r.seq == 5:
                proc.signal(signal.SIGTERM)
            if not r.ok:
                stop.set()

        return await run_grpc_load(
            View(ep), Clock(), target, rate=100, duration=10, new_conn_ratio=0,
            on_record=on_record, stop=stop,
        )  # fmt: skip

    records = run(main())
    proc.wait_exit()
    cut = [r for r in records if r.error is ErrorClass.UNAVAILABLE]
    assert cut, Counter(r.error for r in records)
    assert all(r.grpc == UNAVAILABLE and r.status == 0 and r.end is not None for r in cut)


def test_records_keep_the_grpc_status_in_the_run_directory(tmp_path: Path) -> None:
    with RunWriter(tmp_path / "run") as writer:
        writer.record(Record(0, 0.0, 0.0, 0.1, 0.1, 200, 4, ErrorClass.NONE, "a", 1, False, grpc=0))
        writer.record(
            Record(1, 0.1, 0.1, None, 0.2, 0, 0, ErrorClass.UNAVAILABLE, "a", 1, True, grpc=14)
        )
        writer.record(Record(2, 0.2, 0.2, 0.3, 0.3, 200, 2, ErrorClass.NONE, "a", 2, False))
    run_ = read_run(tmp_path / "run")
    assert [(r.grpc, r.error) for r in run_.records] == [
        (0, ErrorClass.NONE),
        (14, ErrorClass.UNAVAILABLE),
        (None, ErrorClass.NONE),
    ]
    # a run directory written before the grpc column is still read (every record: not gRPC)
    old = tmp_path / "old"
    old.mkdir()
    for name in ("timeline.jsonl", "settings.json"):
        (old / name).write_bytes((tmp_path / "run" / name).read_bytes())
    rows = list(csv.reader((tmp_path / "run" / "records.csv").read_text().splitlines()))
    (old / "records.csv").write_text("\n".join(",".join(row[:-1]) for row in rows) + "\n")
    assert [r.grpc for r in read_run(old).records] == [None, None, None]


# -- end to end ----------------------------------------------------------------------------------
COMMON = ("--grpc", "t.Test/Slow", "--grpc-request", "0.2", "--replicas", "3", "--rate", "60",
          "--before", "1", "--after", "1", "--max-surge", "1", "--max-unavailable", "0",
          "--propagation-delay", "0.5±0.2", "--readiness-grpc", "--readiness-period", "0.2",
          "--json")  # fmt: skip


def grpc_app(mode: str) -> str:
    return f"{PYTHON} {APP} {mode} {{port}}"


def test_the_grpc_integration_rolls_out_with_no_failed_call(tmp_path: Path) -> None:
    """kube-proxy's worst case, 0.7 s of lag + 1 s to its next sync, stays inside the drain
    delay of 2.5 s with 0.8 s to spare (a 1±0.5 s lag left none: 1 failed call in a suite run).

    One loss remains that no view lag explains, and the test names it instead of hiding it: a
    client's channel stays pinned to its old replica (as a kept-alive connection through a
    Service), so a call it sends just as that replica stops at t0 + D can reach grpcio's server
    after its shutdown began and end CANCELLED (grpcio sends no GOAWAY while still accepting;
    docs/grpc.md). Seen once in about ten suite runs; anything else fails the test."""
    out = tmp_path / "lossless"
    result = run_cli(
        "verify", "--cmd", grpc_app("sync"), "--env", "LOSSLESS_DRAIN_DELAY=2.5",
        "--env", "LOSSLESS_SHUTDOWN_TIMEOUT=10", "--out", str(out), *COMMON,
    )  # fmt: skip
    doc = load_json(result.stdout)
    run_ = read_run(out)
    records = run_.records
    failed = [r for r in records if r.error is not ErrorClass.NONE]
    if failed:  # only the stop race at t0 + D (above), at most one call per old replica
        sigterm = {e.replica: e.t for e in run_.events if e.kind is EventKind.SIGTERM}
        assert len(failed) <= 3, (doc["causes"], out)
        for r in failed:
            since = r.sent - sigterm[r.replica]
            assert r.error is ErrorClass.CANCELLED and r.reused, (r, out)
            assert 2.5 - 0.05 <= since <= 2.5 + 0.1, (since, r, out)
        assert {c["kind"] for c in doc["causes"]} == {"grpc_stopped"}, doc["causes"]
        if all(r.sent - r.intended <= 0.010 for r in failed):
            assert result.returncode == 1 and doc["verdict"] == "fail"  # the verdict says so
        else:  # sent late: the verdict cannot tell (analysis/verdict.py)
            assert result.returncode == 3 and doc["verdict"] == "inconclusive", doc["reasons"]
    else:
        assert_passed(result)
    assert doc["failures"] == len(failed)
    assert doc["requests"] > 200
    assert doc["grpc_codes"].get("OK") == doc["requests"] - len(failed)
    kind = doc["request_kinds"]["gRPC /t.Test/Slow"]
    assert kind["requests"] == doc["requests"] and kind["failures"] == len(failed)
    assert {r.grpc for r in records} <= {0, 1}  # OK, or CANCELLED by the race above
    assert len({r.replica for r in records}) == 6  # three old replicas, three new
    assert_nothing_left(out)


def test_a_plain_grpc_server_fails_with_a_diagnosis(tmp_path: Path) -> None:
    out = tmp_path / "plain"
    result = run_cli("verify", "--cmd", grpc_app("plain"), "--out", str(out), *COMMON)
    assert result.returncode == 1, result.stderr
    doc = load_json(result.stdout)
    assert doc["verdict"] == "fail"
    assert doc["failures"] > 0
    assert doc["failures_by_class"].get("unavailable", 0) > 0, doc["failures_by_class"]
    by_class = doc["failures_by_class"]  # refused calls got UNAVAILABLE too
    assert doc["grpc_codes"]["UNAVAILABLE"] == by_class["unavailable"] + by_class.get("refused", 0)
    assert doc["grpc_codes"]["OK"] == doc["ok"]
    kinds = {c["kind"]: c for c in doc["causes"]}
    stopped = kinds.get("grpc_stopped")
    assert stopped is not None, doc["causes"]
    assert "UNAVAILABLE" in stopped["cause"] and "by replica and the phase" in stopped["cause"]
    assert "server.stop(grace)" in stopped["fix"]
    assert_nothing_left(out)
    # the text report of the same run names the cause too
    text = run_cli("report", str(out))
    assert "the gRPC server stopped with calls in flight" in text.stdout, text.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--grpc", "nomethod"), "--grpc 'nomethod': expected SERVICE/METHOD"),
        (("--grpc", "a.B/C", "--grpc-request", "@/nonexistent/req.bin"), "cannot read"),
        (("--grpc-request", "x"), "--grpc-request needs --grpc"),
        (("--grpc", "a.B/C", "--traffic", "ingress"), "--grpc works with --traffic service"),
        (("--grpc", "a.B/C", "--method", "POST"), "--grpc replaces the HTTP request flags"),
    ],
)
def test_bad_grpc_flags_are_one_line_errors(args: tuple[str, ...], message: str) -> None:
    result = run_cli("verify", "--cmd", "true {port}", *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_the_grpc_readiness_probe_follows_kubelets_semantics(spawn: Spawn) -> None:
    from lossless.verify.lab.prober import GRPCAction, run_handler

    proc, ep = start_server(spawn, "aio", LOSSLESS_DRAIN_DELAY="5")

    async def probe(action: GRPCAction, port: int) -> tuple[bool, str]:
        return await run_handler(action, port, 1.0)

    assert run(probe(GRPCAction(), ep.port)) == (True, "service healthy")
    assert run(probe(GRPCAction(service="t.Test"), ep.port))[0]
    ok, detail = run(probe(GRPCAction(service="nope"), ep.port))
    assert not ok and "NOT_FOUND" in detail
    with refusing_port() as closed_port:
        ok, detail = run(probe(GRPCAction(), closed_port))
    assert not ok and detail.startswith("timeout: failed to connect service")
    proc.signal(signal.SIGTERM)  # draining: lossless.grpc answers NOT_SERVING at once
    proc.wait_event("draining")
    deadline = time.monotonic() + 5
    while (result := run(probe(GRPCAction(), ep.port)))[0] and time.monotonic() < deadline:
        time.sleep(0.02)  # the server's health follows its lifecycle on its next tick
    assert result == (False, "service unhealthy (responded with 'NOT_SERVING')")


MANIFEST = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: greeter}
spec:
  template:
    spec:
      containers:
        - name: app
          readinessProbe:
            grpc: {port: 50051%s}
            periodSeconds: 2
"""


def test_a_manifests_grpc_readiness_probe_is_read(tmp_path: Path) -> None:
    from lossless.verify.lab.manifest import load_deployment
    from lossless.verify.lab.prober import GRPCAction

    path = tmp_path / "deploy.yaml"
    path.write_text(MANIFEST % ", service: t.Test")
    probe = load_deployment(path).readiness
    assert probe is not None
    assert probe.action == GRPCAction(service="t.Test") and probe.period == 2
    path.write_text(MANIFEST.replace("50051", "grpc-port") % "")
    with pytest.raises(LosslessError, match=r"deploy.yaml:10: readinessProbe.grpc.port: expected"):
        load_deployment(path)
