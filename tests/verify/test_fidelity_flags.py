"""Bad input for the flags issue 15 added: one line, exit 2, no traceback."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.verify.conftest import NAIVE_APP, assert_one_line_error, run_cli

FAST = ("--before", "0.5", "--after", "0.5", "--rate", "50", "-q")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--stop-signal", "SIGNOPE"), "unknown signal 'SIGNOPE'"),
        (("--traffic-profile", "nope"), "--traffic-profile nope: unknown (profiles: kube-proxy"),
        (("--readiness-port", "probe"), "--readiness-port needs --readiness-path"),
        (("--readiness-path", "/readyz", "--readiness-port", "probe"),
         "readiness probe port 'probe' is not a port of the container"),
        (("--controller-delay", "later"), "--controller-delay 'later'"),
        (("--registry", "etcd://127.0.0.1:1/x", "--traffic-profile", "kube-proxy"),
         "--traffic-profile does not apply to --traffic registry"),
    ],
)  # fmt: skip
def test_bad_flags(args: tuple[str, ...], needle: str) -> None:
    assert_one_line_error(run_cli("verify", "--cmd", NAIVE_APP, *args, *FAST), needle)


def test_bad_stop_signal_in_a_manifest(tmp_path: Path) -> None:
    manifest = tmp_path / "d.yaml"
    manifest.write_text(
        textwrap.dedent(
            """\
            kind: Deployment
            spec:
              template:
                spec:
                  containers:
                    - name: app
                      lifecycle:
                        stopSignal: SIGSOON
            """
        )
    )
    result = run_cli("verify", "--cmd", NAIVE_APP, "-f", str(manifest), *FAST)
    assert_one_line_error(result, f"{manifest}:", "lifecycle.stopSignal", "SIGSOON")
