"""Cells of the run directory's text formats, parsed and written one way: ``records.csv``
(:mod:`lossless.verify.results`), ``streams.csv`` (:mod:`lossless.verify.stream_records`) and
HAProxy's access log (:mod:`lossless.verify.haproxy.log`). Pure functions; a cell that does not
fit raises ``ValueError`` (the readers turn it into a ``FILE:LINE`` error)."""

from __future__ import annotations

__all__ = ["absent_int", "opt_float", "time_cell", "unsigned_int"]


def time_cell(value: float | None) -> str:
    """A time in seconds as a cell: six decimals (microseconds), ``""`` for None."""
    return "" if value is None else f"{value:.6f}"


def opt_float(cell: str) -> float | None:
    """The float of a cell written by :func:`time_cell`: None for ``""``."""
    return None if cell == "" else float(cell)


def absent_int(cell: str) -> int:
    """An integer cell where ``-`` or ``""`` means "not reached" (HAProxy prints ``-`` for an
    empty sample and -1 for a timer never reached): -1 for those."""
    return -1 if cell in ("-", "") else int(cell)


def unsigned_int(cell: str) -> int:
    """As :func:`absent_int`, with every negative value (absent included) as 0: ports and
    error codes, where "none" is 0."""
    return max(0, absent_int(cell))
