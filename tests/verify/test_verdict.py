"""The verdict: pass, fail or inconclusive (exit 0, 1, 3), and the figures shown next to it.

Pure data first (synthetic runs through ``judge``), then end to end through the real CLI:

1. a naive app behind ``--traffic ingress`` with HAProxy's default retries: the proxy saves every
   request by retrying it; ``verify`` exits 1, ``--json`` shows ``retried`` > 0 and the text names
   the cause; the same run judged with ``--allow-retries`` passes and still shows the count;
2. a rate the generator cannot reach on one core: exit 3, the lag shown next to the verdict;
3. a replica that never listens on its port: exit 3, a cause that names ``{port}``;
4. usage errors: ``--rate -5`` names the rate; under ``--json`` stdout holds a JSON error object.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lossless.verify.analysis.report import analyse
from lossless.verify.analysis.verdict import Outcome, VerdictPolicy, judge
from lossless.verify.model import ErrorClass, Event, EventKind, Record
from lossless.verify.render.text import render_text
from lossless.verify.results import Run
from tests.conftest import free_port
from tests.verify.conftest import (
    LOSSLESS_APP,
    NAIVE_APP,
    assert_nothing_left,
    assert_one_line_error,
    load_json,
    run_cli,
)

E = EventKind


def _rec(seq: int, sent: float, *, lag: float = 0.0, replica: str = "v1-0",
         error: ErrorClass = ErrorClass.NONE, status: int = 200) -> Record:  # fmt: skip
    return Record(
        seq, sent - lag, sent, sent + 0.001, sent + 0.002, status, 2, error, replica, 1, False, 0
    )


def _run(records: list[Record], events: list[Event] | None = None) -> Run:
    return Run(Path("synthetic"), records, events or [], {"strategy": "rolling"})


def _rollout(start: float, end: float) -> list[Event]:
    return [Event(start, E.ROLLOUT_START), Event(end, E.ROLLOUT_END)]


def test_on_schedule_with_enough_requests_in_the_rollout_passes() -> None:
    records = [_rec(i, i * 0.01, lag=0.0005) for i in range(1000)]
    verdict = judge(analyse(_run(records, _rollout(2.0, 6.0))), VerdictPolicy())
    assert verdict.outcome is Outcome.PASS and verdict.exit_code == 0, verdict
    assert verdict.reasons == [] and verdict.late == 0


def test_a_generator_that_fell_behind_is_inconclusive_not_ok() -> None:
    # 2 % of the requests sent 50 ms late: more than the 1 % allowed at 10 ms
    records = [_rec(i, i * 0.01, lag=0.05 if i % 50 == 0 else 0.0) for i in range(1000)]
    report = analyse(_run(records, _rollout(2.0, 6.0)))
    verdict = judge(report, VerdictPolicy())
    assert verdict.outcome is Outcome.INCONCLUSIVE and verdict.exit_code == 3
    assert verdict.late == 20 and verdict.late_ratio == pytest.approx(0.02)
    assert "fell behind: 20 of 1000 requests (2.0 %)" in verdict.reasons[0]
    # the thresholds are flags: 60 ms late is the limit now, nothing was that late
    relaxed = judge(report, VerdictPolicy(late_threshold=0.06))
    assert relaxed.outcome is Outcome.PASS
    text = render_text(report.analysis, verdict, tty=False)
    assert text.splitlines()[-1].startswith("verdict: inconclusive (the load generator fell")
    assert "schedule lag p99 50.00 ms" in text.splitlines()[-1]
    assert "achieved" in text.splitlines()[-1]


def test_a_failure_beats_lateness_and_too_few_rollout_requests_is_inconclusive() -> None:
    records = [_rec(i, i * 0.01, lag=0.05) for i in range(100)]
    records.append(_rec(100, 1.0, error=ErrorClass.RESET, status=0))
    verdict = judge(analyse(_run(records, _rollout(0.2, 0.25))), VerdictPolicy())
    assert verdict.outcome is Outcome.FAIL and verdict.counted == 1
    assert verdict.reasons == ["1 failed request > --max-failures 0"]
    few = judge(analyse(_run(records[:-1], _rollout(0.2, 0.25))), VerdictPolicy(late_threshold=1))
    assert few.outcome is Outcome.INCONCLUSIVE
    assert few.reasons == ["only 6 requests due during the rollout (at least 10): raise --rate"]


def test_failures_only_from_requests_sent_late_are_inconclusive_not_fail() -> None:
    """A request sent late may have used a view the lab had changed meanwhile: failures past
    --max-failures that exist only among late requests cannot fail a run; one sent on time can."""
    records = [_rec(i, i * 0.01) for i in range(1000)]
    records.append(_rec(1000, 5.0, lag=0.3, error=ErrorClass.REFUSED, status=0))
    report = analyse(_run(records, _rollout(2.0, 6.0)))
    verdict = judge(report, VerdictPolicy())
    assert verdict.outcome is Outcome.INCONCLUSIVE and verdict.exit_code == 3, verdict
    assert verdict.counted == 1
    assert verdict.reasons[0].startswith("the load generator fell behind when it mattered: 1 of")
    assert "300 ms" not in verdict.reasons[0] and "more than 10 ms late" in verdict.reasons[0]
    assert verdict.reasons[1] == "1 failed request > --max-failures 0"
    # a late threshold above its lag: the request counts as on time, the run fails
    assert judge(report, VerdictPolicy(late_threshold=0.5)).outcome is Outcome.FAIL
    # one failure on time besides the late one: fail
    on_time = [*records, _rec(1001, 5.5, error=ErrorClass.RESET, status=0)]
    assert judge(analyse(_run(on_time, _rollout(2.0, 6.0))), VerdictPolicy()).outcome is (
        Outcome.FAIL
    )
    # tolerated: --max-failures 1 takes the on-time one, the late one makes it inconclusive
    assert judge(
        analyse(_run([*on_time, _rec(1002, 5.6, lag=0.2, error=ErrorClass.RESET, status=0)],
                     _rollout(2.0, 6.0))),
        VerdictPolicy(max_failures=1),
    ).outcome is Outcome.INCONCLUSIVE  # fmt: skip


def test_a_replica_that_never_listened_is_inconclusive_with_its_own_cause() -> None:
    records = [_rec(i, i * 0.01) for i in range(50)]
    records += [
        _rec(50 + i, 0.5 + i * 0.1, replica="v2-0", error=ErrorClass.REFUSED, status=0)
        for i in range(30)
    ]
    report = analyse(_run(records, _rollout(0.1, 0.9)))
    # refused for less than 2 s: perhaps still starting, not judged as never listening
    assert analyse(_run(records[:65], _rollout(0.1, 0.9))).analysis.silent_replicas == []
    assert report.analysis.silent_replicas == ["v2-0"]
    (cause,) = report.analysis.causes
    assert cause.kind == "never_listened" and cause.count == 30
    assert "{port}" in cause.fix and "$PORT" in cause.fix
    verdict = judge(report, VerdictPolicy())
    assert verdict.outcome is Outcome.INCONCLUSIVE, verdict
    assert "v2-0 never answered on its port" in verdict.reasons[0]


def test_naive_cause_reports_each_replicas_own_gap() -> None:
    """Two replicas restarted one after the other: each was down 0.4 s; the 4.5 s from the first
    failure to the last is nobody's gap."""
    events = [Event(0.0, E.STARTED, "v1-0"), Event(0.0, E.STARTED, "v1-1")]
    events += [Event(0.1, E.READY, "v1-0"), Event(0.1, E.READY, "v1-1")]
    records = [_rec(20, 0.5, replica="v1-0"), _rec(21, 0.6, replica="v1-1")]
    records += [_rec(i, 1.0 + i * 0.1, replica="v1-0", error=ErrorClass.REFUSED, status=0)
                for i in range(5)]  # fmt: skip
    records += [_rec(10 + i, 5.1 + i * 0.1, replica="v1-1", error=ErrorClass.REFUSED, status=0)
                for i in range(5)]  # fmt: skip
    run = Run(Path("synthetic"), records, events, {"strategy": "naive"})
    (cause,) = analyse(run).analysis.causes
    assert cause.kind == "naive"
    assert "nothing serving on v1-0 for 0.4 s, v1-1 for 0.4 s" in cause.cause, cause.cause
    assert "4." not in cause.cause.split(";")[0]


