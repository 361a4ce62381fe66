"""Faults on purpose: the spec parser (table-driven), the injector on real processes (SIGSTOP
and SIGCONT, slow starts), and a kill -9 under load whose failures carry the fault's cause."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from lossless.errors import LosslessError
from lossless.verify.lab.faults import FaultInjector, FaultSpec, parse_fault
from lossless.verify.lab.pod import PodTemplate
from lossless.verify.lab.prober import HTTPGetAction, ProbeSpec
from lossless.verify.lab.restart import BackOffPolicy
from lossless.verify.model import EventKind
from tests.verify.conftest import (
    LOSSLESS_APP,
    PYTHON,
    assert_exit_passed,
    assert_nothing_left,
    assert_one_line_error,
    lab_session,
    load_json,
    run_cli,
)
from tests.verify.stress_helpers import STRESS_CMD, STRESS_SERVER, kinds, wait_event


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("kill@4.5", FaultSpec("kill", 4.5, 0, 0.0, None, "kill@4.5")),
        ("kill@rollout", FaultSpec("kill", 0.0, 1, 0.0, None, "kill@rollout")),
        ("kill@rollout+1", FaultSpec("kill", 1.0, 1, 0.0, None, "kill@rollout+1")),
        (
            "kill@rollout:3+0.5,replica=v3-1",
            FaultSpec("kill", 0.5, 3, 0.0, "v3-1", "kill@rollout:3+0.5,replica=v3-1"),
        ),
        ("stop@2", FaultSpec("stop", 2.0, 0, 1.0, None, "stop@2")),
        ("stop@2,for=3", FaultSpec("stop", 2.0, 0, 3.0, None, "stop@2,for=3")),
        (
            "slow-start@rollout,delay=2.5",
            FaultSpec("slow-start", 0.0, 1, 2.5, None, "slow-start@rollout,delay=2.5"),
        ),
        (
            "ingress-down@1,for=0.5",
            FaultSpec("ingress-down", 1.0, 0, 0.5, None, "ingress-down@1,for=0.5"),
        ),
    ],
)
def test_parse(text: str, expected: FaultSpec) -> None:
    assert parse_fault(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("explode@1", "unknown fault 'explode'"),
        ("kill", "expected KIND@WHEN"),
        ("kill@soon", "WHEN 'soon'"),
        ("kill@-1", "WHEN '-1'"),
        ("kill@rollout:0", "numbered from 1"),
        ("kill@1,for=2", "kill takes no duration"),
        ("stop@1,for=x", "for must be a number"),
        ("stop@1,color=red", "unknown key 'color'"),
        ("stop@1,oops", "expected key=value"),
        ("slow-start@1,replica=v1-0", "takes no replica"),
        ("registry-down@1", "not modelled"),
    ],
)
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(LosslessError) as info:
        parse_fault(text)
    assert message in str(info.value) and repr(text) in str(info.value)


def test_bad_spec_is_a_one_line_error() -> None:
    result = run_cli("verify", "--cmd", STRESS_CMD, "--fault", "kill@whenever", "-q")
    assert_one_line_error(result, "--fault 'kill@whenever'", "rollout[:K][+S]")


def test_fault_for_an_upgrade_that_does_not_exist() -> None:
    result = run_cli("verify", "--cmd", STRESS_CMD, "--fault", "kill@rollout:2", "-q")
    assert_one_line_error(result, "no upgrade 2 (--upgrades 1)")


def test_ingress_fault_needs_the_ingress() -> None:
    result = run_cli("verify", "--cmd", STRESS_CMD, "--fault", "ingress-down@1", "-q")
    assert_one_line_error(result, "needs --traffic ingress")


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


async def _stopped(pid: int, timeout: float = 5.0) -> bool:
    """Wait (bounded) until ``pid`` is stopped: SIGSTOP takes effect when the kernel next runs
    the process, which a loaded machine may delay after the signal was sent."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            while _state(pid) != "T":
                await asyncio.sleep(0.01)
    return _state(pid) == "T"


