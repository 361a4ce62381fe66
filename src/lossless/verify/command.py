"""``lossless verify``: a real rolling upgrade under open-loop load, every failure explained.

Starts ``--replicas`` copies of ``--cmd`` as local processes (the lab), loads them through a
traffic model, rolls them out to the new version with the chosen strategy while the load goes on,
then writes the results (``--out``), prints a summary and returns the verdict:

- 0: the run completed with at most ``--max-failures`` failed requests (requests saved only by
  a proxy retry count as failed unless ``--allow-retries``);
- 1: more failures than that (or the rollout made no progress);
- 2: usage or input errors (bad flag, bad manifest, a command that does not start, a port taken);
- 3: inconclusive: the generator could not keep its schedule, a replica never answered on its
  port, or too few requests were due during the rollout (see
  :mod:`lossless.verify.analysis.verdict`);
- 130: interrupted (Ctrl-C); the results gathered so far are written and summarised all the same.

See docs/verify.md for every flag and how the lab maps to Kubernetes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from lossless import argtypes
from lossless.errors import LosslessError

__all__ = ["ProgressDisplay", "add_parser", "analyse_run", "build_config", "run", "summary_table"]

EXIT_INTERRUPTED = 130


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "verify",
        help="prove a rolling upgrade drops no request: real processes, real load, explained",
        description=(
            "Run REPLICAS copies of --cmd locally, send open-loop HTTP load, roll them out to a "
            "new version the way Kubernetes does, and explain every failed request."
        ),
    )
    g = p.add_argument_group("replicas")
    g.add_argument(
        "--cmd",
        metavar="CMD",
        help="replica command; {port} and $PORT are replaced by the replica's port (also in env "
        "PORT), e.g. 'python -m uvicorn app:app --port {port}'",
    )
    g.add_argument(
        "--new-cmd",
        metavar="CMD",
        help="the new version's command (default: --cmd with LOSSLESS_VERSION=v2 instead of v1)",
    )
    g.add_argument("-f", "--file", metavar="YAML", help="read settings from a Deployment manifest")
    g.add_argument("--container", metavar="NAME", help="the manifest's container (default: first)")
    g.add_argument("--replicas", type=argtypes.count, help="spec.replicas (default 3)")
    g.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for every replica (repeatable)",
    )
    g.add_argument("--cwd", metavar="DIR", help="working directory of the replicas (default: .)")
    g.add_argument(
        "--base-port",
        type=argtypes.port_number,
        metavar="PORT",
        help="give replicas ports PORT, PORT+1... (default: free ephemeral ports)",
    )
    argtypes.add_duration(
        g,
        "--ready-timeout",
        help="how long the first replicas may take to become available (default 30)",
        default=30.0,
    )

    g = p.add_argument_group("rollout")
    g.add_argument(
        "--strategy",
        choices=("rolling", "recreate", "naive"),
        help="rolling (RollingUpdate, default), recreate, or naive (the VM-style "
        "stop/start baseline)",
    )
    g.add_argument("--max-surge", metavar="N|P%", help="maxSurge (default 25%%, rounds up)")
    g.add_argument(
        "--max-unavailable", metavar="N|P%", help="maxUnavailable (default 25%%, rounds down)"
    )
    argtypes.add_duration(g, "--min-ready-seconds", help="minReadySeconds (default 0)")
    argtypes.add_duration(
        g,
        "--progress-deadline",
        help="fail when the rollout makes no progress this long (default 120)",
        default=120.0,
    )

    g = p.add_argument_group("readiness probe (httpGet, Kubernetes semantics)")
    g.add_argument(
        "--readiness-path",
        metavar="PATH",
        help="probe GET PATH on the replica's port; 200-399 is success",
    )
    g.add_argument(
        "--readiness-port",
        metavar="NAME|NUMBER",
        help="probe that container port instead of the main one: a {port:NAME} of --cmd, or "
        "a port of the manifest's container",
    )
    g.add_argument(
        "--readiness-grpc",
        nargs="?",
        const="",
        metavar="SERVICE",
        help="probe with grpc.health.v1 Check(SERVICE, default '') on the replica's port "
        "(Kubernetes' grpc probe); SERVING is success",
    )
    argtypes.add_duration(g, "--readiness-initial-delay", help="initialDelaySeconds (default 0)")
    argtypes.add_duration(
        g,
        "--readiness-period",
        help="periodSeconds (default 1 here; Kubernetes and manifests default to 10)",
    )
    argtypes.add_duration(g, "--readiness-timeout", help="timeoutSeconds (default 1)")
    g.add_argument(
        "--readiness-success-threshold",
        type=argtypes.count,
        metavar="N",
        help="successThreshold (default 1)",
    )
    g.add_argument(
        "--readiness-failure-threshold",
        type=argtypes.count,
        metavar="N",
        help="failureThreshold (default 3)",
    )

    g = p.add_argument_group("termination")
    pre = g.add_mutually_exclusive_group()
    argtypes.add_duration(pre, "--prestop-sleep", help="preStop sleep action")
    pre.add_argument("--prestop-exec", metavar="CMD", help="preStop exec command")
    pre.add_argument("--prestop-http", metavar="PATH", help="preStop httpGet PATH")
    argtypes.add_duration(g, "--grace-period", help="terminationGracePeriodSeconds (default 30)")
    g.add_argument(
        "--stop-signal",
        metavar="SIGNAL",
        help="the signal the runtime sends at termination: the image's STOPSIGNAL (nginx: "
        "SIGQUIT) or lifecycle.stopSignal (default: the manifest's, else SIGTERM)",
    )
    g.add_argument(
        "--pid1",
        choices=("auto", "namespace", "emulated"),
        default="auto",
        help="how the main process gets PID 1 signal rules: a PID namespace (needs "
        "CAP_SYS_ADMIN) or an emulation from its signal mask (default auto: the namespace "
        "when it works)",
    )

    g = p.add_argument_group("traffic and load")
    g.add_argument(
        "--traffic",
        help="how clients learn endpoints: service (kube-proxy nodes; the default), registry "
        "(clients watch etcd; the default with --registry) or ingress (every client goes "
        "through a real HAProxy whose servers follow the endpoints)",
    )
    g.add_argument(
        "--ingress-option",
        action="append",
        default=[],
        metavar="KEY=VALUE[,...]",
        help="--traffic ingress: HAProxy settings, e.g. retries=0,redispatch=0,"
        "retry-on=conn-failure+empty-response,http-reuse=never,checks=on (docs/ingress.md)",
    )
    g.add_argument(
        "--registry",
        metavar="URL",
        help="--traffic registry: etcd://HOST:PORT/PREFIX; every replica gets it as "
        "LOSSLESS_REGISTRY (with LOSSLESS_SERVICE_NAME and LOSSLESS_INSTANCE_ID=<pod name>) "
        "and registers itself; the clients watch PREFIX/SERVICE/",
    )
    g.add_argument(
        "--service-name",
        default="verify",
        metavar="NAME",
        help="--traffic registry: the service's name in the registry (default verify)",
    )
    argtypes.add_duration(
        g,
        "--registry-cache-ttl",
        help="--traffic registry: each client re-reads the registry every SECONDS, at its own "
        "phase (0: on every change; default 1)",
        default=1.0,
    )
    g.add_argument(
        "--clients",
        type=argtypes.count,
        default=3,
        metavar="N",
        help="simulated clients (kube-proxy nodes), each with its own lagged view",
    )
    g.add_argument(
        "--propagation-delay",
        default="1±0.5",
        metavar="MEAN[±JITTER]",
        help="per-client delay of endpoint changes, uniform (default 1±0.5 s; "
        "'1+-0.5' and '1:0.5' work too)",
    )
    g.add_argument(
        "--traffic-profile",
        metavar="NAME",
        help="the clients' sync timing: kube-proxy (default for service), ingress-nginx "
        "(default for ingress) or lag-only; --propagation-delay is its watch lag",
    )
    g.add_argument(
        "--controller-delay",
        default="0.15±0.1",
        metavar="MEAN[±JITTER]",
        help="latency of each Deployment controller reaction (kubelet status → ReplicaSet → "
        "Deployment → API), uniform (default 0.15±0.1 s)",
    )
    g.add_argument(
        "--rate",
        type=argtypes.positive_float("requests/s"),
        default=50.0,
        metavar="RPS",
        help="requests per second, open loop (default 50)",
    )
    argtypes.add_duration(
        g,
        "--before",
        "--duration-before",
        help="load before the rollout (default 3)",
        default=3.0,
        dest="before",
    )
    argtypes.add_duration(
        g,
        "--after",
        "--duration-after",
        help="load after the last old replica exited (default 3)",
        default=3.0,
        dest="after",
    )
    g.add_argument("--path", default="/", help="request path (default /)")
    # -- the request mix (issue 13) --
    g.add_argument("--method", help="request method (default GET)")
    g.add_argument(
        "--body", metavar="TEXT|@FILE", help="request body: TEXT, or @FILE for a file's bytes"
    )
    g.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="request header (repeatable; applies to every kind of the mix)",
    )
    g.add_argument(
        "--mix",
        action="append",
        default=[],
        metavar="'WEIGHT METHOD PATH [BODY|@FILE]'",
        help="a weighted kind of request, repeatable: --mix '80 GET /' --mix '20 POST /orders "
        "@order.json' (replaces --method/--path/--body)",
    )
    # -- gRPC load (issue 13, load/grpc_client.py) --
    g.add_argument(
        "--grpc",
        metavar="SERVICE/METHOD",
        help="load with unary gRPC calls over HTTP/2 instead of HTTP/1.1 requests "
        "(e.g. helloworld.Greeter/SayHello)",
    )
    g.add_argument(
        "--grpc-request",
        metavar="BYTES|@FILE",
        help="the serialized request message: TEXT's UTF-8 bytes, or @FILE's bytes "
        "(default: empty, a message with every field at its default)",
    )
    argtypes.add_duration(
        g,
        "--timeout",
        help="client timeout per request (default 5)",
        default=5.0,
        parse=argtypes.positive_duration,
    )
    g.add_argument(
        "--new-conn-ratio",
        type=argtypes.ratio,
        default=0.1,
        metavar="R",
        help="share of requests on a fresh connection (default 0.1)",
    )
    g.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    # -- long-lived clients (issue 13 item 3) --
    g.add_argument(
        "--streams",
        type=int,
        default=0,
        metavar="N",
        help="keep N SSE / chunked streams open (GET --stream-path), each reconnecting when "
        "it ends; one cut without its terminating chunk is a failure",
    )
    g.add_argument("--stream-path", default="/stream", metavar="PATH", help="default /stream")
    g.add_argument(
        "--websockets",
        type=int,
        default=0,
        metavar="N",
        help="keep N WebSocket connections open (--websocket-path), each reconnecting when it "
        "closes; one that ends without a close frame 1000/1001/1012 is a failure",
    )
    g.add_argument("--websocket-path", default="/ws", metavar="PATH", help="default /ws")

    g = p.add_argument_group("output")
    g.add_argument("--out", metavar="DIR", help="results directory (default: a new temp dir)")
    g.add_argument("--export", choices=("vegeta-csv",), help="also write results.csv for vegeta")
    g.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    g.add_argument(
        "--html",
        metavar="FILE",
        help="also write a self-contained HTML report (timeline, requests, failures) to FILE",
    )
    g.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    add_verdict_flags(p)
    # -- issue 16: restarts, liveness/startup, sidecar, --upgrades, --fault (stress_command.py)
    from lossless.verify.stress_command import add_arguments as add_stress_arguments

    add_stress_arguments(p)
    json_usage_errors(p)
    p.set_defaults(func=run)


# -- the verdict (issue 13): flags shared with ``lossless report`` --------------------------------
def add_verdict_flags(p: argparse.ArgumentParser) -> None:
    """The verdict's thresholds (``lossless verify`` and ``lossless report``)."""
    g = p.add_argument_group("verdict")
    g.add_argument(
        "--max-failures",
        type=argtypes.count,
        default=0,
        metavar="N",
        help="exit 1 when more than N requests failed (default 0)",
    )
    g.add_argument(
        "--allow-retries",
        action="store_true",
        help="do not count requests that succeeded only because a proxy retried them (they "
        "are shown all the same)",
    )
    argtypes.add_duration(
        g,
        "--late-threshold",
        help="a request sent more than this after its intended time is late (default 10ms)",
        default=0.010,
    )
    g.add_argument(
        "--max-late-ratio",
        type=argtypes.ratio,
        default=0.01,
        metavar="R",
        help="inconclusive (exit 3) when more than this share of requests was late (default 0.01)",
    )
    g.add_argument(
        "--min-window-requests",
        type=argtypes.count,
        default=10,
        metavar="N",
        help="inconclusive (exit 3) when fewer requests were due during the rollout (default 10)",
    )


