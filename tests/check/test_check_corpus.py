"""A realistic multi-service tree (Deployments, StatefulSet, CronJob, Services, PDBs, HPA, Ingress,
a custom resource, Dockerfiles, an entrypoint script) checked end to end against expected.txt.

To update after an intended change: ``cd tests/check/corpus && python -m lossless check shop
--show-suppressed > expected.txt``, then review the diff.
"""

from __future__ import annotations

from tests.check.conftest import HERE, RunCli

CORPUS = HERE / "corpus"


def test_corpus_matches_expected(cli: RunCli) -> None:
    result = cli("shop", "--show-suppressed", cwd=CORPUS)
    expected = (CORPUS / "expected.txt").read_text(encoding="utf-8")
    assert result.stdout == expected
    assert result.returncode == 1
    assert result.stderr == ""


def test_corpus_covers_every_family(cli: RunCli) -> None:
    text = (CORPUS / "expected.txt").read_text(encoding="utf-8")
    for prefix in ("LL1", "LL2", "LL3", "LL4", "LL5", "LL6", "LL9"):
        assert f" {prefix}" in text, prefix


def test_corpus_clean_service_has_no_finding() -> None:
    text = (CORPUS / "expected.txt").read_text(encoding="utf-8")
    assert "frontend.yaml" not in text
    assert "docker/frontend" not in text
