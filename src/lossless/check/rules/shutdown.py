"""Shutdown: keep serving while endpoint removal propagates, and fit the grace period."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lossless.check.dockerfile import base_lacks_sleep
from lossless.check.k8s import Container, as_int
from lossless.check.model import Hit, Location, Severity, rule
from lossless.check.shell import is_shell

if TYPE_CHECKING:
    from lossless.check.engine import Context

#: The runtime's default shutdown timeout (DESIGN.md: 25 s, fits the default 30 s grace).
RUNTIME_SHUTDOWN_TIMEOUT = 25.0
SLEEP_ACTION_BETA = (1, 30)
SLEEP_ACTION_ALPHA = (1, 29)
SLEEP_ACTION_GA = (1, 34)


def parse_seconds(value: Any) -> float | None:
    """``5``, ``"5"``, ``"5s"``, ``"1.5"``, ``"500ms"``, ``"1m"`` → seconds; ``None`` if unknown."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", str(value))
    if not match:
        return None
    number = float(match.group(1))
    unit = match.group(2) or "s"
    return number * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


def _fmt(seconds: float) -> str:
    return f"{seconds:g} s"


@dataclass(frozen=True)
class PreStop:
    """A container's preStop hook: how long it sleeps (``None`` if unknown) and how."""

    kind: str  # "sleep" (native), "exec", "httpGet"
    seconds: float | None
    argv: tuple[str, ...] = ()
    uses_shell: bool = False


def prestop(container: Container) -> PreStop | None:
    hook = container.get("lifecycle", "preStop")
    if not isinstance(hook, Mapping):
        return None
    sleep = hook.get("sleep")
    if isinstance(sleep, Mapping):
        return PreStop("sleep", parse_seconds(sleep.get("seconds")))
    exec_ = hook.get("exec")
    if isinstance(exec_, Mapping):
        argv = tuple(str(c) for c in exec_.get("command") or [])
        return PreStop("exec", exec_sleep_seconds(argv), argv, bool(argv) and is_shell(argv[0]))
    if isinstance(hook.get("httpGet"), Mapping):
        return PreStop("httpGet", None)
    return None


def exec_sleep_seconds(argv: tuple[str, ...]) -> float | None:
    """Seconds slept by ``sleep N``, ``sh -c "... sleep N ..."``, ``lossless prestop --sleep N``."""
    if not argv:
        return None
    program = argv[0].rsplit("/", 1)[-1]
    if program == "sleep" and len(argv) > 1:
        return parse_seconds(argv[1])
    if is_shell(argv[0]):
        script = " ".join(argv[1:])
        total = [parse_seconds(m) for m in re.findall(r"\bsleep\s+([\d.]+(?:ms|s|m)?)", script)]
        known = [t for t in total if t is not None]
        if known:
            return sum(known)
        if "lossless" in script:
            try:
                return exec_sleep_seconds(tuple(shlex.split(script)))
            except ValueError:
                return None
        return None
    words = list(argv)
    if "lossless" in (w.rsplit("/", 1)[-1] for w in words) and "prestop" in words:
        for i, word in enumerate(words):
            if word == "--sleep" and i + 1 < len(words):
                return parse_seconds(words[i + 1])
            if word.startswith("--sleep="):
                return parse_seconds(word.split("=", 1)[1])
    return None


@dataclass(frozen=True)
class Drain:
    """The in-app drain a container declares: ``seconds`` it may take after SIGTERM."""

    how: str
    seconds: float
    location: Location


#: Pod-template annotation by which an app that drains itself in code says so (docs/check.md).
DRAIN_ANNOTATION = "lossless.dev/drain"


def annotated_drain(container: Container) -> Drain | None:
    """The ``lossless.dev/drain`` annotation on the pod template (or the workload).

    ``app`` says the application keeps serving after SIGTERM until endpoint removal has
    propagated, then drains (its time is not stated: LL202 counts 0 s for it); ``app 20s`` (or
    ``20s``) also says how long that takes. Any other value is ignored (the rule then fires, and
    says nothing about the annotation).
    """
    workload = container.workload
    for path in ((*workload.pod_path, "metadata", "annotations"), ("metadata", "annotations")):
        annotations = workload.get(*path)
        if not isinstance(annotations, Mapping) or DRAIN_ANNOTATION not in annotations:
            continue
        words = str(annotations.get(DRAIN_ANNOTATION) or "").replace(",", " ").split()
        if words and words[0].lower() == "app":
            words = words[1:]
        elif not words or parse_seconds(words[0]) is None:
            return None
        seconds = parse_seconds(words[0]) if words else 0.0
        if seconds is None:
            return None
        where = workload.loc(*path, DRAIN_ANNOTATION)
        return Drain(f"the {DRAIN_ANNOTATION} annotation", seconds, where)
    return None


