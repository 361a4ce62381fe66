"""``--diff`` / ``--fix``: each fix, re-checked: its finding is gone and no other one appears."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.check.conftest import RunCli

SERVICE = """\
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: http}]
"""

DEPLOYMENT = """\
# The web tier (comments and layout survive a fix).
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
        - name: web   # the server
          image: ghcr.io/acme/web:1.0
          command: {command}
          ports: [{name: http, containerPort: 8080}]
          readinessProbe: {httpGet: {path: /readyz, port: http}}
          livenessProbe: {httpGet: {path: /livez, port: http}}
          lifecycle: {preStop: {sleep: {seconds: 5}}}
"""


def manifest(command: str, replicas: int = 3, pdb: bool = True) -> str:
    text = DEPLOYMENT.replace("{replicas}", str(replicas)).replace("{command}", command)
    text += SERVICE
    if pdb:
        text += (
            "---\napiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: web}\n"
            "spec:\n  maxUnavailable: 1\n  selector: {matchLabels: {app: web}}\n"
        )
    return text


def findings(cli: RunCli, cwd: Path, *extra: str) -> set[tuple[str, str, str]]:
    result = cli(".", "--format", "json", "--fail-on", "never", *extra, cwd=cwd)
    assert result.returncode == 0, result.stderr
    return {
        (f["code"], f["location"]["path"], f["object"])
        for f in json.loads(result.stdout)["findings"]
    }


def fixed(
    cli: RunCli, tmp_path: Path, files: dict[str, str], code: str, *extra: str
) -> dict[str, str]:
    """Write ``files``, check, fix, check again; returns the fixed texts."""
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text, encoding="utf-8")
    before = findings(cli, tmp_path, *extra)
    assert code in {c for c, _, _ in before}, before
    shown = cli(".", "--diff", *extra, cwd=tmp_path)
    assert shown.returncode == 1 and shown.stdout.startswith("--- a/"), shown.stderr
    assert all((tmp_path / n).read_text() == t for n, t in files.items())  # --diff writes nothing
    result = cli(".", "--fix", "--fail-on", "never", *extra, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "lossless check: fixed " in result.stderr
    after = findings(cli, tmp_path, *extra)
    assert code not in {c for c, _, _ in after}, after
    assert after <= before, after - before  # no new finding
    assert cli(".", "--diff", *extra, cwd=tmp_path).stdout == ""  # idempotent
    return {name: (tmp_path / name).read_text(encoding="utf-8") for name in files}


def test_exec_in_sh_c_of_a_container(cli: RunCli, tmp_path: Path) -> None:
    command = '[sh, -c, "python manage.py migrate && gunicorn app.wsgi --bind :8080"]'
    text = manifest(command)
    [after] = fixed(cli, tmp_path, {"app.yaml": text}, "LL302").values()
    assert after == text.replace("&& gunicorn", "&& exec gunicorn")


def test_exec_in_a_block_scalar_script(cli: RunCli, tmp_path: Path) -> None:
    command = "\n            - sh\n            - -c\n            - |\n              migrate\n"
    command += "              gunicorn app.wsgi  # serve"
    text = manifest(command)
    [after] = fixed(cli, tmp_path, {"app.yaml": text}, "LL302").values()
    assert after == text.replace("  gunicorn app.wsgi", "  exec gunicorn app.wsgi")


def test_entrypoint_script_and_dockerfile(cli: RunCli, tmp_path: Path) -> None:
    files = {
        "web/Dockerfile": (
            "FROM python:3.12-slim\nCOPY docker-entrypoint.sh /usr/local/bin/\n"
            'ENTRYPOINT ["docker-entrypoint.sh"]\nCMD ["gunicorn", "app.wsgi"]\n'
        ),
        "web/docker-entrypoint.sh": '#!/bin/sh\nset -e\n# migrate first\nmigrate\n"$@"\n',
    }
    after = fixed(cli, tmp_path, files, "LL303")
    assert after["web/docker-entrypoint.sh"] == files["web/docker-entrypoint.sh"].replace(
        '\n"$@"', '\nexec "$@"'
    )


def test_shell_form_cmd_becomes_exec_form(cli: RunCli, tmp_path: Path) -> None:
    text = "FROM python:3.12-slim\n# serve\nCMD gunicorn app.wsgi --bind ':8080'\n"
    after = fixed(cli, tmp_path, {"Dockerfile": text}, "LL301")
    assert after["Dockerfile"] == (
        'FROM python:3.12-slim\n# serve\nCMD ["gunicorn", "app.wsgi", "--bind", ":8080"]\n'
    )


def test_sh_c_in_a_dockerfile(cli: RunCli, tmp_path: Path) -> None:
    text = 'FROM alpine:3.20\nCMD ["sh", "-c", "migrate && server --port 80"]\n'
    after = fixed(cli, tmp_path, {"Dockerfile": text}, "LL302")
    assert after["Dockerfile"] == text.replace("&& server", "&& exec server")


def test_missing_pdb_is_added(cli: RunCli, tmp_path: Path) -> None:
    text = manifest('["gunicorn", "app.wsgi"]', pdb=False)
    after = fixed(cli, tmp_path, {"app.yaml": text}, "LL501")["app.yaml"]
    assert after.startswith(text)
    assert after[len(text) :] == (
        "---\napiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n"
        '  name: "web"\nspec:\n  maxUnavailable: 1\n  unhealthyPodEvictionPolicy: AlwaysAllow\n'
        '  selector:\n    matchLabels:\n      "app": "web"\n'
    )


def test_grace_period_is_raised_in_place(cli: RunCli, tmp_path: Path) -> None:
    text = manifest('["gunicorn", "app.wsgi"]').replace(
        "    spec:\n      containers:",
        "    spec:\n      terminationGracePeriodSeconds: 10  # too short\n      containers:",
    )
    text = text.replace("{seconds: 5}", "{seconds: 15}")
    after = fixed(cli, tmp_path, {"app.yaml": text}, "LL202")["app.yaml"]
    assert after == text.replace("Seconds: 10  #", "Seconds: 17  #")


def test_grace_period_is_added_when_absent(cli: RunCli, tmp_path: Path) -> None:
    text = manifest('["gunicorn", "app.wsgi"]').replace("{seconds: 5}", "{seconds: 40}")
    after = fixed(cli, tmp_path, {"app.yaml": text}, "LL202")["app.yaml"]
    assert after == text.replace(
        "    spec:\n      containers:",
        "    spec:\n      terminationGracePeriodSeconds: 42\n      containers:",
    )


@pytest.mark.parametrize(
    ("extra", "hook"),
    [
        ((), 'exec: {command: [sleep, "5"]}'),
        (("--kube-version", "1.30"), "sleep: {seconds: 5}"),
    ],
)
def test_prestop_sleep_is_added(
    cli: RunCli, tmp_path: Path, extra: tuple[str, ...], hook: str
) -> None:
    text = manifest('["gunicorn", "app.wsgi"]').replace(
        "          lifecycle: {preStop: {sleep: {seconds: 5}}}\n", ""
    )
    after = fixed(cli, tmp_path, {"app.yaml": text}, "LL201", *extra)["app.yaml"]
    assert after == text.replace(
        "        - name: web   # the server\n",
        "        - name: web   # the server\n"
        f"          lifecycle:\n            preStop:\n              {hook}\n",
    )


@pytest.mark.parametrize(
    ("name", "text", "note"),
    [
        (
            "Dockerfile",
            "FROM alpine\nCMD server --port $PORT\n",
            "LL301 not fixed: the command uses shell syntax",
        ),
        (
            "Dockerfile",
            'FROM alpine\nENTRYPOINT ["tini", "--"]\nCMD server --port 80\n',
            "LL301 not fixed: the image also has ENTRYPOINT",
        ),
        (
            "app.yaml",
            manifest('[sh, -c, "migrate && server | tee log"]'),
            "LL302 not fixed: its last command is part of a pipeline",
        ),
    ],
)
def test_unsafe_fixes_are_left_with_a_note(
    cli: RunCli, tmp_path: Path, name: str, text: str, note: str
) -> None:
    (tmp_path / name).write_text(text, encoding="utf-8")
    result = cli(".", "--fix", "--fail-on", "never", cwd=tmp_path)
    assert result.returncode == 0
    assert note in result.stderr, result.stderr
    assert (tmp_path / name).read_text(encoding="utf-8") == text


def test_rendered_output_is_not_edited(cli: RunCli, tmp_path: Path) -> None:
    command = '[sh, -c, "migrate && server"]'
    text = "# Source: web/templates/deployment.yaml\n" + manifest(command)
    (tmp_path / "rendered.yaml").write_text(text, encoding="utf-8")
    result = cli("rendered.yaml", "--diff", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout == ""
    assert "LL302 not fixed: the file is rendered output (helm); fix web/templates" in result.stderr


def test_readiness_path_of_a_lossless_served_app(cli: RunCli, tmp_path: Path) -> None:
    text = manifest('[lossless, serve, "app:app", --port, "8080"]')
    text = text.replace("path: /livez", "path: /healthz").replace("path: /readyz", "path: /healthz")
    text = text.replace("          lifecycle: {preStop: {sleep: {seconds: 5}}}\n", "")
    after = fixed(cli, tmp_path, {"app.yaml": text}, "LL102")["app.yaml"]
    assert after == text.replace(
        "readinessProbe: {httpGet: {path: /healthz", "readinessProbe: {httpGet: {path: /readyz"
    )


def test_readiness_path_is_not_guessed(cli: RunCli, tmp_path: Path) -> None:
    text = manifest('["gunicorn", "app.wsgi"]').replace("path: /livez", "path: /readyz")
    (tmp_path / "app.yaml").write_text(text, encoding="utf-8")
    result = cli(".", "--diff", cwd=tmp_path)
    assert result.stdout == ""
    assert "LL102 not fixed: which path the app serves for readiness is not known" in result.stderr
