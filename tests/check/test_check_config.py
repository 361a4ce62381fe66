"""Configuration (pyproject discovery, select/ignore/severity/kube-version) and suppression."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.check.conftest import FIXTURES, RunCli

from lossless.check import Config, Severity, run_check
from lossless.check.config import find_config, load_config, parse_kube_version
from lossless.errors import LosslessError

NO_PRESTOP = FIXTURES / "LL201" / "fire" / "no_prestop.yaml"
SLEEP_ACTION = FIXTURES / "LL204" / "fire" / "kube_1_28" / "deploy.yaml"


def codes(paths: list[Path], config: Config) -> list[str]:
    return [f.code for f in run_check([str(p) for p in paths], config).active]


def test_prefix_select_and_ignore() -> None:
    assert codes([NO_PRESTOP], Config(select=["LL2"])) == ["LL201"]
    assert codes([NO_PRESTOP], Config(ignore=["LL2"])) == []
    # The longest prefix wins: ignore LL2 but select LL201.
    assert codes([NO_PRESTOP], Config(select=["LL", "LL201"], ignore=["LL2"])) == ["LL201"]


def test_severity_override_changes_exit_code() -> None:
    config = Config(severity={"LL201": Severity.WARNING})
    report = run_check([str(NO_PRESTOP)], config)
    assert [f.severity for f in report.active] == [Severity.WARNING]
    assert report.exit_code(config) == 0


def test_discovered_from_cwd_upward(cli: RunCli, tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n\n[tool.lossless.check]\nkube-version = "1.28"\n'
        'ignore = ["LL201"]\n',
        encoding="utf-8",
    )
    sub = tmp_path / "deploy" / "prod"
    sub.mkdir(parents=True)
    result = cli(SLEEP_ACTION, NO_PRESTOP, cwd=sub)
    assert " LL204 " in result.stdout
    assert " LL201 " not in result.stdout
    assert find_config(sub) == tmp_path / "pyproject.toml"


def test_command_line_overrides_file(cli: RunCli, tmp_path: Path) -> None:
    config = tmp_path / "lossless.toml"
    config.write_text('[tool.lossless.check]\nkube-version = "1.28"\n', encoding="utf-8")
    assert " LL204 " in cli(SLEEP_ACTION, "--config", config).stdout
    assert " LL204 " not in cli(SLEEP_ACTION, "--config", config, "--kube-version", "1.31").stdout


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("colour = true", "unknown key 'colour'"),
        ('select = "LL1"', "select: expected a list"),
        ("grace-margin = -1", "grace-margin: expected a non-negative"),
        ('kube-version = "one"', "invalid Kubernetes version"),
        ('severity = { LL201 = "fatal" }', "unknown severity 'fatal'"),
    ],
)
def test_invalid_config(tmp_path: Path, table: str, message: str) -> None:
    path = tmp_path / "pyproject.toml"
    path.write_text(f"[tool.lossless.check]\n{table}\n", encoding="utf-8")
    with pytest.raises(LosslessError, match=message):
        load_config(path)


def test_kube_version_forms() -> None:
    assert parse_kube_version("1.30") == (1, 30)
    assert parse_kube_version("v1.29.3") == (1, 29)
    assert parse_kube_version("1.31.0-gke.1") == (1, 31)


def test_annotation_suppression_is_reported_not_counted(cli: RunCli, tmp_path: Path) -> None:
    text = NO_PRESTOP.read_text(encoding="utf-8").replace(
        "  name: web  # <- LL201\n", "  name: web\n", 1
    )
    annotated = text.replace(
        "metadata:\n  name: web\n",
        'metadata:\n  name: web\n  annotations:\n    lossless/ignore: "LL201: drains in-app"\n',
        1,
    )
    (tmp_path / "app.yaml").write_text(annotated, encoding="utf-8")
    result = cli("app.yaml", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout == "All checks passed (1 files, 3 objects); 1 suppressed.\n"
    shown = cli("app.yaml", "--show-suppressed", cwd=tmp_path).stdout
    assert "(suppressed: drains in-app)" in shown
    data = json.loads(cli("app.yaml", "--format", "json", cwd=tmp_path).stdout)
    [finding] = data["findings"]
    assert finding["suppressed"] == {"reason": "drains in-app"}
    assert data["summary"]["suppressed"] == 1


def test_dockerfile_comment_suppression(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text(
        "# lossless/ignore: LL301: busybox sh execs single commands\nFROM alpine:3\n"
        "CMD myserver --port 8080\n",
        encoding="utf-8",
    )
    report = run_check([str(tmp_path / "Dockerfile")], Config())
    [finding] = report.findings
    assert finding.code == "LL301"
    assert finding.suppression is not None
    assert finding.suppression.reason == "busybox sh execs single commands"


def test_json_shape(cli: RunCli) -> None:
    data = json.loads(cli(NO_PRESTOP, "--format", "json").stdout)
    [finding] = data["findings"]
    assert finding["code"] == "LL201"
    assert finding["severity"] == "error"
    assert finding["object"] == "Deployment/web"
    assert finding["location"]["line"] == 16
    assert data["summary"]["by_severity"] == {"error": 1, "warning": 0, "info": 0}
