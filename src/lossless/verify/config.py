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
from lossless.verify.lab.pod import PodTemplate
from lossless.verify.lab.prober import Handler, ProbeSpec
from lossless.verify.lab.rollout import RolloutStrategy
from lossless.verify.load.mix import RequestKind, RequestMix
from lossless.verify.traffic.base import TRAFFIC_MODELS, PropagationDelay

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
        if self.grpc is not None and self.requests is not None:
            raise LosslessError("--grpc replaces the HTTP request flags (--method, --body, --mix)")
        if self.grpc is not None and self.traffic == "ingress":
            raise LosslessError(
                "--grpc works with --traffic service or registry (the ingress model's HAProxy "
                "speaks HTTP/1.1 to the replicas)"
            )

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
        version = self.new_version if new else self.old_version
        command = self.new_command if new and self.new_command else self.command
        return PodTemplate(
            command=command,
            version=version,
            env={**dict(self.env), **self.registry_env(), "LOSSLESS_VERSION": version},
            readiness=self.readiness,
            prestop=self.prestop,
            grace=self.grace,
        )

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
            "versions": [self.old_version, self.new_version],
            **registry,
        }
