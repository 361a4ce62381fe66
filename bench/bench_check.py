"""Benchmark ``lossless check`` against a peer (checkov) on the same generated corpus.

Generates N manifests (Deployment + Service + PodDisruptionBudget per file, a third of them with
findings) into a temporary directory, then times each tool R times end to end as a subprocess
(process start included, as CI sees it) and prints both medians and the ratio.

    python bench/bench_check.py --manifests 2000 --runs 3 --checkov /tmp/checkov-venv/bin/checkov

checkov is best installed in its own virtualenv (its pins clash with the project's):
``python -m venv /tmp/checkov-venv && /tmp/checkov-venv/bin/pip install checkov``. Without it
(or kube-linter on PATH) only lossless is timed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TEMPLATE = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: svc-{i}
  namespace: bench
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: svc-{i}}}
  template:
    metadata:
      labels: {{app: svc-{i}}}
    spec:
      containers:
        - name: app
          image: registry.example.com/svc-{i}:1.{i}
          ports:
            - {{name: http, containerPort: 8080}}
{lifecycle}          readinessProbe:
            httpGet: {{path: /readyz, port: http}}
          livenessProbe:
            httpGet: {{path: {liveness}, port: http}}
          resources:
            requests: {{cpu: 100m, memory: 128Mi}}
            limits: {{memory: 256Mi}}
---
apiVersion: v1
kind: Service
metadata:
  name: svc-{i}
  namespace: bench
spec:
  selector: {{app: svc-{i}}}
  ports:
    - {{port: 80, targetPort: http}}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: svc-{i}
  namespace: bench
spec:
  maxUnavailable: 1
  selector:
    matchLabels: {{app: svc-{i}}}
"""

PRESTOP = """\
          lifecycle:
            preStop:
              sleep: {seconds: 5}
"""


def generate(directory: Path, count: int) -> None:
    """``count`` files, each a Deployment, its Service and PDB (so 3 x count objects)."""
    for i in range(count):
        bad = i % 3 == 0
        text = TEMPLATE.format(
            i=i,
            replicas=1 if bad else 3,
            lifecycle="" if bad else PRESTOP,
            liveness="/readyz" if bad else "/livez",
        )
        (directory / f"svc-{i:05d}.yaml").write_text(text, encoding="utf-8")


def timed(command: list[str], runs: int, ok: tuple[int, ...]) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.run(command, capture_output=True, check=False)
        times.append(time.perf_counter() - start)
        if proc.returncode not in ok:
            sys.exit(f"{command[0]} failed ({proc.returncode}): {proc.stderr.decode()[-500:]}")
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifests", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--checkov", default=shutil.which("checkov"))
    parser.add_argument("--kube-linter", default=shutil.which("kube-linter"))
    args = parser.parse_args()

    env_python = sys.executable
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])
    )
    with tempfile.TemporaryDirectory(prefix="bench-check-") as tmp:
        corpus = Path(tmp)
        generate(corpus, args.manifests)
        print(f"corpus: {args.manifests} files, {3 * args.manifests} objects in {corpus}")
        ours_cmd = [env_python, "-m", "lossless", "check", str(corpus), "--format", "json"]
        ours = timed(ours_cmd, args.runs, (0, 1))
        print(f"lossless check: median {statistics.median(ours):.2f} s  runs {_fmt(ours)}")
        peers: list[tuple[str, list[str]]] = []
        if args.checkov:
            peers.append(
                (
                    "checkov",
                    [
                        args.checkov,
                        "-d",
                        str(corpus),
                        "--framework",
                        "kubernetes",
                        "--quiet",
                        "--compact",
                        "-o",
                        "json",
                        "--skip-download",
                    ],
                )
            )
        if args.kube_linter:
            peers.append(("kube-linter", [args.kube_linter, "lint", str(corpus)]))
        if not peers:
            print("no peer installed (checkov, kube-linter): only lossless was timed")
        for name, command in peers:
            theirs = timed(command, args.runs, (0, 1))
            ratio = statistics.median(theirs) / statistics.median(ours)
            print(f"{name}: median {statistics.median(theirs):.2f} s  runs {_fmt(theirs)}")
            print(f"ratio {name} / lossless check: {ratio:.1f}x")
    return 0


def _fmt(times: list[float]) -> str:
    return " ".join(f"{t:.2f}" for t in times)


if __name__ == "__main__":
    sys.exit(main())