def verdict_policy(args: argparse.Namespace) -> Any:
    from lossless.verify.analysis.verdict import VerdictPolicy

    return VerdictPolicy(
        max_failures=args.max_failures,
        allow_retries=args.allow_retries,
        late_threshold=args.late_threshold,
        max_late_ratio=args.max_late_ratio,
        min_window_requests=args.min_window_requests,
    )


def json_usage_errors(p: argparse.ArgumentParser) -> None:
    """With ``--json``, a usage error also prints ``{"error": ..., "exit_code": 2}`` on stdout
    (the one-line message stays on stderr), so a script reading stdout always gets an object."""
    parse = p.parse_known_args
    error = p.error
    wants_json = False

    def parse_known_args(args: Any = None, namespace: Any = None) -> Any:
        nonlocal wants_json
        wants_json = args is not None and "--json" in args
        return parse(args, namespace)

    def on_error(message: str) -> Any:
        if wants_json:
            print_json_error(f"{message} (see {p.prog} --help)")
        error(message)

    p.parse_known_args = parse_known_args  # type: ignore[assignment,method-assign]
    p.error = on_error  # type: ignore[method-assign]


def print_json_error(message: str, code: int = 2, **extra: Any) -> None:
    """The JSON object a failed ``--json`` run prints on stdout."""
    print(json.dumps({"error": message, "exit_code": code, **extra}, indent=2))


