"""Liveness and startup probes against pkg/kubelet/prober/worker.go: thresholds (table-driven),
startup gating of readiness and liveness, and kills that restart the container."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from lossless.errors import LosslessError
from lossless.verify.lab.pod import PodTemplate
from lossless.verify.lab.prober import HTTPGetAction, ProbeSpec
from lossless.verify.lab.probes_liveness import LivenessProber, StartupProber, check_probe
from lossless.verify.lab.restart import BackOffPolicy
from lossless.verify.model import EventKind
from tests.verify.conftest import PYTHON, lab_session
from tests.verify.stress_helpers import STRESS_SERVER, wait_event

S, F = True, False


def _feed(prober: LivenessProber, results: list[bool]) -> None:
    for ok in results:
        prober.observe(ok, "GET /livez: " + ("200" if ok else "500"))


@pytest.mark.parametrize(
    ("threshold", "results", "kills_after"),
    [
        (3, [F, F, F], 3),  # failureThreshold consecutive failures
        (3, [F, F, S, F, F, F], 6),  # a success resets the run (resultRun)
        (3, [F, F, S, F, F], None),
        (1, [S, S, F], 3),
        (3, [F, F, F, F, F, F], 3),  # on hold after the kill: one kill only
    ],
)
def test_liveness_threshold(threshold: int, results: list[bool], kills_after: int | None) -> None:
    kills: list[int] = []
    seen: list[bool] = []
    prober = LivenessProber(
        ProbeSpec(HTTPGetAction("/livez"), failure_threshold=threshold),
        1,
        clock=lambda: 0.0,
        started_at=0.0,
        on_fail=lambda detail: kills.append(len(seen)),
    )
    for ok in results:
        seen.append(ok)
        _feed(prober, [ok])
    assert kills == ([] if kills_after is None else [kills_after])


@pytest.mark.parametrize(
    ("results", "started_after", "fails_after"),
    [
        ([F, F, S], 3, None),  # the first success starts the container
        ([F, F, F], None, 3),  # failureThreshold failures: killed
        ([S, F, F, F], 1, None),  # once started, the worker stops
    ],
)
def test_startup_threshold(
    results: list[bool], started_after: int | None, fails_after: int | None
) -> None:
    started: list[int] = []
    fails: list[int] = []
    seen: list[bool] = []
    prober = StartupProber(
        ProbeSpec(HTTPGetAction("/startupz"), failure_threshold=3),
        1,
        clock=lambda: 0.0,
        started_at=0.0,
        on_started=lambda detail: started.append(len(seen)),
        on_fail=lambda detail: fails.append(len(seen)),
    )
    for ok in results:
        seen.append(ok)
        prober.observe(ok, "x")
    assert started == ([] if started_after is None else [started_after])
    assert fails == ([] if fails_after is None else [fails_after])


def test_liveness_success_threshold_must_be_one() -> None:
    with pytest.raises(LosslessError, match="successThreshold must be 1"):
        check_probe(ProbeSpec(HTTPGetAction("/"), success_threshold=2), "liveness")


def _template(tmp_path: Path, **fields: object) -> PodTemplate:
    env = {"MARKER_DIR": str(tmp_path), **fields.pop("env", {})}  # type: ignore[dict-item]
    return PodTemplate(command=(PYTHON, str(STRESS_SERVER)), env=env, grace=2, **fields)  # type: ignore[arg-type]


def test_startup_probe_gates_readiness(tmp_path: Path) -> None:
    """No readiness result before the startup probe succeeded (worker.go: "Disable other probes
    until container has started"): the app answers / at once but /startupz only after 0.6 s."""

    async def main() -> None:
        async with lab_session(tmp_path) as run:
            run.lab.backoff = BackOffPolicy(scale=0.1)
            t = _template(
                tmp_path,
                env={"STARTUP_AFTER": "0.6"},
                readiness=ProbeSpec(HTTPGetAction("/"), period=0.05),
                startup=ProbeSpec(HTTPGetAction("/startupz"), period=0.05, failure_threshold=100),
            )
            pod = await run.lab.create(t, "v1-0")
            ready = await wait_event(run.events, EventKind.READY, "v1-0")
            started_up = await wait_event(run.events, EventKind.STARTUP_SUCCEEDED, "v1-0")
            assert started_up.t <= ready.t
            assert started_up.detail == "GET /startupz: 200"
            assert pod.startup_done and pod.restarts == 0

    asyncio.run(main())


def test_startup_without_readiness_is_ready_when_started(tmp_path: Path) -> None:
    async def main() -> None:
        async with lab_session(tmp_path) as run:
            run.lab.backoff = BackOffPolicy(scale=0.1)
            t = _template(
                tmp_path,
                env={"STARTUP_AFTER": "0.3"},
                startup=ProbeSpec(HTTPGetAction("/startupz"), period=0.05, failure_threshold=100),
            )
            pod = await run.lab.create(t, "v1-0")
            assert not pod.ready  # not at once, as it would be without a startup probe
            ready = await wait_event(run.events, EventKind.READY, "v1-0")
            started_up = await wait_event(run.events, EventKind.STARTUP_SUCCEEDED, "v1-0")
            assert started_up.t <= ready.t

    asyncio.run(main())


def test_liveness_failure_kills_and_restarts(tmp_path: Path) -> None:
    """/livez fails from 0.5 s on the first life: after failureThreshold (2) failures the
    container is killed with the grace period (SIGTERM first) and restarted; the second life
    passes its liveness probe. A startup probe holds liveness back until the app answers (a
    liveness probe alone would kill a replica still starting: connection refused)."""

    async def main() -> None:
        async with lab_session(tmp_path) as run:
            run.lab.backoff = BackOffPolicy(scale=0.1)
            t = _template(
                tmp_path,
                env={"LIVEZ_FAIL_AFTER": "0.5"},
                readiness=ProbeSpec(HTTPGetAction("/"), period=0.1),
                liveness=ProbeSpec(HTTPGetAction("/livez"), period=0.1, failure_threshold=2),
                startup=ProbeSpec(HTTPGetAction("/"), period=0.05, failure_threshold=200),
            )
            pod = await run.lab.create(t, "v1-0")
            kill = await wait_event(run.events, EventKind.PROBE_KILL, "v1-0")
            assert kill.detail.startswith("liveness probe failed: GET /livez: 500")
            assert "(2 consecutive failures)" in kill.detail
            sigterm = await wait_event(run.events, EventKind.SIGTERM, "v1-0", after=kill.t)
            crash = await wait_event(run.events, EventKind.CONTAINER_EXITED, "v1-0")
            assert sigterm.t <= crash.t and crash.detail.startswith("exit code 0")
            restarted = await wait_event(run.events, EventKind.RESTARTED, "v1-0")
            await wait_event(run.events, EventKind.READY, "v1-0", after=restarted.t)
            assert pod.restarts == 1 and pod.liveness is not None
            # the endpoint left when the probe killed it (before the process exited)
            removed = await wait_event(run.events, EventKind.ENDPOINT_REMOVED, "v1-0")
            assert removed.t <= crash.t

    asyncio.run(main())


def test_startup_failure_kills_and_restarts(tmp_path: Path) -> None:
    async def main() -> None:
        async with lab_session(tmp_path) as run:
            run.lab.backoff = BackOffPolicy(scale=0.1, limit=0)
            t = _template(
                tmp_path,
                env={"STARTUP_AFTER": "1000"},
                readiness=ProbeSpec(HTTPGetAction("/"), period=0.05),
                startup=ProbeSpec(HTTPGetAction("/startupz"), period=0.05, failure_threshold=3),
            )
            pod = await run.lab.create(t, "v1-0")
            kill = await wait_event(run.events, EventKind.PROBE_KILL, "v1-0")
            # 503, or refused while the app is still starting: either way 3 failures in a row
            assert kill.detail.startswith("startup probe failed: GET /startupz: ")
            assert kill.detail.endswith("(3 consecutive failures)")
            await wait_event(run.events, EventKind.RESTARTED, "v1-0")
            # never ready: readiness never ran while startup had not succeeded
            assert not [e for e in run.events if e.kind is EventKind.READY]
            assert not pod.ready

    asyncio.run(main())
