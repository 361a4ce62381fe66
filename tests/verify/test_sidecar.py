"""Sidecars (KEP-753): a native sidecar starts before the app and stops after it; a plain one
stops in parallel with it. A proxy sidecar that stops first drops the app's traffic, and the
analysis says so; as a native sidecar it drops nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from lossless.verify.lab.pod import PodTemplate
from lossless.verify.lab.prober import SleepAction
from lossless.verify.lab.process import split_command
from lossless.verify.lab.sidecar import SidecarSpec, render_sidecar
from lossless.verify.model import EventKind
from tests.verify.conftest import (
    LOSSLESS_APP,
    PYTHON,
    assert_exit_passed,
    assert_nothing_left,
    lab_session,
    load_json,
    port_free,
    run_cli,
)
from tests.verify.stress_helpers import PROXY_CMD, STRESS_SERVER


def test_render_sidecar() -> None:
    words = ("proxy", "--listen", "{port}", "--to", "$APP_PORT", "${APP_PORT}", "{app_port}")
    assert render_sidecar(words, 80, 81) == ["proxy", "--listen", "80", "--to", "81", "81", "81"]


@pytest.mark.parametrize(
    ("native", "sidecar_first"),
    [
        (True, False),  # native: SIGTERM to the sidecar only once the app has exited
        (False, True),  # plain: SIGTERM at t0, while the app is still in its preStop
    ],
)
def test_stop_order(tmp_path: Path, native: bool, sidecar_first: bool) -> None:
    async def main() -> None:
        async with lab_session(tmp_path) as run:
            t = PodTemplate(
                command=(PYTHON, str(STRESS_SERVER)),
                prestop=SleepAction(0.4),
                grace=5,
                sidecar=SidecarSpec(split_command(PROXY_CMD), native=native),
            )
            pod = await run.lab.create(t, "v1-0")
            assert pod.app_port != pod.port and pod.sidecar_process is not None
            # the sidecar started before the app
            events = [e.kind for e in run.events if e.replica == "v1-0"]
            assert events.index(EventKind.SIDECAR_STARTED) < events.index(EventKind.STARTED)
            await _answers(pod.port)  # through the proxy to the app
            run.lab.delete(pod)
            async with asyncio.timeout(10):
                await pod.exited.wait()
            side_term = run.first(EventKind.SIDECAR_SIGTERM, "v1-0")
            side_exit = run.first(EventKind.SIDECAR_EXITED, "v1-0")
            app_term = run.first(EventKind.SIGTERM, "v1-0")
            app_exit = run.first(EventKind.EXITED, "v1-0")
            if sidecar_first:
                assert side_term < app_term and side_exit < app_exit
            else:
                assert app_exit <= side_term
            assert port_free(pod.port) and port_free(pod.app_port)

    asyncio.run(main())


async def _answers(port: int) -> None:
    async with asyncio.timeout(10):
        while True:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                line = await reader.readline()
                writer.close()
                if line.startswith(b"HTTP/1.1 200"):
                    return
            except OSError:
                pass
            await asyncio.sleep(0.05)


def _run(tmp_path: Path, kind: str) -> dict[str, object]:
    out = tmp_path / kind
    result = run_cli(
        "verify", "--cmd", LOSSLESS_APP, "--sidecar", PROXY_CMD, "--sidecar-kind", kind,
        "--out", str(out), "--replicas", "2", "--max-surge", "1", "--max-unavailable", "0",
        "--readiness-path", "/readyz", "--readiness-period", "0.2", "--rate", "100",
        "--before", "1", "--after", "1", "--propagation-delay", "1±0.3", "--json",
        # fresh connections: no HTTP/1.1 idle-close race at t0 + drain delay (docs/benchmarks.md)
        "--new-conn-ratio", "1",
    )  # fmt: skip
    doc = load_json(result.stdout)
    assert doc["error"] is None, result.stderr
    assert_nothing_left(out)
    return doc


def test_plain_proxy_sidecar_drops_requests_and_says_why(tmp_path: Path) -> None:
    doc = _run(tmp_path, "plain")
    assert doc["failures"] > 0 and doc["exit_code"] == 1
    kinds = {c["kind"]: c for c in doc["causes"]}  # type: ignore[union-attr]
    assert "sidecar_first" in kinds, doc["causes"]
    assert "native sidecar" in kinds["sidecar_first"]["fix"]
    assert kinds["sidecar_first"]["count"] == doc["failures"]


def test_native_proxy_sidecar_drops_nothing(tmp_path: Path) -> None:
    doc = _run(tmp_path, "native")
    assert doc["failures"] == 0, doc["causes"]
    assert_exit_passed(doc["exit_code"], doc["reasons"])
