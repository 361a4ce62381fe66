"""The shared argparse converters and the duration-flag helper (lossless/argtypes.py): every
duration flag is declared one way and a bad value is one line naming the flag, exit 2."""

from __future__ import annotations

import argparse

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
