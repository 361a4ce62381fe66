"""Runtime settings, from code, command-line flags and ``LOSSLESS_*`` environment variables.

Precedence: explicit values (code or CLI) over environment variables over defaults. Every value is
validated once, at start, by :meth:`Settings.validate`, which raises :class:`SettingsError` with a
one-line message naming the setting (and its environment variable) at fault.

Defaults (DESIGN.md, "Runtime"): the drain delay D is 5 s when running in Kubernetes
(``KUBERNETES_SERVICE_HOST`` is set) and 0 elsewhere; the shutdown timeout is 25 s, which fits the
default 30 s ``terminationGracePeriodSeconds`` with margin.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from typing import Any

from lossless._duration import parse_duration
from lossless.errors import SettingsError

#: Drain delay used when running inside Kubernetes and nothing else was set.
KUBERNETES_DRAIN_DELAY = 5.0
DEFAULT_SHUTDOWN_TIMEOUT = 25.0


def in_kubernetes(env: Mapping[str, str] | None = None) -> bool:
    """True when the process runs in a Kubernetes pod (the kubelet sets this variable)."""
    env = os.environ if env is None else env
    return bool(env.get("KUBERNETES_SERVICE_HOST"))


@dataclasses.dataclass
class Settings:
    """Every knob of the runtime. ``None`` for ``drain_delay`` means "pick the default for where
    we run" (see module docstring); :meth:`resolved` returns a copy with it filled in."""

    #: D: seconds to keep serving after t0 while endpoint removal propagates. Env LOSSLESS_DRAIN_DELAY.
    drain_delay: float | None = None
    #: Seconds from t0 to the hard deadline for everything (D, in-flight, hooks).
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT
    #: The pod's terminationGracePeriodSeconds, when known (LOSSLESS_GRACE_PERIOD); the timeout
    #: must fit inside it.
    grace_period: float | None = None
    #: Seconds a deregistration (drain hook) may take at t0 before the drain goes on without it.
    drain_hook_timeout: float = 2.0
    #: Seconds over which open streams (SSE, chunked) and WebSockets are ended from t0 + D, each
    #: at a random moment, so their clients do not all reconnect at once. ``None``: 10 % of D,
    #: at most 2 s. Env LOSSLESS_STREAM_CLOSE_WINDOW.
    stream_close_window: float | None = None
    #: Which streaming responses end at t0 + D: ``all`` (SSE and chunked, default), ``sse``
    #: (text/event-stream only: finite chunked downloads run to their end, bounded by the
    #: deadline) or ``none``. Env LOSSLESS_STREAM_END.
    stream_end: str = "all"
    liveness_path: str = "/livez"
    readiness_path: str = "/readyz"
    startup_path: str = "/startupz"
    #: Seconds between background evaluations of the checks.
    check_interval: float = 1.0
    #: Default per-check timeout (each check may set its own).
    check_timeout: float = 1.0
    #: Show check outputs (error messages) to non-loopback callers of ``?verbose`` / JSON.
    expose_details: bool = False
    #: Path serving Prometheus metrics (needs prometheus-client), ``None`` to disable.
    metrics_path: str | None = None
    #: Exit code after a clean drain.
    exit_code: int = 0
    #: Exit code when the deadline forced anything (requests cut, hooks cut, workers killed).
    forced_exit_code: int = 1

    ENV: Mapping[str, str] = dataclasses.field(
        default_factory=lambda: {
            "drain_delay": "LOSSLESS_DRAIN_DELAY",
            "shutdown_timeout": "LOSSLESS_SHUTDOWN_TIMEOUT",
            "grace_period": "LOSSLESS_GRACE_PERIOD",
            "drain_hook_timeout": "LOSSLESS_DRAIN_HOOK_TIMEOUT",
            "stream_close_window": "LOSSLESS_STREAM_CLOSE_WINDOW",
            "stream_end": "LOSSLESS_STREAM_END",
            "liveness_path": "LOSSLESS_LIVENESS_PATH",
            "readiness_path": "LOSSLESS_READINESS_PATH",
            "startup_path": "LOSSLESS_STARTUP_PATH",
            "check_interval": "LOSSLESS_CHECK_INTERVAL",
            "check_timeout": "LOSSLESS_CHECK_TIMEOUT",
            "expose_details": "LOSSLESS_EXPOSE_DETAILS",
            "metrics_path": "LOSSLESS_METRICS_PATH",
            "exit_code": "LOSSLESS_EXIT_CODE",
        },
        repr=False,
        compare=False,
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``LOSSLESS_*`` variables, then apply ``overrides`` whose value is
        not ``None`` (that is how CLI flags left unset fall through to the environment).

        Raises :class:`SettingsError` naming the variable when a value does not parse.
        """
        env = os.environ if env is None else env
        settings = cls()
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for name, var in settings.ENV.items():
            raw = env.get(var)
            if raw is None or raw == "":
                continue
            setattr(settings, name, _parse(name, var, raw, fields[name].type))
        for name, value in overrides.items():
            if name not in fields or name == "ENV":
                raise SettingsError(f"unknown setting {name!r}")
            if value is not None:
                setattr(settings, name, value)
        return settings

    def resolved(self, env: Mapping[str, str] | None = None) -> Settings:
        """A validated copy with ``drain_delay`` filled in for the environment we run in."""
        copy = dataclasses.replace(self)
        if copy.drain_delay is None:
            copy.drain_delay = KUBERNETES_DRAIN_DELAY if in_kubernetes(env) else 0.0
        copy.validate()
        return copy

    @property
    def delay(self) -> float:
        """D in seconds (0 when unresolved and not in Kubernetes)."""
        if self.drain_delay is None:
            return KUBERNETES_DRAIN_DELAY if in_kubernetes() else 0.0
        return self.drain_delay

    @property
    def stream_window(self) -> float:
        """The stream close window in seconds (see ``stream_close_window``)."""
        if self.stream_close_window is None:
            return min(0.1 * self.delay, 2.0)
        return self.stream_close_window

    def validate(self) -> None:
        """Raise :class:`SettingsError` (one line, naming the setting) unless every value is
        usable: non-negative finite numbers, D < shutdown timeout, shutdown timeout < the pod's
        grace period when that is known, probe paths that start with ``/`` and differ."""
        for name in (
            "drain_delay",
            "shutdown_timeout",
            "grace_period",
            "drain_hook_timeout",
            "stream_close_window",
        ):
            value = getattr(self, name)
            if value is not None and (not math.isfinite(value) or value < 0):
                raise SettingsError(
                    f"{self._label(name)} must be a non-negative number, got {value}"
                )
        for name in ("check_interval", "check_timeout"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise SettingsError(f"{self._label(name)} must be a positive number, got {value}")
        if self.shutdown_timeout <= 0:
            raise SettingsError(
                f"{self._label('shutdown_timeout')} must be positive, got {self.shutdown_timeout}"
            )
        delay = self.delay
        if delay >= self.shutdown_timeout:
            raise SettingsError(
                f"{self._label('drain_delay')} ({delay:g} s) must be shorter than "
                f"{self._label('shutdown_timeout')} ({self.shutdown_timeout:g} s): nothing would be "
                "left to finish in-flight requests"
            )
        if self.grace_period is not None and self.shutdown_timeout >= self.grace_period:
            raise SettingsError(
                f"{self._label('shutdown_timeout')} ({self.shutdown_timeout:g} s) does not fit the "
                f"pod's grace period ({self._label('grace_period')} = {self.grace_period:g} s): "
                "the kubelet would SIGKILL before the drain ends; lower the timeout or raise "
                "terminationGracePeriodSeconds"
            )
        if self.stream_end not in ("all", "sse", "none"):
            raise SettingsError(
                f"{self._label('stream_end')} must be all, sse or none, got {self.stream_end!r}"
            )
        paths: dict[str, str] = {}
        for name in ("liveness_path", "readiness_path", "startup_path", "metrics_path"):
            path = getattr(self, name)
            if path is None:
                continue
            if not path.startswith("/"):
                raise SettingsError(f"{self._label(name)} must start with '/', got {path!r}")
            if path in paths:
                raise SettingsError(
                    f"{self._label(name)} and {self._label(paths[path])} are both {path!r}"
                )
            paths[path] = name
        for name in ("exit_code", "forced_exit_code"):
            value = getattr(self, name)
            if not 0 <= value <= 255:
                raise SettingsError(f"{self._label(name)} must be within 0..255, got {value}")

    def _label(self, name: str) -> str:
        var = self.ENV.get(name)
        flag = "--" + name.replace("_", "-")
        return f"{flag} ({var})" if var else flag


def _parse(name: str, var: str, raw: str, annotation: Any) -> Any:
    text = str(annotation)
    try:
        if "bool" in text:
            lowered = raw.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if "float" in text:
            return parse_duration(raw)
        if "int" in text:
            return int(raw)
        return raw
    except ValueError:
        raise SettingsError(f"{var}={raw!r} is not a valid value for {name}") from None
