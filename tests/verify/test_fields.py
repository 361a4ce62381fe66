"""The shared cell parsers of the run directory's formats (verify/fields.py)."""

from __future__ import annotations

import pytest

from lossless.verify.fields import absent_int, opt_float, time_cell, unsigned_int


def test_time_cells_round_trip_to_the_microsecond() -> None:
    assert time_cell(None) == ""
    assert opt_float(time_cell(None)) is None
    assert time_cell(1.23456789) == "1.234568"
    assert opt_float(time_cell(1.23456789)) == pytest.approx(1.234568, abs=1e-9)


def test_absent_and_unsigned_ints() -> None:
    assert absent_int("-") == -1 and absent_int("") == -1 and absent_int("42") == 42
    assert absent_int("-1") == -1
    assert unsigned_int("-") == 0 and unsigned_int("-1") == 0 and unsigned_int("7") == 7
    with pytest.raises(ValueError):
        absent_int("x")
    with pytest.raises(ValueError):
        opt_float("nan?")
