"""Reading rollout settings from a Deployment manifest; bad manifests get one-line errors."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from lossless.errors import LosslessError
from lossless.verify.lab.manifest import load_deployment
from lossless.verify.lab.prober import ExecAction, HTTPGetAction, SleepAction, TCPSocketAction
from tests.verify.conftest import REPO


def write(tmp_path: Path, text: str, name: str = "deploy.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 4
  minReadySeconds: 2
  strategy:
    rollingUpdate: {maxSurge: "50%", maxUnavailable: 1}
  template:
    spec:
      terminationGracePeriodSeconds: 45
      containers:
        - name: sidecar
          image: x
        - name: app
          image: y
          readinessProbe:
            httpGet: {path: /readyz, port: http}
            initialDelaySeconds: 3
            periodSeconds: 5
            timeoutSeconds: 2
            successThreshold: 2
            failureThreshold: 4
          lifecycle:
            preStop:
              exec: {command: ["sleep", "5"]}
"""


def test_reads_every_field(tmp_path: Path) -> None:
    spec = load_deployment(write(tmp_path, DEPLOYMENT), container="app")
    assert (spec.name, spec.replicas, spec.strategy) == ("web", 4, "rolling")
    assert (spec.max_surge, spec.max_unavailable) == ("50%", 1)
    assert (spec.min_ready_seconds, spec.grace) == (2, 45)
    probe = spec.readiness
    assert probe is not None and probe.action == HTTPGetAction("/readyz", port="http")
    assert (probe.initial_delay, probe.period, probe.timeout) == (3, 5, 2)
    assert (probe.success_threshold, probe.failure_threshold) == (2, 4)
    assert spec.prestop == ExecAction(("sleep", "5"))


def test_kubernetes_defaults(tmp_path: Path) -> None:
    spec = load_deployment(
        write(
            tmp_path,
            """
            kind: Deployment
            spec:
              template:
                spec:
                  containers:
                    - name: app
                      readinessProbe: {tcpSocket: {port: 8080}}
                      lifecycle: {preStop: {sleep: {seconds: 7}}}
            """,
        )
    )
    assert (spec.replicas, spec.strategy, spec.max_surge, spec.max_unavailable) == (
        1, "rolling", "25%", "25%"
    )  # fmt: skip
    assert spec.grace == 30 and spec.min_ready_seconds == 0
    # a probe port with no declared container ports means the port the app listens on
    assert spec.readiness is not None and spec.readiness.action == TCPSocketAction(port="8080")
    assert spec.port_aliases == ("8080",) and spec.ports == ()
    assert (spec.readiness.period, spec.readiness.timeout) == (10, 1)
    assert (spec.readiness.success_threshold, spec.readiness.failure_threshold) == (1, 3)
    assert spec.prestop == SleepAction(7)


def test_recreate_and_multi_document(tmp_path: Path) -> None:
    text = """
    apiVersion: v1
    kind: Service
    metadata: {name: s}
    ---
    kind: Deployment
    spec:
      strategy: {type: Recreate}
      template: {spec: {containers: [{name: a, lifecycle: {preStop: {httpGet: {path: /drain}}}}]}}
    """
    spec = load_deployment(write(tmp_path, text))
    assert spec.strategy == "recreate"
    assert spec.prestop == HTTPGetAction("/drain")


def test_the_examples_parse() -> None:
    spec = load_deployment(REPO / "examples" / "deploy.yaml")
    assert spec.replicas == 3 and spec.max_surge == 1 and spec.max_unavailable == 0
    naive = load_deployment(REPO / "examples" / "deploy-naive.yaml")
    assert naive.prestop == SleepAction(3)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("kind: Service\nmetadata: {name: x}\n", "not a Deployment manifest (found kind Service)"),
        ("", "not a Deployment manifest (no Kubernetes object found)"),
        ("kind: Deployment\nspec: [\n", "not valid YAML"),
        ("kind: Deployment\nspec:\n  replicas: two\n", "spec.replicas"),
        (
            "kind: Deployment\nspec:\n  strategy: {rollingUpdate: {maxSurge: lots}}\n",
            "maxSurge",
        ),
        ("kind: Deployment\nspec:\n  strategy: {type: BlueGreen}\n", "BlueGreen"),
        ("kind: Deployment\nspec:\n  template: {spec: {}}\n", "containers"),
        ("kind: Deployment\nspec:\n  replicas: {{ .Values.replicas }}\n", "Helm template"),
        (
            "kind: Deployment\nspec:\n  template: {spec: {containers: [{readinessProbe: {grpcX: "
            "{port: 1}}}]}}\n",
            "readinessProbe: expected httpGet, tcpSocket, exec or grpc",
        ),
    ],
)
def test_bad_manifests_name_the_file(tmp_path: Path, text: str, needle: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(LosslessError) as info:
        load_deployment(path)
    message = str(info.value)
    assert message.startswith(str(path)), message
    assert needle in message
    assert "\n" not in message


def test_yaml_error_has_a_line(tmp_path: Path) -> None:
    path = write(tmp_path, "kind: Deployment\nspec:\n  replicas: 1\n  x: [1,\n")
    with pytest.raises(LosslessError, match=r"deploy\.yaml:\d+: not valid YAML"):
        load_deployment(path)


def test_missing_and_huge_files(tmp_path: Path) -> None:
    with pytest.raises(LosslessError, match="cannot read"):
        load_deployment(tmp_path / "nope.yaml")
    big = tmp_path / "big.yaml"
    with open(big, "wb") as f:
        f.truncate(6 * 1024 * 1024)
    with pytest.raises(LosslessError, match="too large"):
        load_deployment(big)
