"""The settings of one verification run (:class:`VerifyConfig`), validated once at creation.

``lossless verify`` builds it from its flags (and ``-f`` manifests), ``lossless demo`` from its
embedded defaults; :func:`lossless.verify.runner.execute` runs it and ``settings.json`` records it.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from lossless.errors import LosslessError
from lossless.verify.haproxy.config import HAProxySettings
from lossless.verify.lab.faults import FaultSpec
from lossless.verify.lab.pod import PodTemplate
from lossless.verify.lab.prober import Handler, ProbeSpec
from lossless.verify.lab.process import PID1_MODES, parse_signal, pid1_mode, port_keys
from lossless.verify.lab.restart import RESTART_POLICIES, BackOffPolicy
from lossless.verify.lab.rollout import RolloutStrategy
from lossless.verify.lab.sidecar import SidecarSpec
from lossless.verify.load.mix import RequestKind, RequestMix
from lossless.verify.traffic.base import TRAFFIC_MODELS, PropagationDelay
from lossless.verify.traffic.sync import TimingProfile, profile_named

__all__ = ["VerifyConfig"]


@dataclasses.dataclass(frozen=True)
class VerifyConfig:
    """Everything one run needs. ``command``/``new_command`` are argv templates; without
    ``new_command`` the new version is ``command`` with ``LOSSLESS_VERSION`` set to
    ``new_version`` instead of ``old_version``."""

    command: tuple[str, ...]
    out: Path | None  # None: the caller picks one before execute()
    new_command: tuple[str, ...] | None = None
    replicas: int = 3
    rate: float = 50.0
    before: float = 3.0
    after: float = 3.0
    strategy: RolloutStrategy = dataclasses.field(default_factory=RolloutStrategy)
    min_ready_seconds: float = 0.0
    readiness: ProbeSpec | None = None
    prestop: Handler | None = None
    grace: float = 30.0
    propagation: PropagationDelay = dataclasses.field(default_factory=PropagationDelay)
    clients: int = 3
    new_conn_ratio: float = 0.1
    seed: int = 0
    path: str = "/"
    timeout: float = 5.0
    lag_budget: float = 0.1
    traffic: str = "service"
    cwd: Path | None = None
    base_port: int | None = None
    ready_timeout: float = 30.0
    progress_deadline: float = 120.0
    env: tuple[tuple[str, str], ...] = ()
    old_version: str = "v1"
    new_version: str = "v2"
    host: str = "127.0.0.1"
    # --traffic registry: the etcd:// URL replicas register in and clients watch, the service's
    # name there, and how long each client caches what it read
    registry: str | None = None
    service_name: str = "verify"
    registry_cache_ttl: float = 1.0
    # --traffic ingress: the HAProxy settings that decide outcomes (retries, redispatch...)
    ingress: HAProxySettings = dataclasses.field(default_factory=HAProxySettings)
    # -- the request mix (issue 13): --method/--body/--header or --mix; None: GET ``path``
    requests: RequestMix | None = None
    # -- long-lived clients (issue 13 item 3): SSE streams and WebSocket connections kept open
    streams: int = 0
    websockets: int = 0
    stream_path: str = "/stream"
    websocket_path: str = "/ws"
    # -- issue 16: restarts, liveness/startup probes, a sidecar, upgrades in a row, faults
    backoff: BackOffPolicy = dataclasses.field(default_factory=BackOffPolicy)
    restart_policy: str = "Always"
    liveness: ProbeSpec | None = None
    startup: ProbeSpec | None = None
    sidecar: SidecarSpec | None = None
    upgrades: int = 1
    faults: tuple[FaultSpec, ...] = ()
    faults_count: bool = False
    # --traffic-profile: the clients' sync timing (None: kube-proxy for service, ingress-nginx
    # for ingress); its watch lag is always ``propagation``
    traffic_profile: str | None = None
    # the runtime's stop signal (the image's STOPSIGNAL or lifecycle.stopSignal)
    stop_signal: str = "SIGTERM"
    # --pid1: how replicas get PID 1 signal rules (auto, namespace, emulated)
    pid1: str = "auto"
    # container ports besides the main one (one tuple of keys each), and the main one's names
    ports: tuple[tuple[str, ...], ...] = ()
    port_aliases: tuple[str, ...] = ()
    # kubelet status -> ReplicaSet -> Deployment controller -> pod deletion: per controller sync
    controller_delay: PropagationDelay = dataclasses.field(
        default_factory=lambda: PropagationDelay(0.15, 0.1)
    )
    # -- gRPC load (issue 13): --grpc SERVICE/METHOD; a GrpcTarget (load/grpc_client.py) or None
    grpc: Any = None

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise LosslessError(f"--replicas must be >= 1 (got {self.replicas})")
        if not self.rate > 0:
            raise LosslessError(f"--rate must be > 0 requests/s (got {self.rate})")
        for name in ("before", "after", "min_ready_seconds", "grace"):
            if not getattr(self, name) >= 0:
                raise LosslessError(f"{name.replace('_', '-')} must be >= 0")
        if not 0 <= self.new_conn_ratio <= 1:
            raise LosslessError(f"--new-conn-ratio must be within 0..1 (got {self.new_conn_ratio})")
        if self.traffic not in TRAFFIC_MODELS:
            raise LosslessError(
                f"--traffic {self.traffic}: not available (models: {', '.join(TRAFFIC_MODELS)})"
            )
        if self.old_version == self.new_version:
            raise LosslessError("the old and new versions must differ")
        if not self.path.startswith("/"):
            raise LosslessError(f"--path must start with / (got {self.path!r})")
        self._check_registry()
        self._check_long_lived()
        self._check_stress()
        parse_signal(self.stop_signal)
        if self.traffic_profile is not None:
            if self.traffic == "registry":
                raise LosslessError(
                    "--traffic-profile does not apply to --traffic registry "
                    "(its clients' timing is --registry-cache-ttl)"
                )
            profile_named(self.traffic_profile)
        if self.pid1 not in PID1_MODES:
            raise LosslessError(f"--pid1 {self.pid1}: expected one of {', '.join(PID1_MODES)}")

        if self.grpc is not None and self.requests is not None:
            raise LosslessError("--grpc replaces the HTTP request flags (--method, --body, --mix)")
        if self.grpc is not None and self.traffic == "ingress":
            raise LosslessError(
                "--grpc works with --traffic service or registry (the ingress model's HAProxy "
                "speaks HTTP/1.1 to the replicas)"
            )

    def _check_long_lived(self) -> None:
        if self.streams < 0 or self.websockets < 0:
            raise LosslessError("--streams and --websockets must be >= 0")
        for flag, path in (
            ("--stream-path", self.stream_path),
            ("--websocket-path", self.websocket_path),
        ):
            if not path.startswith("/"):
                raise LosslessError(f"{flag} must start with / (got {path!r})")

    # -- issue 16 ----------------------------------------------------------------------------
    def _check_stress(self) -> None:
        if self.upgrades < 1:
            raise LosslessError(f"--upgrades must be >= 1 (got {self.upgrades})")
        if self.restart_policy not in RESTART_POLICIES:
            raise LosslessError(
                f"restartPolicy {self.restart_policy!r}: one of {', '.join(RESTART_POLICIES)}"
            )
        versions = self.versions()
        if len(set(versions)) != len(versions):
            raise LosslessError(f"--upgrades {self.upgrades}: versions collide ({versions})")
        if self.upgrades > 1 and self.strategy.kind == "naive":
            raise LosslessError("--upgrades > 1 needs --strategy rolling or recreate")

    def versions(self) -> list[str]:
        """v1, v2, then v3… for ``--upgrades`` > 1 (one version per upgrade, plus the first)."""
        extra = [f"v{i}" for i in range(3, self.upgrades + 2)]
        return [self.old_version, self.new_version, *extra]

    def template_at(self, index: int) -> PodTemplate:
        """The pod template of version ``index`` (0: the first; k: after upgrade k): ``--cmd``
        for the first, ``--new-cmd`` (else ``--cmd``) for every later one."""
        version = self.versions()[index]
        command = self.new_command if index > 0 and self.new_command else self.command
        return PodTemplate(
            command=command,
            version=version,
            env={**dict(self.env), **self.registry_env(), "LOSSLESS_VERSION": version},
            readiness=self.readiness,
            prestop=self.prestop,
            grace=self.grace,
            restart_policy=self.restart_policy,
            liveness=self.liveness,
            startup=self.startup,
            sidecar=self.sidecar,
            stop_signal=parse_signal(self.stop_signal),
            pid1=self.strategy.kind != "naive",  # the naive baseline is a process on a VM
            ports=self.all_ports(),
            port_aliases=self.port_aliases,
        )

    def stress_settings(self) -> dict[str, Any]:
        """settings.json fields of issue 16 (restarts, probes, sidecar, upgrades, faults)."""

        def probe(spec: ProbeSpec | None) -> dict[str, Any] | None:
            if spec is None:
                return None
            return {
                "action": spec.action.describe(),
                "initial_delay": spec.initial_delay,
                "period": spec.period,
                "timeout": spec.timeout,
                "success_threshold": spec.success_threshold,
                "failure_threshold": spec.failure_threshold,
            }

        return {
            "restart_policy": self.restart_policy,
            "backoff_scale": self.backoff.scale,
            "crash_loop_limit": self.backoff.limit,
            "liveness_probe": probe(self.liveness),
            "startup_probe": probe(self.startup),
            "sidecar": None
            if self.sidecar is None
            else {"command": list(self.sidecar.command), "kind": self.sidecar.kind},
            "upgrades": self.upgrades,
            "faults": [f.text for f in self.faults],
            "faults_count": self.faults_count,
        }

    def profile(self) -> TimingProfile:
        """The clients' timing profile, with ``propagation`` as its watch lag."""
        name = self.traffic_profile or (
            "ingress-nginx" if self.traffic == "ingress" else "kube-proxy"
        )
        return profile_named(name).with_lag(self.propagation)

    def all_ports(self) -> tuple[tuple[str, ...], ...]:
        """``ports`` plus every ``{port:KEY}`` the commands name that is not declared."""
        groups = list(self.ports)
        known = {key for group in groups for key in group} | set(self.port_aliases)
        for command in (self.command, self.new_command or ()):
            for key in port_keys(command):
                if key not in known:
                    groups.append((key,))
                    known.add(key)
        return tuple(groups)

    def _check_registry(self) -> None:
        if self.traffic != "registry":
            if self.registry is not None:
                raise LosslessError(
                    f"--registry is used by --traffic registry only (not --traffic {self.traffic})"
                )
            return
        if not self.registry:
            raise LosslessError("--traffic registry needs --registry etcd://HOST:PORT/PREFIX")
        from lossless.discovery.urls import etcd_from_url

        etcd_from_url(self.registry)  # a bad URL fails here, before anything starts
        name = self.service_name
        if not name or "/" in name or name.strip() != name:
            raise LosslessError(f"--service-name {name!r}: expected a name without '/' or spaces")
        if not (math.isfinite(self.registry_cache_ttl) and self.registry_cache_ttl >= 0):
            raise LosslessError(
                f"--registry-cache-ttl must be >= 0 seconds (got {self.registry_cache_ttl})"
            )

    @property
    def mix(self) -> RequestMix:
        """What the load sends: ``requests``, else GET ``path``."""
        if self.requests is not None:
            return self.requests
        return RequestMix((RequestKind(path=self.path),))

    @property
    def out_dir(self) -> Path:
        if self.out is None:
            raise ValueError("VerifyConfig.out must be set before the run")
        return self.out

    def template(self, new: bool) -> PodTemplate:
        return self.template_at(1 if new else 0)

    def registry_env(self) -> dict[str, str]:
        """What every replica gets with ``--traffic registry`` (``lossless serve`` reads it and
        registers itself; the lab adds ``LOSSLESS_INSTANCE_ID=<pod name>`` per replica)."""
        if self.traffic != "registry" or not self.registry:
            return {}
        return {
            "LOSSLESS_REGISTRY": self.registry,
            "LOSSLESS_SERVICE_NAME": self.service_name,
            "LOSSLESS_ADVERTISE_ADDRESS": self.host,
        }

    def settings(self) -> dict[str, Any]:
        """The run's settings as JSON (settings.json)."""

        def handler(h: Handler | None) -> str | None:
            return None if h is None else h.describe()

        probe = self.readiness
        registry: dict[str, Any] = {}
        if self.traffic == "registry":
            registry = {
                "registry": self.registry,
                "service_name": self.service_name,
                "registry_cache_ttl": self.registry_cache_ttl,
            }
        if self.traffic == "ingress":
            registry = {"ingress": self.ingress.to_json()}
        if self.traffic != "registry":
            registry["traffic_profile"] = self.profile().to_json()
        return {
            "command": list(self.command),
            "new_command": list(self.new_command) if self.new_command else None,
            "replicas": self.replicas,
            "rate": self.rate,
            "duration_before": self.before,
            "duration_after": self.after,
            "strategy": self.strategy.kind,
            "max_surge": self.strategy.max_surge,
            "max_unavailable": self.strategy.max_unavailable,
            "min_ready_seconds": self.min_ready_seconds,
            "readiness_probe": None
            if probe is None
            else {
                "action": probe.action.describe(),
                "initial_delay": probe.initial_delay,
                "period": probe.period,
                "timeout": probe.timeout,
                "success_threshold": probe.success_threshold,
                "failure_threshold": probe.failure_threshold,
            },
            "prestop": handler(self.prestop),
            "grace_period": self.grace,
            "stop_signal": parse_signal(self.stop_signal).name,
            "pid1": pid1_mode(self.pid1) if self.strategy.kind != "naive" else "none (naive)",
            "ports": [list(group) for group in self.all_ports()],
            "controller_delay": {
                "mean": self.controller_delay.mean,
                "jitter": self.controller_delay.jitter,
            },
            "traffic": self.traffic,
            "clients": self.clients,
            "propagation_delay": {
                "mean": self.propagation.mean,
                "jitter": self.propagation.jitter,
            },
            "propagation_delay_max": self.propagation.max,
            "new_conn_ratio": self.new_conn_ratio,
            "seed": self.seed,
            "path": self.path,
            "url": f"http://{self.host}{self.path if self.grpc is None else self.grpc.method}",
            **({"grpc": self.grpc.to_json()} if self.grpc is not None else {}),
            "requests": self.mix.to_json() if self.grpc is None else [self.grpc.request_kind()],
            "timeout": self.timeout,
            "lag_budget": self.lag_budget,
            "versions": self.versions(),
            "long_lived": {
                "streams": self.streams,
                "websockets": self.websockets,
                "stream_path": self.stream_path,
                "websocket_path": self.websocket_path,
            },
            **registry,
            **self.stress_settings(),
        }
