"""Checking part by part (``check/stream.py``) reports exactly what one run over all objects
reports (findings, their order and positions, errors, object count), whatever the cuts; a bad
document late in a big file still gives its one-line error and the findings before it; the trees
of a finished part are released (issue 14, speed and memory)."""

from __future__ import annotations

import gc
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from tests.check.conftest import ROOT, SRC, RunCli
from tests.conftest import _children

from lossless import __version__
from lossless.check import stream, yaml_source
from lossless.check.config import Config
from lossless.check.engine import Report, build_context, check_context, run_check
from lossless.check.report import finding_json, render_json
from lossless.check.yaml_source import Document

DATA = ROOT / "bench" / "data"
PRECISION = ROOT / "tests" / "check" / "precision"


def reference(operands: list[str], config: Config | None = None) -> Report:
    """One run of every rule over all objects at once (every tree held: the old way)."""
    context, errors, notes, files = build_context(operands, config or Config(), jobs=1)
    return check_context(context, errors, notes, files)


def summary(report: Report) -> tuple[list[Any], list[str], int]:
    findings = [
        (
            f.code,
            f.location.path,
            f.location.line,
            f.location.column,
            f.location.end_line,
            f.location.end_column,
            f.location.rendered,
            f.message,
            f.severity,
            f.subject,
            f.suppression,
        )
        for f in report.findings
    ]
    return findings, [str(e) for e in report.errors], report.objects


def namespaced(text: str, namespace: str) -> str:
    text = re.sub(r"^(\s*namespace:) \S+$", rf"\1 {namespace}", text, flags=re.M)
    return re.sub(
        r"^metadata:\n(?!(?:  .*\n)*  namespace:)",
        f"metadata:\n  namespace: {namespace}\n",
        text,
        flags=re.M,
    )


LONELY_SERVICE = """\
---
apiVersion: v1
kind: Service
metadata:
  name: lonely
  namespace: nobody-here
spec:
  selector: {app: lonely}
  ports: [{port: 80}]
"""


def many_documents(copies: int, helm: bool = False) -> str:
    """Real manifests copied into ``copies`` namespaces, one multi-document stream, with a
    Service whose namespace has no workload in the middle (LL601 reads whether its directory
    holds workloads: a fact of the whole run). ``helm``: every document says which template it
    came from (``# Source:``), as ``helm template`` writes."""
    chunks = []
    for i in range(copies):
        for path in sorted(DATA.glob("*.yaml")):
            text = namespaced(path.read_text(encoding="utf-8"), f"{path.stem}-{i}")
            if helm:
                source = f"# Source: {path.stem}/templates/all.yaml"
                text = source + "\n" + re.sub(r"^---$", f"---\n{source}", text, flags=re.M)
            chunks.append("---\n" + text)
        if i == copies // 2:
            chunks.append(LONELY_SERVICE)
    return "".join(chunks)


