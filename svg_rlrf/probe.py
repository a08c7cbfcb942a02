"""Where the shapes of a 2-3-shape image are: how well readouts trained for that one job find them.

The svg policies place one primitive to within a unit or two and the shapes of a 2-3-shape image 10-12 units
off (`svg_rlrf.placement`). This asks whether the place is in what the model sees and in the pixels at all,
with readouts trained on the run's own training items of one complexity level and scored on its test items:

- ``first``: regress the first primitive's bounding-box centre (generated shapes are drawn largest first, so
  it is the largest and lies under the others);
- ``set``: regress every primitive's centre with a loss that ignores their order (each prediction slot
  matched to a reference primitive by the permutation with the least total distance; a reference with fewer
  primitives than slots leaves the extra slots free), the quantity `placement`'s ``centre_error`` measures.

Readouts: a ridge (linear) and a small MLP on the run's visual tokens (its final model's vision tower and
merger, one vector per image), the same two on the image at 16 x 16 pixels, and a small CNN on the image at
56 x 56. The error is the mean ``|dx| + |dy|`` in canvas units; ``mean centre`` is the error of always
answering the training items' mean. A readout far below the policy's own error says the place can be read
from that input with the run's data; one near ``mean centre`` says it cannot, at this budget.

    python -m svg_rlrf.probe RUN [--items 10000] [--level 2] [--epochs 8] [--seed 0]

(RUN: a trained svg run folder with ``final/``; about 10 minutes on one core at the defaults.)
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from svg_rlrf.placement import item_level, primitives

SLOTS = 3
"""Centres a ``set`` readout predicts (levels 1-2 have at most three primitives)."""


def targets(items: Sequence[dict], canvas: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(centres, mask): the first `SLOTS` primitives' centres of each item's reference, ``(n, SLOTS, 2)``, and
    which slots hold one, ``(n, SLOTS)``. An item whose reference has no primitive is an error."""
    centres = np.zeros((len(items), SLOTS, 2), np.float32)
    mask = np.zeros((len(items), SLOTS), np.float32)
    for i, item in enumerate(items):
        prims = primitives(str(item["answer"]), canvas)[:SLOTS]
        if not prims:
            raise ValueError(f"item {item.get('id')!r}: its reference SVG has no primitive to locate")
        for j, prim in enumerate(prims):
            centres[i, j], mask[i, j] = prim.centre, 1.0
    return centres, mask


def set_error(pred: Any, centres: Any, mask: Any) -> Any:
    """Per item, the mean ``|dx| + |dy|`` between the reference's primitives and `pred`'s slots (``(n, SLOTS,
    2)``) under the slot order that makes it least (torch tensors in, a tensor of ``n`` out)."""
    import torch

    per_perm = [((pred[:, list(p)] - centres).abs().sum(2) * mask).sum(1) / mask.sum(1).clamp(min=1)
                for p in itertools.permutations(range(pred.shape[1]))]
    return torch.stack(per_perm, 1).min(1).values


def _first_error(pred: Any, centres: Any, mask: Any) -> Any:
    return (pred[:, 0] - centres[:, 0]).abs().sum(1)


def _rgb(item: dict) -> Any:
    """An item's (first) image, decoded to RGB."""
    from PIL import Image

    with Image.open(item["images"][0]) as image:
        return image.convert("RGB")


def pixels(items: Sequence[dict], size: int) -> np.ndarray:
    """The items' images as ``(n, size, size, 3)`` floats in [0, 1]."""
    from PIL import Image

    out = np.zeros((len(items), size, size, 3), np.float32)
    for i, item in enumerate(items):
        out[i] = np.asarray(_rgb(item).resize((size, size), Image.BILINEAR), np.float32) / 255
    return out


def visual_features(model: Any, processor: Any, items: Sequence[dict], batch: int = 64) -> np.ndarray:
    """One vector per image: the model's visual tokens for it (vision tower and merger), concatenated."""
    import torch

    visual = model.model.visual if hasattr(model.model, "visual") else model.visual
    rows = []
    for start in range(0, len(items), batch):
        images = [_rgb(item) for item in items[start:start + batch]]
        enc = processor.image_processor(images=images, return_tensors="pt")
        with torch.no_grad():
            out = visual(enc["pixel_values"], grid_thw=enc["image_grid_thw"])
        tokens = getattr(out, "pooler_output", out)
        rows.append(tokens.reshape(len(images), -1).float().numpy())
    return np.concatenate(rows)


def standardise(train_x: np.ndarray, x: np.ndarray) -> np.ndarray:
    """`x` centred and scaled by the training inputs' mean and spread (a feature constant in training, such as a
    pixel always white there, is only centred)."""
    sd = train_x.std(0)
    return (x - train_x.mean(0)) / np.where(sd > 1e-3, sd, 1.0)


def ridge(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, lam: float = 100.0) -> np.ndarray:
    """Linear least squares on standardised inputs with an L2 penalty `lam` (the intercept unpenalised)."""
    a, b = standardise(train_x, train_x), standardise(train_x, test_x)
    y_mean = train_y.mean(0)
    weights = np.linalg.solve(a.T @ a + lam * np.eye(a.shape[1]), a.T @ (train_y - y_mean))
    return b @ weights + y_mean


