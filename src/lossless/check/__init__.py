"""``lossless check``: static analysis for upgrades that drop requests.

Library use::

    from lossless.check import Config, run_check

    report = run_check(["deploy/"], Config(kube_version=(1, 30)))
    for finding in report.active:
        print(finding.location, finding.code, finding.message)

Needs the ``check`` extra (PyYAML with its C extension). See docs/check.md for the rules and configuration.
"""

from __future__ import annotations

from lossless.check.config import Config
from lossless.check.engine import Report, run_check
from lossless.check.model import REGISTRY, Finding, InputError, Location, Severity

__all__ = [
    "REGISTRY",
    "Config",
    "Finding",
    "InputError",
    "Location",
    "Report",
    "Severity",
    "run_check",
]