def declared_drain(container: Container) -> Drain | None:
    """The in-app drain a container declares, or ``None``.

    ``LOSSLESS_*`` environment variables or a command running ``lossless serve``/``run``: the
    runtime's shutdown deadline covers the drain delay (DESIGN.md: one deadline), so the time it
    may take is ``LOSSLESS_SHUTDOWN_TIMEOUT`` (default 25 s), at least the drain delay. Else the
    ``lossless.dev/drain`` annotation (:func:`annotated_drain`), for apps that drain in code.
    """
    env = container.env
    names = [n for n in env if n.startswith("LOSSLESS_")]
    words = " ".join(container.argv)
    runs_lossless = re.search(r"\blossless\s+(serve|run)\b", words) is not None
    if not names and not runs_lossless:
        return annotated_drain(container)
    timeout = parse_seconds(env.get("LOSSLESS_SHUTDOWN_TIMEOUT"))
    delay = parse_seconds(env.get("LOSSLESS_DRAIN_DELAY"))
    seconds = timeout if timeout is not None else RUNTIME_SHUTDOWN_TIMEOUT
    if delay is not None:
        seconds = max(seconds, delay)
    if timeout is not None:
        how, where = "LOSSLESS_SHUTDOWN_TIMEOUT", container.env_loc("LOSSLESS_SHUTDOWN_TIMEOUT")
    elif names:
        how, where = (
            f"the runtime's default shutdown timeout ({names[0]} set)",
            container.loc("env"),
        )
    else:
        how, where = "the runtime's default shutdown timeout", container.loc("command")
    return Drain(how, seconds, where)


@rule("LL201", "no-prestop-or-drain", family="shutdown", severity=Severity.ERROR)
def no_prestop_or_drain(ctx: Context) -> Iterator[Hit]:
    """Service-backed container with neither a preStop hook nor an in-app drain.

    ## What it does
    Flags a container that serves a Service's traffic and declares no way to keep serving while
    its endpoint is being removed: no `lifecycle.preStop` hook, no `LOSSLESS_*` environment
    variable of the lossless runtime, no `lossless serve` / `lossless run` in its command or
    args, and no `lossless.dev/drain` annotation on the pod template (the way an app that
    drains itself in code says so: `lossless.dev/drain: app`, or `app 20s` with the time it
    takes, which LL202 then counts).

    ## Why is this bad?
    When a pod is deleted, Kubernetes removes it from the endpoints *and* sends SIGTERM at the
    same time. kube-proxy, ingress controllers and client-side caches learn about the removal
    a few hundred milliseconds to several seconds later, and keep sending new connections to the
    pod meanwhile. Most servers close their listener on SIGTERM at once: those requests are
    refused or reset. A preStop sleep (or an application drain delay) keeps the pod serving
    until the removal has propagated.

    ## Example
    ```yaml
    containers:
      - name: web
        image: ghcr.io/acme/web:1.4
        ports: [{containerPort: 8080}]
    ```

    ## Use instead
    ```yaml
    containers:
      - name: web
        image: ghcr.io/acme/web:1.4
        ports: [{containerPort: 8080}]
        lifecycle:
          preStop:
            sleep: {seconds: 5}     # Kubernetes >= 1.30; else exec: [sleep, "5"]
    ```
    or run the application under `lossless serve` and set `LOSSLESS_DRAIN_DELAY`; or, when the
    application itself keeps serving after SIGTERM until its endpoint is gone, say so:
    ```yaml
    template:
      metadata:
        annotations:
          lossless.dev/drain: app 20s   # keeps serving 5 s, then drains within 20 s
    ```
    """
    for workload in ctx.serving:
        for container in ctx.serving_containers(workload):
            if prestop(container) is None and declared_drain(container) is None:
                yield Hit(
                    container.loc("name"),
                    f"container '{container.name}' of {workload.ref} has no preStop hook and "
                    "no in-app drain: it stops serving on SIGTERM while clients still route "
                    "to it",
                    workload,
                )


