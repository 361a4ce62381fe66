"""The ``ingress`` traffic model: a real HAProxy between the load and the replicas.

Scenarios with real processes (HAProxy 2.6 from Debian, replicas on loopback ports):

1. IngressTraffic starts HAProxy; replicas are added through the runtime API after the
   propagation delay (VIEW_ADDED, client 0); responses name their replica; a removal puts the
   server in maintenance (VIEW_REMOVED); the access log joins the records by seq; HAProxy is
   stopped and its port freed.
2. SIGINT to a verifier running the model: HAProxy's process group is gone afterwards.
3. A naive app (plain uvicorn) rolled out behind the ingress: HAProxy's connect failures after
   the replicas' SIGTERM reach clients as 503 (its retries hide part of them); the proxy
   analysis attributes every failure to the replica HAProxy tried and names the cause and fix.
4. The same app under ``lossless serve --drain-delay 2``: no failure, no proxy error.
5. The proxy analysis on recorded runs: silent close (no log line), no server, backend closed,
   backend timeout, and the application's own 5xx left to the lab's rules.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from lossless.errors import LosslessError
from lossless.verify.analysis.proxy import analyze_proxy, read_proxy_log
from lossless.verify.analysis.report import analyse
from lossless.verify.haproxy.config import HAProxySettings, render_config
from lossless.verify.haproxy.log import ProxyLogEntry, parse_log_line
from lossless.verify.load.generator import run_load
from lossless.verify.model import Clock, Endpoint, ErrorClass, Event, EventKind, Record
from lossless.verify.render.html_page import render_html
from lossless.verify.results import Run, RunWriter, read_run
from lossless.verify.traffic.base import PropagationDelay
from lossless.verify.traffic.ingress import PROXY_LOG, IngressTraffic
from tests.conftest import default_sigint, free_port, require
from tests.verify.conftest import SERVER, group_alive, pid_alive, port_free
from tests.verify.ingress_apps.harness import LOSSLESS_APP, NAIVE_APP, REPO, Scenario, run_scenario

pytestmark = pytest.mark.requires("haproxy")


# -- configuration and log format --------------------------------------------------------------
def test_settings_parse_and_validate() -> None:
    s = HAProxySettings.parse("retries=0, redispatch=0, retry-on=conn-failure+503, checks=on")
    assert (s.retries, s.redispatch, s.retry_on, s.checks) == (0, 0, ("conn-failure", "503"), True)
    assert HAProxySettings.parse("timeout-server=2s").timeout_server == 2.0
    for bad in ("retries", "nope=1", "retries=x", "retry-on=sometimes", "http-reuse=maybe"):
        with pytest.raises(LosslessError):
            HAProxySettings.parse(bad)


def test_generated_config_passes_haproxy_check(tmp_path: Path) -> None:
    for settings in (HAProxySettings(), HAProxySettings.parse("checks=on,redispatch=0")):
        cfg = tmp_path / "haproxy.cfg"
        cfg.write_text(
            render_config(settings, host="127.0.0.1", port=1, socket_path=tmp_path / "s")
        )
        exe = require("haproxy")
        check = subprocess.run([exe, "-c", "-f", str(cfg)], capture_output=True, timeout=30)
        assert check.returncode == 0, check.stderr.decode()


def test_log_lines_parse() -> None:
    ok = parse_log_line(
        "lossless 1795610716.045 17 200 ---- 0 v1-0 0 0 0 0 2 2 2 964 55938 51382 18081 12 0 0 0"
    )
    assert ok is not None
    assert (ok.seq, ok.status, ok.server, ok.termination, ok.backend_port) == (
        17,
        200,
        "v1-0",
        "----",
        51382,
    )
    failed = parse_log_line(
        "lossless 1795610716.5 9 503 SC-- +2 v1-1 0 0 0 -1 -1 0 10 217 5 - - 14 0 - 0"
    )
    assert failed is not None
    assert (failed.retries, failed.redispatched, failed.tc, failed.backend_port) == (2, True, -1, 0)
    nosrv = parse_log_line("lossless 1.0 - 503 SC-- 0 <NOSRV> 0 0 -1 -1 -1 0 0 217 1 - - 1 0 - 0")
    assert nosrv is not None and nosrv.server == "" and nosrv.seq is None
    assert parse_log_line("Server replicas/v1-0 is UP/READY") is None
    with pytest.raises(ValueError):
        parse_log_line("lossless 1.0 2 200")


# -- 1. the model on its own -------------------------------------------------------------------
async def _logged(path: Path, seqs: set[int], timeout: float = 10.0) -> None:
    """Wait (bounded) until HAProxy's access log lines for ``seqs`` are in ``path``: HAProxy
    writes a line as each request ends, on its own schedule."""
    async with asyncio.timeout(timeout):
        while not seqs <= {e.seq for e in read_proxy_log(path)[0]}:
            await asyncio.sleep(0.05)


def _get(port: int, seq: int) -> tuple[int, str]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/", headers={"x-lossless-seq": str(seq)})
        response = conn.getresponse()
        response.read()
        return response.status, response.getheader("x-lossless-replica") or ""
    finally:
        conn.close()


def test_ingress_routes_through_runtime_api_changes(tmp_path: Path) -> None:
    """1. add → VIEW_ADDED after the delay → served with x-lossless-replica; remove → maint;
    the log joins by seq; HAProxy stopped, port free."""
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    replicas = []
    ports = []
    for _ in range(2):
        port = free_port()
        ports.append(port)
        replicas.append(
            subprocess.Popen(
                [sys.executable, str(script)],
                env={**os.environ, "PORT": str(port)},
                start_new_session=True,
            )
        )
    events: list[Event] = []

    async def main() -> tuple[int, int, list[tuple[int, str]], list[tuple[int, str]]]:
        clock = Clock()
        traffic = IngressTraffic(
            clock=clock,
            delay=PropagationDelay(0.2, 0.0),
            on_event=events.append,
            proxy_log=tmp_path / PROXY_LOG,
        )
        async with traffic:
            endpoint = traffic.pick(0)
            assert endpoint is not None and endpoint.name == "ingress"
            assert traffic.pick(2) == endpoint
            for name, port in zip(("a", "b"), ports, strict=True):
                traffic.add(Endpoint(name, "127.0.0.1", port))
            assert traffic.servers() == []  # not propagated yet
            await traffic.settled()
            assert traffic.servers() == ["a", "b"]
            loop = asyncio.get_running_loop()
            both = [await loop.run_in_executor(None, _get, endpoint.port, i) for i in range(4)]
            traffic.remove(Endpoint("a", "127.0.0.1", ports[0]))
            await traffic.settled()
            only_b = [await loop.run_in_executor(None, _get, endpoint.port, i) for i in (4, 5)]
            pid = traffic.haproxy.pid
            assert pid is not None
            await _logged(tmp_path / PROXY_LOG, set(range(6)))
        return pid, endpoint.port, both, only_b

    try:
        pid, port, both, only_b = asyncio.run(main())
    finally:
        for p in replicas:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=10)
    assert {status for status, _ in both} == {200}
    assert {replica for _, replica in both} == {"a", "b"}  # round robin over both
    assert only_b == [(200, "b"), (200, "b")]
    views = [(e.kind, e.replica, e.client) for e in events if e.kind is not EventKind.NOTE]
    assert views == [
        (EventKind.VIEW_ADDED, "a", 0),
        (EventKind.VIEW_ADDED, "b", 0),
        (EventKind.VIEW_REMOVED, "a", 0),
    ]
    entries, messages = read_proxy_log(tmp_path / PROXY_LOG)
    assert sorted(e.seq for e in entries if e.seq is not None) == [0, 1, 2, 3, 4, 5]
    assert any("is going DOWN for maintenance" in m for m in messages)
    assert not pid_alive(pid) and not group_alive(pid)
    assert port_free(port)


def test_a_stop_cancelled_half_way_has_reaped_haproxy() -> None:
    """stop() cancelled while it waits for HAProxy to exit (a run interrupted as it tears down):
    the group is killed and reaped before the cancel goes on, so a loop closed right after
    leaves no subprocess "still running" (an unraisable ResourceWarning once collected)."""
    import contextlib
    import gc
    import warnings

    from lossless.verify.haproxy.process import HAProxy

    async def main() -> tuple[int | None, int]:
        haproxy = HAProxy()
        await haproxy.start()
        pid = haproxy.pid
        assert pid is not None
        stopping = asyncio.ensure_future(haproxy.stop())
        await asyncio.sleep(0)  # stop() sent SIGTERM and waits for the exit
        stopping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stopping
        assert haproxy._proc is not None
        return haproxy._proc.returncode, pid

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        code, pid = asyncio.run(main())
        gc.collect()
    assert code is not None  # reaped
    assert not pid_alive(pid) and not group_alive(pid)
    assert not [w for w in caught if "still running" in str(w.message)], caught


_SIGINT_CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from lossless.verify.model import Clock
    from lossless.verify.traffic.ingress import IngressTraffic

    async def main():
        async with IngressTraffic(clock=Clock()) as traffic:
            print(traffic.haproxy.pid, traffic.endpoint.port, flush=True)
            await asyncio.sleep(60)

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    """
)


