"""Every rule fires on its ``fire`` fixtures, stays quiet on its ``pass`` fixtures, and has docs.

Layout: ``fixtures/<CODE>/{fire,pass}/<case>`` where a case is one file or a directory (a
manifest with its Dockerfile and scripts; a ``pyproject.toml`` in it configures the run). A line
carrying ``<- CODE`` (or following a line carrying ``v CODE``) is where the finding must point;
when a fire case has such markers, every finding of that rule must be on a marked line.
(kube-linter's and ruff's meta-tests do the same: no rule without fixtures and docs.)
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from tests.check.conftest import FIXTURES, ROOT

from lossless.check import run_check
from lossless.check.config import Config, load_config
from lossless.check.model import all_rules

CODES = [rule.code for rule in all_rules()]


def cases(kind: str) -> list[tuple[str, Path]]:
    found = []
    for code_dir in sorted(FIXTURES.iterdir()):
        for case in sorted((code_dir / kind).glob("*")):
            found.append((code_dir.name, case))
    return found


def config_for(case: Path) -> Config:
    pyproject = case / "pyproject.toml"
    return load_config(pyproject) if case.is_dir() and pyproject.is_file() else Config()


def markers(case: Path, code: str) -> set[tuple[str, int]]:
    files = [case] if case.is_file() else sorted(p for p in case.rglob("*") if p.is_file())
    marked = set()
    for path in files:
        lines = path.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, start=1):
            if re.search(rf"<- {code}\b", line):
                marked.add((str(path.resolve()), number))
            if re.search(rf"# v {code}\b", line):
                marked.add((str(path.resolve()), number + 1))
    return marked


def run(case: Path, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, int, int]]:
    monkeypatch.chdir(case if case.is_dir() else case.parent)
    report = run_check([str(case)], config_for(case))
    assert report.errors == [], report.errors
    return [
        (f.code, str(Path(f.location.path).resolve()), f.location.line, f.location.column)
        for f in report.active
    ]


@pytest.mark.parametrize("code", CODES)
def test_rule_has_fixtures_and_docs(code: str) -> None:
    assert list((FIXTURES / code / "fire").glob("*")), f"{code} has no fire fixture"
    assert list((FIXTURES / code / "pass").glob("*")), f"{code} has no pass fixture"
    assert (ROOT / "docs" / "rules" / f"{code}.md").is_file(), f"{code} has no docs page"


def test_no_fixtures_for_unknown_rules() -> None:
    assert {p.name for p in FIXTURES.iterdir()} <= set(CODES)


@pytest.mark.parametrize(("code", "case"), cases("fire"), ids=lambda v: getattr(v, "name", v))
def test_fires(code: str, case: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    findings = [f for f in run(case, monkeypatch) if f[0] == code]
    assert findings, f"{code} did not fire on {case}"
    expected = markers(case, code)
    if expected:
        got = {(path, line) for _, path, line, _ in findings}
        assert got <= expected, f"{code} pointed at {got}, expected {expected}"
        assert got, expected
    for _, path, line, column in findings:
        assert Path(path).is_file()
        assert 1 <= line <= len(Path(path).read_text().splitlines())
        assert column >= 1


@pytest.mark.parametrize(("code", "case"), cases("pass"), ids=lambda v: getattr(v, "name", v))
def test_does_not_fire(code: str, case: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    findings = [f for f in run(case, monkeypatch) if f[0] == code]
    assert not findings, f"{code} fired on {case}: {findings}"
