"""Every workload kind gets the rules that apply to it (issue 14, item 3).

The same bare pod (no probes, no preStop) behind a Service, wrapped in each kind: long-running
kinds get the serving rules; those with a replica count also the replica rules (3 replicas: a
PDB and spreading are due); DaemonSets and bare Pods have no replica count; Jobs and CronJobs
run to completion and get none.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lossless.check import Config, run_check

POD_SPEC = """\
      containers:
        - name: web
          image: ghcr.io/acme/web:1
          ports: [{name: http, containerPort: 8080}]
"""
SERVICE = """\
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: http}]
"""


def indent(text: str, spaces: int) -> str:
    return "".join(" " * spaces + line + "\n" for line in text.splitlines())


def template(spaces: int) -> str:
    body = "metadata:\n  labels: {app: web}\nspec:\n" + "".join(
        line[4:] + "\n" for line in POD_SPEC.splitlines()
    )
    return indent(body, spaces)


def manifest(kind: str) -> str:
    if kind == "Pod":
        return (
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  labels: {app: web}\nspec:\n"
            + "".join(line[4:] + "\n" for line in POD_SPEC.splitlines())
        )
    api = {"Job": "batch/v1", "CronJob": "batch/v1", "ReplicationController": "v1"}.get(
        kind, "apps/v1"
    )
    head = f"apiVersion: {api}\nkind: {kind}\nmetadata: {{name: web}}\nspec:\n"
    if kind == "CronJob":
        return (
            head
            + '  schedule: "*/5 * * * *"\n  jobTemplate:\n    spec:\n      template:\n'
            + template(8)
        )
    if kind == "Job":
        return head + "  template:\n" + template(4)
    replicas = "" if kind == "DaemonSet" else "  replicas: 3\n"
    selector = (
        "  selector: {app: web}\n"
        if kind == "ReplicationController"
        else "  selector: {matchLabels: {app: web}}\n"
    )
    return head + replicas + selector + "  template:\n" + template(4)


SERVING = {"LL101", "LL201"}
REPLICATED = SERVING | {"LL501", "LL504"}
EXPECTED = {
    "Deployment": REPLICATED,
    "StatefulSet": REPLICATED,
    "ReplicaSet": REPLICATED,
    "ReplicationController": REPLICATED,
    "DaemonSet": SERVING,
    "Pod": SERVING,
    "Job": set(),
    "CronJob": set(),
}


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_kind_gets_the_rules_that_apply(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "app.yaml"
    path.write_text(manifest(kind) + SERVICE, encoding="utf-8")
    report = run_check([str(path)], Config())
    assert report.errors == []
    assert report.objects == 2
    assert {f.code for f in report.active} == EXPECTED[kind]
