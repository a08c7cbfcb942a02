"""Why counting scenes are drawn on mid-grey: what the background does to the tiny VLM's visual features.

    OMP_NUM_THREADS=1 python bench/vlm_background_probe.py [--items 1500] [--seeds 0 1 2]

Draws the same counting scenes (same objects, sizes and positions) twice, on the near-white
backgrounds the task used first (the peer) and on the mid-grey one it uses now, and passes both
through freshly initialised tiny Qwen2.5-VLs (one per seed, default TinyVLMConfig). For each it
reports how much the mean-pooled visual features (what an attention average over the 16 visual
tokens sees) vary across images relative to their mean, and how well a ridge classifier on the
summed features predicts the count (held-out accuracy; chance is about 1/6). No training: this is
the signal the language model starts from. The last line is the ratio of relative variation.
"""

from __future__ import annotations

import argparse
import random
import statistics

import numpy as np
import torch


def scenes(n: int, seed: int, background) -> tuple[list, list[int]]:
    """`n` in-distribution counting items of the task's own generator on `background` (both backgrounds
    draw three integers, so the two calls give the same objects in the same places)."""
    from vlm_rl.data.tasks import make_counting

    rng = random.Random(seed)
    samples = [make_counting(rng, False, 112, background=background) for _ in range(n)]
    return [s.image for s in samples], [s.meta["count"] for s in samples]


def features(model, processor, images) -> np.ndarray:
    out = []
    with torch.no_grad():
        for i in range(0, len(images), 100):
            enc = processor.image_processor(images=images[i: i + 100], return_tensors="pt")
            feats = model.model.get_image_features(enc["pixel_values"], enc["image_grid_thw"]).pooler_output
            out.append(torch.stack(list(feats)).numpy())  # [n, tokens, hidden]
    return np.concatenate(out)


def ridge_accuracy(x: np.ndarray, y: np.ndarray, lam: float = 1e-2) -> float:
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    cut = int(0.8 * len(x))
    targets = np.eye(y.max() + 1)[y[:cut]]
    w = np.linalg.solve(x[:cut].T @ x[:cut] + lam * cut * np.eye(x.shape[1]), x[:cut].T @ targets)
    return float(((x[cut:] @ w).argmax(1) == y[cut:]).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=1500)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="model initialisations")
    args = parser.parse_args()

    import tempfile
    from pathlib import Path

    from vlm_rl.data.drawing import light_background, mid_background
    from vlm_rl.models import TinyVLMConfig, build_tiny_vlm, load_vlm

    data = {name: scenes(args.items, 0, bg) for name, bg in (("white", light_background), ("grey", mid_background))}
    results: dict[str, dict[str, list[float]]] = {name: {"variation": [], "ridge": []} for name in data}
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as tmp:
            model, processor = load_vlm(build_tiny_vlm(TinyVLMConfig(), Path(tmp) / "m", seed=seed))
        model.eval()
        for name, (images, counts) in data.items():
            f = features(model, processor, images)
            pooled = f.mean(1)
            results[name]["variation"].append(
                float(np.linalg.norm(pooled.std(0)) / np.linalg.norm(pooled.mean(0))))
            results[name]["ridge"].append(ridge_accuracy(f.sum(1), np.array(counts)))
    print(f"{args.items} counting scenes per background, tiny Qwen2.5-VL at init, seeds {args.seeds}")
    print(f"{'background':<12}{'relative variation':>20}{'ridge count accuracy':>24}")
    for name, r in results.items():
        print(f"{name:<12}{statistics.mean(r['variation']):>20.3f}{statistics.mean(r['ridge']):>24.3f}")
    ratio = statistics.mean(results["grey"]["variation"]) / statistics.mean(results["white"]["variation"])
    print(f"ratio: {ratio:.2f} (relative variation of pooled visual features, grey background over near-white)")


if __name__ == "__main__":
    main()
