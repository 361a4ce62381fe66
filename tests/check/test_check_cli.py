"""Bad input through the real command line: one line on stderr per problem, never a traceback,
the right exit code, and the other inputs still checked."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.check.conftest import FIXTURES, RunCli

GOOD = FIXTURES / "LL101" / "pass" / "with_readiness.yaml"
BAD_RULE = FIXTURES / "LL201" / "fire" / "no_prestop.yaml"

BOMB = """\
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
"""

HELM_TEMPLATE = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "web.fullname" . }}
spec:
  replicas: {{ .Values.replicaCount }}
"""

# Not Helm (no .Values): YAML reads `{{ app_name }}` as a mapping used as a key.
JINJA_TEMPLATE = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ app_name }}
spec:
  replicas: {{ replicas }}
"""


def assert_clean_error(result: object, *, code: int, lines: int = 1) -> list[str]:
    stderr: str = result.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in stderr
    assert result.returncode == code, stderr  # type: ignore[attr-defined]
    errors = [line for line in stderr.splitlines() if line]
    assert len(errors) == lines, stderr
    return errors


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        (
            "broken.yaml",
            "apiVersion: v1\nkind: Service\nmetadata: {name: [x\n",
            "broken.yaml:4: not valid YAML",
        ),
        ("bomb.yaml", BOMB, "bomb.yaml:1: YAML aliases expand to more than 1,000,000 nodes"),
        ("chart.yaml", HELM_TEMPLATE, "chart.yaml:4: unrendered Helm template"),
        (
            "jinja.yaml",
            JINJA_TEMPLATE,
            "jinja.yaml:4: unrendered template ('name: {{ app_name }}'): '{{ ... }}' outside "
            "quotes is not a value; render the template first and check its output",
        ),
        ("tabs.yaml", "a:\n\tb: 1\n", "tabs.yaml:2: not valid YAML"),
        ("binary.yaml", "kind: \x00\x01", "binary.yaml: binary file"),
        ("deep.yaml", "[" * 5000 + "]" * 5000, "deep.yaml"),
    ],
)
def test_bad_file_is_one_line(
    cli: RunCli, tmp_path: Path, name: str, content: str, expected: str
) -> None:
    (tmp_path / name).write_text(content, encoding="utf-8")
    result = cli(name, GOOD, cwd=tmp_path)
    [error] = assert_clean_error(result, code=2)
    assert error.startswith(f"lossless check: error: {expected}"), error
    # The good file was still checked.
    assert "All checks passed (2 files, 3 objects); 1 input error." in result.stdout


def test_not_utf8(cli: RunCli, tmp_path: Path) -> None:
    (tmp_path / "latin1.yaml").write_bytes(b"name: caf\xe9\n")
    [error] = assert_clean_error(cli("latin1.yaml", cwd=tmp_path), code=2)
    assert error == "lossless check: error: latin1.yaml: not UTF-8 text (byte 9)"


def test_huge_file_is_refused_by_size(cli: RunCli, tmp_path: Path) -> None:
    huge = tmp_path / "huge.yaml"
    with huge.open("wb") as fh:  # 100 MB, sparse: the check must not read it
        fh.truncate(100 * 1024 * 1024)
    [error] = assert_clean_error(cli("huge.yaml", cwd=tmp_path), code=2)
    assert error == (
        "lossless check: error: huge.yaml: file is 100.0 MiB, over the 16 MiB limit "
        "(raise it with --max-file-size)"
    )


def test_huge_stdin_is_refused(cli: RunCli, tmp_path: Path) -> None:
    result = cli("-", "--max-file-size", "1", cwd=tmp_path, stdin="#" * (2 * 1024 * 1024))
    [error] = assert_clean_error(result, code=2)
    assert error.startswith("lossless check: error: -: input is over the 1 MiB limit")


def test_missing_path(cli: RunCli, tmp_path: Path) -> None:
    [error] = assert_clean_error(cli("nope.yaml", cwd=tmp_path), code=2)
    assert error == "lossless check: error: nope.yaml: no such file or directory"


def test_unknown_kind_is_info_not_error(cli: RunCli, tmp_path: Path) -> None:
    (tmp_path / "crd.yaml").write_text(
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n", encoding="utf-8"
    )
    result = cli("crd.yaml", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stderr == ""
    assert "crd.yaml:2:1: LL902 kind 'Widget'" in result.stdout


def test_input_error_wins_over_findings(cli: RunCli, tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text("a: [\n", encoding="utf-8")
    result = cli("broken.yaml", BAD_RULE, cwd=tmp_path)
    assert_clean_error(result, code=2)
    assert " LL201 " in result.stdout


def test_findings_exit_1_and_fail_on(cli: RunCli) -> None:
    assert cli(BAD_RULE).returncode == 1
    assert cli(BAD_RULE, "--fail-on", "never").returncode == 0
    warning_only = FIXTURES / "LL403" / "fire" / "one_replica.yaml"
    assert cli(warning_only, "--select", "LL403").returncode == 0
    assert cli(warning_only, "--select", "LL403", "--fail-on", "warning").returncode == 1


def test_clean_exit_0(cli: RunCli) -> None:
    result = cli(GOOD)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == "All checks passed (1 files, 3 objects).\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--kube-version", "latest"], "invalid Kubernetes version 'latest'"),
        (["--select", "XY1"], "'XY1' is not a rule code or prefix"),
        (["--config", "missing.toml"], "config file missing.toml not found"),
        (["-", "-"], "stdin (-) can be given only once"),
    ],
)
def test_usage_errors(cli: RunCli, tmp_path: Path, args: list[str], message: str) -> None:
    [error] = assert_clean_error(cli(*args, cwd=tmp_path, stdin=""), code=2)
    assert error.startswith(f"lossless check: error: {message}"), error


def test_bad_config_file(cli: RunCli, tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.lossless.check]\nfail-on = "loud"\n', encoding="utf-8"
    )
    [error] = assert_clean_error(cli(GOOD, cwd=tmp_path), code=2)
    assert error.startswith("lossless check: error: ")
    assert "pyproject.toml: [tool.lossless.check] fail-on: unknown severity 'loud'" in error


def test_argparse_usage_error_exits_2(cli: RunCli) -> None:
    result = cli("--format", "xml")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_output_file(cli: RunCli, tmp_path: Path) -> None:
    result = cli(BAD_RULE, "--format", "json", "-o", tmp_path / "out.json")
    assert result.returncode == 1
    assert result.stdout == ""
    assert (tmp_path / "out.json").read_text().startswith("{")
    assert result.stderr.startswith("lossless check: Found ")


def test_quoted_and_block_templates_are_values(cli: RunCli, tmp_path: Path) -> None:
    """Alert templates in strings (PrometheusRule, Argo) are values, not unrendered YAML."""
    (tmp_path / "rule.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: alerts}\ndata:\n"
        '  summary: "{{ $labels.instance }} is down"\n'
        "  description: |\n    {{ $value }} errors\n",
        encoding="utf-8",
    )
    result = cli("rule.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
