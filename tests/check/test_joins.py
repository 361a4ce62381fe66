"""Joins stay linear: N copies of an app in N namespaces are joined copy by copy, each Service,
PDB and HPA looking only at the objects it may be related to (issue 14, speed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lossless.check.config import Config
from lossless.check.engine import Context, build_context

APP = """\
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {ns}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web, tier: front}}}}
    spec:
      containers: [{{name: web, image: web:1, ports: [{{containerPort: 8080}}]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: {ns}}}
spec:
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080}}]
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {{name: web, namespace: {ns}}}
spec:
  maxUnavailable: 1
  selector: {{matchLabels: {{app: web}}}}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {{name: web, namespace: {ns}}}
spec:
  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: web}}
  minReplicas: 3
  maxReplicas: 5
"""


def test_joins_look_only_at_related_objects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copies = 40
    for i in range(copies):
        (tmp_path / f"app-{i}.yaml").write_text(APP.format(ns=f"ns-{i}"), encoding="utf-8")
    calls = 0
    related = Context.related

    def counting(self: Context, a: object, b: object) -> bool:
        nonlocal calls
        calls += 1
        return related(self, a, b)  # type: ignore[arg-type]

    monkeypatch.setattr(Context, "related", counting)
    context, errors, _, _ = build_context([str(tmp_path)], Config(), jobs=1)
    assert not errors
    for workload in context.workloads:
        [service] = context.services_for(workload)
        [pdb] = context.pdbs_for(workload)
        hpa = context.hpa_for(workload)
        assert service.namespace == pdb.namespace == workload.namespace
        assert hpa is not None and hpa.namespace == workload.namespace
        assert context.min_replicas(workload) == 3
    # One candidate per Service, PDB and HPA: linear (a scan by label alone makes copies² calls).
    assert calls <= 3 * copies, calls
