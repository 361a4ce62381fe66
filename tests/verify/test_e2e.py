"""End to end: ``lossless verify`` rolls out the example app under load, as a subprocess.

1. rolling update, naive app (uvicorn closes its listener on SIGTERM) → failures, explained as
   "listener closed before clients stopped routing to it", exit 1;
2. the same rolling update, the app under ``lossless serve`` with a drain delay longer than the
   propagation → zero failures, exit 0.
Both leave no process and no port behind.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.verify.conftest import (
    LOSSLESS_APP,
    NAIVE_APP,
    assert_nothing_left,
    assert_passed,
    load_json,
    run_cli_at_once,
)

COMMON = ("--replicas", "3", "--rate", "100", "--before", "1", "--after", "1",
          "--max-surge", "1", "--max-unavailable", "0", "--propagation-delay", "1±0.5",
          "--readiness-path", "/readyz", "--readiness-period", "0.5", "--json")  # fmt: skip


Runs = dict[str, tuple[Path, subprocess.CompletedProcess[str]]]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """The module's three rollouts, run at the same time (independent: own replicas, ports and
    run directories); each test asserts on its own."""
    base = tmp_path_factory.mktemp("e2e")
    args = {
        "naive": ("--cmd", NAIVE_APP, "--export", "vegeta-csv", *COMMON),
        "lossless": ("--cmd", LOSSLESS_APP, *COMMON),
        "naive-strategy": ("--cmd", NAIVE_APP, "--strategy", "naive",
                           "--max-failures", "100000", *COMMON),
    }  # fmt: skip
    results = run_cli_at_once(
        {name: ("verify", "--out", str(base / name), *a) for name, a in args.items()}
    )
    return {name: (base / name, result) for name, result in results.items()}


def test_rolling_update_of_a_naive_app_drops_requests(runs: Runs) -> None:
    out, result = runs["naive"]
    assert result.returncode == 1, result.stderr
    doc = load_json(result.stdout)
    assert doc["failures"] > 0
    assert doc["failures_by_class"].get("refused", 0) > 0
    kinds = {c["kind"]: c for c in doc["causes"]}
    assert "listener_closed" in kinds, doc["causes"]
    assert "listener closed" in kinds["listener_closed"]["cause"]
    assert doc["requests"] > 300
    assert (out / "results.csv").stat().st_size > 0
    assert_nothing_left(out)


def test_rolling_update_of_a_lossless_app_drops_nothing(runs: Runs) -> None:
    out, result = runs["lossless"]
    doc = load_json(result.stdout)
    assert doc["failures"] == 0, (doc["failures_by_class"], doc["causes"], out)
    assert_passed(result)
    assert doc["requests"] > 300
    timeline = (out / "timeline.jsonl").read_text()
    assert timeline.count('"kind":"exited"') >= 3  # the three old replicas went away
    assert_nothing_left(out)


def test_naive_strategy_restarts_in_place(runs: Runs) -> None:
    out, result = runs["naive-strategy"]
    assert_passed(result)  # within --max-failures
    doc = load_json(result.stdout)
    assert doc["requests"] > 150
    assert_nothing_left(out)
