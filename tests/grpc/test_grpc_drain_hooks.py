"""gRPC: an ``on_drain`` hook longer than D is awaited before the server exits."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.grpc.test_grpc import APP, MODES, Client
from tests.supervise._proc import Proc


@pytest.mark.parametrize("mode", MODES)
def test_drain_hook_is_awaited_before_exit(
    spawn: Callable[..., Proc], mode: str, tmp_path: Path
) -> None:
    """1. a 0.5 s on_drain hook, D = 0 2. SIGTERM. Result: the hook's file exists once the
    server has exited 0, and its end is logged."""
    marker = tmp_path / "flushed"
    port = free_port()
    env = {"LOSSLESS_DRAIN_DELAY": "0", "APP_DRAIN_HOOK_FILE": str(marker)}
    proc = spawn([sys.executable, APP, mode, str(port)], env=env)
    client = Client(port)
    try:
        client.wait_serving()
        proc.signal()
        assert proc.wait_exit(15) == 0, proc.stderr()
    finally:
        client.channel.close()
    assert marker.read_text() == "flushed\n"
    assert "drain_hook_done" in proc.stderr()