def test_stop_freezes_then_resumes(tmp_path: Path) -> None:
    async def main() -> None:
        async with lab_session(tmp_path) as run:
            run.lab.backoff = BackOffPolicy()
            t = PodTemplate(command=(PYTHON, str(STRESS_SERVER)), grace=2)
            pod = await run.lab.create(t, "v1-0")
            assert pod.process is not None and pod.process.pid is not None
            pid = pod.process.pid  # the main process (PID 1 of its namespace when there is one)
            pgid = pod.process.pgid  # the fault stops the whole group, named as ``started`` does
            # stopped for 2 s: time to see it stopped on a loaded machine (see _stopped)
            injector = FaultInjector((parse_fault("stop@0,for=2"),), run.lab, run.traffic)
            try:
                injector.load_started()
                fault = await wait_event(run.events, EventKind.FAULT, "v1-0")
                assert fault.detail == f"fault 1 (stop@0,for=2): SIGSTOP pid {pgid} for 2s"
                assert await _stopped(pid)
                assert not run.times(EventKind.FAULT_END, "v1-0")  # seen within the 2 s
                end = await wait_event(run.events, EventKind.FAULT_END, "v1-0")
                assert end.t - fault.t >= 2.0
                assert _state(pid) != "T"
            finally:
                injector.close()

    asyncio.run(main())


def test_close_resumes_a_stopped_replica(tmp_path: Path) -> None:
    async def main() -> None:
        async with lab_session(tmp_path) as run:
            t = PodTemplate(command=(PYTHON, str(STRESS_SERVER)), grace=2)
            pod = await run.lab.create(t, "v1-0")
            assert pod.process is not None and pod.process.pid is not None
            injector = FaultInjector((parse_fault("stop@0,for=60"),), run.lab, run.traffic)
            injector.load_started()
            await wait_event(run.events, EventKind.FAULT, "v1-0")
            injector.close()  # the run ends while it is stopped: it must not stay frozen
            await wait_event(run.events, EventKind.FAULT_END, "v1-0")
            assert _state(pod.process.pid) != "T"

    asyncio.run(main())


def test_slow_start_delays_the_next_pod(tmp_path: Path) -> None:
    async def main() -> None:
        async with lab_session(tmp_path) as run:
            probe = ProbeSpec(HTTPGetAction("/"), period=0.1)
            t = PodTemplate(command=(PYTHON, str(STRESS_SERVER)), readiness=probe, grace=2)
            spec = parse_fault("slow-start@0,for=0.5")
            injector = FaultInjector((spec,), run.lab, run.traffic)
            try:
                injector.load_started()
                async with asyncio.timeout(5):  # the fault arms itself (at = 0)
                    while not injector.armed:
                        await asyncio.sleep(0.01)
                pod = await run.lab.create(t, "v1-0")
                assert pod.process is None  # not started yet
                fault = run.first(EventKind.FAULT, "v1-0")
                started = await wait_event(run.events, EventKind.STARTED, "v1-0")
                assert started.t - fault >= 0.5
                second = await run.lab.create(t, "v1-1")  # one pod only
                assert second.process is not None
            finally:
                injector.close()

    asyncio.run(main())


