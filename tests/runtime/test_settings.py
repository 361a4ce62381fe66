"""Scenario 8: bad settings exit non-zero with one line and no traceback; and how settings
resolve from flags, environment and defaults."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from lossless.errors import SettingsError
from lossless.settings import Settings
from tests.runtime.conftest import HERE, ROOT


def _serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("LOSSLESS_")}
    full_env.update(env or {})
    full_env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "lossless",
            "serve",
            "apps:asgi",
            "--app-dir",
            str(HERE),
            "--port",
            "0",
            *args,
        ],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (
            ["--drain-delay", "-1"],
            {},
            "--drain-delay (LOSSLESS_DRAIN_DELAY) must be a non-negative",
        ),
        (["--drain-delay", "30", "--shutdown-timeout", "20"], {}, "must be shorter than"),
        (
            ["--shutdown-timeout", "30", "--grace-period", "30"],
            {},
            "does not fit the pod's grace period",
        ),
        (
            [],
            {"LOSSLESS_SHUTDOWN_TIMEOUT": "soon"},
            "LOSSLESS_SHUTDOWN_TIMEOUT='soon' is not a valid",
        ),
        ([], {"LOSSLESS_READINESS_PATH": "readyz"}, "must start with '/'"),
        (["--drain-delay", "abc"], {}, "not a duration"),
    ],
)
def test_bad_settings_are_one_line_errors(
    args: list[str], env: dict[str, str], message: str
) -> None:
    result = _serve(*args, env=env)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) <= 2 and message in result.stderr, result.stderr  # argparse adds a usage line


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("no_such_module:app", "cannot import module 'no_such_module'"),
        ("apps:nothing", "has no attribute 'nothing'"),
        ("apps", "must be given as MODULE:APP"),
    ],
)
def test_bad_app_is_a_one_line_error(target: str, message: str) -> None:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("LOSSLESS_")}
    full_env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run(
        [sys.executable, "-m", "lossless", "serve", target, "--app-dir", str(HERE)],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert message in result.stderr.strip().splitlines()[-1]


def test_defaults_depend_on_kubernetes() -> None:
    assert Settings.from_env({}).resolved({}).drain_delay == 0
    k8s = {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}
    assert Settings.from_env(k8s).resolved(k8s).drain_delay == 5
    assert Settings.from_env({}).shutdown_timeout == 25


def test_flags_override_environment() -> None:
    env = {"LOSSLESS_DRAIN_DELAY": "3", "LOSSLESS_SHUTDOWN_TIMEOUT": "500ms"}
    s = Settings.from_env(env)
    assert (s.drain_delay, s.shutdown_timeout) == (3.0, 0.5)
    s = Settings.from_env(env, drain_delay=0.1, shutdown_timeout=None)
    assert (s.drain_delay, s.shutdown_timeout) == (0.1, 0.5)


def test_validation_in_code() -> None:
    with pytest.raises(SettingsError, match="must be shorter"):
        Settings(drain_delay=5, shutdown_timeout=5).validate()
    Settings(drain_delay=5, shutdown_timeout=10, grace_period=15).validate()
