"""Fixtures: ``spawn`` (processes stopped at teardown), from tests/supervise/_proc.py."""

from tests.supervise._proc import spawn

__all__ = ["spawn"]
