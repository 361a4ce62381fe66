"""The manifest fields of issue 16 (``-f``): ``livenessProbe``, ``startupProbe``,
``restartPolicy``, and the pod's sidecar (an ``initContainers`` entry with ``restartPolicy:
Always`` is a native sidecar, KEP-753; a second entry of ``containers`` a plain one).

Called by :func:`lossless.verify.lab.manifest.load_deployment` with its helpers; errors are one
line naming the file and line, as there. A sidecar's command is the image's, which the lab cannot
run: the manifest only decides its kind, ``--sidecar CMD`` gives the local command.
"""

from __future__ import annotations

from typing import Any

from lossless.errors import LosslessError
from lossless.verify.lab.prober import ProbeSpec, SleepAction
from lossless.verify.lab.probes_liveness import check_probe
from lossless.verify.lab.restart import RESTART_POLICIES

__all__ = ["stress_fields"]


def _probe(where: Any, c: dict[str, Any], field: str, kind: str) -> ProbeSpec | None:
    from lossless.verify.lab.manifest import _action, _map, _number

    node = c.get(field)
    if node is None:
        return None
    node = _map(where, node, field)
    action = _action(where, node, field, prestop=False)
    assert not isinstance(action, SleepAction)
    try:
        return check_probe(
            ProbeSpec(
                action=action,
                initial_delay=_number(where, node, "initialDelaySeconds", 0),
                period=_number(where, node, "periodSeconds", 10, minimum=1),
                timeout=_number(where, node, "timeoutSeconds", 1, minimum=1),
                success_threshold=int(_number(where, node, "successThreshold", 1, minimum=1)),
                failure_threshold=int(_number(where, node, "failureThreshold", 3, minimum=1)),
            ),
            kind,
        )
    except LosslessError as exc:
        raise where.error(f"{field}: {exc}", node) from None


def stress_fields(
    where: Any, pod: dict[str, Any], chosen: dict[str, Any], containers: list[Any]
) -> dict[str, Any]:
    """``DeploymentSpec`` keyword arguments read from the pod spec and the chosen container."""
    policy = pod.get("restartPolicy", "Always")
    if policy not in RESTART_POLICIES and policy != "OnFailure":
        raise where.error(f"restartPolicy: unknown {policy!r}", pod)
    if policy != "Always":
        # apps/validation: a Deployment's template only accepts Always
        raise where.error(f"restartPolicy: a Deployment only accepts Always (got {policy})", pod)
    sidecar_kind: str | None = None
    sidecar_name = ""
    inits = pod.get("initContainers") or []
    if not isinstance(inits, list):
        raise where.error("initContainers: expected a list", pod)
    natives = [i for i in inits if isinstance(i, dict) and i.get("restartPolicy") == "Always"]
    others = [c for c in containers if c is not chosen and isinstance(c, dict)]
    if natives:
        sidecar_kind, sidecar_name = "native", str(natives[0].get("name", "sidecar"))
    elif others:
        sidecar_kind, sidecar_name = "plain", str(others[0].get("name", "sidecar"))
    return {
        "liveness": _probe(where, chosen, "livenessProbe", "liveness"),
        "startup": _probe(where, chosen, "startupProbe", "startup"),
        "restart_policy": policy,
        "sidecar_kind": sidecar_kind,
        "sidecar_name": sidecar_name,
    }
