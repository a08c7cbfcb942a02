"""`rlab demo` / `make demo`: the main job on embedded defaults, ending with a gallery path.

At this stage of the lab the main job is the `diag` track: warm-up SFT then GRPO with the
default config, a final evaluation with pass@k, and a gallery of the run. Each track adds its own
short step here as it lands; the whole demo stays under 15 minutes on a 2-core CPU.
"""

from __future__ import annotations

import json
import time
from pathlib import Path


def _train_diag(runs_root: Path, quick: bool) -> Path:
    from shared.config import load_config, to_yaml
    from shared.diag.track import CONFIGS_DIR, DiagConfig, train
    from shared.tracking.run import Run

    overrides = ["train.steps=10", "sft.steps=20", "eval.size=50", "train.eval_every=0"] if quick else []
    cfg = load_config(DiagConfig, "default", overrides, CONFIGS_DIR)
    with Run.create("diag", cfg.name, to_yaml(cfg), cfg.train.seed, root=runs_root) as run:
        print(f"[demo] diag: warm-up SFT ({cfg.sft.steps} steps) then GRPO "
              f"({cfg.train.steps} steps) -> {run.path}", flush=True)
        train(cfg, run, resuming=False)
        return run.path


def run_demo(runs_root: Path, quick: bool = False) -> Path:
    """Train, evaluate and render; returns the gallery's index.html."""
    from shared.diag.track import evaluate_run
    from shared.gallery import build_gallery
    from shared.tracks import EvalRequest

    start = time.time()
    run_dir = _train_diag(runs_root, quick)
    print("[demo] diag: final evaluation on the held-out split (pass@1, pass@4)", flush=True)
    metrics = evaluate_run(EvalRequest(run_dir, "test", (1, 4), limit=100 if quick else None))
    print(json.dumps({k: round(v, 4) for k, v in metrics.items()}, indent=1), flush=True)
    index = build_gallery([run_dir], None)
    print(f"[demo] finished in {time.time() - start:.0f} s", flush=True)
    return index