def _pick(flag: Any, manifest: Any, default: Any) -> Any:
    if flag is not None:
        return flag
    if manifest is not None:
        return manifest
    return default


def _controller_delay(text: str) -> Any:
    from lossless.verify.traffic.base import PropagationDelay

    try:
        return PropagationDelay.parse(text)
    except LosslessError:
        raise LosslessError(
            f"--controller-delay {text!r}: expected MEAN or MEAN±JITTER in seconds, >= 0"
        ) from None


def build_config(args: argparse.Namespace) -> Any:
    """Merge the manifest (if any), the flags and the defaults into a ``VerifyConfig``."""
    from lossless.verify.config import VerifyConfig
    from lossless.verify.lab.manifest import DeploymentSpec, load_deployment
    from lossless.verify.lab.prober import (
        ExecAction,
        Handler,
        HTTPGetAction,
        ProbeSpec,
        SleepAction,
        TCPSocketAction,
    )
    from lossless.verify.lab.process import split_command
    from lossless.verify.lab.rollout import RolloutStrategy
    from lossless.verify.stress_command import config_kwargs as stress_config
    from lossless.verify.traffic.base import PropagationDelay

    if not args.cmd:
        raise LosslessError("--cmd is required (the command that starts one replica)")
    spec: DeploymentSpec | None = None
    if args.file:
        spec = load_deployment(args.file, container=args.container)

    strategy_kind = _pick(args.strategy, spec.strategy if spec else None, "rolling")
    strategy = RolloutStrategy(
        strategy_kind,
        _pick(args.max_surge, spec.max_surge if spec else None, "25%"),
        _pick(args.max_unavailable, spec.max_unavailable if spec else None, "25%"),
    )

    readiness: ProbeSpec | None = spec.readiness if spec else None
    if args.readiness_path is not None:
        action = HTTPGetAction(path=args.readiness_path, port=args.readiness_port)
        readiness = (
            ProbeSpec(action=action, period=1.0)
            if readiness is None
            else dataclasses.replace(readiness, action=action)
        )
    elif args.readiness_port is not None:
        if readiness is None or not isinstance(readiness.action, HTTPGetAction | TCPSocketAction):
            raise LosslessError(
                "--readiness-port needs --readiness-path (or an httpGet/tcpSocket probe in -f)"
            )
        readiness = dataclasses.replace(
            readiness, action=dataclasses.replace(readiness.action, port=args.readiness_port)
        )
    timing = {
        "initial_delay": args.readiness_initial_delay,
        "period": args.readiness_period,
        "timeout": args.readiness_timeout,
        "success_threshold": args.readiness_success_threshold,
        "failure_threshold": args.readiness_failure_threshold,
    }
    if args.readiness_grpc is not None:  # issue 13: Kubernetes' grpc probe
        from lossless.verify.lab.prober import GRPCAction

        if args.readiness_path is not None:
            raise LosslessError("--readiness-path and --readiness-grpc: give one probe")
        grpc_action = GRPCAction(service=args.readiness_grpc)
        readiness = (
            ProbeSpec(action=grpc_action, period=1.0)
            if readiness is None
            else dataclasses.replace(readiness, action=grpc_action)
        )
    given = {k: v for k, v in timing.items() if v is not None}
    if given:
        if readiness is None:
            raise LosslessError(
                "readiness probe timing flags need --readiness-path, --readiness-grpc or -f"
            )
        readiness = dataclasses.replace(readiness, **given)

    prestop: Handler | None = spec.prestop if spec else None
    if args.prestop_sleep is not None:
        prestop = SleepAction(args.prestop_sleep)
    elif args.prestop_exec is not None:
        prestop = ExecAction(split_command(args.prestop_exec))
    elif args.prestop_http is not None:
        prestop = HTTPGetAction(path=args.prestop_http)

    env: list[tuple[str, str]] = []
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise LosslessError(f"--env {item!r}: expected KEY=VALUE")
        env.append((key, value))

    out = Path(args.out) if args.out else None
    cwd = Path(args.cwd) if args.cwd else None
    if cwd is not None and not cwd.is_dir():
        raise LosslessError(f"--cwd {cwd}: not a directory")
    return VerifyConfig(
        grpc=_grpc_target(args),
        requests=_request_mix(args),
        command=split_command(args.cmd),
        new_command=split_command(args.new_cmd) if args.new_cmd else None,
        out=out,
        replicas=_pick(args.replicas, spec.replicas if spec else None, 3),
        rate=args.rate,
        before=args.before,
        after=args.after,
        strategy=strategy,
        min_ready_seconds=_pick(
            args.min_ready_seconds, spec.min_ready_seconds if spec else None, 0.0
        ),
        readiness=readiness,
        prestop=prestop,
        grace=_pick(args.grace_period, spec.grace if spec else None, 30.0),
        propagation=PropagationDelay.parse(args.propagation_delay),
        clients=args.clients,
        new_conn_ratio=args.new_conn_ratio,
        seed=args.seed,
        path=args.path,
        timeout=args.timeout,
        traffic=args.traffic or ("registry" if args.registry else "service"),
        registry=args.registry,
        service_name=args.service_name,
        registry_cache_ttl=args.registry_cache_ttl,
        ingress=_ingress_settings(args),
        cwd=cwd,
        base_port=args.base_port,
        ready_timeout=args.ready_timeout,
        progress_deadline=args.progress_deadline,
        env=tuple(env),
        streams=args.streams,
        websockets=args.websockets,
        stream_path=args.stream_path,
        websocket_path=args.websocket_path,
        **stress_config(args, spec),  # issue 16 (stress_command.py)
        traffic_profile=args.traffic_profile,
        stop_signal=_pick(args.stop_signal, spec.stop_signal if spec else None, "SIGTERM"),
        pid1=args.pid1,
        ports=spec.ports if spec else (),
        port_aliases=spec.port_aliases if spec else (),
        controller_delay=_controller_delay(args.controller_delay),
    )


