"""Sidecars: a second process per pod (e.g. a local proxy in front of the app), native or plain.

``--sidecar CMD`` gives every pod a second container. It listens on the pod's port (``{port}``,
``$PORT``: what clients connect to) and reaches the app on ``{app_port}`` / ``$APP_PORT`` (the
app's own ``{port}`` becomes that port, and the probes and a preStop ``httpGet`` target it).

The two kinds differ in their order (KEP-753, "Sidecar containers"; kubelet
``pkg/kubelet/kuberuntime/kuberuntime_termination_order.go`` ``newTerminationOrdering``: a
sidecar waits on a channel per main container, bounded by the grace period, before
``kuberuntime_container.go`` ``killContainersWithSyncResult`` / ``killContainer`` stop it):

* **native** (``initContainers`` with ``restartPolicy: Always``; ``--sidecar-kind native``, the
  default): started *before* the app; at deletion the app is stopped first (preStop, SIGTERM,
  grace) and the sidecar gets SIGTERM only once the app has exited, within what is left of the
  pod's grace period (at least 2 s).
* **plain** (a second entry of ``containers``; ``--sidecar-kind plain``): stopped *in parallel*
  with the app: SIGTERM at t0. A proxy that exits at once then refuses the connections clients
  still route to the pod while the app drains — the failure of istio#36631 — and the analysis
  names it (``sidecar_first``).

A sidecar that exits while its pod is not being deleted is reported (``SIDECAR_EXITED``) and not
restarted (the lab does not model sidecar restarts).
"""

from __future__ import annotations

import dataclasses

from lossless.errors import LosslessError

__all__ = ["SIDECAR_KINDS", "SidecarSpec", "render_sidecar"]

SIDECAR_KINDS = ("native", "plain")


@dataclasses.dataclass(frozen=True, slots=True)
class SidecarSpec:
    """The sidecar's argv template and kind (``native`` or ``plain``)."""

    command: tuple[str, ...]
    native: bool = True

    def __post_init__(self) -> None:
        if not self.command:
            raise LosslessError("--sidecar: the sidecar command is empty")

    @property
    def kind(self) -> str:
        return "native" if self.native else "plain"


def render_sidecar(command: tuple[str, ...], port: int, app_port: int) -> list[str]:
    """Substitute ``{app_port}``/``$APP_PORT``/``${APP_PORT}`` then ``{port}``/``$PORT``."""
    app = str(app_port)
    value = str(port)
    out = []
    for word in command:
        word = word.replace("{app_port}", app).replace("${APP_PORT}", app)
        word = word.replace("$APP_PORT", app)
        word = word.replace("{port}", value).replace("${PORT}", value).replace("$PORT", value)
        out.append(word)
    return out
