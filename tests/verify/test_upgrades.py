"""``--upgrades N``: v1 → … → vN+1 under one load, a per-upgrade breakdown whose counts add up
to the run's totals, in text and ``--json``."""

from __future__ import annotations

from pathlib import Path

from lossless.verify.analysis.upgrades import iter_records, per_upgrade
from lossless.verify.model import ErrorClass, Event, EventKind, Record
from lossless.verify.results import RunWriter
from tests.verify.conftest import assert_nothing_left, assert_one_line_error, load_json, run_cli
from tests.verify.stress_helpers import STRESS_CMD, kinds


def _record(seq: int, t: float, error: ErrorClass = ErrorClass.NONE) -> Record:
    status = 0 if error is not ErrorClass.NONE else 200
    return Record(seq, t, t, t + 0.001, t + 0.002, status, 2, error, "v1-0", 1, False)


def test_windows_split_by_intended_time(tmp_path: Path) -> None:
    events = [
        Event(1.0, EventKind.UPGRADE_START, "", None, "1/2 v1→v2"),
        Event(1.0, EventKind.ROLLOUT_START, "", None, "rolling"),
        Event(2.5, EventKind.ROLLOUT_END, "", None, "rolling"),
        Event(3.0, EventKind.UPGRADE_START, "", None, "2/2 v2→v3"),
        Event(3.0, EventKind.ROLLOUT_START, "", None, "rolling"),
        Event(3.5, EventKind.CONTAINER_EXITED, "v2-0", None, "exit code 1"),
        Event(4.0, EventKind.ROLLOUT_END, "", None, "rolling"),
    ]
    records = [
        _record(0, 0.5),  # before the first upgrade: the first one owns it
        _record(1, 1.5, ErrorClass.REFUSED),
        _record(2, 2.9, ErrorClass.SCHEDULE_LAG),  # an artefact, not a failure
        _record(3, 3.1, ErrorClass.RESET),
        _record(4, 9.0),  # after the last upgrade: the last one owns it
    ]
    with RunWriter(tmp_path / "run") as writer:
        for r in records:
            writer.record(r)
    stats = per_upgrade(events, iter_records(tmp_path / "run"))
    assert [s.to_json() for s in stats] == [
        {
            "upgrade": 1, "versions": "v1→v2", "start": 1.0, "rollout_s": 1.5, "requests": 3,
            "failures": 1, "fault_failures": 0, "upgrade_failures": 1, "restarts": 0,
        },
        {
            "upgrade": 2, "versions": "v2→v3", "start": 3.0, "rollout_s": 1.0, "requests": 2,
            "failures": 1, "fault_failures": 0, "upgrade_failures": 1, "restarts": 1,
        },
    ]  # fmt: skip


def test_naive_has_one_upgrade_only() -> None:
    result = run_cli("verify", "--cmd", STRESS_CMD, "--strategy", "naive", "--upgrades", "2")
    assert_one_line_error(result, "--upgrades > 1 needs --strategy rolling or recreate")


def test_five_upgrades_add_up(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run_cli(
        "verify", "--cmd", STRESS_CMD, "--out", str(out), "--upgrades", "5",
        "--replicas", "2", "--max-surge", "1", "--max-unavailable", "0",
        "--readiness-path", "/", "--readiness-period", "0.1", "--rate", "100",
        "--before", "0.5", "--after", "0.5", "--propagation-delay", "0.2±0.1",
        "--prestop-sleep", "0.5", "--new-conn-ratio", "1", "--json", "--max-failures", "1000",
        "--html", str(tmp_path / "report.html"),
    )  # fmt: skip
    doc = load_json(result.stdout)
    assert doc["error"] is None, result.stderr
    upgrades = doc["upgrades"]
    assert [u["versions"] for u in upgrades] == [f"v{i}→v{i + 1}" for i in range(1, 6)]
    assert sum(u["requests"] for u in upgrades) == doc["requests"]
    assert sum(u["failures"] for u in upgrades) == doc["failures"]
    assert sum(u["upgrade_failures"] for u in upgrades) == doc["upgrade_failures"]
    assert all(u["rollout_s"] is not None and u["requests"] > 0 for u in upgrades)
    # every version ran, and every pod but the last version's was deleted
    created = {e["replica"] for e in kinds(out, "created")}
    assert created == {f"v{i}-{j}" for i in range(1, 7) for j in range(2)}
    assert len(kinds(out, "upgrade_end")) == 5
    page = (tmp_path / "report.html").read_text()
    assert "<h2>Upgrades (5)</h2>" in page and "<td>v5→v6</td>" in page
    assert_nothing_left(out)


def test_text_summary_lists_each_upgrade(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run_cli(
        "verify", "--cmd", STRESS_CMD, "--out", str(out), "--upgrades", "2",
        "--replicas", "1", "--max-surge", "1", "--max-unavailable", "0",
        "--readiness-path", "/", "--readiness-period", "0.1", "--rate", "50",
        "--before", "0.3", "--after", "0.3", "--propagation-delay", "0.1±0.05",
        "--prestop-sleep", "0.3", "--new-conn-ratio", "1", "-q", "--max-failures", "1000",
    )  # fmt: skip
    starved = result.returncode == 3 and "generator fell behind" in result.stdout
    assert result.returncode == 0 or starved, (result.stdout, result.stderr)
    assert "upgrades: 2 in a row" in result.stdout
    assert "upgrade  versions  rollout  requests  failures" in result.stdout
    assert "v1→v2" in result.stdout and "v2→v3" in result.stdout
    assert_nothing_left(out)
