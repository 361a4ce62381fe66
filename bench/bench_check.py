"""Benchmark ``lossless check`` on real-world manifests against peers measured in the same run.

The corpus is built into a temporary directory from public projects' published manifests
committed under ``bench/data/`` (see its README): each file is copied into N namespaces (one file
per copy, ``namespace:`` set on every object), by default enough copies for >= 5,000 objects,
with their comments, full pod specs, RBAC and webhooks as published. Each tool then runs R times
as a subprocess, process start included (as CI sees it), alternating tools so load on the machine
hits them alike:

- ``lossless check DIR --format json`` (all cores) and ``--jobs 1``;
- PyYAML's C loader (libyaml) merely loading every file (``yaml.load_all`` with ``CSafeLoader``),
  the floor a Python YAML tool can hope for: the ratio lossless / this is the target (<= 1.0);
- checkov (``--framework kubernetes``) when given or on PATH.

With ``--big-mib M`` it also builds one M MiB file of the same objects and reports the median
time and peak RSS (of the largest process of the run: the check or one of its workers) of
``--big-runs`` runs of ``lossless check FILE --max-file-size M+1``. The load average is printed
at the start and the end (the machine may be shared).

    python bench/bench_check.py --runs 5 --checkov /tmp/checkov-venv/bin/checkov --big-mib 50

checkov is best installed in its own virtualenv (its pins clash with the project's):
``python -m venv /tmp/checkov-venv && /tmp/checkov-venv/bin/pip install checkov``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "bench" / "data"

LOAD_ONLY = """\
import sys, yaml
for path in sys.argv[1:]:
    with open(path, encoding="utf-8") as fh:
        list(yaml.load_all(fh.read(), Loader=yaml.CSafeLoader))
