"""Helm chart and kustomization directories are rendered with the real tool, never skipped.

kustomize: the real ``kubectl kustomize`` (on these machines); findings point at the base file
and line by YAML path, with paths relative to the working directory. Helm: ``helm`` is not
installable here, so a chart directory is tested up to the exit-2 message that says what to run;
committed ``helm template`` output is tested in test_check_origins.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.check.conftest import HERE, RunCli

PODINFO = HERE / "precision" / "podinfo" / "kustomize"
HELM_TEMPLATE = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "web.fullname" . }}
spec:
  replicas: {{ .Values.replicaCount }}
"""

needs_kubectl = pytest.mark.skipif(
    shutil.which("kubectl") is None and shutil.which("kustomize") is None,
    reason="neither kubectl nor kustomize is on PATH",
)


def _chart(root: Path) -> Path:
    chart = root / "charts" / "web"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: web\nversion: 0.1.0\n")
    (chart / "templates" / "deployment.yaml").write_text(HELM_TEMPLATE)
    return chart


def _no_tools_env(tmp_path: Path) -> dict[str, str]:
    """A PATH with python only: no helm, kubectl or kustomize."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "python3").symlink_to(sys.executable)
    env = dict(os.environ)
    env["PATH"] = str(bin_dir)
    return env


def test_helm_chart_without_helm_exits_2_saying_what_to_run(cli: RunCli, tmp_path: Path) -> None:
    if shutil.which("helm") is not None:
        pytest.skip("helm is installed: the chart would be rendered")
    _chart(tmp_path)
    result = cli(".", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "lossless check: error: charts/web: a Helm chart, and helm is not on PATH: install "
        "helm, or run 'helm template web charts/web | lossless check -'"
    ]
    assert "Traceback" not in result.stderr


def test_chart_yaml_operand_means_its_chart(cli: RunCli, tmp_path: Path) -> None:
    if shutil.which("helm") is not None:
        pytest.skip("helm is installed: the chart would be rendered")
    chart = _chart(tmp_path)
    result = cli(chart / "Chart.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert "helm template web charts/web" in result.stderr


@needs_kubectl
def test_kustomization_is_rendered_and_mapped_to_base_lines(cli: RunCli) -> None:
    result = cli("precision/podinfo/kustomize", "--select", "LL201,LL501", cwd=HERE)
    assert result.returncode == 1, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    # Line 25 is '- name: podinfod': kustomize sorts keys, so counting 'name:' occurrences in
    # the output would land on a port's name (line 29).
    assert lines[0].startswith("precision/podinfo/kustomize/deployment.yaml:4:3: LL501 ")
    assert lines[1].startswith("precision/podinfo/kustomize/deployment.yaml:25:9: LL201 ")


@needs_kubectl
def test_rendered_positions_are_not_reported(cli: RunCli) -> None:
    """The output of a render exists on no disk: JSON/SARIF carry no 'rendered' position."""
    result = cli("precision/podinfo/kustomize", "--format", "json", cwd=HERE)
    locations = [f["location"] for f in json.loads(result.stdout)["findings"]]
    assert locations
    assert all("rendered" not in loc for loc in locations)
    assert all(loc["path"].endswith("/deployment.yaml") for loc in locations)


@needs_kubectl
def test_kustomize_paths_are_relative_to_the_working_directory(cli: RunCli) -> None:
    result = cli("kustomize", "--select", "LL201", cwd=PODINFO.parent)
    assert result.stdout.startswith("kustomize/deployment.yaml:25:9: LL201 "), result.stderr


@needs_kubectl
def test_overlay_renders_its_base_once(cli: RunCli, tmp_path: Path) -> None:
    base = tmp_path / "deploy" / "base"
    shutil.copytree(PODINFO, base)
    overlay = tmp_path / "deploy" / "prod"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        "resources: [../base]\nnamespace: prod\nnamePrefix: prod-\n"
    )
    result = cli("deploy", "--select", "LL201", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    # One finding: the overlay is rendered (with its base), the base is not rendered again,
    # and the base's files are not read a second time as plain YAML.
    assert result.stdout.splitlines()[0].startswith("deploy/base/deployment.yaml:25:9: LL201 ")
    assert "Deployment/prod/prod-podinfo" in result.stdout
    assert result.stdout.count(" LL201 ") == 1


@needs_kubectl
def test_broken_kustomization_is_one_line(cli: RunCli, tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: [missing.yaml]\n")
    result = cli(".", cwd=tmp_path)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("lossless check: error: .: kubectl kustomize failed: ")
    assert "Traceback" not in result.stderr


def test_kustomization_without_tools_exits_2(tmp_path: Path) -> None:
    from tests.check.conftest import SRC

    shutil.copytree(PODINFO, tmp_path / "app")
    env = _no_tools_env(tmp_path)
    env["PYTHONPATH"] = str(SRC)
    proc = subprocess.run(
        [sys.executable, "-m", "lossless", "check", "app"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "lossless check: error: app: a kustomization, and neither kustomize nor kubectl is on "
        "PATH: install one, or run 'kubectl kustomize app | lossless check -'"
    ]


@needs_kubectl
def test_patched_container_maps_by_name(cli: RunCli, tmp_path: Path) -> None:
    """A patch adds a sidecar before the app container: the app's finding still lands on its
    own line in the base, and the sidecar's (absent from the base) on the containers list."""
    base = tmp_path / "base"
    shutil.copytree(PODINFO, base)
    overlay = tmp_path / "prod"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        "resources: [../base]\n"
        "patches:\n"
        "- target: {kind: Deployment, name: podinfo}\n"
        "  patch: |\n"
        "    - op: add\n"
        "      path: /spec/template/spec/containers/0\n"
        "      value: {name: proxy, image: envoyproxy/envoy:v1.31.0,"
        " ports: [{name: admin, containerPort: 9901}]}\n"
    )
    result = cli("prod", "--select", "LL201", "--format", "json", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    located = {
        f["message"].split("'")[1]: (f["location"]["path"], f["location"]["line"])
        for f in json.loads(result.stdout)["findings"]
    }
    assert located["podinfod"] == ("base/deployment.yaml", 25)


@needs_kubectl
def test_yaml_beside_a_kustomization_is_still_checked(cli: RunCli, tmp_path: Path) -> None:
    """A kustomization at the top of a repository does not hide YAML it does not use."""
    shutil.copytree(PODINFO, tmp_path, dirs_exist_ok=True)
    examples = tmp_path / "examples"
    examples.mkdir()
    (examples / "standalone.yaml").write_text(
        (HERE / "fixtures" / "LL201" / "fire" / "no_prestop.yaml").read_text(encoding="utf-8")
    )
    result = cli(".", "--select", "LL201", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    paths = sorted(line.split(":", 1)[0] for line in result.stdout.splitlines()[:-1])
    assert paths == ["deployment.yaml", "examples/standalone.yaml"]


def test_render_that_hangs_is_bounded_and_leaves_no_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kustomize that never finishes (a remote base behind a dead network): the render gives
    up after its timeout with one line, and its whole process group is gone."""
    from lossless.check.render import Target, render

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    pid_file = tmp_path / "child.pid"
    tool = bin_dir / "kustomize"
    tool.write_text(f"#!/bin/sh\nsleep 300 &\necho $! > {pid_file}\nwait\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "kustomization.yaml").write_text("resources: []\n")
    result = render(Target(tmp_path / "app", "kustomize"), timeout=1)
    assert not isinstance(result, str)
    assert getattr(result, "message", "") == "kustomize build failed: timed out after 1 s"
    child = int(pid_file.read_text())
    # SIGKILLed with its group; it dies once the kernel schedules it, a moment later on a
    # loaded machine (checking once, at once, failed then)
    deadline = time.monotonic() + 5
    while not _dead(child) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _dead(child), "the tool's child survived the timeout"


def _dead(pid: int) -> bool:
    """Gone, or a zombie waiting for init to reap it (killed either way)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"
