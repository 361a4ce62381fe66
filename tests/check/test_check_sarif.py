"""SARIF output validates against the SARIF 2.1.0 JSON schema (tests/check/data, transcribed from
the OASIS sarif-spec repository) and carries rules, help, regions and suppressions."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from tests.check.conftest import DATA, HERE, ROOT, RunCli


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft4Validator:
    schema = json.loads((DATA / "sarif-schema-2.1.0.json").read_text(encoding="utf-8"))
    jsonschema.Draft4Validator.check_schema(schema)
    return jsonschema.Draft4Validator(schema, format_checker=jsonschema.FormatChecker())


def sarif(cli: RunCli, *args: str, cwd: Any = ROOT) -> dict[str, Any]:
    result = cli(*args, "--format", "sarif", cwd=cwd)
    assert result.returncode in (0, 1, 2), result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_corpus_sarif_is_valid(cli: RunCli, validator: jsonschema.Draft4Validator) -> None:
    log = sarif(cli, "shop", cwd=HERE / "corpus")
    errors = sorted(validator.iter_errors(log), key=str)
    assert not errors, errors[0]
    run = log["runs"][0]
    rules = run["tool"]["driver"]["rules"]
    assert {r["id"] for r in rules} >= {"LL101", "LL201", "LL303", "LL402", "LL602"}
    assert all(r["help"]["markdown"] and r["shortDescription"]["text"] for r in rules)
    results = run["results"]
    assert results
    for result in results:
        assert rules[result["ruleIndex"]]["id"] == result["ruleId"]
        region = result["locations"][0]["physicalLocation"]["region"]
        assert region["startLine"] >= 1 and region["startColumn"] >= 1
    suppressed = [r for r in results if "suppressions" in r]
    assert {r["ruleId"] for r in suppressed} == {"LL201", "LL403"}
    assert suppressed[0]["suppressions"][0]["kind"] == "inSource"
    assert suppressed[0]["suppressions"][0]["justification"]


def test_helm_sarif_has_related_rendered_location(
    cli: RunCli, validator: jsonschema.Draft4Validator
) -> None:
    log = sarif(cli, "rendered.yaml", cwd=HERE / "origins" / "helm")
    assert not list(validator.iter_errors(log))
    result = next(r for r in log["runs"][0]["results"] if r["ruleId"] == "LL201")
    location = result["locations"][0]["physicalLocation"]
    assert location["artifactLocation"]["uri"] == "web/templates/deployment.yaml"
    related = result["relatedLocations"][0]["physicalLocation"]
    assert related["artifactLocation"]["uri"] == "rendered.yaml"


def test_input_errors_are_notifications(
    cli: RunCli, validator: jsonschema.Draft4Validator, tmp_path: Any
) -> None:
    (tmp_path / "bad.yaml").write_text("a: [1, 2\n")
    log = sarif(cli, str(tmp_path / "bad.yaml"), cwd=tmp_path)
    assert not list(validator.iter_errors(log))
    invocation = log["runs"][0]["invocations"][0]
    assert invocation["executionSuccessful"] is False
    assert invocation["toolExecutionNotifications"][0]["level"] == "error"


def test_schema_rejects_a_broken_log(validator: jsonschema.Draft4Validator) -> None:
    assert list(validator.iter_errors({"version": "2.1.0", "runs": [{"results": []}]}))
