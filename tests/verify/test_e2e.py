"""End to end: ``lossless verify`` rolls out the example app under load, as a subprocess.

1. rolling update, naive app (uvicorn closes its listener on SIGTERM) → failures, explained as
   "listener closed before clients stopped routing to it", exit 1;
2. the same rolling update, the app under ``lossless serve`` with a drain delay longer than the
   propagation → zero failures, exit 0.
Both leave no process and no port behind.
"""

from __future__ import annotations

from pathlib import Path

from tests.verify.conftest import (
    LOSSLESS_APP,
    NAIVE_APP,
    assert_nothing_left,
    assert_passed,
    load_json,
    run_cli,
)

COMMON = ("--replicas", "3", "--rate", "100", "--before", "1", "--after", "1",
          "--max-surge", "1", "--max-unavailable", "0", "--propagation-delay", "1±0.5",
          "--readiness-path", "/readyz", "--readiness-period", "0.5", "--json")  # fmt: skip


def test_rolling_update_of_a_naive_app_drops_requests(tmp_path: Path) -> None:
    out = tmp_path / "naive"
    result = run_cli(
        "verify", "--cmd", NAIVE_APP, "--out", str(out), "--export", "vegeta-csv", *COMMON
    )
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


def test_rolling_update_of_a_lossless_app_drops_nothing(tmp_path: Path) -> None:
    out = tmp_path / "lossless"
    result = run_cli("verify", "--cmd", LOSSLESS_APP, "--out", str(out), *COMMON)
    doc = load_json(result.stdout)
    assert doc["failures"] == 0, (doc["failures_by_class"], doc["causes"], out)
    assert_passed(result)
    assert doc["requests"] > 300
    timeline = (out / "timeline.jsonl").read_text()
    assert timeline.count('"kind":"exited"') >= 3  # the three old replicas went away
    assert_nothing_left(out)


def test_naive_strategy_restarts_in_place(tmp_path: Path) -> None:
    out = tmp_path / "naive-strategy"
    result = run_cli(
        "verify", "--cmd", NAIVE_APP, "--strategy", "naive", "--out", str(out),
        "--max-failures", "100000", *COMMON,
    )  # fmt: skip
    assert_passed(result)  # within --max-failures
    doc = load_json(result.stdout)
    assert doc["requests"] > 150
    assert_nothing_left(out)