# -- end to end ------------------------------------------------------------------------------------
INGRESS = ("--traffic", "ingress", "--replicas", "2", "--rate", "100", "--before", "1",
           "--after", "1", "--max-surge", "1", "--max-unavailable", "0",
           "--propagation-delay", "0.5±0.1", "--min-ready-seconds", "1",
           "--readiness-path", "/readyz", "--readiness-period", "0.5")  # fmt: skip


@pytest.mark.requires("haproxy")
def test_retries_hidden_behind_the_ingress_fail_the_run(tmp_path: Path) -> None:
    """1. uvicorn stops listening at SIGTERM; HAProxy (retries, redispatch) retries every refused
    connect on the other replica, so the client sees no failure: the verdict fails all the same."""
    out = tmp_path / "run"
    result = run_cli("verify", "--cmd", NAIVE_APP, "--out", str(out), "--json", *INGRESS)
    assert result.returncode == 1, (result.stdout, result.stderr)
    doc = load_json(result.stdout)
    assert doc["retried"] > 0, doc
    assert doc["verdict"] == "fail" and doc["exit_code"] == 1
    assert doc["counted_failures"] == doc["failures"] + doc["retried"]
    assert doc["retried_latency_ms"]["p99"] > 0
    retried = next(c for c in doc["causes"] if c["kind"] == "ingress_retried")
    assert retried["count"] == doc["retried"]
    assert "--allow-retries" in retried["fix"] and "drain delay" in retried["fix"]
    assert_nothing_left(out)

    page = tmp_path / "report.html"
    run_cli("report", str(out), "--html", str(page))
    html = page.read_text()
    assert 'class="card card-verdict outcome-fail"' in html
    assert "saved only by proxy retries" in html and "hidden by proxy retries" in html

    text = run_cli("report", str(out))  # the same run, as text: its own line and the cause
    assert text.returncode == 1
    assert f"retried       {doc['retried']}  (succeeded only after a proxy retry" in text.stdout
    assert "got a response only because HAProxy retried them" in text.stdout
    assert "saved only by proxy retries > --max-failures 0" in text.stdout

    allowed = run_cli("report", str(out), "--allow-retries", "--json")
    again = load_json(allowed.stdout)
    assert again["retried"] == doc["retried"]  # still shown
    assert again["allow_retries"] is True
    assert again["counted_failures"] == doc["failures"]
    assert allowed.returncode == again["exit_code"]
    if doc["failures"] > 0:  # the timing of a loaded machine let some through: still a failure
        assert again["verdict"] == "fail", again["reasons"]
    elif again["verdict"] == "inconclusive":  # a loaded machine delayed the generator
        assert all("fell behind" in r for r in again["reasons"]), again["reasons"]
    else:
        assert again["verdict"] == "pass" and allowed.returncode == 0, again["reasons"]


