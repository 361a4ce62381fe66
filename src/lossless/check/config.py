"""Configuration: ``[tool.lossless.check]`` in pyproject.toml, overridden by the command line.

The file is the one given with ``--config``, else the first ``pyproject.toml`` found from the
working directory upward that has a ``[tool.lossless.check]`` table. Keys (all optional)::

    [tool.lossless.check]
    select = ["LL1", "LL2"]        # code prefixes to run (default: every rule)
    ignore = ["LL403"]             # code prefixes never reported
    severity = { LL403 = "error" } # per-rule severity override
    kube-version = "1.29"          # target cluster, for version-dependent rules
    fail-on = "warning"            # lowest severity that makes the exit code 1 ("never")
    grace-margin = 2               # seconds kept free inside terminationGracePeriodSeconds
    source-roots = ["charts"]      # where Helm templates / kustomize origins are looked up

An unknown key or a value of the wrong type is a usage error (exit 2) naming the file and key.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lossless.check.model import Severity
from lossless.errors import LosslessError

__all__ = ["Config", "find_config", "load_config", "parse_kube_version"]

_KEYS = {
    "select",
    "ignore",
    "severity",
    "kube-version",
    "fail-on",
    "grace-margin",
    "source-roots",
}


def parse_kube_version(text: str) -> tuple[int, int]:
    """``"1.29"``, ``"v1.30.2"`` → ``(1, 29)``, ``(1, 30)``; ``ValueError`` otherwise."""
    match = re.fullmatch(r"v?(\d+)\.(\d+)(?:\.\d+)?(?:[-+].*)?", str(text).strip())
    if not match:
        raise ValueError(f"invalid Kubernetes version {text!r} (expected e.g. 1.30)")
    return int(match.group(1)), int(match.group(2))


@dataclass
class Config:
    """Settings of one run (defaults: every rule, fail on errors, 2 s grace margin)."""

    select: list[str] = field(default_factory=lambda: ["LL"])
    ignore: list[str] = field(default_factory=list)
    severity: dict[str, Severity] = field(default_factory=dict)
    kube_version: tuple[int, int] | None = None
    fail_on: Severity | None = Severity.ERROR  # None: never fail on findings
    grace_margin: int = 2
    source_roots: list[str] = field(default_factory=list)
    path: str | None = None

    def enabled(self, code: str) -> bool:
        """Selected by the longest matching prefix of ``select`` and ``ignore`` (ruff's rule)."""
        best_select = max((len(p) for p in self.select if code.startswith(p)), default=-1)
        best_ignore = max((len(p) for p in self.ignore if code.startswith(p)), default=-1)
        return best_select > best_ignore


def find_config(start: Path) -> Path | None:
    """The nearest ``pyproject.toml`` with a ``[tool.lossless.check]`` table, from ``start`` up."""
    for directory in [start, *start.parents]:
        candidate = directory / "pyproject.toml"
        if candidate.is_file():
            try:
                data = tomllib.loads(candidate.read_text(encoding="utf-8"))
            except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
                continue
            if isinstance(data.get("tool", {}).get("lossless", {}).get("check"), dict):
                return candidate
    return None


def load_config(path: Path | None, *, explicit: bool = False) -> Config:
    """Read ``[tool.lossless.check]`` from ``path`` (``None``: defaults).

    Raises :class:`~lossless.errors.LosslessError` when the file cannot be read, is not TOML, or
    has an invalid value; with ``explicit`` also when it lacks the table.
    """
    config = Config()
    if path is None:
        return config
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise LosslessError(f"{path}: cannot read config: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise LosslessError(f"{path}: not valid TOML: {exc}") from None
    table = data.get("tool", {}).get("lossless", {}).get("check")
    if table is None:
        if explicit:
            raise LosslessError(f"{path}: no [tool.lossless.check] table")
        return config
    if not isinstance(table, dict):
        raise LosslessError(f"{path}: [tool.lossless.check] must be a table")
    config.path = str(path)
    apply_table(config, table, str(path))
    return config


def apply_table(config: Config, table: Mapping[str, Any], where: str) -> None:
    """Validate ``table`` and store its values in ``config`` (errors name ``where`` and the key)."""
    for key, value in table.items():
        if key not in _KEYS:
            known = ", ".join(sorted(_KEYS))
            raise LosslessError(f"{where}: unknown key '{key}' in [tool.lossless.check] ({known})")
        try:
            _apply(config, key, value)
        except (TypeError, ValueError) as exc:
            raise LosslessError(f"{where}: [tool.lossless.check] {key}: {exc}") from None


def _codes(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError("expected a list of rule codes or prefixes")
    codes = [v.strip().upper() for v in value]
    for code in codes:
        if not re.fullmatch(r"LL\d{0,3}", code):
            raise ValueError(f"{code!r} is not a rule code or prefix (LL201, LL2)")
    return codes


def _apply(config: Config, key: str, value: Any) -> None:
    if key == "select":
        config.select = _codes(value)
    elif key == "ignore":
        config.ignore = _codes(value)
    elif key == "severity":
        if not isinstance(value, dict):
            raise TypeError('expected a table such as { LL403 = "error" }')
        for code, level in value.items():
            config.severity[_codes([code])[0]] = Severity.parse(str(level))
    elif key == "kube-version":
        config.kube_version = parse_kube_version(str(value))
    elif key == "fail-on":
        config.fail_on = None if str(value) == "never" else Severity.parse(str(value))
    elif key == "grace-margin":
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError("expected a non-negative number of seconds")
        config.grace_margin = value
    elif key == "source-roots":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise TypeError("expected a list of directories")
        config.source_roots = list(value)
