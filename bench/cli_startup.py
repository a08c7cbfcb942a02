"""`rlab --help` wall time, against the peer it avoids: a CLI that imports torch at start-up.

    python bench/cli_startup.py [--repeats 10]

Prints the median of each and, last, ``ratio: <rlab --help> / <python -c "import torch">``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def _time(cmd: list[str], repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    rlab = shutil.which("rlab") or str(Path(sys.executable).with_name("rlab"))
    _time([rlab, "--help"], 1)  # warm the file cache
    help_s = _time([rlab, "--help"], args.repeats)
    python_s = _time([sys.executable, "-c", "pass"], args.repeats)
    torch_s = _time([sys.executable, "-c", "import torch"], args.repeats)
    print(f"python -c pass:            {python_s:.3f} s (median of {args.repeats})")
    print(f"rlab --help:               {help_s:.3f} s (target < 0.5 s)")
    print(f"python -c 'import torch':  {torch_s:.3f} s")
    print(f"ratio: {help_s / torch_s:.3f} (rlab --help wall time over python -c 'import torch')")


if __name__ == "__main__":
    main()
