"""Run every benchmark in turn, each in its own process with its defaults: ``python -m bench``
(``make bench``). Exit 1 if any of them failed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def main() -> int:
    here = Path(__file__).parent
    failed = 0
    for path in sorted(here.glob("bench_*.py")):
        print(f"== {path.stem}", flush=True)
        code = subprocess.call([sys.executable, "-m", f"bench.{path.stem}"], cwd=here.parent)
        failed += code != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
