"""restartPolicy Always: the kubelet's crash-loop back-off (table-driven against
pkg/kubelet/kubelet.go's constants and client-go flowcontrol's Backoff), restarts of real
processes, crash loops that end the run at once, and deletion during a back-off."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from lossless.errors import LosslessError
from lossless.verify.lab.pod import PodTemplate
from lossless.verify.lab.prober import HTTPGetAction, ProbeSpec
from lossless.verify.lab.restart import (
    BACKOFF_INITIAL,
    BACKOFF_MAX,
    BackOffPolicy,
    ContainerBackOff,
    CrashLoopError,
)
from lossless.verify.model import EventKind
from tests.verify.conftest import (
    PYTHON,
    assert_nothing_left,
    assert_one_line_error,
    lab_session,
    load_json,
    run_cli,
)
from tests.verify.stress_helpers import STRESS_CMD, STRESS_SERVER, kinds, timeline, wait_event


def _delays(policy: BackOffPolicy, runs: list[float]) -> list[float]:
    """Restart delays of a container that runs ``runs[i]`` seconds before its i-th crash and
    is restarted as soon as the back-off allows."""
    backoff = ContainerBackOff(policy)
    t, out = 0.0, []
    for ran in runs:
        t += ran
        delay = backoff.schedule(t)
        out.append(delay)
        t += delay
    return out


def test_kubelet_constants() -> None:
    assert (BACKOFF_INITIAL, BACKOFF_MAX) == (10.0, 300.0)  # backOffPeriod, MaxContainerBackOff


@pytest.mark.parametrize(
    ("scale", "runs", "expected"),
    [
        # first crash: no entry yet, restarted at once; then 10 s doubling, capped at 300 s
        (1.0, [1] * 9, [0, 10, 20, 40, 80, 160, 300, 300, 300]),
        # the lab's default scale
        (0.1, [0.5] * 8, [0, 1, 2, 4, 8, 16, 30, 30]),
        # ran more than 2 x 300 s since its last restart: the entry expired, start over
        (1.0, [1, 1, 1, 601, 1], [0, 10, 20, 0, 10]),
        # exactly 600 s is not "more than": the back-off keeps doubling
        (1.0, [1, 1, 600], [0, 10, 20]),
        # scale 0: restart at once every time
        (0.0, [1, 1, 1], [0, 0, 0]),
    ],
)
def test_backoff_table(scale: float, runs: list[float], expected: list[float]) -> None:
    assert _delays(BackOffPolicy(scale=scale), runs) == pytest.approx(expected)


def test_wait_counts_from_the_finish_time() -> None:
    # IsInBackOffSince(key, FinishedAt): now - finishedAt < backoff
    backoff = ContainerBackOff(BackOffPolicy(scale=1.0))
    backoff.next(finished_at=0.0, now=0.0)  # first crash, restarted at once: entry = 10 s
    assert backoff.wait(finished_at=5.0, now=5.0) == 10.0
    assert backoff.wait(finished_at=5.0, now=12.0) == 3.0
    assert backoff.wait(finished_at=5.0, now=16.0) == 0.0


@pytest.mark.parametrize("bad", [{"scale": -1.0}, {"scale": float("nan")}, {"limit": -1}])
def test_bad_policy(bad: dict[str, float]) -> None:
    with pytest.raises(LosslessError):
        BackOffPolicy(**bad)  # type: ignore[arg-type]


def _template(tmp_path: Path, **env: str) -> PodTemplate:
    probe = ProbeSpec(HTTPGetAction("/"), period=0.1)
    return PodTemplate(
        command=(PYTHON, str(STRESS_SERVER)),
        env={"MARKER_DIR": str(tmp_path), **env},
        readiness=probe,
        grace=2,
    )


def test_replica_that_exits_by_itself_is_restarted(tmp_path: Path) -> None:
    async def main() -> None:
        async with lab_session(tmp_path) as run:
            run.lab.backoff = BackOffPolicy(scale=0.1)
            # ready (probed every 0.1 s) well before its crash: 0.3 s of life left a loaded
            # machine too little to start it and probe it, and it crashed never having been in
            # the endpoints (no removal, one addition)
            pod = await run.lab.create(_template(tmp_path, EXIT_AFTER="1.5"), "v1-0")
            first_ready = await wait_event(run.events, EventKind.READY, "v1-0")
            crash = await wait_event(run.events, EventKind.CONTAINER_EXITED, "v1-0")
            assert first_ready.t < crash.t
            assert crash.detail.startswith("exit code 1 after ")
            assert "restart 1 in 0.00s" in crash.detail  # the first restart is immediate
            assert "crashing on purpose" in crash.detail
            restarted = await wait_event(run.events, EventKind.RESTARTED, "v1-0")
            await wait_event(run.events, EventKind.READY, "v1-0", after=restarted.t)
            assert pod.restarts == 1 and pod.ready and not pod.exited.is_set()
            assert not [e for e in run.events if e.kind is EventKind.EXITED]
            # the endpoint left with the crash and came back with the restart
            removed = [e.t for e in run.events if e.kind is EventKind.ENDPOINT_REMOVED]
            added = [e.t for e in run.events if e.kind is EventKind.ENDPOINT_ADDED]
            assert len(removed) == 1 and len(added) == 2 and removed[0] < added[1]

    asyncio.run(main())


def test_crash_loop_ends_the_run(tmp_path: Path, server_script: Path) -> None:
    async def main() -> None:
        async with lab_session(tmp_path) as run:
            run.lab.backoff = BackOffPolicy(scale=0.1, limit=2)
            t = PodTemplate(command=(PYTHON, str(server_script)), env={"SERVER_EXIT": "3"})
            await run.lab.create(t, "v1-0")
            await asyncio.sleep(30)  # the crash loop ends the task group long before

    with pytest.raises(BaseExceptionGroup) as info:
        asyncio.run(main())
    error = info.value.exceptions[0]
    assert isinstance(error, CrashLoopError) and error.exit_code == 2
    assert "v1-0 exited unexpectedly (exit code 3" in str(error)
    assert "2 times in a row (CrashLoopBackOff)" in str(error)
    assert "replica failed on purpose" in str(error)


def test_delete_during_backoff_ends_the_pod_at_once(tmp_path: Path, server_script: Path) -> None:
    async def main() -> None:
        async with lab_session(tmp_path) as run:
            run.lab.backoff = BackOffPolicy(scale=1.0, limit=0)  # 10 s after the 2nd crash
            t = PodTemplate(command=(PYTHON, str(server_script)), env={"SERVER_EXIT": "3"})
            pod = await run.lab.create(t, "v1-0")
            first = await wait_event(run.events, EventKind.CONTAINER_EXITED, "v1-0")
            second = await wait_event(run.events, EventKind.CONTAINER_EXITED, "v1-0", after=first.t)
            assert "in 10.00s (back-off)" in second.detail
            assert pod.in_backoff
            run.lab.delete(pod)
            async with asyncio.timeout(2):  # not 10 s: nothing to stop
                await pod.exited.wait()
            exited = [e for e in run.events if e.kind is EventKind.EXITED]
            assert [e.detail for e in exited] == ["deleted while its container was not running"]
            assert pod.restarts == 1

    asyncio.run(main())


def test_restart_policy_never_keeps_the_old_error(tmp_path: Path) -> None:
    cmd = f"{PYTHON} -c 'import sys; print(\"boom: no config\", file=sys.stderr); sys.exit(3)'"
    result = run_cli(
        "verify", "--cmd", cmd, "--out", str(tmp_path / "run"), "--restart-policy", "Never",
        "--before", "0.5", "--after", "0.5", "-q",
    )  # fmt: skip
    assert_one_line_error(result, "exited unexpectedly (exit code 3", "boom: no config")
    assert "CrashLoopBackOff" not in result.stderr


def test_crash_at_start_every_crash_in_the_timeline(tmp_path: Path) -> None:
    """Issue 13 item 5: two replicas that crash at start end the run with one error, and every
    replica that started has its exit in the timeline (teardown records the exits whose
    monitors the failed task group had cancelled)."""
    out = tmp_path / "run"
    cmd = f"{PYTHON} -c 'import sys; print(\"boom\", file=sys.stderr); sys.exit(3)'"
    result = run_cli(
        "verify", "--cmd", cmd, "--out", str(out), "--replicas", "2", "--before", "0.5", "-q"
    )
    assert_one_line_error(result, "CrashLoopBackOff", "boom")
    events = timeline(out)
    started = {e["replica"] for e in events if e["kind"] == "started"}
    assert started == {"v1-0", "v1-1"}
    ended = {e["replica"] for e in events if e["kind"] in ("container_exited", "exited")}
    assert ended == started
    for name in started:  # every started process ended, and nothing is left
        starts = [e["t"] for e in events if e["kind"] == "started" and e["replica"] == name]
        ends = [
            e["t"]
            for e in events
            if e["kind"] in ("container_exited", "exited") and e["replica"] == name
        ]
        assert len(ends) >= len(starts)
    assert_nothing_left(out)


def test_replica_crash_mid_run_is_restarted_and_counted(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run_cli(
        "verify", "--cmd", STRESS_CMD, "--out", str(out), "--replicas", "2",
        "--env", f"MARKER_DIR={tmp_path}", "--env", "EXIT_AFTER=2",
        "--readiness-path", "/", "--readiness-period", "0.2", "--max-surge", "1",
        "--max-unavailable", "0", "--rate", "50", "--before", "3", "--after", "0.5",
        "--propagation-delay", "0.3±0.1", "--json",
        # a lossless rollout of this app: no pinned keep-alive, SIGTERM after the propagation
        # (0.4 s watch lag at most + kube-proxy's 1 s minSyncPeriod, issue 15's sync timing)
        "--new-conn-ratio", "1", "--prestop-sleep", "2",
    )  # fmt: skip
    doc = load_json(result.stdout)
    assert doc["error"] is None and result.returncode != 2, result.stderr
    # every replica crashed once on its first life (v1 at 2 s, and the v2 ones too)
    assert doc["restarts"] and all(n == 1 for n in doc["restarts"].values()), doc["restarts"]
    assert {"v1-0", "v1-1"} <= set(doc["restarts"])
    assert len(kinds(out, "container_exited")) == sum(doc["restarts"].values())
    # failures, if any, are the crashes', not the upgrade's
    assert {c["kind"] for c in doc["causes"]} <= {"crashed"}, doc["causes"]
    assert_nothing_left(out)
