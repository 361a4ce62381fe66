"""Failures the upgrade did not cause: injected faults, crashes, probe kills, a sidecar first.

:class:`Attribution` reads the timeline once and builds *windows*, each a cause class of its own
that takes precedence over the upgrade's causes in :mod:`lossless.verify.analysis.core`:

``fault:N``       fault N of ``--fault`` (:mod:`lossless.verify.lab.faults`): on its replica from
                  the ``FAULT`` event until the replica is ready again after it (``kill``: the
                  restart; ``slow-start``: its first READY) or until ``FAULT_END`` (``stop``,
                  ``ingress-down``, plus one client timeout for what was queued meanwhile;
                  later if the replica was restarted meanwhile). The
                  ``ingress-down`` window holds every request, whatever its replica.
``probe_kill``    a liveness or startup probe killed the container (``PROBE_KILL``) → back
``crashed``       the container exited by itself (``CONTAINER_EXITED`` outside any window above)
                  → back (ready again and in every client's view)
``sidecar_first`` the sidecar exited (``SIDECAR_EXITED``) while the app still ran: every failed
                  connection to the pod from then on (the plain-sidecar failure of KEP-753)

A failed request belongs to a window of its replica when it was sent inside it, or was in flight
when it opened (sent before, ended after, or at most 50 ms before: an exit is seen a little after
the connections it reset); one that found no endpoint at all (no replica) to
any window open when it was sent. Windows only exist where the timeline has these
events, so a run without faults, crashes, probes or sidecars is analysed exactly as before.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence

from lossless.verify.model import Event, EventKind, Record

__all__ = ["STRESS_KINDS", "Attribution", "Window"]

STRESS_KINDS = ("probe_kill", "crashed", "sidecar_first")
# a process's exit is seen (its EXITED-like event) a little after its connections were reset:
# a request in flight that ended this much before a window opened still belongs to it
_SLACK = 0.05
_FAULT_DETAIL = re.compile(r"^fault (?P<n>[0-9]+) \((?P<spec>[^)]*)\): (?P<what>.*)$")


@dataclasses.dataclass
class Window:
    """One attributed span on ``replica`` (``""``: every replica)."""

    kind: str
    replica: str
    start: float
    end: float
    what: str  # "kill -9 pid 123", "exit code 1", ...
    spec: str = ""  # the --fault spec for fault windows
    failures: int = 0

    def holds(self, r: Record) -> bool:
        if not r.replica:  # no endpoint in the view: any window that was open then
            return self.start <= r.sent <= self.end
        if self.replica and r.replica != self.replica:
            return False
        if self.start <= r.sent <= self.end:
            return True
        return r.sent < self.start and (r.end is None or r.end >= self.start - _SLACK)

    def to_json(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "replica": self.replica,
            "spec": self.spec,
            "what": self.what,
            "start": round(self.start, 6),
            "end": None if math.isinf(self.end) else round(self.end, 6),
            "failures": self.failures,
        }


class Attribution:
    """The windows of one run's timeline; :meth:`kind` attributes a failed record."""

    def __init__(self, events: Iterable[Event], *, settle: float = 0.0) -> None:
        """``settle``: how long after a pause ends (``FAULT_END``) its window stays open, for
        the requests the paused process or proxy still had queued (the client timeout)."""
        ordered = sorted(events, key=lambda e: e.t)
        ready: dict[str, list[float]] = defaultdict(list)
        views: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
        removed: dict[str, list[float]] = defaultdict(list)
        exited: dict[str, float] = {}
        sidecar_sigterm: dict[str, float] = {}
        for e in ordered:
            if e.kind is EventKind.READY:
                ready[e.replica].append(e.t)
            elif e.kind is EventKind.VIEW_ADDED and e.client is not None:
                views[e.replica][e.client].append(e.t)
            elif e.kind in (EventKind.VIEW_REMOVED, EventKind.ENDPOINT_REMOVED):
                removed[e.replica].append(e.t)
            elif e.kind is EventKind.EXITED and e.replica not in exited:
                exited[e.replica] = e.t
            elif e.kind is EventKind.SIDECAR_SIGTERM:
                sidecar_sigterm.setdefault(e.replica, e.t)

        def ready_after(replica: str, t: float) -> float:
            """When ``replica`` is back after ``t``: ready again and in every client's view; or,
            if it never is (deleted meanwhile), gone: exited and out of every view."""
            back = next((w for w in ready.get(replica, ()) if w > t), math.inf)
            if math.isinf(back):
                gone = exited.get(replica)
                if gone is None or gone < t:
                    return back
                return max([gone, *(w for w in removed.get(replica, ()) if w > t)])
            for added in views.get(replica, {}).values():
                back = max(back, next((w for w in added if w >= back), back))
            return back

        self.faults: list[Window] = []
        self.others: list[Window] = []
        open_faults: dict[int, Window] = {}
        for e in ordered:
            if e.kind is EventKind.FAULT:
                m = _FAULT_DETAIL.match(e.detail)
                if m is None:
                    continue
                n, spec, what = int(m.group("n")), m.group("spec"), m.group("what")
                end = math.inf
                if what.startswith(("kill", "start delayed")):
                    end = ready_after(e.replica, e.t)
                w = Window(f"fault:{n}", e.replica, e.t, end, what, spec)
                self.faults.append(w)
                open_faults[n] = w
            elif e.kind is EventKind.FAULT_END:
                m = _FAULT_DETAIL.match(e.detail)
                if m is not None and int(m.group("n")) in open_faults:
                    w = open_faults.pop(int(m.group("n")))
                    w.end = e.t + settle
            elif e.kind is EventKind.PROBE_KILL:
                self.others.append(
                    Window("probe_kill", e.replica, e.t, ready_after(e.replica, e.t), e.detail)
                )
            elif e.kind is EventKind.CONTAINER_EXITED:
                if any(w.replica == e.replica and w.start <= e.t <= w.end for w in self.faults):
                    # a stopped replica restarted meanwhile: the fault lasts until it is back
                    for w in self.faults:
                        if w.replica == e.replica and w.start <= e.t <= w.end:
                            w.end = max(w.end, ready_after(e.replica, e.t))
                    continue
                if any(
                    w.replica == e.replica and w.kind == "probe_kill" and w.start <= e.t <= w.end
                    for w in self.others
                ):
                    continue
                what = e.detail.split(";", 1)[0]
                self.others.append(
                    Window("crashed", e.replica, e.t, ready_after(e.replica, e.t), what)
                )
            elif e.kind is EventKind.SIDECAR_EXITED:
                main_gone = exited.get(e.replica)
                if main_gone is None or e.t < main_gone:
                    # from its SIGTERM: a proxy that exits at once resets what it carried
                    start = min(e.t, sidecar_sigterm.get(e.replica, e.t))
                    w = Window("sidecar_first", e.replica, start, math.inf, e.detail)
                    self.others.append(w)
        self.windows = self.faults + self.others

    @property
    def empty(self) -> bool:
        return not self.windows

    def match(self, r: Record) -> Window | None:
        """The first window that holds record ``r`` (faults first), without counting it."""
        return next((w for w in self.windows if w.holds(r)), None)

    def kind(self, r: Record) -> str | None:
        """The attributed cause class of failed record ``r`` (counted on its window), or None
        when none of the windows holds it."""
        w = self.match(r)
        if w is None:
            return None
        w.failures += 1
        return w.kind

    def fault_failures(self) -> int:
        return sum(w.failures for w in self.faults)

    def explain(self, kind: str, records: Sequence[Record]) -> tuple[str, str]:
        """The cause and fix sentences of an attributed group."""
        n = len(records)
        noun = "request" if n == 1 else "requests"
        names = ", ".join(sorted({r.replica for r in records if r.replica})) or "no replica"
        mine = [w for w in self.windows if w.kind == kind and w.failures]
        if kind.startswith("fault:"):
            w = mine[0] if mine else next(w for w in self.faults if w.kind == kind)
            target = f" on {w.replica}" if w.replica else ""
            back = "" if math.isinf(w.end) else f", until t={w.end:.1f} s"
            return (
                f"{n} {noun} failed from fault {kind[6:]} you injected ({w.spec}: {w.what}"
                f"{target} at t={w.start:.1f} s{back}), not from the upgrade",
                "expected: the fault was injected on purpose (--fault); they count against the "
                "verdict only with --faults-count",
            )
        if kind == "crashed":
            whats = "; ".join(sorted({f"{w.replica}: {w.what}" for w in mine})) or names
            return (
                f"{n} {noun} to {names} failed when its container exited by itself and was "
                f"restarted ({whats})",
                "find why it exited in replicas/NAME.log; with ≥ 2 ready replicas and a "
                "readiness probe the others take its traffic while it restarts",
            )
        if kind == "probe_kill":
            return (
                f"{n} {noun} to {names} failed when a probe killed the container "
                f"({mine[0].what if mine else 'liveness'})",
                "make the liveness probe check only the process itself (not dependencies), with "
                "a failureThreshold times periodSeconds longer than any pause it must survive",
            )
        return (
            f"{n} {noun} to {names} failed because its sidecar exited while the app was still "
            "serving: clients kept connecting through the sidecar's port",
            "run the proxy as a native sidecar (initContainers with restartPolicy: Always, "
            "KEP-753) so it stops after the app, or give it a drain at least as long as the "
            "app's",
        )
