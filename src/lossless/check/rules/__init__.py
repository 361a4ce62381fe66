"""The rule families, one module each; importing this package registers every rule.

Codes by family: LL1xx probes, LL2xx shutdown, LL3xx entrypoint, LL4xx rollout, LL5xx
disruption, LL6xx service, LL9xx input. Codes are never reused.
"""

from __future__ import annotations

from lossless.check.rules import (
    disruption,
    entrypoint,
    inputs,
    probes,
    rollout,
    service,
    shutdown,
)

__all__ = ["FAMILIES"]

#: Family name → one-line description, in code order (the docs' rules table uses it).
FAMILIES = {
    "probes": "readiness and liveness gate traffic correctly",
    "shutdown": "the pod keeps serving until endpoint removal has propagated",
    "entrypoint": "SIGTERM reaches the real process",
    "rollout": "a rollout keeps serving capacity",
    "disruption": "voluntary evictions keep capacity and can proceed",
    "service": "the Service routes to the pods it means",
    "input": "the manifest says what it seems to say",
}

# the families in code order (importing each registers its rules)
_MODULES = (probes, shutdown, entrypoint, rollout, disruption, service, inputs)
