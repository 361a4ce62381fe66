"""``-f`` reads the fields of issue 16: livenessProbe, startupProbe, restartPolicy, and the kind
of the pod's sidecar (initContainers with restartPolicy Always: native; a second container:
plain). Bad values get one-line errors naming the file and line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from lossless.errors import LosslessError
from lossless.verify.lab.manifest import load_deployment
from lossless.verify.lab.prober import HTTPGetAction, TCPSocketAction
from tests.verify.conftest import assert_one_line_error, load_json, run_cli
from tests.verify.stress_helpers import STRESS_CMD, kinds

MANIFEST = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  template:
    spec:
      restartPolicy: Always
      initContainers:
        - name: migrate
          image: m
        - name: envoy
          image: envoy
          restartPolicy: Always
      containers:
        - name: app
          image: y
          livenessProbe:
            httpGet: {path: /livez, port: 8080}
            periodSeconds: 5
            failureThreshold: 4
          startupProbe:
            tcpSocket: {port: 8080}
            failureThreshold: 30
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "deploy.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_fields(tmp_path: Path) -> None:
    spec = load_deployment(write(tmp_path, MANIFEST))
    assert spec.restart_policy == "Always"
    # a probe's port is kept as a container-port key (issue 15); with no declared container
    # ports it can only mean the app's own port, so it becomes an alias of the main port
    assert spec.liveness is not None and spec.liveness.action == HTTPGetAction("/livez", "8080")
    assert (spec.liveness.period, spec.liveness.failure_threshold) == (5.0, 4)
    assert spec.startup is not None and spec.startup.action == TCPSocketAction("8080")
    assert spec.port_aliases == ("8080",) and spec.ports == ()
    assert (spec.startup.period, spec.startup.failure_threshold) == (10.0, 30)
    assert (spec.sidecar_kind, spec.sidecar_name) == ("native", "envoy")


def test_plain_sidecar(tmp_path: Path) -> None:
    text = MANIFEST.replace("          restartPolicy: Always\n", "").replace(
        "      containers:\n", "      containers:\n        - name: proxy\n          image: p\n"
    )
    spec = load_deployment(write(tmp_path, text), container="app")
    assert (spec.sidecar_kind, spec.sidecar_name) == ("plain", "proxy")


def test_no_sidecar(tmp_path: Path) -> None:
    text = MANIFEST.replace("          restartPolicy: Always\n", "")
    spec = load_deployment(write(tmp_path, text))
    assert spec.sidecar_kind is None


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("restartPolicy: Always\n      initContainers", "restartPolicy: Never\n      initContainers",
         "restartPolicy: a Deployment only accepts Always (got Never)"),
        ("restartPolicy: Always\n      initContainers", "restartPolicy: Sometimes\n      initContainers",
         "restartPolicy: unknown 'Sometimes'"),
        ("            failureThreshold: 30", "            successThreshold: 2",
         "startupProbe: startup probe successThreshold must be 1"),
        ("            periodSeconds: 5", "            periodSeconds: soon",
         "periodSeconds: expected a number"),
    ],
)  # fmt: skip
def test_errors(tmp_path: Path, old: str, new: str, message: str) -> None:
    path = write(tmp_path, MANIFEST.replace(old, new))
    with pytest.raises(LosslessError) as info:
        load_deployment(path)
    text = str(info.value)
    assert text.startswith(f"{path}:") and message in text, text


def test_cli_reads_the_probes_and_notes_the_sidecar(tmp_path: Path) -> None:
    path = write(tmp_path, MANIFEST.replace("port: 8080", "port: http"))
    out = tmp_path / "run"
    result = run_cli(
        "verify", "--cmd", STRESS_CMD, "-f", str(path), "--out", str(out),
        "--liveness-period", "0.2", "--startup-period", "0.1", "--readiness-path", "/",
        "--readiness-period", "0.1", "--rate", "20", "--before", "0.3", "--after", "0.3",
        "--propagation-delay", "0.1±0.05", "--prestop-sleep", "0.3", "--json",
        "--max-failures", "1000",
    )  # fmt: skip
    doc = load_json(result.stdout)
    assert doc["error"] is None, result.stderr
    assert "the manifest has a native sidecar (envoy); pass --sidecar CMD" in result.stderr
    settings = (out / "settings.json").read_text()
    assert '"action": "httpGet /livez port http"' in settings
    assert '"action": "tcpSocket port http"' in settings
    # the startup probe gated the others: every pod started up before it was ready
    assert len(kinds(out, "startup_succeeded")) == len(kinds(out, "created"))


def test_cli_probe_flags_need_a_probe() -> None:
    result = run_cli("verify", "--cmd", STRESS_CMD, "--liveness-period", "1")
    assert_one_line_error(result, "liveness probe timing flags need --liveness-path (or -f)")
