"""Shared helpers for the ``lossless check`` tests.

``run_cli`` runs the real command line in a subprocess (``python -m lossless check``), with
``src`` on ``PYTHONPATH`` so the tests do not depend on the package being installed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
HERE = Path(__file__).resolve().parent
FIXTURES = HERE / "fixtures"
DATA = HERE / "data"

if str(SRC) not in sys.path:  # the package may not be installed in the venv
    sys.path.insert(0, str(SRC))

# The real command line, through the dispatcher. LOSSLESS_CHECK_ENTRY=lossless.check runs the
# check command alone (same parser and exit codes), for when another subcommand is mid-change.
ENTRY = os.environ.get("LOSSLESS_CHECK_ENTRY", "lossless check").split()

RunCli = Callable[..., subprocess.CompletedProcess[str]]


def run_cli(
    *args: str | os.PathLike[str],
    cwd: Path | None = None,
    stdin: str | bytes | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    data = stdin.encode() if isinstance(stdin, str) else stdin
    proc = subprocess.run(
        [sys.executable, "-m", *ENTRY, *map(str, args)],
        cwd=cwd or ROOT,
        env=env,
        input=data,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    return subprocess.CompletedProcess(
        proc.args,
        proc.returncode,
        proc.stdout.decode("utf-8", "replace"),
        proc.stderr.decode("utf-8", "replace"),
    )


@pytest.fixture
def cli() -> RunCli:
    return run_cli
