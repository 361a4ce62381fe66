"""``lossless demo`` as a real subprocess: three runs, one table, the expected verdicts."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.verify.conftest import assert_nothing_left, run_cli


@pytest.mark.slow
def test_demo_compares_three_upgrades(tmp_path: Path) -> None:
    result = run_cli("demo", "--out", str(tmp_path), timeout=120)
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    table = result.stdout
    assert "naive stop/start" in table and "lossless serve" in table
    assert table.count("yes") == 3, table  # each run ended as expected
    assert "listener closed" in table
    runs = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    assert len(runs) == 3
    for run in runs:
        assert_nothing_left(run)
