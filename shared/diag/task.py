"""Verifiable digit tasks: ``add`` (a + b) and ``reverse`` (reverse a digit string).

Items are plain dicts in the lab's standard row format ``{id, question, answer, task, meta}``.
Train items are drawn from an endless seeded stream; the test split (results) and the val split
(warm-up checks) are fixed seeded sets whose questions never appear in training (train draws skip
them) nor in each other.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

Item = dict

ANSWER_RE = re.compile(r"^\s*(\d+)\s*$")


def _add(rng: random.Random, max_digits: int) -> tuple[str, str, dict]:
    da, db = rng.randint(1, max_digits), rng.randint(1, max_digits)
    a, b = rng.randrange(10 ** (da - 1) if da > 1 else 0, 10**da), rng.randrange(
        10 ** (db - 1) if db > 1 else 0, 10**db
    )
    return f"{a}+{b}=", str(a + b), {"a": a, "b": b}


def _reverse(rng: random.Random, max_digits: int) -> tuple[str, str, dict]:
    n = rng.randint(2, max_digits + 2)
    s = "".join(rng.choice("0123456789") for _ in range(n))
    return f"reverse {s}", s[::-1], {"length": n}


GENERATORS: dict[str, Callable[[random.Random, int], tuple[str, str, dict]]] = {
    "add": _add,
    "reverse": _reverse,
}


@dataclass(frozen=True)
class DigitTask:
    kind: str = "add"
    max_digits: int = 2
    test_size: int = 500
    val_size: int = 200
    seed: int = 0

    def _item(self, rng: random.Random, idx: str) -> Item:
        question, answer, meta = GENERATORS[self.kind](rng, self.max_digits)
        return {"id": idx, "question": question, "answer": answer, "task": self.kind, "meta": meta, "images": []}

    def _fixed_split(self, name: str, size: int, exclude: set[str]) -> list[Item]:
        rng = random.Random(f"{name}-{self.kind}-{self.max_digits}-{self.seed}")
        seen, items = set(exclude), []
        for _ in range(size * 50):
            item = self._item(rng, f"{name}-{len(items)}")
            if item["question"] not in seen:
                seen.add(item["question"])
                items.append(item)
            if len(items) == size:
                break
        return items

    def test_items(self) -> list[Item]:
        return self._fixed_split("test", self.test_size, set())

    def val_items(self) -> list[Item]:
        return self._fixed_split("val", self.val_size, {it["question"] for it in self.test_items()})

    def split(self, name: str) -> list[Item]:
        splits = {"test": self.test_items, "val": self.val_items}
        if name not in splits:
            raise ValueError(f"the {self.kind} task has splits {', '.join(splits)} (asked for {name!r})")
        return splits[name]()

    def train_stream(self, seed: int, start: int = 0) -> Iterator[Item]:
        """Endless seeded train items, resumable: item k depends only on (seed, k)."""
        held_out = {it["question"] for it in self.test_items() + self.val_items()}
        k = start
        while True:
            rng = random.Random(f"train-{self.kind}-{self.max_digits}-{seed}-{k}")
            item = self._item(rng, f"train-{k}")
            while item["question"] in held_out:
                item = self._item(rng, f"train-{k}")
            yield item
            k += 1


def parse_answer(completion: str) -> str | None:
    m = ANSWER_RE.match(completion)
    return m.group(1) if m else None
