"""A real application this project did not write: httpbin (Flask, from PyPI), served by gunicorn.

1. ``lossless verify`` (the ``service`` model) rolls out httpbin under plain gunicorn: gunicorn
   closes its listener at SIGTERM while clients still route to it → refused connections,
   explained as "listener closed before clients stopped routing to it", exit 1.
2. The same rollout with httpbin under ``lossless serve --wsgi --drain-delay 3`` → no failure.
3. and 4. The same two apps behind the ``ingress`` model (a real HAProxy): 503 SC-- from the
   proxy for the naive one, attributed to the old replicas; nothing for the lossless one.

The numbers of these runs are in docs/third-party.md.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from lossless.verify.analysis.proxy import analyze_proxy
from lossless.verify.results import read_run
from lossless.verify.traffic.base import PropagationDelay
from tests.verify.conftest import (
    assert_nothing_left,
    assert_passed,
    load_json,
    run_cli_at_once,
)
from tests.verify.ingress_apps.harness import Scenario, run_scenario

PY = sys.executable
NAIVE = f"{PY} -m gunicorn -b 127.0.0.1:{{port}} httpbin:app"
LOSSLESS = (
    f"{PY} -m lossless serve --wsgi httpbin:app --host 127.0.0.1 --port {{port}} "
    "--drain-delay 3 --shutdown-timeout 10"
)
COMMON = ("--replicas", "2", "--rate", "100", "--before", "1", "--after", "1", "--path", "/get",
          "--max-surge", "1", "--max-unavailable", "0", "--propagation-delay", "1±0.2",
          "--readiness-period", "0.5", "--json", "-q")  # fmt: skip


Run = tuple[Path, subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def service_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    """1. and 2., run at the same time (own replicas, ports and run directories)."""
    base = tmp_path_factory.mktemp("httpbin")
    args = {
        "naive": ("--cmd", NAIVE, "--readiness-path", "/status/200"),
        "lossless": ("--cmd", LOSSLESS, "--readiness-path", "/readyz"),
    }
    results = run_cli_at_once(
        {name: ("verify", *a, "--out", str(base / name), *COMMON) for name, a in args.items()}
    )
    return {name: (base / name, result) for name, result in results.items()}


@pytest.mark.slow
def test_httpbin_under_gunicorn_drops_requests(service_runs: dict[str, Run]) -> None:
    """1."""
    out, result = service_runs["naive"]
    assert result.returncode == 1, result.stderr
    doc = load_json(result.stdout)
    assert doc["failures"] > 0
    assert doc["failures_by_class"].get("refused", 0) > 0
    # the main cause (causes come largest first); a loaded machine may add a stray timeout
    assert doc["causes"][0]["kind"] == "listener_closed", doc["causes"]
    assert_nothing_left(out)


@pytest.mark.slow
def test_httpbin_under_lossless_serve_drops_nothing(service_runs: dict[str, Run]) -> None:
    """2."""
    out, result = service_runs["lossless"]
    assert_passed(result)
    doc = load_json(result.stdout)
    assert doc["failures"] == 0
    assert doc["requests"] > 300
    assert_nothing_left(out)


@pytest.mark.slow
def test_httpbin_behind_the_ingress(tmp_path: Path) -> None:
    """3. and 4."""
    naive, lossless = tmp_path / "naive", tmp_path / "lossless"

    async def both() -> None:  # two independent runs (each its own HAProxy and ports) at once
        async with asyncio.TaskGroup() as tg:
            # the ingress learns of changes 4 s later: longer than a replica's start-up, so
            # both old replicas close before it adds a new one
            naive_sc = Scenario(
                NAIVE.split(),
                readiness_path="/status/200",
                path="/get",
                cwd=tmp_path,
                delay=PropagationDelay(4.0, 0.2),
            )
            tg.create_task(run_scenario(naive_sc, naive))
            lossless_sc = Scenario(
                LOSSLESS.split(), readiness_path="/readyz", path="/get", cwd=tmp_path
            )
            tg.create_task(run_scenario(lossless_sc, lossless))

    asyncio.run(both())
    proxy = analyze_proxy(read_run(naive))
    assert proxy is not None
    a = proxy.analysis
    # failed by the upgrade: saved only by a proxy retry while one old replica listens, then
    # reaching the client while every server HAProxy has is closed (from v1-1's SIGTERM until
    # v2-0 is added, 4 s after it was ready): the second window exists on every run
    assert a.failures > 0, a.to_json()
    failed = [c for c in a.causes if c.kind != "ingress_retried"]
    assert failed[0].kind == "ingress_connect_failed", a.causes
    connect_failed = [f for f in proxy.failures if f.kind == "ingress_connect_failed"]
    assert {f.context.replica for f in connect_failed} <= {"v1-0", "v1-1"}

    proxy = analyze_proxy(read_run(lossless))
    assert proxy is not None
    assert proxy.analysis.failures == 0, proxy.analysis.to_json()
    assert set(proxy.terminations) == {"----"}
