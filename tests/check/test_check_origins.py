"""Findings in rendered output point back at the Helm template (``# Source:``) or the kustomize
origin file (``config.kubernetes.io/origin``), with the rendered position kept in JSON."""

from __future__ import annotations

import json

from tests.check.conftest import HERE, RunCli

ORIGINS = HERE / "origins"


def findings(stdout: str) -> dict[str, dict[str, object]]:
    return {f["code"]: f["location"] for f in json.loads(stdout)["findings"]}


def test_helm_source_maps_to_template_line(cli: RunCli) -> None:
    result = cli("rendered.yaml", "--format", "json", cwd=ORIGINS / "helm")
    located = findings(result.stdout)
    # The container has no preStop: its '- name: {{ .Chart.Name }}' line in the template.
    assert located["LL201"]["path"] == "web/templates/deployment.yaml"
    assert (located["LL201"]["line"], located["LL201"]["column"]) == (18, 11)
    rendered = located["LL201"]["rendered"]
    assert isinstance(rendered, dict)
    assert (rendered["path"], rendered["line"], rendered["column"]) == ("rendered.yaml", 36, 11)
    # No PDB: the Deployment's metadata name, line 4 of the template.
    assert (located["LL501"]["path"], located["LL501"]["line"]) == (
        "web/templates/deployment.yaml",
        4,
    )


def test_helm_output_from_stdin(cli: RunCli) -> None:
    rendered = (ORIGINS / "helm" / "rendered.yaml").read_text(encoding="utf-8")
    result = cli("-", cwd=ORIGINS / "helm", stdin=rendered)
    assert "web/templates/deployment.yaml:18:11: LL201 " in result.stdout
    assert result.returncode == 1


def test_helm_template_missing_on_disk_uses_document_line(cli: RunCli) -> None:
    rendered = (ORIGINS / "helm" / "rendered.yaml").read_text(encoding="utf-8")
    result = cli("-", "--format", "json", cwd=HERE, stdin=rendered)
    located = findings(result.stdout)
    # Counted from the line after "# Source:" (rendered line 36, the comment on line 15).
    assert located["LL201"]["path"] == "web/templates/deployment.yaml"
    assert located["LL201"]["line"] == 21


def test_kustomize_origin_maps_to_base_file(cli: RunCli) -> None:
    result = cli("built.yaml", cwd=ORIGINS / "kustomize")
    lines = result.stdout.splitlines()
    assert "base/deployment.yaml:16:11: LL101 " in "\n".join(lines)
    assert "base/deployment.yaml:4:3: LL501 " in "\n".join(lines)


def test_source_root_option(cli: RunCli) -> None:
    result = cli(
        "origins/helm/rendered.yaml", "--source-root", "origins/helm", "--select", "LL201", cwd=HERE
    )
    assert result.stdout.startswith("origins/helm/web/templates/deployment.yaml:18:11: LL201")


def test_two_releases_in_one_stream_are_not_joined(cli: RunCli) -> None:
    """`helm template a ./web; helm template b ./web`: release b's Service must not select
    release a's pods (no namespace on either, one stream), though its selector would."""
    rendered = (ORIGINS / "helm" / "rendered.yaml").read_text(encoding="utf-8")
    other = (
        "---\n# Source: web/templates/service.yaml\napiVersion: v1\nkind: Service\n"
        "metadata:\n  name: other-web\n  labels:\n    app.kubernetes.io/instance: other\n"
        "spec:\n  selector:\n    app.kubernetes.io/name: web\n"
        "  ports:\n    - port: 80\n      targetPort: http\n"
    )
    result = cli("-", "--select", "LL601", cwd=ORIGINS / "helm", stdin=rendered + other)
    assert "LL601 Service/other-web selector" in result.stdout, result.stdout
    alone = cli("-", "--select", "LL601", cwd=ORIGINS / "helm", stdin=rendered)
    assert alone.returncode == 0, alone.stdout
