"""The bounded-memory analysis: the bucketed distribution (bounded size, percentiles within 1 %
of the exact nearest-rank ones, exact below 1 ms), the streaming reader, and a streamed analysis
that matches the in-memory one."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from lossless.errors import LosslessError
from lossless.verify.analysis.bounded import Distribution, analyze_dir
from lossless.verify.analysis.core import analyze, percentiles
from lossless.verify.analysis.upgrades import iter_records
from lossless.verify.model import ErrorClass, Event, EventKind, Record
from lossless.verify.results import RunWriter, read_run


def test_buckets_stay_bounded_and_percentiles_are_close() -> None:
    rng = random.Random(16)
    values = [rng.lognormvariate(3, 1.2) for _ in range(200_000)]  # ms, 0.01 ms to minutes
    dist = Distribution()
    for v in values:
        dist.add(v)
    exact = percentiles(values)
    got = dist.percentiles()
    assert got["max"] == exact["max"] and got["mean"] == pytest.approx(exact["mean"])
    for name in ("p50", "p90", "p95", "p99", "p999"):
        assert exact[name] * 0.99 <= got[name] <= exact[name], name
    assert got["p50"] in values  # an observed value
    decades = 10  # 1 µs .. 10,000 s
    assert len(dist.buckets) <= 900 * decades
    assert len(dist.buckets) < len(values) / 20  # it does not grow with the requests


def test_exact_below_one_millisecond() -> None:
    values = [0.001 * i for i in range(1, 1000)]
    dist = Distribution()
    for v in values:
        dist.add(v)
    exact = percentiles(values)
    assert {k: round(v, 6) for k, v in dist.percentiles().items()} == {
        k: round(v, 6) for k, v in exact.items()
    }


def test_empty() -> None:
    assert Distribution().percentiles() == {}


def _records(n: int) -> list[Record]:
    out = []
    for seq in range(n):
        t = seq * 0.01
        error = ErrorClass.REFUSED if seq % 50 == 7 else ErrorClass.NONE
        status = 0 if error is not ErrorClass.NONE else 200
        out.append(
            Record(seq, t, t + 0.0001 * (seq % 7), t + 0.002, t + 0.003 + 0.00001 * seq,
                   status, 2, error, f"v1-{seq % 2}", seq // 10 + 1, seq % 10 != 0, seq % 3)
        )  # fmt: skip
    return out


def test_streamed_analysis_matches_the_in_memory_one(tmp_path: Path) -> None:
    events = [
        Event(0.0, EventKind.CREATED, "v1-0", None, "v1 port 1"),
        Event(0.0, EventKind.CREATED, "v1-1", None, "v1 port 2"),
        Event(0.01, EventKind.READY, "v1-0", None, "ok"),
        Event(0.01, EventKind.READY, "v1-1", None, "ok"),
    ]
    with RunWriter(tmp_path / "run") as writer:
        writer.settings({"strategy": "rolling"})
        for e in events:
            writer.event(e)
        for r in reversed(_records(3000)):  # completion order is not seq order
            writer.record(r)
    streamed = analyze_dir(tmp_path / "run").to_json()
    whole = analyze(read_run(tmp_path / "run")).to_json()
    for key in ("requests", "ok", "failures", "failures_by_class", "status_codes", "replicas",
                "duration_s", "rate_sent", "late", "causes"):  # fmt: skip
        assert streamed[key] == whole[key], key
    assert streamed["latency_ms"]["max"] == whole["latency_ms"]["max"]


def test_iter_records_skips_a_cut_last_line_and_says_so(tmp_path: Path) -> None:
    with RunWriter(tmp_path / "run") as writer:
        for r in _records(3):
            writer.record(r)
    path = tmp_path / "run" / "records.csv"
    path.write_text(path.read_text() + "3,0.03,0.03")  # a crash cut the last line
    warnings: list[str] = []
    assert [r.seq for r in iter_records(tmp_path / "run", warnings)] == [0, 1, 2]
    assert warnings == [f"{path}:5: incomplete last line ignored (run interrupted?)"]


def test_iter_records_corrupt_line(tmp_path: Path) -> None:
    with RunWriter(tmp_path / "run") as writer:
        for r in _records(3):
            writer.record(r)
    path = tmp_path / "run" / "records.csv"
    lines = path.read_text().splitlines()
    lines[2] = lines[2].replace("200", "two hundred", 1)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(LosslessError, match=r"records.csv:3: corrupt record"):
        list(iter_records(tmp_path / "run"))