def test_a_rate_the_generator_cannot_reach_is_inconclusive(tmp_path: Path) -> None:
    """2. 50,000 req/s from one Python process: far more than it can send; exit 3 and the lag
    is shown next to the verdict."""
    out = tmp_path / "run"
    result = run_cli(
        "verify", "--cmd", LOSSLESS_APP, "--out", str(out), "--replicas", "2",
        "--rate", "50000", "--before", "1", "--after", "0.5", "--max-surge", "1",
        "--max-unavailable", "0", "--propagation-delay", "0.3±0.1",
        "--readiness-path", "/readyz", "--readiness-period", "0.5", timeout=120,
    )  # fmt: skip
    assert result.returncode == 3, (result.stdout[-3000:], result.stderr)
    verdict = next(line for line in result.stdout.splitlines() if line.startswith("verdict:"))
    assert verdict.startswith("verdict: inconclusive (the load generator fell behind")
    assert "schedule lag p99" in result.stdout
    doc = load_json(run_cli("report", str(out), "--json").stdout)
    assert doc["verdict"] == "inconclusive" and doc["late_ratio"] > 0.01
    assert doc["rate_achieved"] < 50000 and doc["lag_ms"]["p99"] > 10
    assert_nothing_left(out)


def test_a_command_that_does_not_listen_on_its_port_is_inconclusive(tmp_path: Path) -> None:
    """3. ``python -m http.server`` on a port of its own: every request to the lab's port is
    refused. The lab gives up on a replica that does not listen after --ready-timeout (30 s by
    default; 3 s here, the same error sooner). The port is a free one, not a fixed one that
    another run of this suite on the machine may hold (port 1 did: "Address already in use")."""
    out = tmp_path / "run"
    cmd = f"python3 -m http.server {free_port()} --bind 127.0.0.1"
    result = run_cli(
        "verify", "--cmd", cmd, "--out", str(out),
        "--replicas", "1", "--rate", "50", "--before", "2.5", "--after", "0.5", "--json",
        "--ready-timeout", "3",
    )  # fmt: skip
    if result.returncode == 2:  # the lab refused the command before the load (issue 15)
        assert "{port}" in result.stderr or "$PORT" in result.stderr, result.stderr
        return
    assert result.returncode == 3, (result.stdout, result.stderr)
    doc = load_json(result.stdout)
    assert doc["silent_replicas"], doc
    assert doc["causes"][0]["kind"] == "never_listened"
    assert "{port}" in doc["causes"][0]["fix"]
    assert "listen on {port} or $PORT" in doc["reasons"][0]
    assert_nothing_left(out)


def test_rate_must_be_positive_and_names_the_rate() -> None:
    result = run_cli("verify", "--cmd", "true", "--rate", "-5")
    assert_one_line_error(result, "--rate", "requests/s")
    assert "duration" not in result.stderr


def test_usage_errors_under_json_print_a_json_object() -> None:
    bad_flag = run_cli("verify", "--cmd", "true", "--rate", "-5", "--json")
    assert bad_flag.returncode == 2
    doc = json.loads(bad_flag.stdout)
    assert doc["exit_code"] == 2 and "--rate" in doc["error"]
    bad_input = run_cli("verify", "--json", "--rate", "10")  # no --cmd
    assert bad_input.returncode == 2
    assert "--cmd is required" in json.loads(bad_input.stdout)["error"]
    assert_one_line_error(bad_input, "--cmd is required")


def test_report_usage_errors_under_json_print_a_json_object(tmp_path: Path) -> None:
    missing = run_cli("report", str(tmp_path / "nothing"), "--json")
    assert missing.returncode == 2
    assert "no such run directory" in json.loads(missing.stdout)["error"]
    bad = run_cli("report", str(tmp_path), "--json", "--max-late-ratio", "2")
    assert bad.returncode == 2 and "--max-late-ratio" in json.loads(bad.stdout)["error"]
