"""The package's dependency rules hold (docs/architecture.md, "Boundaries").

1. The import contracts in pyproject.toml ([tool.importlinter]): the runtime never imports
   verify, check or the CLI; check never imports the runtime; verify never imports the server
   adapters, the middleware or the lifecycle. Checked statically by import-linter.
2. At run time, in a fresh interpreter: importing the linter or the verifier loads no runtime
   module (the package root is lazy, PEP 562), and the public names still resolve.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Modules that belong to the runtime: loading any of them from check or verify is a defect.
RUNTIME_PREFIXES = (
    "lossless.lifecycle",
    "lossless.health",
    "lossless.probe_render",
    "lossless.routing",
    "lossless.testing",
    "lossless.drain",
    "lossless.streams",
    "lossless.lifecycle_args",
    "lossless.settings",
    "lossless.asgi",
    "lossless.wsgi",
    "lossless.serve",
    "lossless.supervise",
    "lossless.discovery.attach",
    "lossless.admin",
    "lossless.metrics",
    "lossless.events",
    "lossless.grpc",
)


def test_import_contracts_are_kept() -> None:
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint, "import-linter is a dev dependency: reinstall with .[dev]"
    proc = subprocess.run(
        [lint, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert " broken" in proc.stdout and "0 broken" in proc.stdout


def _loaded_after(statement: str) -> list[str]:
    code = (
        f"import sys, json\n{statement}\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('lossless'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    loaded: list[str] = json.loads(out)
    return loaded


@pytest.mark.parametrize(
    "statement",
    [
        "import lossless.check.command",
        "import lossless.verify.runner",
        "import lossless.verify.traffic.registry",
        "import lossless.verify.analysis.proxy",
        "import lossless.cli",
    ],
)
def test_linter_and_verifier_load_no_runtime(statement: str) -> None:
    loaded = _loaded_after(statement)
    runtime = [m for m in loaded if m.startswith(RUNTIME_PREFIXES)]
    assert runtime == [], f"{statement} loaded runtime modules: {runtime}"


def test_public_names_resolve_lazily() -> None:
    loaded = _loaded_after(
        "import lossless\nassert 'lossless.lifecycle' not in sys.modules\n"
        "from lossless import Lifecycle, LosslessMiddleware, Settings, State\n"
        "assert Lifecycle.__module__ == 'lossless.lifecycle'"
    )
    assert "lossless.lifecycle" in loaded and "lossless.asgi" in loaded


def test_unknown_public_name_is_an_attribute_error() -> None:
    import lossless

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = lossless.nope  # type: ignore[attr-defined]
