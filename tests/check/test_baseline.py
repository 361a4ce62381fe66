"""``--baseline`` / ``--write-baseline``: adopting the check on a repository with findings."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.check.conftest import ROOT, RunCli

NEW_WORKLOAD = """\
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: api}
spec:
  replicas: 3
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec:
      containers:
        - name: api
          image: api:1
          ports: [{containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: api}
spec:
  selector: {app: api}
  ports: [{port: 80, targetPort: 8080}]
"""


def naive(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "examples" / "k8s" / "naive", tmp_path / "naive")
    return tmp_path / "naive"


def test_only_new_findings_fail(cli: RunCli, tmp_path: Path) -> None:
    naive(tmp_path)
    written = cli("naive", "--write-baseline", "base.json", cwd=tmp_path)
    assert written.returncode == 0, written.stderr
    assert written.stderr == "lossless check: wrote 8 findings to base.json\n"
    entries = json.loads((tmp_path / "base.json").read_text())["findings"]
    assert len(entries) == 8 and {"LL201", "LL303"} <= {e["code"] for e in entries}

    clean = cli("naive", "--baseline", "base.json", cwd=tmp_path)
    assert clean.returncode == 0, clean.stdout
    assert clean.stdout == "All checks passed (2 files, 2 objects); 8 suppressed.\n"

    # Lines added above every finding: the baseline still matches (no line numbers in it).
    app = tmp_path / "naive" / "app.yaml"
    app.write_text("# moved\n# down\n" + app.read_text())
    script = tmp_path / "naive" / "web" / "docker-entrypoint.sh"
    lines = script.read_text().splitlines(keepends=True)
    script.write_text(lines[0] + "# a comment\n" + "".join(lines[1:]))
    shifted = cli("naive", "--baseline", "base.json", cwd=tmp_path)
    assert shifted.returncode == 0, shifted.stdout

    # A new workload with its own findings fails, and only its findings are listed.
    app.write_text(app.read_text() + NEW_WORKLOAD)
    new = cli("naive", "--baseline", "base.json", cwd=tmp_path)
    assert new.returncode == 1
    listed = new.stdout.splitlines()[:-1]
    assert listed and all("Deployment/api" in line for line in listed), new.stdout


def test_fixed_findings_are_noted(cli: RunCli, tmp_path: Path) -> None:
    directory = naive(tmp_path)
    assert cli("naive", "--write-baseline", "base.json", cwd=tmp_path).returncode == 0
    shutil.rmtree(directory / "web")
    result = cli("naive", "--baseline", "base.json", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stderr == (
        "lossless check: note: 2 findings in baseline base.json no longer occur: "
        "rewrite it with --write-baseline base.json\n"
    )


def test_sarif_marks_baselined_findings(cli: RunCli, tmp_path: Path) -> None:
    naive(tmp_path)
    assert cli("naive", "--write-baseline", "base.json", cwd=tmp_path).returncode == 0
    result = cli("naive", "--baseline", "base.json", "--format", "sarif", cwd=tmp_path)
    [run] = json.loads(result.stdout)["runs"]
    assert len(run["results"]) == 8
    for item in run["results"]:
        assert item["suppressions"] == [
            {"kind": "external", "justification": "in baseline base.json"}
        ]
        assert len(item["partialFingerprints"]["losslessFinding/v1"]) == 20


def test_bad_baselines_are_one_line_errors(cli: RunCli, tmp_path: Path) -> None:
    naive(tmp_path)
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "other.json").write_text('{"version": 9}')
    cases = {
        "missing.json": "baseline missing.json not found (create it with --write-baseline "
        "missing.json)",
        "bad.json": "baseline bad.json is not JSON: ",
        "other.json": "baseline other.json is not a lossless check baseline (version 1)",
    }
    for name, message in cases.items():
        result = cli("naive", "--baseline", name, cwd=tmp_path)
        assert result.returncode == 2
        [line] = result.stderr.splitlines()
        assert line.startswith(f"lossless check: error: {message}"), line
        assert result.stdout == ""


def test_no_baseline_of_a_partial_check(cli: RunCli, tmp_path: Path) -> None:
    naive(tmp_path)
    (tmp_path / "naive" / "broken.yaml").write_text("a: [\n")
    result = cli("naive", "--write-baseline", "base.json", cwd=tmp_path)
    assert result.returncode == 2
    assert not (tmp_path / "base.json").exists()
    assert result.stderr.splitlines()[-1] == (
        "lossless check: error: baseline base.json not written: fix the input errors first"
    )


def test_ci_definitions_use_real_options() -> None:
    """The pre-commit hook and the GitHub Actions example parse with today's command line."""
    import shlex

    import yaml

    from lossless.cli import build_parser

    [hook] = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    assert hook["pass_filenames"] is False and hook["require_serial"] is True
    argv = [*shlex.split(hook["entry"]), *hook["args"]]
    assert build_parser().parse_args(argv[1:]).command == "check"
    workflow = yaml.safe_load((ROOT / "examples" / "ci" / "github-actions.yml").read_text())
    steps = workflow["jobs"]["check"]["steps"]
    [command] = [s["run"] for s in steps if s.get("name") == "lossless check"]
    args = build_parser().parse_args(shlex.split(command)[1:])
    assert (args.format, args.baseline, args.output) == (
        "sarif",
        ".lossless-baseline.json",
        "lossless.sarif",
    )
    [upload] = [s for s in steps if "upload-sarif" in s.get("uses", "")]
    assert upload["with"]["sarif_file"] == args.output and "always()" in upload["if"]
