"""Input: the manifest says what it seems to say."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from lossless.check.k8s import IGNORE_ANNOTATION, KNOWN_KINDS, K8sObject
from lossless.check.model import REGISTRY, Hit, Location, Severity, rule

if TYPE_CHECKING:
    from lossless.check.engine import Context


@rule("LL901", "duplicate-key", family="input", severity=Severity.ERROR)
def duplicate_key(ctx: Context) -> Iterator[Hit]:
    """A mapping has the same key twice.

    ## What it does
    Flags a key that appears more than once in the same YAML mapping, with the line of its
    first occurrence.

    ## Why is this bad?
    Most YAML loaders, and so most deploy tools, keep the *last* value without a word. A
    second `readinessProbe:` or `env:` block pasted further down silently replaces the first:
    the probe, the environment variable or the port you reviewed is not what runs.

    ## Example
    ```yaml
    readinessProbe:
      httpGet: {path: /readyz, port: 8080}
    resources: {}
    readinessProbe:
      tcpSocket: {port: 8080}
    ```

    ## Use instead
    ```yaml
    readinessProbe:
      httpGet: {path: /readyz, port: 8080}
    resources: {}
    ```
    """
    for document in ctx.documents:
        if not document.duplicates:
            continue
        owners = [o for o in ctx.objects if o.document is document]
        for dup in document.duplicates:
            subject: K8sObject | None = None
            for owner in owners:
                if owner.loc().line - 1 <= dup.line:
                    subject = owner
            yield Hit(
                Location(
                    document.source.path,
                    dup.line + 1,
                    dup.column + 1,
                    dup.line + 1,
                    dup.column + 1 + len(dup.key),
                ),
                f"key '{dup.key}' repeats the one on line {dup.first_line + 1} of the same "
                "mapping: YAML keeps only this last value, silently",
                subject,
            )


@rule("LL902", "unknown-kind", family="input", severity=Severity.INFO)
def unknown_kind(ctx: Context) -> Iterator[Hit]:
    """Object of a kind the checker does not know (skipped).

    ## What it does
    Reports, as information, each object whose kind is neither analyzed (workloads, Service,
    PodDisruptionBudget, HorizontalPodAutoscaler, Ingress) nor a known built-in kind without
    bearing on the request path (ConfigMap, Secret, RBAC...). Custom resources land here.

    ## Why is this bad?
    It is not bad in itself: the object is skipped, and this finding says so, so that a
    typo in a kind (`Deploymnet`) or a workload wrapped in a custom resource (a Rollout, a
    Knative Service) is not silently left unchecked.

    ## Example
    ```yaml
    apiVersion: argoproj.io/v1alpha1
    kind: Rollout
    ```

    ## Use instead
    Check the rendered Deployment if there is one, or suppress the finding with
    `lossless/ignore: "LL902: checked by the Argo Rollouts analysis"`.
    """
    for obj in ctx.objects:
        if obj.kind not in KNOWN_KINDS:
            yield Hit(
                obj.loc("kind"),
                f"kind '{obj.kind}' ({obj.api_version}) of '{obj.name}' is not checked: skipped",
                obj,
            )


@rule("LL903", "invalid-suppression", family="input", severity=Severity.WARNING)
def invalid_suppression(ctx: Context) -> Iterator[Hit]:
    """A `lossless/ignore` suppression that cannot be applied.

    ## What it does
    Flags an entry of the `lossless/ignore` annotation (or of a `# lossless/ignore:` comment in
    a Dockerfile) that has no reason, does not start with a rule code, or names a code that
    does not exist. Such an entry suppresses nothing.

    ## Why is this bad?
    A suppression without a reason cannot be reviewed later, and one with a misspelt code
    leaves the finding in place while the author believes it is handled.

    ## Example
    ```yaml
    metadata:
      annotations:
        lossless/ignore: "LL403"
    ```

    ## Use instead
    ```yaml
    metadata:
      annotations:
        lossless/ignore: "LL403: leader-elected singleton, a second replica would idle"
    ```
    """
    for obj in ctx.objects:
        problems = list(obj.ignore_errors)
        problems += [f"unknown rule code {code}" for code in obj.ignores if code not in REGISTRY]
        for problem in problems:
            yield Hit(
                obj.loc("metadata", "annotations", IGNORE_ANNOTATION),
                f"{IGNORE_ANNOTATION} on {obj.ref}: {problem}; nothing is suppressed",
                obj,
            )
    for dockerfile in ctx.dockerfiles:
        problems = list(dockerfile.ignore_errors)
        problems += [
            f"unknown rule code {code}" for code in dockerfile.ignores if code not in REGISTRY
        ]
        for problem in problems:
            yield Hit(
                Location(dockerfile.path),
                f"# {IGNORE_ANNOTATION} in {dockerfile.path}: {problem}; nothing is suppressed",
                dockerfile,
            )
