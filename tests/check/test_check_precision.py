"""The precision corpus: manifests from public projects, every expected finding labelled.

``precision/`` holds manifests assembled from published ones (ingress-nginx, istio's bookinfo,
Google's microservices-demo, podinfo's kustomization, CockroachDB, the Kubernetes docs) and the
structure of docker-library entrypoints; ``precision/README.md`` names each source and license.
``precision/labels.txt`` lists every finding a correct checker reports there (FILE:LINE: CODE),
each reviewed by hand. The test fails on any finding not labelled (a false positive, or a finding
at the wrong line) and on any label not found (a miss). Checked in one run, so it also proves that
objects from unrelated directories are not joined.
"""

from __future__ import annotations

import json
import shutil

import pytest
from tests.check.conftest import HERE, RunCli

PRECISION = HERE / "precision"


def labels() -> set[tuple[str, int, str]]:
    found = set()
    for raw in (PRECISION / "labels.txt").read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            path, number, code = line.split(":")
            found.add((path, int(number), code.strip()))
    return found


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl renders podinfo/kustomize")
def test_every_labelled_finding_and_nothing_else(cli: RunCli) -> None:
    result = cli("precision", "--format", "json", cwd=HERE)
    assert result.stderr == "", result.stderr
    data = json.loads(result.stdout)
    got = {
        (f["location"]["path"].removeprefix("precision/"), f["location"]["line"], f["code"])
        for f in data["findings"]
        if not f["suppressed"]
    }
    expected = labels()
    assert sorted(got - expected) == [], "unexpected findings (false positives or wrong lines)"
    assert sorted(expected - got) == [], "labelled findings not reported"
    assert result.returncode == 1


def test_labels_name_existing_lines() -> None:
    for path, line, code in labels():
        lines = (PRECISION / path).read_text(encoding="utf-8").splitlines()
        assert 1 <= line <= len(lines), (path, line, code)