class ProgressDisplay:
    """A one-line live display on stderr: phase, replicas ready, requests sent, failures."""

    def __init__(self, replicas: int) -> None:
        from rich.console import Console
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.fields[phase]:<11}[/]"),
            TextColumn("ready {task.fields[ready]}/{task.fields[replicas]}"),
            TextColumn("sent {task.fields[sent]}"),
            TextColumn("failures [red]{task.fields[failures]}[/]"),
            TimeElapsedColumn(),
            TextColumn("[dim]{task.fields[detail]}[/]"),
            console=Console(stderr=True),
            transient=True,
        )
        self.task = self.progress.add_task(
            "verify", phase="starting", ready=0, replicas=replicas, sent=0, failures=0, detail=""
        )
        self.progress.start()

    def __call__(self, status: Any, t: float) -> None:
        self.progress.update(
            self.task,
            phase=status.phase,
            ready=status.ready_count(),
            sent=status.sent,
            failures=status.failures,
            detail=status.detail,
        )

    def stop(self) -> None:
        self.progress.stop()


def summary_table(analysis: Any, settings: dict[str, Any], out: Path) -> Any:
    """A rich Table with the run's key figures."""
    from rich.table import Table

    table = Table(title="lossless verify", show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value")
    table.add_row("strategy", str(settings.get("strategy", "")))
    table.add_row("replicas", str(settings.get("replicas", "")))
    table.add_row(
        "requests",
        f"{analysis.requests} ({analysis.rate_achieved:g} of {analysis.rate_sent:g} req/s "
        "achieved)",
    )
    table.add_row("ok", str(analysis.ok))
    by_class = ", ".join(f"{k} {v}" for k, v in sorted(analysis.failures_by_class.items()))
    failures = f"{analysis.failures}" + (f" ({by_class})" if by_class else "")
    table.add_row("failures", f"[red]{failures}[/]" if analysis.failures else "[green]0[/]")
    if analysis.retried or settings.get("traffic") == "ingress":
        p99 = analysis.retried_latency_ms.get("p99")
        latency = f", latency p99 {p99:.0f} ms" if p99 is not None else ""
        text = f"{analysis.retried} (succeeded only after a proxy retry{latency})"
        table.add_row("retried", f"[red]{text}[/]" if analysis.retried else text)
    if len(analysis.request_kinds) > 1 or any(
        not k["idempotent"] for k in analysis.request_kinds.values()
    ):
        from lossless.verify.render.text import describe_kind

        for name, figures in analysis.request_kinds.items():
            table.add_row(f"  {name}", describe_kind(figures))
    if analysis.artefacts:
        table.add_row("artefacts", f"{analysis.artefacts} (generator, not the service)")
    lat = analysis.latency_ms
    if lat:
        table.add_row(
            "latency",
            f"p50 {lat.get('p50', 0):.1f} ms · p99 {lat.get('p99', 0):.1f} ms · "
            f"max {lat.get('max', 0):.1f} ms",
        )
    lag = analysis.lag_ms
    if lag:
        table.add_row(
            "schedule lag", f"p50 {lag.get('p50', 0):.2f} ms · p99 {lag.get('p99', 0):.2f} ms"
        )
    for cause in analysis.causes:
        table.add_row(f"cause ({cause.count})", cause.cause)
        table.add_row("fix", cause.fix)
    table.add_row("results", str(out))
    return table


def _request_mix(args: argparse.Namespace) -> Any:
    """The request mix of ``--method/--path/--body/--header`` or ``--mix`` (None: GET --path)."""
    from lossless.verify.load.mix import RequestKind, RequestMix, parse_body, parse_header

    headers = tuple(parse_header(h) for h in args.header)
    if args.mix:
        if args.method is not None or args.body is not None or args.path != "/":
            raise LosslessError("--mix replaces --method, --path and --body: give one or the other")
        return RequestMix.parse(args.mix, headers)
    if args.method is None and args.body is None and not headers:
        return None
    body = parse_body(args.body) if args.body is not None else b""
    return RequestMix((RequestKind((args.method or "GET").upper(), args.path, body, headers),))


def _grpc_target(args: argparse.Namespace) -> Any:
    """``--grpc`` and ``--grpc-request`` as a GrpcTarget (None without ``--grpc``)."""
    if args.grpc is None:
        if args.grpc_request is not None:
            raise LosslessError("--grpc-request needs --grpc SERVICE/METHOD")
        return None
    from lossless.verify.load.grpc_client import GrpcTarget

    text: str | None = args.grpc_request
    request = b"" if text is None else text.encode("utf-8")
    if text is not None and text.startswith("@"):
        try:
            request = Path(text[1:]).read_bytes()
        except OSError as exc:
            raise LosslessError(
                f"--grpc-request {text}: cannot read {text[1:]}: {exc.strerror or exc}"
            ) from None
    return GrpcTarget.parse(args.grpc, request)


def _ingress_settings(args: argparse.Namespace) -> Any:
    from lossless.verify.haproxy.config import HAProxySettings

    settings = HAProxySettings()
    for text in args.ingress_option:
        settings = HAProxySettings.parse(text, settings)
    if args.ingress_option and args.traffic != "ingress":
        raise LosslessError("--ingress-option is used by --traffic ingress only")
    return settings


def analyse_run(out: Path) -> Any:
    """The analysis of the run directory ``out`` (read and analysed once)."""
    from lossless.verify.analysis.report import analyse_dir

    return analyse_dir(out).analysis


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except LosslessError as exc:
        if args.json:
            print_json_error(str(exc), exc.exit_code)
        raise


def analyse_for_output(
    out: Path, policy: Any, *, html: bool, export: Path | None
) -> tuple[Any, Any]:
    """Analyse the run directory ``out`` in one streamed pass (``analysis.report.analyse_dir``)
    that also gathers the HTML figure's points (``html``: returned second, else None), writes
    the vegeta export to ``export`` and counts lateness at the verdict's threshold: the
    report of ``lossless verify`` and ``lossless report``."""
    from lossless.verify.analysis.report import RecordSink, analyse_dir

    sinks: list[RecordSink] = []
    points = None
    if html:
        from lossless.verify.render.figure_points import RequestPoints

        points = RequestPoints()
        sinks.append(points)
    if export is not None:
        from lossless.verify.results import VegetaExport

        sinks.append(VegetaExport(export))
    report = analyse_dir(out, keep_records=False, sinks=sinks, late_threshold=policy.late_threshold)
    return report, points


def _run(args: argparse.Namespace) -> int:
    from lossless.verify.analysis.verdict import judge
    from lossless.verify.render.text import verdict_line
    from lossless.verify.runner import execute

    policy = verdict_policy(args)
    cfg = build_config(args)
    if cfg.out is None:
        cfg = dataclasses.replace(cfg, out=Path(tempfile.mkdtemp(prefix="lossless-verify-")))
    export = cfg.out / "results.csv" if args.export == "vegeta-csv" else None
    show_progress = not args.quiet and not args.json and sys.stderr.isatty()
    display = ProgressDisplay(cfg.replicas) if show_progress else None
    try:
        outcome = execute(cfg, progress=display, quiet=args.quiet or args.json)
    finally:
        if display is not None:
            display.stop()
    # read and analysed once, in one pass over the records that also gathers the HTML
    # figure's points and writes the export: memory stays flat however long the run (issue 16)
    report, points = analyse_for_output(cfg.out, policy, html=bool(args.html), export=export)
    analysis = report.analysis
    # -- issue 16: restarts, per-upgrade figures, fault attribution (stress_command.py)
    from lossless.verify.stress_command import report as stress_report

    stress = stress_report(cfg.out, analysis, cfg.faults_count, report.upgrades)
    verdict = judge(report, policy, uncounted=stress.uncounted())
    if args.html:
        from lossless.verify.render.html_page import write_html

        size = write_html(report, args.html, verdict=verdict, points=points)
        if not args.json:
            print(f"wrote the HTML report to {args.html} ({size / 1e6:.1f} MB)", file=sys.stderr)
    if outcome.error is not None:
        code = outcome.error.exit_code
    elif outcome.interrupted:
        code = EXIT_INTERRUPTED
    else:
        code = verdict.exit_code
    if args.json:
        doc = analysis.to_json()
        doc["streams"] = None if report.streams is None else report.streams.to_json()
        doc.update(verdict.to_json())
        doc.update(
            results=str(cfg.out),
            interrupted=outcome.interrupted,
            error=None if outcome.error is None else str(outcome.error),
            exit_code=code,
        )
        doc.update(stress.to_json(analysis.failures))  # issue 16
        print(json.dumps(doc, indent=2, sort_keys=False))
    elif outcome.error is None or analysis.requests:
        from rich.console import Console
        from rich.markup import escape

        console = Console(highlight=False, soft_wrap=False, width=_width())
        table = summary_table(analysis, cfg.settings(), cfg.out)
        if report.streams is not None:
            from lossless.verify.render.streams import stream_rows

            for what, value in stream_rows(report.streams):
                table.add_row(what, escape(value))
            for cause in report.streams.causes:
                table.add_row(f"stream cause ({cause.count})", escape(cause.cause))
                table.add_row("fix", escape(cause.fix))
        console.print(table)
        for line in stress.lines(analysis.failures):  # issue 16
            console.print(line, markup=False)
        if outcome.error is None and not outcome.interrupted:
            console.print(
                f"{escape(verdict_line(analysis, verdict))}  (details: lossless report {cfg.out})"
            )
    if outcome.error is not None:
        print(
            f"lossless verify: error: {outcome.error} (results so far: {cfg.out})",
            file=sys.stderr,
        )
    elif outcome.interrupted:
        print(f"lossless verify: interrupted; results so far: {cfg.out}", file=sys.stderr)
    return code


def _width() -> int | None:
    return None if sys.stdout.isatty() else int(os.environ.get("COLUMNS", "110"))
