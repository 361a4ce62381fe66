"""``lossless verify`` flags and report lines of issue 16: restarts, liveness/startup probes,
sidecars, ``--upgrades``, ``--fault`` and ``--faults-count``.

Kept apart from :mod:`lossless.verify.command` (which calls :func:`add_arguments`,
:func:`config_kwargs` and :func:`report` at one place each) so that each concern stays a small
module. Every flag is documented in docs/verify.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from lossless import argtypes
from lossless.errors import LosslessError

__all__ = ["StressReport", "add_arguments", "config_kwargs", "report"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("restarts (restartPolicy Always, kubelet back-off)")
    g.add_argument(
        "--restart-policy",
        choices=("Always", "Never"),
        help="Always (default, as every Deployment): a replica that exits by itself is "
        "restarted with back-off; Never: its exit fails the run (exit 2)",
    )
    g.add_argument(
        "--backoff-scale",
        type=argtypes.nonnegative_duration,
        default=0.1,
        metavar="F",
        help="multiply the kubelet's crash-loop back-off (10 s doubling to 300 s, reset after "
        "600 s) by F (default 0.1; 1 is the kubelet's own timing)",
    )
    g.add_argument(
        "--crash-loop-limit",
        type=int,
        default=2,
        metavar="N",
        help="end the run when a replica crashes N times in a row, each soon after its start "
        "(within the back-off's reset period; exit 2 at start, 1 during a rollout; 0: never; "
        "default 2)",
    )
    for kind in ("liveness", "startup"):
        g = p.add_argument_group(f"{kind} probe (httpGet, Kubernetes semantics)")
        g.add_argument(f"--{kind}-path", metavar="PATH", help=f"{kind} probe GET PATH")
        argtypes.add_duration(g, f"--{kind}-initial-delay", help="initialDelaySeconds (default 0)")
        argtypes.add_duration(
            g, f"--{kind}-period", help="periodSeconds (default 1 here; Kubernetes: 10)"
        )
        argtypes.add_duration(g, f"--{kind}-timeout", help="timeoutSeconds (default 1)")
        g.add_argument(
            f"--{kind}-failure-threshold",
            type=argtypes.count,
            metavar="N",
            help="failureThreshold (default 3)",
        )
    g = p.add_argument_group("sidecar")
    g.add_argument(
        "--sidecar",
        metavar="CMD",
        help="a second process per pod on the pod's port ({port}/$PORT) in front of the app "
        "({app_port}/$APP_PORT; the app's {port} becomes that port)",
    )
    g.add_argument(
        "--sidecar-kind",
        choices=("native", "plain"),
        help="native (initContainers, restartPolicy Always: stopped after the app; default) or "
        "plain (a second container: stopped in parallel with the app)",
    )
    g = p.add_argument_group("stress")
    g.add_argument(
        "--upgrades",
        type=argtypes.count,
        metavar="N",
        help="roll v1 → v2 → … → vN+1 back to back under one load (default 1)",
    )
    g.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="SPEC",
        help="inject a fault (repeatable): kill@WHEN, stop@WHEN,for=S, slow-start@WHEN,for=S, "
        "ingress-down@WHEN,for=S; WHEN is seconds after the load starts or rollout[:K][+S]; "
        "replica=NAME picks the replica (docs/verify.md)",
    )
    g.add_argument(
        "--faults-count",
        action="store_true",
        help="count the failures an injected fault caused against --max-failures (default: "
        "reported apart, not counted)",
    )


def _probe(args: argparse.Namespace, kind: str, manifest: Any) -> Any:
    from lossless.verify.lab.prober import HTTPGetAction, ProbeSpec
    from lossless.verify.lab.probes_liveness import check_probe

    spec = manifest
    path = getattr(args, f"{kind}_path")
    if path is not None:
        action = HTTPGetAction(path=path)
        spec = (
            ProbeSpec(action=action, period=1.0)
            if spec is None
            else dataclasses.replace(spec, action=action)
        )
    timing = {
        "initial_delay": getattr(args, f"{kind}_initial_delay"),
        "period": getattr(args, f"{kind}_period"),
        "timeout": getattr(args, f"{kind}_timeout"),
        "failure_threshold": getattr(args, f"{kind}_failure_threshold"),
    }
    given = {k: v for k, v in timing.items() if v is not None}
    if given:
        if spec is None:
            raise LosslessError(f"{kind} probe timing flags need --{kind}-path (or -f)")
        spec = dataclasses.replace(spec, **given)
    return None if spec is None else check_probe(spec, kind)


def config_kwargs(args: argparse.Namespace, spec: Any) -> dict[str, Any]:
    """The ``VerifyConfig`` fields of issue 16 from the flags and the manifest (``spec``, a
    ``DeploymentSpec`` or None; flags win)."""
    from lossless.verify.lab.faults import parse_fault
    from lossless.verify.lab.process import split_command
    from lossless.verify.lab.restart import BackOffPolicy
    from lossless.verify.lab.sidecar import SidecarSpec

    manifest_kind = getattr(spec, "sidecar_kind", None)
    sidecar = None
    if args.sidecar:
        kind = args.sidecar_kind or manifest_kind or "native"
        sidecar = SidecarSpec(split_command(args.sidecar), native=kind == "native")
    elif args.sidecar_kind:
        raise LosslessError("--sidecar-kind needs --sidecar CMD")
    elif manifest_kind is not None:
        print(
            f"lossless verify: note: the manifest has a {manifest_kind} sidecar "
            f"({spec.sidecar_name}); pass --sidecar CMD to run it in the lab",
            file=sys.stderr,
        )
    return {
        "restart_policy": args.restart_policy or getattr(spec, "restart_policy", None) or "Always",
        "backoff": BackOffPolicy(scale=args.backoff_scale, limit=args.crash_loop_limit),
        "liveness": _probe(args, "liveness", getattr(spec, "liveness", None)),
        "startup": _probe(args, "startup", getattr(spec, "startup", None)),
        "sidecar": sidecar,
        "upgrades": args.upgrades or 1,
        "faults": tuple(parse_fault(text) for text in args.fault),
        "faults_count": args.faults_count,
    }


@dataclasses.dataclass
class StressReport:
    """What issue 16 adds to a run's summary: restarts, per-upgrade figures, fault windows."""

    restarts: dict[str, int]
    upgrades: list[Any]
    faults: list[Any]
    fault_failures: int
    faults_count: bool
    notes: list[str]

    def counted(self, failures: int) -> int:
        """The failures the verdict counts (fault failures only with ``--faults-count``)."""
        return failures if self.faults_count else failures - self.fault_failures

    def uncounted(self) -> int:
        """Failures the verdict does not count: the injected faults' (unless --faults-count)."""
        return 0 if self.faults_count else self.fault_failures

    def to_json(self, failures: int) -> dict[str, Any]:
        return {
            "restarts": self.restarts,
            "upgrades": [u.to_json() for u in self.upgrades],
            "faults": [w.to_json() for w in self.faults],
            "fault_failures": self.fault_failures,
            "upgrade_failures": failures - self.fault_failures,
            "faults_count": self.faults_count,
            "fault_notes": self.notes,
        }

    def lines(self, failures: int) -> list[str]:
        out: list[str] = []
        if self.faults or self.notes:
            counted = "counted (--faults-count)" if self.faults_count else "not counted"
            out.append(
                f"faults: {self.fault_failures} failure(s) from the faults you injected "
                f"({counted}), {failures - self.fault_failures} from the upgrade"
            )
            for w in self.faults:
                out.append(
                    f"  {w.kind} {w.spec}: {w.what}{' on ' + w.replica if w.replica else ''} at "
                    f"t={w.start:.1f} s: {w.failures} failure(s)"
                )
            out.extend(f"  {note}" for note in self.notes)
        if self.restarts:
            total = sum(self.restarts.values())
            each = ", ".join(f"{k} {v}" for k, v in self.restarts.items())
            out.append(f"restarts: {total} ({each})")
        if len(self.upgrades) > 1:
            head = ("upgrade", "versions", "rollout", "requests", "failures", "from faults",
                    "from the upgrade", "restarts")  # fmt: skip
            rows = [
                (
                    str(u.index),
                    u.versions,
                    "-" if u.rollout_s is None else f"{u.rollout_s:.1f} s",
                    str(u.requests),
                    str(u.failures),
                    str(u.fault_failures),
                    str(u.upgrade_failures),
                    str(u.restarts),
                )
                for u in self.upgrades
            ]
            widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
            out.append(f"upgrades: {len(self.upgrades)} in a row")
            for r in [head, *rows]:
                cells = [r[1].ljust(widths[1])] + [
                    c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)) if i != 1
                ]
                cells.insert(0, cells.pop(1))  # the upgrade number first
                out.append("  " + "  ".join(cells).rstrip())
        return out