def test_fault_without_a_target_is_a_note(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run_cli(
        "verify", "--cmd", STRESS_CMD, "--out", str(out), "--replicas", "1",
        "--fault", "kill@0.2,replica=v9-9", "--before", "0.5", "--after", "0.2", "--json",
    )  # fmt: skip
    doc = load_json(result.stdout)
    assert doc["fault_notes"] == ["fault 1 (kill@0.2,replica=v9-9): skipped, no v9-9 running"]
    assert not kinds(out, "fault")
    assert_nothing_left(out)


def test_kill_fault_failures_carry_the_fault_cause(tmp_path: Path) -> None:
    """A kill -9 of a lossless replica during the rollout: the requests it was serving and those
    routed to it until clients learn it is gone fail; every one of them is the fault's, none is
    the upgrade's, and they do not fail the verdict (no --faults-count)."""
    out = tmp_path / "run"
    result = run_cli(
        "verify", "--cmd", LOSSLESS_APP, "--out", str(out), "--replicas", "3",
        "--max-surge", "1", "--max-unavailable", "0", "--readiness-path", "/readyz",
        "--readiness-period", "0.2", "--rate", "200", "--before", "1", "--after", "1",
        "--propagation-delay", "1±0.3", "--fault", "kill@rollout+0.3", "--json",
        # fresh connections: no HTTP/1.1 idle-close race at t0 + drain delay (docs/benchmarks.md)
        "--new-conn-ratio", "1",
        # the restarted replica is deleted while it starts, before it handles SIGTERM (PID 1
        # drops it): it waits for the grace period's SIGKILL, 30 s by default, after every
        # client stopped routing to it (1.3 s at most)
        "--grace-period", "5",
    )  # fmt: skip
    doc = load_json(result.stdout)
    assert doc["error"] is None, result.stderr
    assert doc["failures"] > 0  # the kill dropped what the killed replica carried
    assert doc["fault_failures"] == doc["failures"] and doc["upgrade_failures"] == 0
    assert [c["kind"] for c in doc["causes"]] == ["fault:1"], doc["causes"]
    cause = doc["causes"][0]["cause"]
    assert "from fault 1 you injected (kill@rollout+0.3: kill -9 pid" in cause
    assert "not from the upgrade" in cause
    (fault,) = doc["faults"]
    assert fault["failures"] == doc["failures"] and fault["kind"] == "fault:1"
    assert doc["restarts"] == {fault["replica"]: 1}
    assert_exit_passed(doc["exit_code"], doc["reasons"])  # not counted without --faults-count
    assert_nothing_left(out)
    # `lossless report` reads the same attribution back, and the same verdict
    again = run_cli("report", str(out), "--json")
    assert again.returncode == doc["exit_code"], again.stderr
    redo = load_json(again.stdout)
    assert redo["fault_failures"] == doc["fault_failures"] and redo["faults"] == doc["faults"]


def test_faults_count_fails_the_verdict(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run_cli(
        "verify", "--cmd", STRESS_CMD, "--out", str(out), "--replicas", "1",
        "--max-surge", "1", "--max-unavailable", "0", "--readiness-path", "/",
        "--readiness-period", "0.1", "--rate", "100", "--before", "1.5", "--after", "0.5",
        "--propagation-delay", "0.5±0.1", "--prestop-sleep", "1", "--new-conn-ratio", "1",
        "--fault", "kill@0.5", "--faults-count", "--json",
    )  # fmt: skip
    doc = load_json(result.stdout)
    assert doc["fault_failures"] > 0, doc
    assert doc["exit_code"] == 1 and result.returncode == 1
    assert doc["faults_count"] is True
    assert_nothing_left(out)


@pytest.mark.requires("haproxy")
def test_ingress_down_failures_are_the_faults(tmp_path: Path) -> None:
    """HAProxy stopped for 1 s: the requests it held time out, and they are the fault's."""
    out = tmp_path / "run"
    result = run_cli(
        "verify", "--cmd", STRESS_CMD, "--out", str(out), "--traffic", "ingress",
        "--replicas", "2", "--max-surge", "1", "--max-unavailable", "0",
        "--readiness-path", "/", "--readiness-period", "0.2", "--rate", "100",
        "--before", "2", "--after", "1", "--prestop-sleep", "1", "--timeout", "0.5",
        "--fault", "ingress-down@0.5,for=1", "--json",
    )  # fmt: skip
    doc = load_json(result.stdout)
    assert doc["error"] is None, result.stderr
    (fault,) = doc["faults"]
    assert fault["replica"] == "" and fault["what"] == "SIGSTOP HAProxy for 1s"
    assert fault["failures"] > 0 and doc["fault_failures"] == fault["failures"]
    causes = {c["kind"]: c for c in doc["causes"]}
    assert causes["fault:1"]["count"] == fault["failures"]
    assert len(kinds(out, "fault_end")) == 1
    assert_nothing_left(out)