@pytest.fixture
def small_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pieces of 20 kB and the pool from the first byte, so small inputs take every path."""
    monkeypatch.setattr(yaml_source, "CHUNK_BYTES", 20_000)
    monkeypatch.setattr(yaml_source, "PARALLEL_MIN_BYTES", 1)


@pytest.mark.usefixtures("small_pieces")
@pytest.mark.parametrize("jobs", [1, 2])
def test_precision_corpus_part_by_part_equals_one_run(jobs: int) -> None:
    operands = [str(PRECISION)]
    expected = reference(operands)
    assert expected.findings, "the corpus has labelled findings"
    assert summary(run_check(operands, Config(), jobs=jobs)) == summary(expected)


@pytest.mark.usefixtures("small_pieces")
@pytest.mark.parametrize("jobs", [1, 2])
@pytest.mark.parametrize("search", [stream.CUT_SEARCH, 1])
@pytest.mark.parametrize("helm", [False, True])
def test_multi_document_file_part_by_part_equals_one_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, jobs: int, search: int, helm: bool
) -> None:
    # search=1: cuts fall inside namespaces, so units span pieces and are re-checked together.
    # helm: findings are mapped back to the templates, from lines inside each piece.
    monkeypatch.setattr(stream, "CUT_SEARCH", search)
    checked = tmp_path / "in"  # the templates, found from there, are not checked
    checked.mkdir()
    (checked / "all.yaml").write_text(many_documents(8, helm), encoding="utf-8")
    for path in DATA.glob("*.yaml"):
        template = tmp_path / path.stem / "templates" / "all.yaml"
        template.parent.mkdir(parents=True)
        template.write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    (checked / "other.yaml").write_text(namespaced(LONELY_SERVICE, "demo-0"), encoding="utf-8")
    operands = [str(checked)]
    expected = reference(operands)
    codes = {f.code for f in expected.findings}
    assert "LL403" in codes
    lonely = [f for f in expected.findings if f.code == "LL601" and "lonely" in f.message]
    # The run-wide fact makes LL601 fire on both lonely Services (not with Helm sources: the
    # workloads then belong to their charts, not to the directory).
    assert len(lonely) == (0 if helm else 2)
    seen: list[stream.PartResult] = []
    got = run_check(operands, Config(), jobs=jobs, on_part=seen.append)
    assert summary(got) == summary(expected)
    assert len([r for r in seen if r.part.piece is not None]) > 4, "the file was cut in pieces"
    mapped = [f for f in got.findings if f.location.path.endswith("templates/all.yaml")]
    assert bool(mapped) == helm


@pytest.mark.usefixtures("small_pieces")
@pytest.mark.parametrize("jobs", [1, 2])
def test_objects_without_namespace_are_joined_across_pieces(tmp_path: Path, jobs: int) -> None:
    # No namespaces: every object is related to every other one of the directory, so the pieces
    # are parsed apart but checked together.
    text = "".join(
        "---\n" + (DATA / "microservices-demo.yaml").read_text(encoding="utf-8") for _ in range(4)
    )
    (tmp_path / "all.yaml").write_text(text, encoding="utf-8")
    operands = [str(tmp_path)]
    seen: list[stream.PartResult] = []
    got = run_check(operands, Config(), jobs=jobs, on_part=seen.append)
    assert summary(got) == summary(reference(operands))
    assert seen and all(r.documents is not None for r in seen), "pieces were shipped"


@pytest.mark.usefixtures("small_pieces")
def test_a_big_file_beside_objects_without_namespace_is_checked_with_them(tmp_path: Path) -> None:
    # The Service without a namespace is related to every object of the directory, the big
    # file's included: its pieces are parsed apart but checked together with it.
    (tmp_path / "all.yaml").write_text(many_documents(4), encoding="utf-8")
    service = LONELY_SERVICE.replace("  namespace: nobody-here\n", "")
    (tmp_path / "svc.yaml").write_text(service, encoding="utf-8")
    operands = [str(tmp_path)]
    seen: list[stream.PartResult] = []
    got = run_check(operands, Config(), jobs=2, on_part=seen.append)
    assert summary(got) == summary(reference(operands))
    pieces = [r for r in seen if r.part.piece is not None]
    assert len(pieces) > 2 and all(r.documents is not None for r in pieces)


def test_bad_document_late_in_a_big_file(cli: RunCli, tmp_path: Path) -> None:
    good = many_documents(110)
    assert len(good.encode()) > 2 * yaml_source.CHUNK_BYTES, "several pieces"
    bad_line = good.count("\n") + 4
    broken = "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: x\n  data: [\n"
    path = tmp_path / "big.yaml"
    path.write_text(good + broken + LONELY_SERVICE, encoding="utf-8")
    result = cli(path, "--format", "json", "--max-file-size", "64")
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()[-1:]
    assert re.fullmatch(
        rf"lossless check: error: {re.escape(str(path))}:\d+: not valid YAML: .*", line
    )
    assert int(line.split(":")[3]) in range(bad_line - 3, bad_line + 3)
    assert "Traceback" not in result.stderr
    # Every finding of the documents before the bad one is kept, at its line.
    (tmp_path / "good").mkdir()
    (tmp_path / "good" / "big.yaml").write_text(good, encoding="utf-8")
    expected = reference([str(tmp_path / "good" / "big.yaml")])
    found = json.loads(result.stdout)["findings"]
    assert len(found) == len(expected.findings) > 1000
    assert [(f["code"], f["location"]["line"], f["message"]) for f in found] == [
        (f.code, f.location.line, f.message) for f in expected.findings
    ]


@pytest.mark.usefixtures("small_pieces")
def test_the_trees_of_a_finished_part_are_released(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text(many_documents(12), encoding="utf-8")
    live: list[int] = []

    def count(result: stream.PartResult) -> None:
        live.append(sum(1 for o in gc.get_objects() if isinstance(o, Document)))

    report = run_check([str(path)], Config(), jobs=1, on_part=count)
    documents = 12 * 54 + 1
    assert report.objects == documents
    assert len(live) > 10
    # A piece holds about 20 kB (~25 documents); were the trees kept, the count would grow to
    # every document of the file.
    assert max(live) < 60, live


def test_json_report_holds_every_finding_and_the_summary() -> None:
    # Rendered (kustomize) locations, suppressions, errors: every shape of a finding.
    report = run_check([str(ROOT / "tests" / "check"), "/no/such/file"], Config())
    assert any(f.location.rendered is not None for f in report.findings)
    assert any(f.suppression is not None for f in report.findings)
    assert report.errors
    text = render_json(report)
    doc = json.loads(text)
    assert doc["version"] == __version__
    assert doc["findings"] == [finding_json(f) for f in report.findings]
    assert [(e["path"], e["line"]) for e in doc["errors"]] == [
        (e.path, e.line) for e in report.errors
    ]
    summary = doc["summary"]
    assert summary["findings"] + summary["suppressed"] == len(report.findings)
    assert summary["suppressed"] == sum(1 for f in report.findings if f.suppression is not None)
    assert sum(summary["by_severity"].values()) == summary["findings"]
    assert summary["input_errors"] == len(report.errors) and summary["objects"] == report.objects
    assert text.startswith('{\n  "version": ') and text.endswith("}\n")  # two-space indents


def test_files_that_may_be_joined_share_a_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(yaml_source, "PARALLEL_MIN_BYTES", 1)
    demo = (DATA / "microservices-demo.yaml").read_text(encoding="utf-8")
    (tmp_path / "app").mkdir()
    (tmp_path / "copies").mkdir()
    for i in range(3):
        # No namespace: related to everything in the directory.
        (tmp_path / "app" / f"part{i}.yaml").write_text(demo, encoding="utf-8")
        # A namespace of its own each: nothing to join.
        text = namespaced(demo, f"copy-{i}")
        (tmp_path / "copies" / f"copy{i}.yaml").write_text(text, encoding="utf-8")
    # Shares its namespace with copy1.yaml.
    (tmp_path / "copies" / "extra.yaml").write_text(
        namespaced(LONELY_SERVICE, "copy-1"), encoding="utf-8"
    )
    seen: list[stream.PartResult] = []
    operands = [str(tmp_path)]
    got = run_check(operands, Config(), jobs=2, on_part=seen.append)
    assert summary(got) == summary(reference(operands))
    parts = sorted(sorted(Path(i.path).name for i in r.part.files) for r in seen)
    assert parts == [
        ["copy0.yaml"],
        ["copy1.yaml", "extra.yaml"],
        ["copy2.yaml"],
        ["part0.yaml", "part1.yaml", "part2.yaml"],
    ]


def test_ctrl_c_stops_the_workers_and_says_so(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text(many_documents(250), encoding="utf-8")  # ~10 MiB: 8 pieces on 2 cores
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lossless",
            "check",
            str(path),
            "--jobs",
            "2",
            "--format",
            "json",
            "--max-file-size",
            "64",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    try:
        deadline = time.monotonic() + 60
        # Both workers started and ignoring SIGINT (the parent stops them).
        while not _ready(_children(proc.pid)):
            assert proc.poll() is None, "the check ended before the pool was seen"
            assert time.monotonic() < deadline, "the pool never started"
            time.sleep(0.02)
        workers = _children(proc.pid)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C sends: the whole group
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130
    assert err.decode().strip().splitlines()[-1] == "lossless check: interrupted"
    assert "Traceback" not in err.decode()
    assert not any(os.path.exists(f"/proc/{pid}") and _children(pid) for pid in workers)


def _ready(workers: set[int]) -> bool:
    """Two processes that ignore SIGINT (their ``SigIgn`` mask in ``/proc``)."""
    if len(workers) < 2:
        return False
    for pid in workers:
        try:
            with open(f"/proc/{pid}/status") as fh:
                fields = dict(line.split(":", 1) for line in fh if ":" in line)
        except OSError:
            return False
        if not int(fields["SigIgn"].strip(), 16) & (1 << (signal.SIGINT - 1)):
            return False
    return True