def _fit(net: Any, train_x: Any, train_y: tuple[Any, Any], test_x: Any, loss: Callable, epochs: int,
         batch: int = 64) -> Any:
    import torch

    opt = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=1e-2)
    for _ in range(epochs):
        net.train()
        for idx in torch.randperm(len(train_x)).split(batch):
            value = loss(net(train_x[idx]).reshape(len(idx), SLOTS, 2), train_y[0][idx], train_y[1][idx]).mean()
            opt.zero_grad()
            value.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        return net(test_x).reshape(len(test_x), SLOTS, 2)


def mlp(width: int, inputs: int) -> Any:
    import torch

    return torch.nn.Sequential(torch.nn.Linear(inputs, width), torch.nn.GELU(), torch.nn.Dropout(0.2),
                               torch.nn.Linear(width, width), torch.nn.GELU(), torch.nn.Linear(width, SLOTS * 2))


def cnn(size: int) -> Any:
    """Three 3x3 conv blocks with 2x2 pooling, then two dense layers to `SLOTS` centres."""
    import torch

    def block(i: int, o: int) -> list:
        return [torch.nn.Conv2d(i, o, 3, padding=1), torch.nn.GELU(), torch.nn.MaxPool2d(2)]

    side = size // 8
    return torch.nn.Sequential(*block(3, 32), *block(32, 64), *block(64, 64), torch.nn.Flatten(),
                               torch.nn.Linear(64 * side * side, 256), torch.nn.GELU(), torch.nn.Linear(256, SLOTS * 2))


def probe(train: Sequence[dict], test: Sequence[dict], *, model: Any = None, processor: Any = None,
          epochs: int = 8, mlp_epochs: int = 60, seed: int = 0, canvas: int = 64,
          progress: Callable[[str], None] = lambda _: None) -> list[tuple[str, str, float]]:
    """(input and readout, target, error) rows; the visual-token rows only where `model` is given."""
    import torch

    ytr, yte = targets(train, canvas), targets(test, canvas)
    ttr, tte = (torch.tensor(ytr[0]), torch.tensor(ytr[1])), (torch.tensor(yte[0]), torch.tensor(yte[1]))
    errors = {"first": _first_error, "set": set_error}
    guess = torch.tensor(ytr[0][:, 0].mean(0)).expand(len(test), SLOTS, 2)
    rows = [("mean centre", "first", float(_first_error(guess, *tte).mean()))]
    inputs: dict[str, np.ndarray] = {}
    if model is not None:
        progress("visual tokens")
        inputs["visual tokens"] = np.concatenate([visual_features(model, processor, train),
                                                  visual_features(model, processor, test)])
    inputs["pixels 16x16"] = pixels([*train, *test], 16).reshape(len(train) + len(test), -1)
    n = len(train)
    for name, x in inputs.items():
        pred = torch.tensor(ridge(x[:n], ytr[0][:, 0], x[n:])).unsqueeze(1).expand(len(test), SLOTS, 2)
        rows.append((f"{name}, linear", "first", float(_first_error(pred, *tte).mean())))
        xs = torch.tensor(standardise(x[:n], x), dtype=torch.float32)
        for target, loss in errors.items():
            progress(f"{name}, MLP, {target}")
            torch.manual_seed(seed)
            pred = _fit(mlp(256, x.shape[1]), xs[:n], ttr, xs[n:], loss, mlp_epochs, batch=256)
            rows.append((f"{name}, MLP", target, float(loss(pred, *tte).mean())))
    images = torch.tensor(pixels([*train, *test], 56)).permute(0, 3, 1, 2).contiguous()
    for target, loss in errors.items():
        progress(f"pixels 56x56, CNN, {target}")
        torch.manual_seed(seed)
        pred = _fit(cnn(56), images[:n], ttr, images[n:], loss, epochs)
        rows.append(("pixels 56x56, CNN", target, float(loss(pred, *tte).mean())))
    return rows


def main(argv: list[str] | None = None) -> None:
    from shared.config import load_config
    from svg_rlrf.track import SVGConfig, load_data
    from vlm_rl.models import load_vlm

    parser = argparse.ArgumentParser(prog="python -m svg_rlrf.probe", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a trained svg run folder (its final/ model and config.yaml)")
    parser.add_argument("--items", type=int, default=10000, help="training items of the level the readouts fit")
    parser.add_argument("--level", type=int, default=2, help="complexity level probed (2: two or three shapes)")
    parser.add_argument("--epochs", type=int, default=8, help="epochs of the CNN readouts")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not (args.run / "final").is_dir() or not (args.run / "config.yaml").is_file():
        raise SystemExit(f"{args.run}: not a trained svg run (needs final/ and config.yaml)")
    cfg = load_config(SVGConfig, args.run / "config.yaml")
    data = load_data(cfg.data)
    train = [item for item in data.train if item_level(item) == args.level][:args.items]
    test = [item for item in data.split("test") if item_level(item) == args.level]
    if not train or not test:
        raise SystemExit(f"{args.run}: its data has no level-{args.level} items in train and test")
    model, processor = load_vlm(args.run / "final")
    model.eval()
    start = time.time()
    rows = probe(train, test, model=model, processor=processor, epochs=args.epochs, seed=args.seed,
                 canvas=cfg.data.canvas, progress=lambda what: print(f"[{time.time() - start:4.0f} s] {what}",
                                                                   flush=True))
    print(f"\n{args.run}: level {args.level}, {len(train)} training and {len(test)} test items, seed {args.seed}\n")
    print("| input, readout | target | centre error |\n|---|---|---|")
    for name, target, error in rows:
        print(f"| {name} | {target} | {error:.2f} |")


if __name__ == "__main__":
    main()
