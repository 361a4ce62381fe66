"""``lossless demo``: three short verify runs side by side, in about half a minute.

1. the naive strategy (stop the old process, start the new one, route to it at once) with the
   naive app (uvicorn, which closes its listener as soon as SIGTERM arrives): requests fail;
2. a Kubernetes rolling update with the same naive app: requests still fail, because the
   listener closes before every client has stopped routing to the replica;
3. the same rolling update with the app run by ``lossless serve`` (a drain delay longer than the
   endpoint-removal propagation): zero failed requests.

It prints one comparison table and exits 0 when each run ended as expected, 1 otherwise. The app
is ``examples/app.py`` of the repository, so run it from a clone (``make demo``).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lossless import argtypes
from lossless.errors import LosslessError

__all__ = ["SCENARIOS", "Scenario", "add_parser", "find_examples", "run"]


@dataclasses.dataclass(frozen=True)
class Scenario:
    title: str
    strategy: str
    app: str  # "naive" or "lossless"
    expect_failures: bool


SCENARIOS = (
    Scenario("naive upgrade, naive app", "naive", "naive", True),
    Scenario("rolling update, naive app", "rolling", "naive", True),
    Scenario("rolling update, lossless serve", "rolling", "lossless", False),
)

# Timings: a 1±0.5 s watch lag, then up to 1 s more until kube-proxy's next sync (minSyncPeriod
# 1 s, burst 2: lossless.verify.traffic.sync), so a 3 s drain delay covers the slowest client.
PROPAGATION = "1±0.5"
DRAIN_DELAY = 3


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "demo",
        help="three short verify runs: naive, rolling with a naive app, rolling with lossless",
        description="Compare a naive upgrade, a rolling update of a naive app and a rolling "
        "update of the same app under `lossless serve`, under the same load.",
    )
    p.add_argument(
        "--rate",
        type=argtypes.positive_float("requests/s"),
        default=150.0,
        help="requests per second (default 150)",
    )
    p.add_argument(
        "--replicas", type=argtypes.positive_count, default=3, help="replicas (default 3)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", metavar="DIR", help="keep the three runs here (default: temp dir)")
    p.set_defaults(func=run)


def find_examples() -> Path:
    """The repository directory holding ``examples/app.py`` (the replicas' working directory)."""
    import lossless

    candidates = [Path.cwd(), Path(lossless.__file__).resolve().parents[2]]
    for root in candidates:
        if (root / "examples" / "app.py").is_file():
            return root
    raise LosslessError(
        "examples/app.py not found: run `lossless demo` from a clone of the repository"
    )


def _command(app: str) -> tuple[str, ...]:
    python = sys.executable
    if app == "naive":
        return (python, "-m", "uvicorn", "examples.app:app", "--host", "127.0.0.1",
                "--port", "{port}", "--log-level", "warning")  # fmt: skip
    return (python, "-m", "lossless", "serve", "examples.app:app", "--host", "127.0.0.1",
            "--port", "{port}", "--drain-delay", str(DRAIN_DELAY),
            "--shutdown-timeout", "10")  # fmt: skip


def _config(scenario: Scenario, out: Path, root: Path, args: argparse.Namespace) -> Any:
    from lossless.verify.config import VerifyConfig
    from lossless.verify.lab.prober import HTTPGetAction, ProbeSpec
    from lossless.verify.lab.rollout import RolloutStrategy
    from lossless.verify.traffic.base import PropagationDelay

    return VerifyConfig(
        command=_command(scenario.app),
        out=out,
        replicas=args.replicas,
        rate=args.rate,
        before=1.5,
        after=1.5,
        strategy=RolloutStrategy(scenario.strategy, 1, 0),
        readiness=ProbeSpec(HTTPGetAction("/readyz"), period=0.5, timeout=1.0),
        grace=30.0,
        propagation=PropagationDelay.parse(PROPAGATION),
        clients=3,
        seed=args.seed,
        cwd=root,
        ready_timeout=30.0,
        progress_deadline=60.0,
    )


def _main_cause(analysis: Any) -> str:
    if not analysis.causes:
        return "-"
    top = max(analysis.causes, key=lambda c: c.count)
    return str(top.cause)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from lossless.verify.command import ProgressDisplay, analyse_run
    from lossless.verify.runner import execute

    started = time.monotonic()
    root = find_examples()
    base = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="lossless-demo-"))
    err = Console(stderr=True, highlight=False)
    rows: list[tuple[Scenario, Any, Path, float]] = []
    for number, scenario in enumerate(SCENARIOS, start=1):
        out = base / f"{number}-{scenario.strategy}-{scenario.app}"
        err.print(f"[bold]run {number}/{len(SCENARIOS)}[/]: {scenario.title} …")
        cfg = _config(scenario, out, root, args)
        display = ProgressDisplay(cfg.replicas) if sys.stderr.isatty() else None
        t0 = time.monotonic()
        try:
            outcome = execute(cfg, progress=display, quiet=True)
        finally:
            if display is not None:
                display.stop()
        if outcome.error is not None:
            raise LosslessError(f"demo run {number} ({scenario.title}): {outcome.error}")
        if outcome.interrupted:
            print("lossless demo: interrupted", file=sys.stderr)
            return 130
        rows.append((scenario, analyse_run(out), out, time.monotonic() - t0))

    table = Table(title="lossless demo: the same upgrade, three ways", title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("upgrade")
    table.add_column("app")
    table.add_column("requests", justify="right")
    table.add_column("failed", justify="right")
    table.add_column("failures by class")
    table.add_column("main cause", ratio=1)
    table.add_column("expected")
    all_expected = True
    for number, (scenario, analysis, _out, _took) in enumerate(rows, start=1):
        failed = analysis.failures
        expected = (failed > 0) == scenario.expect_failures
        all_expected &= expected
        classes = ", ".join(f"{k} {v}" for k, v in sorted(analysis.failures_by_class.items()))
        table.add_row(
            str(number),
            "naive stop/start" if scenario.strategy == "naive" else "rolling update",
            "uvicorn (naive)" if scenario.app == "naive" else "lossless serve",
            str(analysis.requests),
            f"[red]{failed}[/]" if failed else "[green]0[/]",
            classes or "-",
            _main_cause(analysis),
            "[green]yes[/]" if expected else "[red]NO[/]",
        )
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 140)
    console.print(table)
    console.print(
        f"rate {args.rate:g} req/s · {args.replicas} replicas · endpoint propagation "
        f"{PROPAGATION} s · lossless drain delay {DRAIN_DELAY} s · "
        f"wall time {time.monotonic() - started:.0f} s"
    )
    console.print(f"results: {base} (lossless report {base}/<run>)")
    return 0 if all_expected else 1
