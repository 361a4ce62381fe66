"""Bounded soak: a larger, longer rolling update of the lossless app, twice in a row (v1 → v2 →
v1 is two runs with different seeds), at a higher rate with more keep-alive reuse; zero failures
each time and nothing left behind. Marked slow; CI runs it too (about 40 s)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.verify.conftest import (
    LOSSLESS_APP,
    assert_nothing_left,
    assert_passed,
    load_json,
    run_cli,
)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [11, 12])
def test_lossless_rollout_soak(tmp_path: Path, seed: int) -> None:
    out = tmp_path / f"soak-{seed}"
    result = run_cli(
        "verify", "--cmd", LOSSLESS_APP, "--out", str(out), "--seed", str(seed),
        "--replicas", "4", "--rate", "300", "--before", "2", "--after", "2",
        "--max-surge", "25%", "--max-unavailable", "25%", "--propagation-delay", "1±0.5",
        "--readiness-path", "/readyz", "--readiness-period", "0.5", "--new-conn-ratio", "0.05",
        "--clients", "4", "--json",
    )  # fmt: skip
    doc = load_json(result.stdout)
    assert doc["failures"] == 0, (doc["failures_by_class"], doc["causes"], out)
    assert_passed(result)
    assert doc["requests"] > 2000
    assert_nothing_left(out)