@rule("LL202", "shutdown-exceeds-grace", family="shutdown", severity=Severity.ERROR)
def shutdown_exceeds_grace(ctx: Context) -> Iterator[Hit]:
    """preStop + in-app drain + margin does not fit terminationGracePeriodSeconds.

    ## What it does
    Adds up the preStop sleep (native `sleep` action, exec `sleep N`, `sh -c "sleep N"`,
    `lossless prestop --sleep N`), the time the application may take to drain after SIGTERM
    (`LOSSLESS_SHUTDOWN_TIMEOUT`, 25 s by default under the lossless runtime, at least
    `LOSSLESS_DRAIN_DELAY`; or the time given in a `lossless.dev/drain: app 20s` annotation)
    and a safety margin (`grace-margin`, 2 s), and flags the container
    when the sum exceeds `terminationGracePeriodSeconds` (30 s by default).

    ## Why is this bad?
    The grace period starts when the pod is deleted and *includes* the preStop hook. SIGTERM
    is only sent once preStop returns, so a long preStop eats the application's drain time;
    when the period ends the kubelet sends SIGKILL and every request still in flight is cut.

    ## Example
    ```yaml
    terminationGracePeriodSeconds: 30
    containers:
      - name: web
        lifecycle:
          preStop: {exec: {command: [sleep, "15"]}}
        env:
          - {name: LOSSLESS_SHUTDOWN_TIMEOUT, value: "25"}
    ```

    ## Use instead
    ```yaml
    terminationGracePeriodSeconds: 45   # >= 15 s preStop + 25 s drain + margin
    containers:
      - name: web
        lifecycle:
          preStop: {exec: {command: [sleep, "15"]}}
        env:
          - {name: LOSSLESS_SHUTDOWN_TIMEOUT, value: "25"}
    ```
    """
    margin = ctx.config.grace_margin
    for workload in ctx.workloads:
        if workload.is_batch:
            continue
        grace = workload.grace_period
        if grace <= 0:
            continue  # LL205
        for container in workload.containers():
            hook = prestop(container)
            drain = declared_drain(container)
            if hook is None and drain is None:
                continue
            sleep = hook.seconds if hook is not None and hook.seconds is not None else 0.0
            app = drain.seconds if drain is not None else 0.0
            if sleep + app + margin <= grace:
                continue
            parts = []
            if hook is not None:
                parts.append(f"{_fmt(sleep)} preStop")
            if drain is not None:
                parts.append(f"{_fmt(app)} drain ({drain.how})")
            parts.append(f"{margin} s margin")
            grace_path = (*workload.pod_spec_path, "terminationGracePeriodSeconds")
            where = (
                workload.loc(*grace_path)
                if workload.get(*grace_path) is not None
                else container.loc("lifecycle", "preStop")
                if hook is not None
                else drain.location
                if drain is not None
                else container.loc("name")
            )
            yield Hit(
                where,
                f"container '{container.name}': {grace} s terminationGracePeriodSeconds < "
                f"{' + '.join(parts)}: the kubelet SIGKILLs requests still in flight",
                workload,
            )


@rule("LL203", "prestop-sleep-missing-binary", family="shutdown", severity=Severity.ERROR)
def prestop_sleep_missing_binary(ctx: Context) -> Iterator[Hit]:
    """exec preStop runs `sleep` (or a shell) in an image that has neither.

    ## What it does
    Flags an exec preStop hook that runs `sleep` or `sh -c ...` in a container whose image has
    no such binary: the image is `scratch`, distroless (not a `:debug` tag), Chainguard
    `static` or an Ubuntu chiseled image (`ubuntu/python:3.12-24.04_chiseled`,
    `mcr.microsoft.com/dotnet/aspnet:8.0-jammy-chiseled`), either named directly in the manifest or as the base of the final stage of the
    Dockerfile in the checked tree that builds it (matched by name: image `…/orders` and
    `orders/Dockerfile`, `orders.Dockerfile` or `Dockerfile.orders`).

    ## Why is this bad?
    The hook fails at once ("executable file not found"), the kubelet logs a
    FailedPreStopHook event and sends SIGTERM immediately: the preStop delay you relied on to
    let endpoint removal propagate does not exist, and requests are dropped on every rollout.

    ## Example
    ```yaml
    image: ghcr.io/acme/api:2.0      # FROM gcr.io/distroless/python3
    lifecycle:
      preStop:
        exec: {command: [sleep, "5"]}
    ```

    ## Use instead
    ```yaml
    image: ghcr.io/acme/api:2.0
    lifecycle:
      preStop:
        sleep: {seconds: 5}          # native action, no binary needed (Kubernetes >= 1.30)
    ```
    """
    for workload in ctx.workloads:
        for container in workload.containers():
            hook = prestop(container)
            if hook is None or hook.kind != "exec" or not hook.argv:
                continue
            program = hook.argv[0].rsplit("/", 1)[-1]
            if program != "sleep" and not hook.uses_shell:
                continue
            image, via = container.image, ""
            if not base_lacks_sleep(image):
                dockerfile = ctx.dockerfile_for(container)
                if dockerfile is None or not base_lacks_sleep(dockerfile.final_base()):
                    continue
                image, via = dockerfile.final_base(), f" (final stage of {dockerfile.path})"
            yield Hit(
                container.loc("lifecycle", "preStop", "exec", "command"),
                f"preStop of container '{container.name}' runs '{hook.argv[0]}', but its image "
                f"is built on {image}{via}, which has no {program}: the hook fails and SIGTERM "
                "is sent at once",
                workload,
            )


