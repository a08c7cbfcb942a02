"""A small, made-up run folder with every kind of media, for tests, docs and trying the gallery.

    >>> from shared.gallery import build_gallery, write_demo_run
    >>> index = build_gallery([write_demo_run(tmp / "runs/vlm/demo-20250101-000000")])  # doctest: +SKIP

The numbers and pictures are synthetic (no model is trained); the layout is that of a real run.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import yaml

from shared.tracking.media import MediaRecord, append_media


def write_demo_run(
    run_dir: str | Path,
    seed: int = 0,
    steps: Sequence[int] = (100, 200),
    items: int = 2,
    video: bool = True,
    reward_offset: float = 0.0,
) -> Path:
    """Write config.yaml, env.json, metrics.jsonl and media (PNG, SVG, WebM, text, traces) into `run_dir`.

    For each step in `steps` and each of `items` evaluation items: a target PNG, a rendered SVG and
    a trace (answer correct for even items, wrong for odd ones); per step a text note and, when
    `video`, a short WebM rollout. `reward_offset` shifts the reward curve so two runs differ.
    """
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    config = {
        "track": run.parent.name or "demo",
        "seed": seed,
        "model": {"name": "tiny-qwen2.5-vl", "lr": 1.0e-5},
        "algorithm": {"advantage_estimator": "grpo", "group_size": 4, "total_steps": max(steps, default=0)},
    }
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    env = {"git": {"sha": "3f2c9e1d0b7a64c5e8f90a1b2c3d4e5f60718293", "dirty": False}, "seed": seed}
    (run / "env.json").write_text(json.dumps(env, indent=2), encoding="utf-8")
    _write_metrics(run, max(steps, default=0), reward_offset)
    for step in steps:
        _write_step_media(run, step, items, video)
    return run


def _write_metrics(run: Path, last_step: int, reward_offset: float) -> None:
    lines = []
    for step in range(0, last_step + 1, 10):
        t = step / max(last_step, 1)
        record = {
            "step": step,
            "time": 1.5 * step,
            "reward": round(0.2 + 0.6 * (1 - math.exp(-3 * t)) + reward_offset, 4),
            "loss": round(0.9 * math.exp(-2 * t) + 0.05 * math.sin(step), 4),
            "kl": round(0.02 * t, 5),
            "entropy": round(1.2 - 0.5 * t, 4),
        }
        lines.append(json.dumps(record))
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _write_step_media(run: Path, step: int, items: int, video: bool) -> None:
    from PIL import Image, ImageDraw

    folder = run / "media" / f"step-{step}"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(items):
        hue = (37 * i + step) % 255
        png = folder / f"item-{i}.png"
        image = Image.new("RGB", (128, 96), (240, 240, 235))
        ImageDraw.Draw(image).ellipse((20 + 8 * i, 16, 100, 80), fill=(hue, 90, 255 - hue), outline=(0, 0, 0))
        image.save(png)
        svg = folder / f"item-{i}.svg"
        svg.write_text(
            '<svg xmlns="http://www.w3.org/2000/svg" width="128" height="96" viewBox="0 0 128 96">'
            f'<circle cx="{60 + 4 * i}" cy="48" r="{30 - i}" fill="rgb({hue},90,{255 - hue})" stroke="#000"/>'
            "</svg>",
            encoding="utf-8",
        )
        rel, item = f"media/step-{step}/item-{i}", f"item-{i}"
        append_media(run, MediaRecord("image", path=f"{rel}.png", step=step, item=item, caption="target"))
        append_media(run, MediaRecord("svg", path=f"{rel}.svg", step=step, item=item, caption="render"))
        correct = i % 2 == 0
        fields = {
            "prompt": "How many circles are in the image? Answer inside <answer></answer>.",
            "completion": f"I see one filled ellipse.\n<answer>{1 if correct else 2}</answer>",
            "answer": "1",
            "verdict": "correct" if correct else "wrong",
            "reward": 1.0 if correct else 0.0,
        }
        trace = MediaRecord("trace", path=f"{rel}.png", step=step, item=item, fields=fields, group="eval")
        append_media(run, trace)
    append_media(run, MediaRecord("text", text=f"step {step}: {items} eval items", step=step, caption="note"))
    if video:
        _write_rollout(folder / "rollout.webm")
        rollout = MediaRecord("video", path=f"media/step-{step}/rollout.webm", step=step, caption="rollout")
        append_media(run, rollout)


def _write_rollout(path: Path, n_frames: int = 12) -> None:
    import numpy as np

    from shared.gallery.video import write_video

    frames = []
    for k in range(n_frames):
        frame = np.full((48, 64, 3), 30, dtype=np.uint8)
        x = 4 + 4 * k
        frame[16:32, x : x + 12] = (250, 200, 40)
        frames.append(frame)
    write_video(frames, path, fps=8)
