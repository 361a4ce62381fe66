"""The HTML report's section of issue 16: restarts, injected faults with their failures, and the
per-upgrade breakdown of ``--upgrades``. Empty when the run has none of them."""

from __future__ import annotations

import html
import math
from collections.abc import Iterable

from lossless.verify.analysis.core import _settle
from lossless.verify.analysis.faults import Attribution
from lossless.verify.analysis.upgrades import UpgradeStats, per_upgrade, restart_counts
from lossless.verify.model import Record
from lossless.verify.results import Run

__all__ = ["stress_section"]


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def stress_section(
    run: Run, failed: Iterable[Record], upgrades: list[UpgradeStats] | None = None
) -> str:
    """``<h2>`` sections for restarts, faults and upgrades (figures from the analysis modules):
    ``failed`` are the run's failed requests (for each fault's count), ``upgrades`` the
    per-upgrade split the analysis made in its pass (None: made now from ``run.records``)."""
    parts: list[str] = []
    restarts = restart_counts(run.events)
    if restarts:
        cells = "".join(f"<tr><td>{_e(k)}</td><td>{v}</td></tr>" for k, v in restarts.items())
        parts.append(
            f"<h2>Restarts ({sum(restarts.values())})</h2><table class='restarts'><thead><tr>"
            f"<th>replica</th><th>restarts</th></tr></thead><tbody>{cells}</tbody></table>"
        )
    attribution = Attribution(run.events, settle=_settle(run.settings))
    if attribution.faults:
        for r in failed:
            if not r.ok and not r.error.is_artefact:
                w = attribution.match(r)
                if w is not None and w.kind.startswith("fault:"):
                    w.failures += 1
        rows = "".join(
            f"<tr><td>{_e(w.kind)}</td><td>{_e(w.spec)}</td><td>{_e(w.what)}</td>"
            f"<td>{_e(w.replica or '-')}</td><td>{w.start:.2f}</td>"
            f"<td>{'-' if math.isinf(w.end) else f'{w.end:.2f}'}</td><td>{w.failures}</td></tr>"
            for w in attribution.faults
        )
        parts.append(
            "<h2>Injected faults</h2><table class='faults'><thead><tr><th>fault</th>"
            "<th>spec</th><th>what</th><th>replica</th><th>from (s)</th><th>until (s)</th>"
            f"<th>failures</th></tr></thead><tbody>{rows}</tbody></table>"
        )
    if upgrades is None:
        upgrades = per_upgrade(run.events, run.records, settle=_settle(run.settings))
    if len(upgrades) > 1:
        rows = "".join(
            f"<tr><td>{u.index}</td><td>{_e(u.versions)}</td><td>{u.start:.2f}</td>"
            f"<td>{'-' if u.rollout_s is None else f'{u.rollout_s:.2f}'}</td>"
            f"<td>{u.requests}</td><td>{u.failures}</td><td>{u.fault_failures}</td>"
            f"<td>{u.upgrade_failures}</td><td>{u.restarts}</td></tr>"
            for u in upgrades
        )
        parts.append(
            f"<h2>Upgrades ({len(upgrades)})</h2><table class='upgrades'><thead><tr><th>#</th>"
            "<th>versions</th><th>start (s)</th><th>rollout (s)</th><th>requests</th>"
            "<th>failures</th><th>from faults</th><th>from the upgrade</th><th>restarts</th>"
            f"</tr></thead><tbody>{rows}</tbody></table>"
        )
    return "".join(parts)