@rule("LL204", "sleep-action-unsupported", family="shutdown", severity=Severity.ERROR)
def sleep_action_unsupported(ctx: Context) -> Iterator[Hit]:
    """Native preStop `sleep` action on a Kubernetes version that lacks it.

    ## What it does
    When a target version is given (`--kube-version` or `kube-version` in the configuration),
    flags `lifecycle.preStop.sleep` on versions where the action is not available by default:
    it does not exist before 1.29, is alpha behind the `PodLifecycleSleepAction` feature gate
    (off by default) in 1.29, beta and on by default from 1.30, GA in 1.34. Without a target
    version the rule does not run.

    ## Why is this bad?
    Where the field is unknown or gated off, the API server rejects the manifest (strict
    field validation) or silently drops the field, so the pod runs with no preStop at all and
    stops serving while clients still route to it.

    ## Example
    ```yaml
    # kube-version = "1.28"
    lifecycle:
      preStop:
        sleep: {seconds: 5}
    ```

    ## Use instead
    ```yaml
    lifecycle:
      preStop:
        exec: {command: [sleep, "5"]}   # the image must contain sleep
    ```
    """
    version = ctx.config.kube_version
    if version is None or version >= SLEEP_ACTION_BETA:
        return
    shown = f"{version[0]}.{version[1]}"
    for workload in ctx.workloads:
        for container in workload.containers():
            hook = prestop(container)
            if hook is None or hook.kind != "sleep":
                continue
            if version >= SLEEP_ACTION_ALPHA:
                why = "is alpha in Kubernetes 1.29 behind the PodLifecycleSleepAction gate (off)"
            else:
                why = "does not exist before Kubernetes 1.29"
            yield Hit(
                container.loc("lifecycle", "preStop", "sleep"),
                f"preStop sleep action of container '{container.name}' {why}; target is "
                f"{shown}: the pod would run without its preStop delay (beta from 1.30)",
                workload,
            )


@rule("LL205", "zero-grace-period", family="shutdown", severity=Severity.ERROR)
def zero_grace_period(ctx: Context) -> Iterator[Hit]:
    """terminationGracePeriodSeconds is 0.

    ## What it does
    Flags a long-running workload (not a Job or CronJob) whose pod template sets
    `terminationGracePeriodSeconds: 0`.

    ## Why is this bad?
    A zero grace period means the container is killed at once: no preStop hook runs to
    completion, SIGTERM is followed by SIGKILL without delay, and every request in flight (and
    every connection still routed to the pod) fails.

    ## Example
    ```yaml
    spec:
      terminationGracePeriodSeconds: 0
    ```

    ## Use instead
    ```yaml
    spec:
      terminationGracePeriodSeconds: 30   # preStop + drain + margin
    ```
    """
    for workload in ctx.workloads:
        if workload.is_batch:
            continue
        path = (*workload.pod_spec_path, "terminationGracePeriodSeconds")
        if as_int(workload.get(*path)) == 0:
            yield Hit(
                workload.loc(*path),
                f"{workload.ref} has terminationGracePeriodSeconds: 0: containers are killed "
                "at once, requests in flight are cut",
                workload,
            )
