"""Rendering rewards per second through the safe renderer pool, against cairosvg called directly.

    OMP_NUM_THREADS=1 python bench/svg_reward_throughput.py [--n 600] [--size 112] [--repeats 3]

Work: the same N SVGs (generated shapes of levels 1-3, as the policy writes them) rendered at the
target size in the task's frame and compared with their targets as the default reward does
(`svg_rlrf.metrics.compare_without_ssim`: pixel, edge, colour and MSE terms and the evaluation's area and
colour checks; SSIM has no weight by default and is not computed).

Peer: in one process, ``cairosvg.svg2png`` (the documented one-call API, unsafe=False) of the same
document with the same canvas size, decoded with PIL and composited on white, then the same
comparison. No sanitising, no timeout, no memory cap, no isolation: what a user would write first.

Ours: ``render_many(svgs, size, viewbox=..., score=compare, targets=...)`` through pools of one and of
two workers (sanitising, per-render timeout and memory cap; each worker renders and compares).

Targets (issue 4): per worker at least 0.8x the direct rate, and two workers at least 1.7x one worker
on a 2-core machine. Timings are wall clock; ``--repeats`` keeps the best run of each. The last line is
``ratio: <1-worker pool rate> / <direct rate>``.
"""

from __future__ import annotations

import argparse
import io
import time


def _dataset(n: int, size: int) -> tuple[list[str], list]:
    """N generated SVGs and their targets (rendered by the lab's renderer in one process)."""
    import numpy as np

    from svg_rlrf.data.synthetic import synthetic_item
    from svg_rlrf.render import _render_rgb

    svgs = [synthetic_item(7, "test", k, levels=(1, 2, 3), canvas=64).code for k in range(n)]
    targets = [np.frombuffer(_render_rgb(s.encode(), size, (0, 0, 64, 64), 200_000), np.uint8).reshape(size, size, 3)
               for s in svgs]
    return svgs, targets


def _direct(svgs: list[str], targets: list, size: int) -> float:
    """Items per second: cairosvg.svg2png + PIL decode + white composite + compare, one process."""
    import cairosvg
    import numpy as np
    from PIL import Image

    from svg_rlrf.metrics import compare_without_ssim as compare

    start = time.perf_counter()
    for svg, target in zip(svgs, targets, strict=True):
        png = cairosvg.svg2png(bytestring=svg.encode(), output_width=size, output_height=size, unsafe=False)
        with Image.open(io.BytesIO(png)) as im:
            rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
        compare(image, target)
    return len(svgs) / (time.perf_counter() - start)


def _pool(svgs: list[str], targets: list, size: int, workers: int) -> float:
    """Items per second through a warm RenderPool of `workers` that renders and compares."""
    from svg_rlrf.metrics import compare_without_ssim as compare
    from svg_rlrf.render import RenderPool
    from svg_rlrf.rewards import SCORE_PRELOAD

    with RenderPool(workers, preload=SCORE_PRELOAD) as pool:
        pool.render_many(svgs[:8], size, viewbox=(0, 0, 64, 64), score=compare, targets=targets[:8])  # warm
        start = time.perf_counter()
        results = pool.render_many(svgs, size, viewbox=(0, 0, 64, 64), score=compare, targets=targets)
        rate = len(svgs) / (time.perf_counter() - start)
    missing = sum(r.ok and r.scores is None for r in results)
    if missing:
        raise RuntimeError(f"{missing} renders came back without scores")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=600, help="SVGs per measurement")
    parser.add_argument("--size", type=int, default=112, help="canvas side in pixels")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each side; the best counts")
    args = parser.parse_args()
    svgs, targets = _dataset(args.n, args.size)
    best = {"direct": 0.0, "pool1": 0.0, "pool2": 0.0}
    for _ in range(args.repeats):
        best["direct"] = max(best["direct"], _direct(svgs, targets, args.size))
        best["pool1"] = max(best["pool1"], _pool(svgs, targets, args.size, 1))
        best["pool2"] = max(best["pool2"], _pool(svgs, targets, args.size, 2))
    print(f"{args.n} SVGs (levels 1-3) at {args.size} px, render + compare, best of {args.repeats}")
    print(f"  direct cairosvg.svg2png + compare, one process: {best['direct']:8.1f} items/s")
    print(f"  render_many, 1 worker:                          {best['pool1']:8.1f} items/s")
    print(f"  render_many, 2 workers:                         {best['pool2']:8.1f} items/s")
    print(f"  2 workers / 1 worker: {best['pool2'] / best['pool1']:.2f} (target >= 1.7 on 2 idle cores)")
    print(f"ratio: {best['pool1'] / best['direct']:.3f} (1-worker render_many / direct cairosvg, items per second; "
          "target >= 0.8)")


if __name__ == "__main__":
    main()