def report(
    out: Path, analysis: Any, faults_count: bool, upgrades: list[Any] | None = None
) -> StressReport:
    """Read the run's timeline and build the report; each fault's failures are the count of its
    cause in ``analysis``. ``upgrades``: the per-upgrade split the analysis made in its one pass
    over the records (``Report.upgrades``); None: stream the records for it here."""
    from lossless.verify.analysis.core import _settle
    from lossless.verify.analysis.faults import Attribution
    from lossless.verify.analysis.upgrades import iter_records, per_upgrade, restart_counts
    from lossless.verify.model import EventKind
    from lossless.verify.results import SETTINGS, TIMELINE, _parse_event, _read_settings, read_jsonl

    events = read_jsonl(out / TIMELINE, _parse_event, what="event")
    settle = _settle(_read_settings(out / SETTINGS))
    if upgrades is None:
        upgrades = (
            per_upgrade(events, iter_records(out), settle=settle)
            if any(e.kind is EventKind.UPGRADE_START for e in events)
            else []
        )
    # each fault's failures are its cause's count: the analysis attributed them already
    attribution = Attribution(events, settle=settle)
    counts = {c.kind: c.count for c in analysis.causes}
    for w in attribution.faults:
        w.failures = counts.get(w.kind, 0)
    fault_failures = sum(n for kind, n in counts.items() if kind.startswith("fault:"))
    notes = [e.detail for e in events if e.kind is EventKind.NOTE and e.detail.startswith("fault ")]
    return StressReport(
        restarts=restart_counts(events),
        upgrades=upgrades,
        faults=attribution.faults,
        fault_failures=fault_failures,
        faults_count=faults_count,
        notes=notes,
    )
