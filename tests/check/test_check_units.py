"""Units: shell final-command analysis, Dockerfile parsing, YAML loading limits, docs in sync."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.check.conftest import ROOT

from lossless.check import docs
from lossless.check.dockerfile import base_lacks_sleep, image_repository, parse
from lossless.check.rules.rollout import int_or_percent
from lossless.check.rules.shutdown import exec_sleep_seconds, parse_seconds
from lossless.check.shell import analyze, final_command
from lossless.check.yaml_source import Source, load_documents


@pytest.mark.parametrize(
    ("script", "inline", "ok"),
    [
        ("exec gunicorn app", False, True),
        ('set -e\nmigrate\nexec "$@"\n', False, True),
        ('set -e\nmigrate\n"$@"\n', False, False),
        ("gunicorn app", True, True),  # sh -c with one command: the shell execs it
        ("gunicorn app", False, False),  # a script file: no such optimisation
        ("migrate && gunicorn app", True, False),
        ("migrate && exec gunicorn app", True, True),
        ("server | tee log", True, False),
        ("server &", True, False),
        ("exec >/var/log/app 2>&1\nserver", False, False),
        ("trap 'kill $pid' TERM\nserver & pid=$!\nwait $pid", False, True),
        ('if [ -n "$X" ]; then\n  exec a\nelse\n  exec b\nfi\n', False, True),
        ('case "$1" in\n  web) exec gunicorn ;;\n  *) exec "$@" ;;\nesac\n', False, True),
        ("server\nexit $?\n", False, False),
        ("exec server  # comment; with separator\n", False, True),
        ("start \\\n  --flag\n", False, False),
        # docker-library: the work is in a function that execs, called at the end.
        (
            '_main() {\n\tmigrate\n\texec "$@"\n}\nif ! _is_sourced; then\n\t_main "$@"\nfi\n',
            False,
            True,
        ),
        ('function main {\n  exec server\n}\nmain "$@"\n', False, True),
        ("main()\n{\n  exec server\n}\nmain\n", False, True),
        ('main() {\n  server\n}\nmain "$@"\n', False, False),
        ("main() {\n  if [ -x a ]; then { prep; }; fi\n  exec server\n}\nmain\n", False, True),
        # A polling loop is the program; a loop that restarts a server is not.
        ("while true; do\n  sync\n  sleep 30\ndone\n", False, True),
        ("i=0; while true; do echo $i; sleep 1; done", True, True),
        ("while true; do\n  server\ndone\n", False, False),
        ("until server; do echo retry; done\n", False, False),
    ],
)
def test_shell_analysis(script: str, inline: bool, ok: bool) -> None:
    assert analyze(script, inline=inline).ok is ok, final_command(script)


def test_function_call_points_into_the_function() -> None:
    command = final_command('#!/bin/sh\nmain() {\n  migrate\n  "$@"\n}\nmain "$@"\n')
    assert command is not None
    assert (command.line, command.text, command.function) == (4, '"$@"', "main")


def test_loop_advice_is_not_exec() -> None:
    verdict = analyze("while true; do\n  server\ndone\n", inline=False)
    assert not verdict.ok
    assert "exec would end the loop" in verdict.advice


def test_final_command_line_number() -> None:
    command = final_command("#!/bin/sh\n# comment\nset -e\n\nserver --port 80\n")
    assert command is not None
    assert (command.line, command.text) == (5, "server --port 80")


def test_dockerfile_stages_and_continuations() -> None:
    dockerfile = parse(
        "Dockerfile",
        "# syntax=docker/dockerfile:1\nFROM golang:1.22 AS build\nRUN go build \\\n"
        "    -o /app .\nFROM build AS test\nRUN go test\n"
        "FROM gcr.io/distroless/static:nonroot\nCOPY --from=build /app /app\n"
        'ENTRYPOINT ["/app"]\n',
    )
    assert [s.base for s in dockerfile.stages] == [
        "golang:1.22",
        "build",
        "gcr.io/distroless/static:nonroot",
    ]
    assert dockerfile.final_base() == "gcr.io/distroless/static:nonroot"
    entrypoint = dockerfile.last("ENTRYPOINT")
    assert entrypoint is not None and entrypoint.exec_form == ["/app"] and entrypoint.line == 9


def test_cmd_inherited_is_reset_by_entrypoint() -> None:
    dockerfile = parse("Dockerfile", 'FROM a AS base\nCMD ["x"]\nFROM base\nENTRYPOINT ["y"]\n')
    assert dockerfile.last("CMD") is None


@pytest.mark.parametrize(
    ("image", "lacks"),
    [
        ("scratch", True),
        ("gcr.io/distroless/static-debian12", True),
        ("gcr.io/distroless/python3-debian12:nonroot", True),
        ("gcr.io/distroless/base:debug", False),
        ("cgr.dev/chainguard/static:latest", True),
        ("cgr.dev/chainguard/python:latest-dev", False),
        ("python:3.12-slim", False),
        ("ubuntu/python:3.12-24.04_stable_chiseled", True),
        ("mcr.microsoft.com/dotnet/aspnet:8.0-jammy-chiseled", True),
        ("mcr.microsoft.com/dotnet/runtime-deps:8.0-azurelinux3.0-distroless", True),
        ("ubuntu/chiselled-jre:8_edge", True),
        ("ubuntu:24.04", False),
    ],
)
def test_base_lacks_sleep(image: str, lacks: bool) -> None:
    assert base_lacks_sleep(image) is lacks


def test_image_repository() -> None:
    assert image_repository("ghcr.io/acme/orders:1.2") == "ghcr.io/acme/orders"
    assert image_repository("localhost:5000/orders") == "localhost:5000/orders"
    assert image_repository("orders@sha256:abc") == "orders"


def test_rollout_rounding() -> None:
    assert int_or_percent("25%", 3, round_up=True) == 1
    assert int_or_percent("25%", 3, round_up=False) == 0
    assert int_or_percent(2, 3, round_up=False) == 2
    assert int_or_percent("x", 3, round_up=False) is None


def test_sleep_parsing() -> None:
    assert exec_sleep_seconds(("sleep", "5")) == 5
    assert exec_sleep_seconds(("/bin/sh", "-c", "sleep 3 && nginx -s quit && sleep 2")) == 5
    assert exec_sleep_seconds(("lossless", "prestop", "--sleep=7")) == 7
    assert exec_sleep_seconds(("nginx", "-s", "quit")) is None
    assert parse_seconds("500ms") == 0.5 and parse_seconds("1m") == 60


def test_duplicate_keys_keep_last_value() -> None:
    docs_, errors = load_documents(Source("x.yaml", "a: 1\nb: 2\na: 3\n"))
    assert errors == []
    [document] = docs_
    assert document.data["a"] == 3
    [dup] = document.duplicates
    assert (dup.key, dup.line, dup.first_line) == ("a", 2, 0)


def test_documents_after_an_error_are_lost_but_before_kept() -> None:
    text = "apiVersion: v1\nkind: ConfigMap\n---\na: [\n"
    documents, errors = load_documents(Source("x.yaml", text))
    assert len(documents) == 1
    assert errors[0].line == 5


def test_rule_docs_are_in_sync() -> None:
    stale = [
        path
        for path, content in docs.expected_files(ROOT).items()
        if not path.is_file() or path.read_text(encoding="utf-8") != content
    ]
    assert not stale, "run: python -m lossless.check.docs"


def test_examples(monkeypatch: pytest.MonkeyPatch) -> None:
    from lossless.check import Config, run_check

    monkeypatch.chdir(ROOT)
    naive = run_check(["examples/k8s/naive"], Config())
    assert {f.code for f in naive.active} >= {"LL101", "LL201", "LL301", "LL302", "LL303"}
    assert run_check(["examples/k8s/lossless"], Config()).findings == []
    assert Path(ROOT / "examples" / "k8s" / "lossless" / "app.yaml").is_file()