"""


def sources() -> list[Path]:
    return sorted(DATA.glob("*.yaml"))


def namespaced(text: str, namespace: str) -> str:
    """``text`` with every object in ``namespace`` (replaced where set, added where not)."""
    text = re.sub(r"^(\s*namespace:) \S+$", rf"\1 {namespace}", text, flags=re.M)
    # Top-level metadata without a namespace line gets one (cluster-scoped kinds too: harmless).
    return re.sub(
        r"^metadata:\n(?!(?:  .*\n)*  namespace:)",
        f"metadata:\n  namespace: {namespace}\n",
        text,
        flags=re.M,
    )


def objects_in(text: str) -> int:
    return len(re.findall(r"^kind: ", text, flags=re.M))


def build_corpus(directory: Path, min_objects: int) -> tuple[list[Path], int]:
    """One file per (source, namespace copy) until at least ``min_objects`` objects."""
    texts = [(path.stem, path.read_text(encoding="utf-8")) for path in sources()]
    per_copy = sum(objects_in(text) for _, text in texts)
    copies = -(-min_objects // per_copy)
    files = []
    for i in range(copies):
        for stem, text in texts:
            path = directory / f"{stem}-{i:03d}.yaml"
            path.write_text(namespaced(text, f"{stem}-{i:03d}"), encoding="utf-8")
            files.append(path)
    return files, copies * per_copy


def build_big(path: Path, mib: float) -> int:
    """One file of at least ``mib`` MiB: copies of every source, separated by ``---``."""
    texts = [(p.stem, p.read_text(encoding="utf-8")) for p in sources()]
    size, objects, i = 0, 0, 0
    with path.open("w", encoding="utf-8") as out:
        while size < mib * 1024 * 1024:
            for stem, text in texts:
                chunk = "---\n" + namespaced(text, f"{stem}-{i:05d}")
                out.write(chunk)
                size += len(chunk.encode())
                objects += objects_in(text)
            i += 1
    return objects


def run_once(command: list[str], ok: tuple[int, ...]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode not in ok:
        sys.exit(f"{command[:4]} failed ({proc.returncode}): {proc.stderr.decode()[-500:]}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=5000, help="at least this many objects")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--checkov", default=shutil.which("checkov"))
    parser.add_argument("--checkov-runs", type=int, default=1)
    parser.add_argument("--big-mib", type=float, default=0, help="also time one file this big")
    parser.add_argument("--big-runs", type=int, default=3, help="runs on the big file")
    args = parser.parse_args()

    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])
    )
    python = sys.executable
    print("load average at the start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    with tempfile.TemporaryDirectory(prefix="bench-check-") as tmp:
        corpus = Path(tmp) / "corpus"
        corpus.mkdir()
        files, objects = build_corpus(corpus, args.objects)
        size = sum(f.stat().st_size for f in files) / 1024 / 1024
        print(f"corpus: {len(files)} files, {objects} objects, {size:.1f} MiB ({corpus})")
        tools: dict[str, list[str]] = {
            "lossless check": [python, "-m", "lossless", "check", str(corpus), "--format", "json"],
            "lossless check --jobs 1": [
                python,
                "-m",
                "lossless",
                "check",
                str(corpus),
                "--format",
                "json",
                "--jobs",
                "1",
            ],
            "PyYAML CSafeLoader load only": [python, "-c", LOAD_ONLY, *map(str, files)],
        }
        times: dict[str, list[float]] = {name: [] for name in tools}
        for _ in range(args.runs):  # interleaved: machine load hits every tool alike
            for name, command in tools.items():
                times[name].append(run_once(command, (0, 1)))
        if args.checkov:
            command = [
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
            ]
            times["checkov"] = [run_once(command, (0, 1)) for _ in range(args.checkov_runs)]
        else:
            print("checkov: not installed (pass --checkov PATH)")
        ours = statistics.median(times["lossless check"])
        for name, values in times.items():
            median = statistics.median(values)
            print(
                f"{name:32} median {median:6.2f} s  {objects / median:8.0f} objects/s  "
                f"runs {' '.join(f'{v:.2f}' for v in values)}"
            )
        floor = statistics.median(times["PyYAML CSafeLoader load only"])
        print(f"ratio lossless check / PyYAML CSafeLoader load only: {ours / floor:.2f}")
        if "checkov" in times:
            print(
                f"ratio checkov / lossless check: {statistics.median(times['checkov']) / ours:.1f}x"
            )
        if args.big_mib:
            big = Path(tmp) / "big.yaml"
            count = build_big(big, args.big_mib)
            mib = big.stat().st_size / 1024 / 1024
            command = [
                python,
                "-m",
                "lossless",
                "check",
                str(big),
                "--format",
                "json",
                "--max-file-size",
                str(int(mib) + 1),
            ]
            runs = [_timed_rss(command) for _ in range(args.big_runs)]
            walls, rsses = [w for w, _ in runs], [r for _, r in runs]
            print(
                f"one file {mib:.1f} MiB, {count} objects: median {statistics.median(walls):.2f} s, "
                f"peak RSS median {statistics.median(rsses):.0f} MiB (max {max(rsses):.0f})  "
                f"runs {' '.join(f'{w:.2f}s/{r:.0f}MiB' for w, r in runs)}"
            )
    print("load average at the end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    return 0


def _timed_rss(command: list[str]) -> tuple[float, float]:
    """Wall time and the peak RSS of the largest process of the run (the check or a worker)."""
    code = (
        "import resource, subprocess, sys, time\n"
        "t = time.perf_counter()\n"
        "p = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)\n"
        "t = time.perf_counter() - t\n"
        "assert p.returncode in (0, 1), p.stderr.decode()[-400:]\n"
        "print(t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, *command], capture_output=True, check=True, text=True
    ).stdout.split()
    # ru_maxrss of RUSAGE_CHILDREN is the largest of the waited-for descendants (the check and
    # its pool workers, which it waits for), in KiB on Linux.
    return float(out[0]), int(out[1]) / 1024


if __name__ == "__main__":
    sys.exit(main())
