"""Run every benchmark in turn: ``python -m bench`` (``make bench``)."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def main() -> int:
    here = Path(__file__).parent
    failed = 0
    for info in sorted(pkgutil.iter_modules([str(here)]), key=lambda m: m.name):
        if not info.name.startswith("bench_"):
            continue
        print(f"== {info.name}", flush=True)
        module = importlib.import_module(f"bench.{info.name}")
        try:
            module.main([])
        except SystemExit as exc:
            failed += bool(exc.code)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
