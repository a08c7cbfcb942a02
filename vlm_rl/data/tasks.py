"""The vlm track's task generators: each draws one item (image, question, answer, meta) from a
seeded ``random.Random``, in distribution or out of it, and has a short worked demonstration for
warm-up SFT.

| task | train / test | test_ood |
|---|---|---|
| counting | 1-6 target shapes (+0-3 distractors) | 7-9 targets: answers never seen in training |
| comparison | bar charts of 2-4 bars, values 1-10 | 5-6 bars (labels E and F never seen) |
| arithmetic | two numbers 1-99 | two numbers 100-999 |
| control | "a X and b Y ...", a, b in 2-20, unrelated image | a, b in 21-99 |

An item is a pure function of ``(task, split, seed, index)`` (see `generate`), so any prefix of a
split is reproducible without the rest, and splits are disjoint on the full spec (question and
every drawing parameter, i.e. ``meta``).

>>> rows = [row for row, image in generate("counting", "test", 2, seed=0)]
>>> rows[0]["question"].startswith("How many"), rows[0]["answer"].isdigit()
(True, True)
>>> demonstration(rows[0]).endswith(f"<answer>{rows[0]['answer']}</answer>")
True
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from PIL import Image, ImageDraw

from vlm_rl.data.drawing import (
    COLORS,
    DEFAULT_FONT,
    SHAPES,
    add_noise,
    font_label,
    font_names,
    light_background,
    load_font,
    mid_background,
    shape_scene,
    text_mask,
)


@dataclass(frozen=True)
class Sample:
    image: Image.Image
    question: str
    answer: str
    meta: dict
    """Every parameter the image and question were drawn from (JSON-serialisable)."""


@dataclass(frozen=True)
class Task:
    name: str
    make: Callable[[random.Random, bool, int], Sample]
    """``make(rng, ood, image_size)``: one item, out of distribution when `ood`."""
    demonstration: Callable[[dict], str]
    """A short worked answer in the ``<think>..</think><answer>..</answer>`` format, from ``meta``."""
    train: str
    """What the train and test splits draw from."""
    ood: str
    """What the out-of-distribution split changes."""
    vision: bool = True
    """Whether the answer needs the image (False for the control task)."""


def _scale(size: int) -> float:
    return size / 112


# --------------------------------------------------------------------------------------- counting

COUNT_RANGE = (1, 6)
COUNT_RANGE_OOD = (7, 9)
DISTRACTOR_RANGE = (0, 3)
RADIUS_RANGE = (7.5, 10.5)
"""Shape radii in pixels at 112 px (scaled with the image). With radii 5-8.5 and up to 4 distractors
the tiny model learned much more slowly (24% vs 42% held-out accuracy after 400 SFT steps)."""


def make_counting(rng: random.Random, ood: bool, size: int,
                  background: Callable[[random.Random], tuple[int, int, int]] = mid_background) -> Sample:
    """Non-overlapping coloured shapes on `background` (mid-grey); how many of one colour and shape?"""
    color, shape = rng.choice(list(COLORS)), rng.choice(SHAPES)
    count = rng.randint(*(COUNT_RANGE_OOD if ood else COUNT_RANGE))
    others = [(s, c) for s in SHAPES for c in COLORS if (s, c) != (shape, color)]
    kinds = [(shape, color)] * count + [rng.choice(others) for _ in range(rng.randint(*DISTRACTOR_RANGE))]
    rng.shuffle(kinds)
    image, objects = shape_scene(rng, kinds, size, RADIUS_RANGE, background=background)
    meta = {"color": color, "shape": shape, "count": count, "n_distractors": len(kinds) - count,
            "n_objects": len(kinds), "objects": objects}
    return Sample(image, f"How many {color} {shape}s are there?", str(count), meta)


def demo_counting(item: dict) -> str:
    m = item["meta"]
    counted = ", ".join(str(k) for k in range(1, int(m["count"]) + 1))
    return f"<think>I count the {m['color']} {m['shape']}s: {counted}.</think><answer>{item['answer']}</answer>"


# ------------------------------------------------------------------------------------- comparison

BAR_RANGE = (2, 4)
BAR_RANGE_OOD = (5, 6)
VALUE_MAX = 10
"""Bars take integer values 1..VALUE_MAX on an axis with a grid line at every unit."""
BAR_LABELS = "ABCDEF"


def _bar_chart(rng: random.Random, values: list[int], colors: list[str], size: int) -> Image.Image:
    s = _scale(size)
    image = Image.new("RGB", (size, size), light_background(rng))
    draw = ImageDraw.Draw(image)
    x0, x1, y_top, y_zero = round(15 * s), size - round(4 * s), round(6 * s), size - round(14 * s)
    unit = (y_zero - y_top) / VALUE_MAX
    tick_font, label_font = load_font(DEFAULT_FONT, max(7, round(8 * s))), load_font(DEFAULT_FONT, round(10 * s))
    for v in range(VALUE_MAX + 1):
        y = round(y_zero - v * unit)
        draw.line((x0, y, x1, y), fill=(150, 150, 150) if v % 5 == 0 else (200, 200, 200), width=1)
        if v % 5 == 0:
            draw.text((x0 - 2, y), str(v), font=tick_font, fill=(60, 60, 60), anchor="rm")
    slot = (x1 - x0) / len(values)
    width = slot * rng.uniform(0.45, 0.7)
    for k, (value, color) in enumerate(zip(values, colors, strict=True)):
        cx = x0 + (k + 0.5) * slot
        draw.rectangle((round(cx - width / 2), round(y_zero - value * unit), round(cx + width / 2), y_zero),
                       fill=COLORS[color])
        draw.text((cx, y_zero + 2 * s), BAR_LABELS[k], font=label_font, fill=(0, 0, 0), anchor="mt")
    draw.line((x0, y_zero, x1, y_zero), fill=(0, 0, 0), width=max(1, round(s)))
    return image


def make_comparison(rng: random.Random, ood: bool, size: int) -> Sample:
    """A bar chart on a unit grid; which of two bars is taller, or by how many units."""
    n = rng.randint(*(BAR_RANGE_OOD if ood else BAR_RANGE))
    values = [rng.randint(1, VALUE_MAX) for _ in range(n)]
    i, j = rng.sample(range(n), 2)
    while values[i] == values[j]:
        values[j] = rng.randint(1, VALUE_MAX)
    colors = [rng.choice(list(COLORS)) for _ in range(n)]
    image = _bar_chart(rng, values, colors, size)
    hi, lo = (i, j) if values[i] > values[j] else (j, i)
    kind = rng.choice(("which", "difference"))
    if kind == "which":
        question, answer = f"Which bar is taller, {BAR_LABELS[i]} or {BAR_LABELS[j]}?", BAR_LABELS[hi]
    else:
        question = f"By how much is bar {BAR_LABELS[hi]} taller than bar {BAR_LABELS[lo]}?"
        answer = str(values[hi] - values[lo])
    meta = {"question_type": kind, "n_bars": n, "labels": BAR_LABELS[:n], "values": values, "colors": colors,
            "pair": [BAR_LABELS[i], BAR_LABELS[j]], "taller": BAR_LABELS[hi],
            "difference": values[hi] - values[lo]}
    return Sample(image, question, answer, meta)


def demo_comparison(item: dict) -> str:
    m = item["meta"]
    (a, b), values = m["pair"], dict(zip(m["labels"], m["values"], strict=True))
    seen = f"Bar {a} is {values[a]} and bar {b} is {values[b]}"
    if m["question_type"] == "which":
        think = f"{seen}, so {m['taller']} is taller."
    else:
        hi, lo = sorted((values[a], values[b]), reverse=True)
        think = f"{seen}; {hi} - {lo} = {hi - lo}."
    return f"<think>{think}</think><answer>{item['answer']}</answer>"


# ------------------------------------------------------------------------------------- arithmetic

NUMBER_RANGE = (1, 99)
NUMBER_RANGE_OOD = (100, 999)
FONT_PX_RANGE = (16, 30)
"""Glyph sizes in pixels at 112 px (scaled; shrunk further where a rotated number would not fit)."""
MAX_ANGLE = 25.0
NOISE_RANGE = (4.0, 20.0)
"""Standard deviation of the Gaussian pixel noise (0-255 scale) of a noisy image."""
NOISE_SHARE = 0.5
"""Share of images with pixel noise (noise makes a PNG ~8x larger: ~20 KiB instead of ~2.5 KiB)."""


def _fit_number(text: str, font: str, px: int, angle: float, box_w: int, box_h: int) -> tuple[Image.Image, int]:
    """The rotated text mask at the largest size <= px that fits the box, and that size."""
    while True:
        mask = text_mask(text, load_font(font, px), angle)
        if (mask.width <= box_w and mask.height <= box_h) or px <= 8:
            return mask, px
        px -= 2


def make_arithmetic(rng: random.Random, ood: bool, size: int) -> Sample:
    """Two numbers drawn in varied fonts, sizes, angles and noise; what is their sum?"""
    s, lo_hi = _scale(size), NUMBER_RANGE_OOD if ood else NUMBER_RANGE
    a, b = rng.randint(*lo_hi), rng.randint(*lo_hi)
    image = Image.new("RGB", (size, size), light_background(rng))
    layout = rng.choice(("stacked", "side"))
    half, pad = size // 2, max(1, round(2 * s))
    boxes = [(0, 0, size, half), (0, half, size, size)] if layout == "stacked" else \
        [(0, 0, half, size), (half, 0, size, size)]
    fonts, numbers = font_names(), []
    for value, (bx0, by0, bx1, by1) in zip((a, b), boxes, strict=True):
        font, angle = rng.choice(fonts), round(rng.uniform(-MAX_ANGLE, MAX_ANGLE), 1)
        mask, px = _fit_number(str(value), font, round(rng.uniform(*FONT_PX_RANGE) * s), angle,
                               bx1 - bx0 - 2 * pad, by1 - by0 - 2 * pad)
        x = rng.randint(bx0 + pad, max(bx0 + pad, bx1 - pad - mask.width))
        y = rng.randint(by0 + pad, max(by0 + pad, by1 - pad - mask.height))
        color = (rng.randint(0, 90), rng.randint(0, 90), rng.randint(0, 90))
        image.paste(color, (x, y, x + mask.width, y + mask.height), mask)
        numbers.append({"value": value, "font": font_label(font), "px": px, "angle": angle, "x": x, "y": y,
                        "color": list(color)})
    sigma = round(rng.uniform(*NOISE_RANGE), 1) if rng.random() < NOISE_SHARE else 0.0
    image = add_noise(image, sigma, rng.getrandbits(32))
    meta = {"a": a, "b": b, "sum": a + b, "digits": max(len(str(a)), len(str(b))), "layout": layout,
            "noise_sigma": sigma, "numbers": numbers}
    return Sample(image, "What is the sum of the two numbers?", str(a + b), meta)


def demo_arithmetic(item: dict) -> str:
    a, b = item["meta"]["a"], item["meta"]["b"]
    return f"<think>The numbers are {a} and {b}; {a} + {b} = {a + b}.</think><answer>{item['answer']}</answer>"


# ---------------------------------------------------------------------------------------- control

CONTROL_RANGE = (2, 20)
CONTROL_RANGE_OOD = (21, 99)
CONTROL_SCENES: tuple[tuple[str, str, str, str], ...] = (
    # (where, first kind, second kind, both together); numbers start at 2, so kinds stay plural
    ("in the basket", "apples", "pears", "fruits"),
    ("in the box", "red marbles", "blue marbles", "marbles"),
    ("in the garden", "cats", "dogs", "animals"),
    ("on the shelf", "books", "cups", "things"),
    ("in the parking lot", "cars", "bikes", "vehicles"),
    ("on the pond", "ducks", "geese", "birds"),
    ("in the classroom", "girls", "boys", "children"),
    ("in the vase", "roses", "tulips", "flowers"),
)


def make_control(rng: random.Random, ood: bool, size: int) -> Sample:
    """A word problem whose answer is in the text, beside an unrelated image of shapes."""
    where, first, second, together = rng.choice(CONTROL_SCENES)
    lo_hi = CONTROL_RANGE_OOD if ood else CONTROL_RANGE
    a, b = rng.randint(*lo_hi), rng.randint(*lo_hi)
    op = rng.choice(("sum", "difference"))
    if op == "difference":
        while a == b:
            b = rng.randint(*lo_hi)
        a, b = max(a, b), min(a, b)
    stem = f"There are {a} {first} and {b} {second} {where}."
    if op == "sum":
        question, answer = f"{stem} How many {together} are there {where}?", a + b
    else:
        question, answer = f"{stem} How many more {first} than {second} are there?", a - b
    kinds = [(rng.choice(SHAPES), rng.choice(list(COLORS))) for _ in range(rng.randint(2, 8))]
    image, objects = shape_scene(rng, kinds, size, RADIUS_RANGE)
    meta = {"a": a, "b": b, "op": op, "where": where, "image": "unrelated shapes", "objects": objects}
    return Sample(image, question, str(answer), meta)


def demo_control(item: dict) -> str:
    m = item["meta"]
    sign, value = ("+", m["a"] + m["b"]) if m["op"] == "sum" else ("-", m["a"] - m["b"])
    return f"<think>{m['a']} {sign} {m['b']} = {value}.</think><answer>{item['answer']}</answer>"


# --------------------------------------------------------------------------------------- registry

TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        Task("counting", make_counting, demo_counting,
             train=f"{COUNT_RANGE[0]}-{COUNT_RANGE[1]} targets among {DISTRACTOR_RANGE[0]}-{DISTRACTOR_RANGE[1]} "
                   f"distractors; {len(COLORS)} colours x {len(SHAPES)} shapes",
             ood=f"{COUNT_RANGE_OOD[0]}-{COUNT_RANGE_OOD[1]} targets: more objects and larger answers than "
                 "ever seen in training"),
        Task("comparison", make_comparison, demo_comparison,
             train=f"bar charts of {BAR_RANGE[0]}-{BAR_RANGE[1]} bars, values 1-{VALUE_MAX} on a unit grid; "
                   "'which is taller' or 'by how much'",
             ood=f"{BAR_RANGE_OOD[0]}-{BAR_RANGE_OOD[1]} bars (busier charts, labels never asked in training), "
                 "same values"),
        Task("arithmetic", make_arithmetic, demo_arithmetic,
             train=f"two numbers {NUMBER_RANGE[0]}-{NUMBER_RANGE[1]} in varied fonts, sizes, angles "
                   f"(+-{MAX_ANGLE:g} deg), pixel noise on {NOISE_SHARE:.0%} of the images; their sum",
             ood=f"two numbers {NUMBER_RANGE_OOD[0]}-{NUMBER_RANGE_OOD[1]}: more digits and larger sums"),
        Task("control", make_control, demo_control, vision=False,
             train=f"word problems (sum or difference) with numbers {CONTROL_RANGE[0]}-{CONTROL_RANGE[1]} "
                   "beside an unrelated image of shapes",
             ood=f"numbers {CONTROL_RANGE_OOD[0]}-{CONTROL_RANGE_OOD[1]}"),
    )
}
"""Task name -> `Task`; ``rlab data vlm --task NAME`` and `write_dataset` pick from it."""


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown vlm task {name!r}; known tasks: {', '.join(TASKS)}")
    return TASKS[name]


def demonstration(item: dict) -> str:
    """A short reasoning trace ending in the item's answer, built from its ``meta`` (for warm-up SFT).

    >>> demonstration({"task": "arithmetic", "answer": "68", "meta": {"a": 23, "b": 45}})
    '<think>The numbers are 23 and 45; 23 + 45 = 68.</think><answer>68</answer>'
    """
    return get_task(item["task"]).demonstration(item)


def spec_key(question: str, meta: dict) -> str:
    """What makes two items the same: the question and every drawing parameter."""
    return json.dumps([question, meta], sort_keys=True)


MAX_REDRAWS = 100


def generate(
    task: str, split: str, n: int, seed: int, image_size: int = 112, *, ood: bool | None = None,
    exclude: set[str] | None = None,
) -> Iterator[tuple[dict, Image.Image]]:
    """Yield `n` ``(row, image)`` pairs of `split`; rows have ``images: []`` (the writer fills it).

    Item ``k`` is drawn from ``random.Random(f"{task}|{split}|{seed}|{k}|{redraw}")``; it is redrawn
    while its `spec_key` is in `exclude` (other splits' keys, or an earlier item of this split).
    `exclude` is updated in place. `ood` defaults to whether the split name ends in ``ood``.
    """
    spec = get_task(task)
    if image_size < 32:
        raise ValueError(f"image_size must be at least 32 pixels (got {image_size})")
    ood = split.endswith("ood") if ood is None else ood
    seen = exclude if exclude is not None else set()
    for k in range(n):
        for redraw in range(MAX_REDRAWS):
            sample = spec.make(random.Random(f"{task}|{split}|{seed}|{k}|{redraw}"), ood, image_size)
            key = spec_key(sample.question, sample.meta)
            if key not in seen:
                break
        else:
            raise RuntimeError(f"{task}/{split}: item {k} repeats other items after {MAX_REDRAWS} redraws; "
                               "the task has too few distinct items for the sizes asked")
        seen.add(key)
        row = {"id": f"{task}-{split}-{k:06d}", "images": [], "question": sample.question,
               "answer": sample.answer, "task": task, "meta": {**sample.meta, "ood": ood}}
        yield row, sample.image
