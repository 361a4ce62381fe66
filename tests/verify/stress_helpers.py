"""Helpers of the issue-16 tests (restarts, probes, sidecars, upgrades, faults): the stress
replica and proxy scripts, and bounded waits on a lab's timeline."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from lossless.verify.model import Event, EventKind
from tests.verify.conftest import PYTHON, REPO

STRESS_SERVER = REPO / "tests" / "verify" / "stress_apps" / "server.py"
PROXY = REPO / "tests" / "verify" / "stress_apps" / "proxy.py"
STRESS_CMD = f"{PYTHON} {STRESS_SERVER}"
PROXY_CMD = f"{PYTHON} {PROXY}"


async def wait_event(
    events: list[Event],
    kind: EventKind,
    replica: str = "",
    *,
    after: float = -1.0,
    timeout: float = 20.0,
) -> Event:
    """The first ``kind`` event of ``replica`` later than ``after``, polled (bounded)."""
    async with asyncio.timeout(timeout):
        while True:
            for e in events:
                if e.kind is kind and e.t > after and (not replica or e.replica == replica):
                    return e
            await asyncio.sleep(0.02)


def timeline(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "timeline.jsonl").read_text().splitlines()]


def kinds(out: Path, kind: str) -> list[dict[str, Any]]:
    return [e for e in timeline(out) if e["kind"] == kind]
