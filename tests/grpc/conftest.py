from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import pytest

from tests.supervise._proc import Proc


@pytest.fixture
def spawn() -> Iterator[Callable[..., Proc]]:
    """Start processes that are always stopped (with their child groups) at teardown."""
    started: list[Proc] = []

    def start(argv: Sequence[str], env: dict[str, str] | None = None) -> Proc:
        proc = Proc(argv, env)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()
