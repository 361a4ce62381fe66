"""The shared argparse converters and the duration-flag helper (lossless/argtypes.py): every
duration flag is declared one way and a bad value is one line naming the flag, exit 2."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from lossless import argtypes


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lossless x", exit_on_error=True)
    g = p.add_argument_group("g")
    argtypes.add_duration(g, "--wait", help="how long", default=3.0)
    argtypes.add_duration(g, "--before", "--duration-before", dest="before", help="b")
    argtypes.add_duration(p, "--signed", help="s", parse=argtypes.duration)
    argtypes.add_duration(p, "--positive", help="p", parse=argtypes.positive_duration)
    p.add_argument("--rate", type=argtypes.positive_float("requests/s"))
    p.add_argument("--share", type=argtypes.ratio)
    return p


def test_durations_parse_with_units_defaults_and_dest() -> None:
    args = _parser().parse_args(["--duration-before", "500ms", "--signed", "-1", "--share", "10%"])
    assert (args.wait, args.before, args.signed, args.positive) == (3.0, 0.5, -1.0, None)
    assert args.share == pytest.approx(0.1)
    assert "SECONDS" in _parser().format_help()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--wait", "-1"], "argument --wait: must be a finite duration >= 0: '-1'"),
        (["--wait", "soon"], "argument --wait: not a duration: 'soon'"),
        (["--positive", "0"], "argument --positive: must be a positive duration: '0'"),
        (["--rate", "0"], "argument --rate: must be a number of requests/s > 0: '0'"),
        (["--rate", "inf"], "argument --rate: must be a number of requests/s > 0: 'inf'"),
        (["--share", "2"], "argument --share: must be within 0..1 (or 0%..100%): '2'"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_flag(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        _parser().parse_args(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"lossless x: error: {message}"
    assert "Traceback" not in "\n".join(err)


def _every_action() -> list[tuple[str, argparse.Action]]:
    from lossless.cli import build_parser

    found = []
    root = build_parser()
    for group in root._subparsers._group_actions:  # type: ignore[union-attr]
        for name, sub in group.choices.items():  # type: ignore[union-attr]
            found += [(name, a) for a in sub._actions]
    return found


def test_no_flag_of_any_subcommand_takes_a_bare_float() -> None:
    """``type=float`` takes ``nan``, ``inf`` and negatives without a word (and ``nan`` later
    became a traceback in ``check --max-file-size`` and ``serve --keep-alive``): every number
    flag goes through a converter of this module."""
    bare = [
        f"{name} {'/'.join(a.option_strings)}" for name, a in _every_action() if a.type is float
    ]
    assert not bare


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["check", "--max-file-size", "nan", "x"], "--max-file-size: must be a number of MiB > 0"),
        (["check", "--max-file-size", "0", "x"], "--max-file-size: must be a number of MiB > 0"),
        (["serve", "m:app", "--keep-alive", "nan"], "--keep-alive: must be a finite duration"),
        (["serve", "m:app", "--keep-alive", "-3"], "--keep-alive: must be a finite duration >= 0"),
    ],
)
def test_number_flags_refuse_nan_and_negatives_in_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from lossless.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_demo_refuses_a_bad_rate_before_any_run(capsys: pytest.CaptureFixture[str]) -> None:
    from lossless.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["demo", "--rate", "nan"])
    assert exc.value.code == 2
    out = capsys.readouterr()
    assert "run 1/3" not in out.out and "--rate: must be a number of requests/s > 0" in out.err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--port", "-1"], "argument --port: must be a TCP port 0..65535, got -1"),
        (["--port", "70000"], "argument --port: must be a TCP port 0..65535, got 70000"),
        (["--backlog", "-5"], "argument --backlog: must be >= 1, got -5"),
        (["--workers", "0"], "argument --workers: must be >= 1, got 0"),
        (["--limit-concurrency", "0"], "argument --limit-concurrency: must be >= 1, got 0"),
        (["--timeout", "-3"], "argument --timeout: must be >= 0, got -3"),
        (["--timeout", "3"], "--timeout is a master's option"),
        (["--preload"], "--preload is a master's option"),
        (["--threads", "3"], "--threads is for WSGI apps (--wsgi)"),
    ],
)
def test_serve_refuses_bad_numbers_and_options_it_would_ignore(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """One uvicorn process has no master (no worker timeout, nothing to preload into) and
    uvicorn no threads: such options were silently ignored; a port out of range was a
    traceback. Each is one line naming the option, exit 2, before anything is imported."""
    from lossless.cli import main

    (tmp_path / "quiet_app.py").write_text("async def app(scope, receive, send):\n    pass\n")
    code: object
    try:
        code = main(["serve", "quiet_app:app", "--app-dir", str(tmp_path), *argv])
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["demo", "--replicas", "0"], "argument --replicas: must be >= 1, got 0"),
        (["verify", "--cmd", "true", "--base-port", "-1"], "argument --base-port: must be a TCP"),
    ],
)
def test_lab_commands_refuse_bad_numbers_before_any_run(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Refused while parsing: no run starts and no results directory is made."""
    from lossless.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    out = capsys.readouterr()
    assert not out.out and message in out.err and "results so far" not in out.err
