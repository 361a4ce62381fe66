"""Probe bodies (``/livez``, ``/readyz``, ``/startupz``) in Kubernetes' conventions.

Plain: ``200 ok``; on failure ``503`` with the per-check listing. ``?verbose`` lists each check
(``[+]db ok``, ``[+]cache ok: degraded``, ``[-]cache failed: timeout``) and a closing line, as
the Kubernetes API server does; a passing check that returned text other than ``ok`` shows it.
JSON (``application/health+json``, draft-inadarei-api-health-check) when the ``Accept`` header asks
for it or ``?format=json``. Check outputs (exception text) can leak internals, so they are replaced
by ``reason withheld`` for callers that are not on loopback unless ``expose_details`` is set.

Answering a probe only reads state: it never runs a check, so it is O(1) whatever the checks do.
"""

from __future__ import annotations

import ipaddress
import json
from typing import NamedTuple
from urllib.parse import parse_qs

from lossless.lifecycle import Lifecycle, State

HEALTH_JSON = "application/health+json"


class Item(NamedTuple):
    name: str
    ok: bool
    output: str
    critical: bool


class Answer(NamedTuple):
    status: int
    content_type: str
    body: bytes


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return host == "localhost"


def items(lc: Lifecycle, kind: str) -> tuple[bool, list[Item]]:
    """The verdict and the itemised checks of probe ``kind`` (livez, readyz or startupz)."""
    state = lc.state
    if kind == "livez":
        # A liveness check not evaluated yet passes: a restart is the costliest verdict, and a
        # check that has not run has found nothing wrong (readiness, by contrast, waits).
        found = [Item("ping", True, "ok", True)]
        found += [
            Item(r.name, r.ok or r.pending, r.output, r.critical)
            for r in lc.health.results(liveness=True)
        ]
        return all(i.ok for i in found if i.critical), found
    started = lc.started or state not in (State.STARTING,)
    startup = Item("startup", started, "ok" if started else "startup hooks running", True)
    if kind == "startupz":
        return started, [startup]
    found = [startup]
    if lc.draining:
        found.append(Item("shutdown", False, f"draining since {lc.since_t0():.3f} s", True))
    elif state in (State.STOPPING, State.STOPPED):
        # Stopped without a drain (e.g. a test client's lifespan ended): say so, never a bare 503.
        found.append(Item("shutdown", False, f"lifecycle {state.value}", True))
    found += [Item(r.name, r.ok, r.output, r.critical) for r in lc.health.results()]
    verdict = state is State.READY and all(i.ok for i in found if i.critical)
    return verdict, found


def answer(
    lc: Lifecycle, kind: str, *, query: str = "", accept: str = "", client: str | None = None
) -> Answer:
    """Compute the full probe response for ``kind``."""
    ok, found = items(lc, kind)
    params = parse_qs(query, keep_blank_values=True)
    details = lc.settings.expose_details or is_loopback(client)
    status = 200 if ok else 503
    wants_json = "json" in params.get("format", []) or "json" in accept
    if wants_json:
        payload = {
            "status": "pass" if ok else "fail",
            "checks": {
                i.name: [
                    {
                        "status": "pass" if i.ok else ("fail" if i.critical else "warn"),
                        "critical": i.critical,
                        **({"output": i.output} if details and _shown(i) else {}),
                    }
                ]
                for i in found
            },
        }
        if lc.draining:
            payload["output"] = "draining"
        return Answer(status, HEALTH_JSON, json.dumps(payload).encode())
    if ok and "verbose" not in params:
        return Answer(status, "text/plain; charset=utf-8", b"ok")
    lines = []
    for i in found:
        if i.ok:
            shown = f": {i.output}" if details and _shown(i) else ""
            lines.append(f"[+]{i.name} ok{shown}")
        else:
            reason = i.output if details else "reason withheld"
            optional = "" if i.critical else " (optional)"
            lines.append(f"[-]{i.name} failed{optional}: {reason}")
    lines.append(f"{kind} check {'passed' if ok else 'failed'}")
    return Answer(status, "text/plain; charset=utf-8", ("\n".join(lines) + "\n").encode())


def _shown(item: Item) -> bool:
    """Whether an item's output says more than its status: any failure, and a passing check's
    own text (``degraded``, ``pending``), never the default ``ok``."""
    return not item.ok or (bool(item.output) and item.output != "ok")