def test_haproxy_is_stopped_on_sigint(tmp_path: Path) -> None:
    """2. SIGINT to the process that runs the model: HAProxy's group is gone afterwards."""
    script = tmp_path / "child.py"
    script.write_text(_SIGINT_CHILD)
    child = subprocess.Popen(
        [sys.executable, str(script)],
        preexec_fn=default_sigint,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line, child.stderr.read() if child.stderr else ""
        pid, port = (int(x) for x in line.split())
        assert pid_alive(pid)
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=15)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate(timeout=10)
    assert "interrupted" in out, err
    deadline = time.monotonic() + 5
    while (pid_alive(pid) or group_alive(pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(pid) and not group_alive(pid)
    assert port_free(port)


# -- 3 and 4: rollouts behind the ingress -------------------------------------------------------
def _starts(run: Run) -> list[tuple[float, str, str]]:
    """When each replica became ready and each client view changed: what decides the window."""
    kinds = {EventKind.READY, EventKind.SIGTERM, EventKind.VIEW_ADDED, EventKind.VIEW_REMOVED}
    return [(round(e.t, 2), e.kind.value, e.replica) for e in run.events if e.kind in kinds]


@pytest.mark.slow
def test_naive_app_behind_ingress_fails_and_is_attributed(tmp_path: Path) -> None:
    """3. uvicorn closes its listener at SIGTERM while HAProxy still routes to it (the ingress
    learns of each change 3 s later): HAProxy's connects fail, its retries (ingress-nginx-like:
    2, redispatched) hide part of them and the rest reach clients as 503 SC-- (while every server
    HAProxy has is closed: the new replicas are ready but not added yet). The lag is longer than
    a replica's start-up, so that window exists unless a start-up takes more than 3 s; every
    assertion runs on every run (none is skipped when the retries happen to save everything)."""
    out = tmp_path / "run"
    asyncio.run(run_scenario(Scenario(NAIVE_APP, delay=PropagationDelay(3.0, 0.2)), out))
    run = read_run(out)
    proxy = analyze_proxy(run)
    assert proxy is not None
    a = proxy.analysis
    # the upgrade failed requests: those the retries could not save reached the client, the
    # others were saved by a retry (how many of each depends on the timing of the machine)
    assert a.failures + a.retried > 0, a.to_json()
    assert a.retried == proxy.hidden
    retried = [c for c in a.causes if c.kind == "ingress_retried"]
    assert [c.count for c in retried] == ([a.retried] if a.retried else [])
    unlogged = sum(1 for f in proxy.failures if f.proxy is None)  # silent closes, if any
    assert proxy.joined == len(run.records) - unlogged  # every other request has its log line
    # every server HAProxy has is closed from v1-1's SIGTERM (v2-1 ready, about 1 s after
    # v1-0's) until v2-0 is added (v2-0 ready + 3 s ± 0.2): about 2 s at 100 req/s, about 250
    # failures here; none only if v2-1 took longer than the lag to start
    assert a.failures > 0, (a.to_json(), _starts(run))
    failed = [c for c in a.causes if c.kind != "ingress_retried"]
    assert failed[0].kind == "ingress_connect_failed", a.causes  # the largest cause
    assert "unexplained" not in {f.kind for f in proxy.failures}
    for f in proxy.failures:
        if f.kind != "ingress_connect_failed":
            continue
        assert f.proxy is not None and f.proxy.termination.startswith("SC")
        assert f.context.replica.startswith("v1-"), f  # the replica HAProxy tried, not "ingress"
        assert f.context.phase in ("after-sigterm", "after-exit", "terminating-before-sigterm")
        assert f.context.in_view is True  # HAProxy still routed to it
    cause = next(c for c in a.causes if c.kind == "ingress_connect_failed")
    assert "before the proxy stopped routing to it" in cause.cause
    assert "drain delay ≥" in cause.fix
    assert proxy.hidden > 0  # retries turned some connect failures into slow successes
    page = render_html(analyse(run))
    assert "haproxy 503 SC--" in page
    assert "ingress_connect_failed" in page


@pytest.mark.slow
def test_lossless_app_behind_ingress_drops_nothing(tmp_path: Path) -> None:
    """4. lossless serve keeps serving for 2 s after SIGTERM, longer than the ingress takes to
    remove the replica (1 s ± 0.2): no failure, no proxy error, no hidden retry."""
    out = tmp_path / "run"
    asyncio.run(run_scenario(Scenario(LOSSLESS_APP), out))
    run = read_run(out)
    proxy = analyze_proxy(run)
    assert proxy is not None
    assert proxy.analysis.failures == 0, proxy.analysis.to_json()
    assert proxy.analysis.requests > 200
    assert set(proxy.terminations) == {"----"}, proxy.terminations
    assert proxy.hidden == 0
    served = {r.replica for r in run.records}
    assert {"v1-0", "v1-1", "v2-0", "v2-1"} <= served


# -- 5. the proxy analysis on recorded runs -----------------------------------------------------
def _entry(seq: int, status: int, term: str, server: str, **kw: int) -> ProxyLogEntry:
    fields = {
        "accepted": 1000.0 + seq / 100,
        "seq": seq,
        "status": status,
        "termination": term,
        "retries": 0,
        "redispatched": False,
        "server": server,
        "ti": 0,
        "treq": 0,
        "tw": 0,
        "tc": 0,
        "tr": 1,
        "ta": 1,
        "tt": 1,
        "bytes": 10,
        "client_port": 40000,
        "backend_port": 50000 + seq,
        "server_port": 8000,
        "request_counter": seq,
        "server_conns": 0,
        "bc_err": 0,
        "fc_err": 0,
    }
    fields.update(kw)
    return ProxyLogEntry(**fields)  # type: ignore[arg-type]


def _record(seq: int, error: ErrorClass, status: int, replica: str, reused: bool) -> Record:
    t = seq / 100
    return Record(seq, t, t, t if status else None, t + 0.001, status, 0, error, replica, 1, reused)


def test_proxy_analysis_names_each_proxy_failure(tmp_path: Path) -> None:
    """5. one failure of each kind the proxy log explains, plus the app's own 503."""
    out = tmp_path / "run"
    with RunWriter(out) as w:
        w.settings({"ingress": HAProxySettings().to_json()})
        for e in (
            Event(0.0, EventKind.READY, "v1-0"),
            Event(0.0, EventKind.VIEW_ADDED, "v1-0", 0),
            Event(0.5, EventKind.DELETING, "v1-0"),
            Event(0.5, EventKind.SIGTERM, "v1-0"),
            Event(1.5, EventKind.VIEW_REMOVED, "v1-0", 0),
        ):
            w.event(e)
        records = [
            _record(1, ErrorClass.NONE, 200, "v1-0", False),
            _record(55, ErrorClass.NONE, 200, "v1-0", True),  # answered while terminating
            _record(60, ErrorClass.HTTP_503, 503, "ingress", True),  # SC-- on v1-0
            _record(61, ErrorClass.RESET, 0, "ingress", True),  # no log line: silent close
            _record(62, ErrorClass.HTTP_503, 503, "ingress", True),  # <NOSRV>
            _record(63, ErrorClass.HTTP_502, 502, "ingress", False),  # SH--
            _record(64, ErrorClass.HTTP_504, 504, "ingress", False),  # sH--
            _record(65, ErrorClass.HTTP_503, 503, "v1-0", False),  # the app's own 503
        ]
        for r in records:
            w.record(r)
    entries = [
        _entry(1, 200, "----", "v1-0"),
        _entry(55, 200, "----", "v1-0"),
        _entry(60, 503, "SC--", "v1-0", retries=2, redispatched=True, tc=-1, tr=-1),
        _entry(62, 503, "SC--", ""),
        _entry(63, 502, "SH--", "v1-0", tr=-1),
        _entry(64, 504, "sH--", "v1-0", tr=-1),
        _entry(65, 503, "----", "v1-0"),
    ]
    with open(out / PROXY_LOG, "w") as f:
        for e in entries:
            f.write(json.dumps({"kind": "request", **e.to_json(0.0)}) + "\n")
    run = read_run(out)
    proxy = analyze_proxy(run)
    assert proxy is not None
    kinds = {f.context.seq: f.kind for f in proxy.failures}
    assert kinds == {
        60: "ingress_connect_failed",
        61: "ingress_silent_close",
        62: "ingress_no_server",
        63: "ingress_backend_closed",
        64: "ingress_timeout",
        65: "draining_5xx",
    }
    by_seq = proxy.by_seq()
    assert by_seq[60].context.replica == "v1-0"  # named by the proxy
    assert by_seq[60].proxy is not None
    assert by_seq[60].proxy.describe() == "haproxy 503 SC-- on v1-0 after 2 retries (redispatched)"
    assert by_seq[61].proxy is None
    causes = {c.kind: c for c in proxy.analysis.causes}
    assert "without a log line" in causes["ingress_silent_close"].cause
    assert "came from a terminating replica (v1-0)" in causes["ingress_silent_close"].cause
    assert "listener closed" in causes["ingress_connect_failed"].cause
    assert "0.9 s before the proxy stopped routing" in causes["ingress_connect_failed"].cause
    assert sum(c.count for c in proxy.analysis.causes) == proxy.analysis.failures == 6
    doc = proxy.to_json()
    assert doc["joined"] == 7 and len(doc["failures"]) == 6
    json.dumps(doc)


def test_corrupt_proxy_log_is_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / PROXY_LOG
    path.write_text('{"kind":"request","seq":1}\n{"kind":"message","t":1,"text":"x"}\n')
    with pytest.raises(LosslessError, match=r"proxy.jsonl:1: corrupt proxy log line"):
        read_proxy_log(path)


def test_run_load_through_ingress_without_servers_gets_503(tmp_path: Path) -> None:
    """No server in HAProxy: every request is HAProxy's own 503 (<NOSRV>), logged, joined."""

    async def main() -> list[Record]:
        clock = Clock()
        async with IngressTraffic(clock=clock, clients=1, proxy_log=tmp_path / PROXY_LOG) as t:
            records = await run_load(t, clock, rate=50, duration=0.2)
            await _logged(tmp_path / PROXY_LOG, {r.seq for r in records})
            return records

    records = asyncio.run(main())
    assert records and {r.error for r in records} == {ErrorClass.HTTP_503}
    entries, _ = read_proxy_log(tmp_path / PROXY_LOG)
    assert {e.seq for e in entries} == {r.seq for r in records}
    assert {(e.server, e.termination) for e in entries} == {("", "SC--")}
