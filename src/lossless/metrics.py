"""Prometheus metrics of the lifecycle, when ``prometheus-client`` is installed (optional extra
``lossless[prometheus]``). Served by the middleware at ``settings.metrics_path`` (off by default).

Metrics (per process):
- ``lossless_in_flight_requests``: requests being served now.
- ``lossless_served_during_drain_total``: requests that finished after t0.
- ``lossless_forced_total``: things the deadline cut (requests, hooks, workers).
- ``lossless_drain_duration_seconds``: seconds since t0 (0 before the drain).
- ``lossless_state``: 1 for the current state label, 0 for the others.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from lossless.lifecycle import Lifecycle, State


class MetricsUnavailable(RuntimeError):
    pass


def render(lc: Lifecycle) -> tuple[bytes, str]:
    """The exposition text and its content type; raises :class:`MetricsUnavailable` when
    prometheus-client is not installed."""
    try:
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MetricsUnavailable("prometheus-client is not installed") from exc
    registry = getattr(lc, "_metrics_registry", None)
    if registry is None:
        registry = CollectorRegistry()
        registry.register(_Collector(lc))
        lc._metrics_registry = registry  # type: ignore[attr-defined]
    return generate_latest(registry), CONTENT_TYPE_LATEST


class _Collector:
    def __init__(self, lc: Lifecycle) -> None:
        self.lc = lc

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        lc = self.lc
        yield GaugeMetricFamily(
            "lossless_in_flight_requests", "Requests being served now.", value=lc.in_flight
        )
        yield CounterMetricFamily(
            "lossless_served_during_drain",
            "Requests that finished after t0.",
            value=lc.served_during_drain,
        )
        yield CounterMetricFamily(
            "lossless_forced", "Things the shutdown deadline cut.", value=len(lc.forced)
        )
        t0 = lc.t0
        yield GaugeMetricFamily(
            "lossless_drain_duration_seconds",
            "Seconds since the drain began (0 before).",
            value=0.0 if t0 is None else time.monotonic() - t0,
        )
        state = GaugeMetricFamily("lossless_state", "Current lifecycle state.", labels=["state"])
        current = lc.state
        for s in State:
            state.add_metric([s.value], 1.0 if s is current else 0.0)
        yield state
