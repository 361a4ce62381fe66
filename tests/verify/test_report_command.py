"""``lossless report`` through the real CLI, as a subprocess: verdicts, JSON, export, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lossless.verify.analysis.core import analyze
from lossless.verify.model import ErrorClass, Event, EventKind, Record
from lossless.verify.render.text import render_json, render_text
from lossless.verify.results import RunWriter, read_run


def lossless(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lossless", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def make_run(path: Path, failures: int) -> Path:
    with RunWriter(path) as w:
        w.settings({"rate": 10})
        w.event(Event(0.0, EventKind.READY, "v1-0"))
        w.event(Event(5.0, EventKind.SIGTERM, "v1-0"))
        w.event(Event(5.1, EventKind.LISTENER_CLOSED, "v1-0"))
        w.event(Event(6.0, EventKind.VIEW_REMOVED, "v1-0", client=0))
        for i in range(20):
            bad = i >= 20 - failures
            t = 5.2 + i * 0.01 if bad else 1.0 + i * 0.1
            error = ErrorClass.REFUSED if bad else ErrorClass.NONE
            w.record(
                Record(i, t, t, None, t + 0.001, 0 if bad else 200, 2, error, "v1-0", i, False)
            )
    return path


def test_clean_run_exits_0(tmp_path: Path) -> None:
    result = lossless("report", make_run(tmp_path / "run", 0))
    assert result.returncode == 0, result.stderr
    assert "requests" in result.stdout and "causes: none" in result.stdout
    assert "\x1b[" not in result.stdout  # not a terminal: plain text


def test_failures_over_the_limit_exit_1_and_are_explained(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", 3)
    result = lossless("report", run)
    assert result.returncode == 1
    assert "listener closed 0.9 s before clients stopped routing to it" in result.stdout
    assert "fix: set a drain delay ≥ 1 s (LOSSLESS_DRAIN_DELAY)" in result.stdout
    assert lossless("report", run, "--max-failures", "3").returncode == 0


def test_json_output(tmp_path: Path) -> None:
    result = lossless("report", make_run(tmp_path / "run", 2), "--json")
    data = json.loads(result.stdout)
    assert result.returncode == 1
    assert (data["requests"], data["failures"], data["failures_by_class"]) == (
        20,
        2,
        {"refused": 2},
    )
    assert data["causes"][0]["count"] == 2


def test_vegeta_export(tmp_path: Path) -> None:
    out = tmp_path / "results.csv"
    result = lossless("report", make_run(tmp_path / "run", 0), "--export", "vegeta-csv",
                      "--output", out)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert len(out.read_text().splitlines()) == 20
    assert f"wrote 20 results to {out}" in result.stderr


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        ("missing", (), "no such run directory"),
        ("corrupt-csv", (), "records.csv:3: corrupt record"),
        ("ok", ("--export", "vegeta-csv"), "--export vegeta-csv needs --output FILE"),
        ("ok", ("--output", "x.csv"), "--output needs --export"),
    ],
)
def test_bad_input_is_one_line_exit_2(
    tmp_path: Path, setup: str, args: tuple[str, ...], message: str
) -> None:
    run = tmp_path / "run"
    if setup != "missing":
        make_run(run, 0)
    if setup == "corrupt-csv":
        lines = (run / "records.csv").read_text().splitlines(keepends=True)
        lines[2] = "1,not-a-time,0,,,200,2,,v1-0,1,0,0\n"
        (run / "records.csv").write_text("".join(lines))
    result = lossless("report", run, *args)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("lossless report: error: ")
    assert message in result.stderr


def test_bad_max_failures_is_a_usage_error(tmp_path: Path) -> None:
    result = lossless("report", make_run(tmp_path / "run", 0), "--max-failures", "-1")
    assert result.returncode == 2 and "must be >= 0" in result.stderr


def test_render_text_on_a_terminal_uses_colours(tmp_path: Path) -> None:
    analysis = analyze(read_run(make_run(tmp_path / "run", 3)))
    coloured = render_text(analysis, tty=True)
    plain = render_text(analysis, tty=False)
    assert "\x1b[" in coloured and "\x1b[" not in plain
    assert "listener closed" in coloured and "listener closed" in plain
    assert json.loads(render_json(analysis))["failures"] == 3
