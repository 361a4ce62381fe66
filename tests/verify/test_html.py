"""The HTML report: built from a real run, loaded by a real headless Chromium from disk.

The run (module fixture): two replicas of a tiny HTTP server that exits at once on SIGTERM,
rolled to v2 through the ``service`` model with a 0.5 s propagation delay under 100 req/s, so
clients still route to the old replicas after their listeners closed: real refused
connections, real timeline events.
"""

from __future__ import annotations

import asyncio
import random
import sys
from pathlib import Path

import pytest

from lossless.verify.analysis.core import analyze
from lossless.verify.analysis.report import analyse
from lossless.verify.model import ErrorClass, Event, EventKind, Record
from lossless.verify.render.html_figure import MAX_OK_POINTS, figure
from lossless.verify.render.html_page import render_html, write_html
from lossless.verify.results import Run, read_run
from lossless.verify.traffic.base import PropagationDelay
from tests.verify.conftest import SERVER, run_cli
from tests.verify.ingress_apps.browser import Browser
from tests.verify.ingress_apps.harness import Scenario, run_scenario


@pytest.fixture(scope="module")
def service_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("html-run")
    script = tmp / "server.py"
    script.write_text(SERVER)
    scenario = Scenario(
        (sys.executable, str(script)),
        traffic="service",
        readiness_path="/",
        before=0.5,
        after=0.5,
        delay=PropagationDelay(0.5, 0.1),
        cwd=tmp,
    )
    out = tmp / "run"
    asyncio.run(run_scenario(scenario, out))
    return out


def test_report_is_self_contained_and_lists_every_failure(service_run: Path) -> None:
    run = read_run(service_run)
    analysis = analyze(run)
    assert analysis.failures > 0, "the scenario must produce failures"
    page = render_html(analyse(run))
    # offline: plotly.js inlined, nothing fetched from anywhere
    assert "plotly.js v" in page[:10_000]
    ours = page.split("</script></head>", 1)[1]  # everything after the inlined plotly.js
    for remote in ("http://", "https://", "<link", "@import"):
        assert remote not in ours
    assert page.count('class="failure-row"') == analysis.failures
    for cause in analysis.causes:
        assert f'id="cause-{cause.kind}"' in page
    fig = figure(run, analysis)
    assert fig["lanes"] == ["v1-0", "v1-1", "v2-0", "v2-1"]
    names = {t["name"] for t in fig["data"]}
    assert {"ready", "SIGTERM sent", "view removed (per client)", "ok"} <= names
    assert any(n.startswith("failed: ") for n in names)


def _synthetic(n: int, fail_every: int) -> Run:
    rng = random.Random(3)
    events = [
        Event(0.0, EventKind.CREATED, "v1-0"),
        Event(0.1, EventKind.STARTED, "v1-0"),
        Event(0.5, EventKind.READY, "v1-0"),
        Event(0.6, EventKind.VIEW_ADDED, "v1-0", 0),
        Event(20.0, EventKind.DELETING, "v1-0"),
        Event(20.0, EventKind.PRESTOP_START, "v1-0"),
        Event(22.0, EventKind.PRESTOP_END, "v1-0"),
        Event(22.0, EventKind.SIGTERM, "v1-0"),
        Event(25.0, EventKind.SIGKILL, "v1-0"),
        Event(25.1, EventKind.EXITED, "v1-0", detail="signal SIGKILL"),
    ]
    records = []
    for seq in range(n):
        t = 1 + seq * 30 / n
        failed = seq % fail_every == 0
        records.append(
            Record(
                seq,
                t,
                t,
                None if failed else t + 0.01,
                t + rng.random() * 0.05,
                0 if failed else 200,
                0 if failed else 2,
                ErrorClass.RESET if failed else ErrorClass.NONE,
                "v1-0",
                1 + seq % 40,
                True,
            )
        )
    return Run(Path("synthetic"), records, events, {"strategy": "rolling"})


def test_every_failure_is_drawn_successes_are_decimated_and_size_bounded() -> None:
    run = _synthetic(20_000, fail_every=4)  # 5,000 failures, 15,000 successes
    analysis = analyze(run)
    fig = figure(run, analysis)
    points = {t["name"]: len(t["x"]) for t in fig["data"] if t.get("xaxis") == "x2"}
    assert points["failed: reset"] == 5000
    assert points["ok"] <= MAX_OK_POINTS
    assert fig["dropped_ok"] == 15_000 - points["ok"]
    phases = {t["name"] for t in fig["data"] if t["type"] == "bar" and t["yaxis"] == "y"}
    assert {"pending", "starting", "ready", "preStop", "SIGTERM sent", "SIGKILL sent"} <= phases
    size = len(render_html(analyse(run)).encode())
    assert size < 6_000_000, size
    everything_failed = _synthetic(20_000, fail_every=1)
    size = len(render_html(analyse(everything_failed)).encode())
    assert size < 6_000_000, size


def test_report_command_writes_the_html(service_run: Path, tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    result = run_cli("report", str(service_run), "--html", str(target))
    assert result.returncode == 1, result.stderr  # the run has failures
    assert "wrote the HTML report" in result.stderr
    assert target.stat().st_size > 1_000_000
    assert "<!DOCTYPE html>" in target.read_text()[:100]


@pytest.mark.requires("chromium")
def test_chromium_renders_lanes_points_and_failures(service_run: Path, tmp_path: Path) -> None:
    """Chromium loads the report from disk (file://): the figure draws a lane per replica and
    the request points, the table has a row per failure, and no script error is logged."""
    run = read_run(service_run)
    report = analyse(run)
    analysis = report.analysis
    path = tmp_path / "report.html"
    write_html(report, path)
    with Browser(tmp_path) as browser:
        page = browser.load(path)
        assert page.errors == [], page.errors
        assert page.eval("document.body.getAttribute('data-rendered')") == "yes"
        ticks = page.eval(
            "Array.from(document.querySelectorAll('#timeline .yaxislayer-above .ytick text'))"
            ".map(t => t.textContent)"
        )
        assert {"v1-0", "v1-1", "v2-0", "v2-1"} <= set(ticks), ticks
        assert page.eval("document.querySelectorAll('tr.failure-row').length") == analysis.failures
        drawn = page.eval("document.querySelectorAll('#timeline .scatterlayer .point').length")
        assert drawn >= analysis.requests  # every request + the lanes' marks
        bars = page.eval("document.querySelectorAll('#timeline .barlayer .point').length")
        assert bars > 0
        fetched = page.requests()
        assert fetched and all(url.split(":", 1)[0] in ("file", "data") for url in fetched), fetched
        shot = page.screenshot(tmp_path / "report.png")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 20_000
