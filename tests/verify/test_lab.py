"""The lab against small real processes: readiness, the two deletion tracks, termination timing
(kubelet killContainer: SIGKILL exactly at the grace period, the 2 s minimum after a preStop that
used it up), process groups, and teardown."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

import pytest

from lossless.errors import LosslessError
from lossless.verify.lab.pod import PodTemplate
from lossless.verify.lab.prober import HTTPGetAction, ProbeSpec, SleepAction
from lossless.verify.model import EventKind
from lossless.verify.traffic.base import PropagationDelay
from tests.verify.conftest import PYTHON, group_alive, lab_session, pid_alive, port_free

# The lab's timers fire on time or late, never early (asyncio may run one up to its clock
# resolution early): each Kubernetes timing is checked tight on the early side and with LATE on
# the other, as a loaded machine can hold this process a few hundred milliseconds. Chained
# timers are checked one by one (SIGKILL from SIGTERM), so a late one does not add up.
EARLY = 0.02
LATE = 0.6


def assert_after(actual: float, expected: float) -> None:
    """``actual`` seconds is ``expected`` seconds, or up to LATE later."""
    assert expected - EARLY <= actual <= expected + LATE, (actual, expected)


def template(script: Path, **env: str) -> PodTemplate:
    return PodTemplate(command=(PYTHON, str(script)), env=env)


async def _wait_ready(run: object, pod: object, timeout: float = 10.0) -> None:
    from lossless.verify.lab.pod import Lab, Pod

    assert isinstance(pod, Pod)
    lab: Lab = run.lab  # type: ignore[attr-defined]
    async with asyncio.timeout(timeout):
        while not pod.ready:
            await lab.wait_changed(lab.generation, 0.1)


def test_no_probe_means_ready_when_started(tmp_path: Path, server_script: Path) -> None:
    async def main() -> None:
        async with lab_session(tmp_path) as run:
            pod = await run.lab.create(template(server_script), "v1-0")
            assert pod.ready and pod.available and pod.in_endpoints
            started = run.first(EventKind.STARTED, "v1-0")
            assert run.first(EventKind.READY, "v1-0") - started < 0.05
            assert run.first(EventKind.ENDPOINT_ADDED, "v1-0") >= started

    asyncio.run(main())


def test_readiness_probe_gates_the_endpoint(tmp_path: Path, server_script: Path) -> None:
    async def main() -> None:
        async with lab_session(tmp_path, min_ready_seconds=0.3) as run:
            probe = ProbeSpec(HTTPGetAction("/"), period=0.1, success_threshold=2)
            t = PodTemplate(command=(PYTHON, str(server_script)), readiness=probe)
            pod = await run.lab.create(t, "v1-0")
            assert not pod.ready and not pod.in_endpoints
            await _wait_ready(run, pod)
            ready = run.first(EventKind.READY, "v1-0")
            assert run.first(EventKind.ENDPOINT_ADDED, "v1-0") >= ready
            assert not pod.available
            async with asyncio.timeout(5):
                while not pod.available:
                    await run.lab.wait_changed(run.lab.generation, 0.1)
            # the ReplicaSet controller re-checks minReadySeconds + 1 s after Ready
            assert_after(run.first(EventKind.AVAILABLE, "v1-0") - ready, 1.3)
            await run.traffic.settled()
            assert all(run.traffic.pick(c) == pod.endpoint for c in range(2))

    asyncio.run(main())


def test_probe_failing_status_keeps_replica_out(tmp_path: Path, server_script: Path) -> None:
    async def main() -> None:
        async with lab_session(tmp_path) as run:
            probe = ProbeSpec(HTTPGetAction("/"), period=0.1)
            t = PodTemplate(
                command=(PYTHON, str(server_script)), readiness=probe, env={"SERVER_STATUS": "503"}
            )
            pod = await run.lab.create(t, "v1-0")
            assert pod.prober is not None
            # probes that reached the server (a loaded machine may take a second to start it:
            # until then they are refused), each answered 503: never ready
            async with asyncio.timeout(10):
                while "503" not in pod.prober.last_detail:
                    assert not pod.ready and not pod.in_endpoints
                    await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)  # five more probes, each a 503
            assert not pod.ready and not pod.in_endpoints
            assert not run.times(EventKind.READY, "v1-0")

    asyncio.run(main())


def test_sigkill_exactly_at_grace_without_prestop(tmp_path: Path, server_script: Path) -> None:
    """1. a replica that ignores SIGTERM, grace 3 s, a propagation delay of 2 s 2. deleted at t0
    Result: endpoint removed and SIGTERM at t0 (in parallel: not after the 2 s), SIGKILL at
    t0 + 3 s."""

    async def main() -> None:
        async with lab_session(tmp_path, delay=PropagationDelay(2.0, 0)) as run:
            t = PodTemplate(
                command=(PYTHON, str(server_script)), env={"SERVER_IGNORE_TERM": "1"}, grace=3
            )
            pod = await run.lab.create(t, "v1-0")
            async with asyncio.timeout(10):
                await pod.listening.wait()  # its handler is in place
            run.lab.delete(pod)
            await pod.exited.wait()
            t0 = run.first(EventKind.DELETING, "v1-0")
            assert run.first(EventKind.ENDPOINT_REMOVED, "v1-0") - t0 < 0.01
            sigterm = run.first(EventKind.SIGTERM, "v1-0")
            assert_after(sigterm - t0, 0.0)
            assert_after(run.first(EventKind.SIGKILL, "v1-0") - sigterm, 3.0)
            assert "SIGKILL" in next(e.detail for e in run.events if e.kind is EventKind.EXITED)
            await run.traffic.settled()
            # the only endpoint is serving-terminating (no probe: serving while it runs), so
            # kube-proxy falls back to it until it leaves the slice at exit, then 2 s later
            exited = run.first(EventKind.EXITED, "v1-0")
            views = run.times(EventKind.VIEW_REMOVED, "v1-0")
            assert len(views) == 2
            for v in views:
                assert_after(v - exited, 2.0)

    asyncio.run(main())


def test_grace_below_two_seconds_is_floored(tmp_path: Path, server_script: Path) -> None:
    async def main() -> None:
        async with lab_session(tmp_path) as run:
            t = PodTemplate(
                command=(PYTHON, str(server_script)), env={"SERVER_IGNORE_TERM": "1"}, grace=0
            )
            pod = await run.lab.create(t, "v1-0")
            async with asyncio.timeout(10):
                await pod.listening.wait()
            run.lab.delete(pod)
            await pod.exited.wait()
            t0 = run.first(EventKind.DELETING, "v1-0")
            sigterm = run.first(EventKind.SIGTERM, "v1-0")
            assert_after(sigterm - t0, 0.0)
            assert_after(run.first(EventKind.SIGKILL, "v1-0") - sigterm, 2.0)

    asyncio.run(main())


def test_prestop_counts_against_grace(tmp_path: Path, server_script: Path) -> None:
    """preStop sleep 1 s, grace 3 s: SIGTERM at t0+1, SIGKILL at t0+3 (3 - 1 whole second)."""

    async def main() -> None:
        async with lab_session(tmp_path) as run:
            t = PodTemplate(
                command=(PYTHON, str(server_script)),
                env={"SERVER_IGNORE_TERM": "1"},
                grace=3,
                prestop=SleepAction(1.0),
            )
            pod = await run.lab.create(t, "v1-0")
            async with asyncio.timeout(10):
                await pod.listening.wait()
            run.lab.delete(pod)
            await pod.exited.wait()
            t0 = run.first(EventKind.DELETING, "v1-0")
            prestop = run.first(EventKind.PRESTOP_START, "v1-0")
            assert_after(prestop - t0, 0.0)
            assert run.first(EventKind.ENDPOINT_REMOVED, "v1-0") - t0 < 0.05  # in parallel
            sigterm = run.first(EventKind.SIGTERM, "v1-0")
            assert_after(sigterm - prestop, 1.0)
            # the grace left: 3 s minus the preStop's whole seconds (1), at least 2 s
            assert_after(run.first(EventKind.SIGKILL, "v1-0") - sigterm, 2.0)

    asyncio.run(main())


def test_prestop_still_running_at_grace_gets_two_more_seconds(
    tmp_path: Path, server_script: Path
) -> None:
    """preStop sleep 10 s, grace 2 s: the hook is abandoned at t0+2, SIGTERM then, and the
    container gets the 2 s minimum: SIGKILL at t0+4."""

    async def main() -> None:
        async with lab_session(tmp_path) as run:
            t = PodTemplate(
                command=(PYTHON, str(server_script)),
                env={"SERVER_IGNORE_TERM": "1"},
                grace=2,
                prestop=SleepAction(10.0),
            )
            pod = await run.lab.create(t, "v1-0")
            async with asyncio.timeout(10):
                await pod.listening.wait()
            run.lab.delete(pod)
            await pod.exited.wait()
            t0 = run.first(EventKind.DELETING, "v1-0")
            prestop = run.first(EventKind.PRESTOP_START, "v1-0")
            assert_after(prestop - t0, 0.0)
            end = next(e for e in run.events if e.kind is EventKind.PRESTOP_END)
            assert_after(end.t - prestop, 2.0)
            assert "abandoned" in end.detail
            sigterm = run.first(EventKind.SIGTERM, "v1-0")
            assert_after(sigterm - end.t, 0.0)
            assert_after(run.first(EventKind.SIGKILL, "v1-0") - sigterm, 2.0)

    asyncio.run(main())


def test_sigterm_to_main_only_sigkill_to_the_group(tmp_path: Path, server_script: Path) -> None:
    """A replica that exits on SIGTERM leaves a child behind in its group: the lab kills it."""

    async def main() -> tuple[int, int]:
        # emulated PID 1 rules: the child's pid in its log is a host pid
        async with lab_session(tmp_path, pid1="emulated") as run:
            pod = await run.lab.create(template(server_script, SERVER_CHILD="1"), "v1-0")
            assert pod.process is not None and pod.process.pid is not None
            log = tmp_path / "logs" / "v1-0.log"
            async with asyncio.timeout(5):
                while "child" not in (log.read_text() if log.exists() else ""):
                    await asyncio.sleep(0.05)
            child = int(log.read_text().split()[1])
            assert pid_alive(child)
            run.lab.delete(pod)
            await pod.exited.wait()
            exited = next(e for e in run.events if e.kind is EventKind.EXITED)
            assert "exit code 0" in exited.detail  # SIGTERM reached the main process
            assert not run.times(EventKind.SIGKILL, "v1-0")
            return child, pod.process.pgid

    child, pgid = asyncio.run(main())
    for _ in range(50):
        if not pid_alive(child):
            break
        time.sleep(0.05)
    assert not pid_alive(child) and not group_alive(pgid)


def test_unexpected_exit_fails_the_run(tmp_path: Path, server_script: Path) -> None:
    async def main() -> None:
        async with lab_session(tmp_path) as run:
            await run.lab.create(template(server_script, SERVER_EXIT="3"), "v1-0")
            await asyncio.sleep(5)

    with pytest.raises(BaseExceptionGroup) as info:
        asyncio.run(main())
    error = info.value.exceptions[0]
    assert isinstance(error, LosslessError)
    assert "v1-0 exited unexpectedly (exit code 3" in str(error)
    assert "replica failed on purpose" in str(error)


def test_close_reaps_everything(tmp_path: Path, server_script: Path) -> None:
    async def main() -> list[tuple[int, int]]:
        async with lab_session(tmp_path) as run:
            pods = [
                await run.lab.create(template(server_script, SERVER_IGNORE_TERM="1"), f"v1-{i}")
                for i in range(3)
            ]
            await asyncio.sleep(0.3)
            return [(p.process.pid, p.port) for p in pods if p.process and p.process.pid]

    started = asyncio.run(main())
    assert len(started) == 3
    for pid, port in started:
        assert not pid_alive(pid) and not group_alive(pid) and port_free(port)
    assert os.getpid()  # the test process itself is fine


def test_a_start_cancelled_while_it_finds_pid1_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A closing lab cancels a container that is still starting (a restart under way): the
    namespace's process group it already spawned is killed and reaped, not left behind.

    The search for PID 1 is held at an await, so the cancel always lands inside it (left to
    chance, the search usually ends before its first await and the case is never hit).
    """
    from lossless.verify.lab.process import ReplicaProcess

    original = ReplicaProcess._find_pid1

    async def attempt() -> int | None:
        held = asyncio.Event()

        async def held_find_pid1(self: ReplicaProcess) -> None:
            held.set()
            await asyncio.sleep(30)  # cancelled here, as a closing lab cancels a start
            await original(self)

        monkeypatch.setattr(ReplicaProcess, "_find_pid1", held_find_pid1)
        proc = ReplicaProcess(
            [PYTHON, "-c", "import time; time.sleep(30)"],
            env=dict(os.environ),
            cwd=None,
            log_path=tmp_path / "p.log",
            pid1="namespace",
        )
        task = asyncio.ensure_future(proc.start())
        async with asyncio.timeout(5):
            await held.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert task.cancelled()
        pgid = proc.pgid
        assert pgid is not None
        # killed and already reaped when start() gives up: a loop closed right after leaves no
        # subprocess "still running" (an unraisable ResourceWarning once collected)
        assert proc.returncode is not None
        # the group dies at once (SIGKILL) and is reaped by the loop's child watcher; without
        # the kill in start() it would sleep on for 30 s
        for _ in range(100):
            if not group_alive(pgid):
                break
            await asyncio.sleep(0.02)
        left = group_alive(pgid)
        proc.kill()
        await proc.wait()  # reaped before the loop closes, dead or not
        return pgid if left else None

    left = asyncio.run(attempt())
    assert left is None, f"process group {left} left behind"
