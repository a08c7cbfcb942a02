"""The svg track: configs, the SVG tokenizer, the rendering reward (and that it does not pay for the hedges seen
with plain pixel rewards), and a tiny warm-up + RLRF run through the CLI with eval on shapes and icons and a gallery."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shared.config import ConfigError, load_config, to_yaml
from shared.tracking import read_manifest, read_metrics
from shared.tracking.run import Run
from svg_rlrf.rewards import RenderReward, RewardWeights, extract_svg
from svg_rlrf.track import CONFIGS_DIR, SVG_SPLIT, SVGConfig, load_data, svg_corpus, train, train_stream

TINY = [
    "model.tiny.hidden_size=64", "model.tiny.num_layers=1", "model.tiny.intermediate_size=128",
    "model.tiny.vision_depth=1", "model.tiny.vision_hidden_size=32", "model.tiny.vision_intermediate_size=64",
    "model.tiny.min_pixels=3136", "model.tiny.max_pixels=3136", "vision.min_pixels=3136", "vision.max_pixels=3136",
    "data.image_size=56", "data.n_train=48", "data.n_val=8", "data.n_test=8", "data.icons=4", "sft.steps=4",
    "sft.batch_size=8", "train.steps=2", "train.save_every=2", "train.eval_every=0", "eval.size=4",
    "eval.media_items=2", "rl.prompts_per_step=2", "rl.group_size=4", "rl.max_new_tokens=24",
]
HEAD = '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 64">'

pytestmark = pytest.mark.usefixtures("one_thread")


def _config(cache: Path, *extra: str, name: str = "default") -> SVGConfig:
    return load_config(SVGConfig, name, [*TINY, f"data.cache_dir={cache}", *extra], CONFIGS_DIR)


# ------------------------------------------------------------------------------------------- configs


@pytest.mark.parametrize("name", sorted(p.stem for p in CONFIGS_DIR.glob("*.yaml")))
def test_every_config_loads(name, tmp_path):
    cfg = load_config(SVGConfig, name, [f"model.path={tmp_path}"], CONFIGS_DIR)
    assert cfg.rl.advantage == "dr_grpo" and cfg.rl.kl_coef == 0 and cfg.rl.clip_high == 0.4


def test_rl_from_a_random_model_is_refused_naming_model_path():
    with pytest.raises(ConfigError, match="model.path"):
        load_config(SVGConfig, "rlrf", [], CONFIGS_DIR)


@pytest.mark.parametrize("override, key", [("data.levels=[4]", "data.levels"), ("data.canvas=2", "data.canvas"),
                                            ("reward.pixel=-1", "reward.pixel"), ("eval.split=train", "eval.split")])
def test_config_errors_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(SVGConfig, "default", [override], CONFIGS_DIR)


def test_a_machine_that_cannot_render_is_named_before_anything_runs(tmp_path, monkeypatch, caplog):
    """Without cairo every render would fail one by one, each a -1 sample: RLRF, rlab eval and data generation
    refuse at once, naming the cause; a warm-up (which renders nothing) only warns about its evaluations."""
    from shared.tracks import EvalRequest
    from svg_rlrf import render
    from svg_rlrf.data.synthetic import render_targets
    from svg_rlrf.evaluate import evaluate_run
    from svg_rlrf.track import build_setup

    assert render.renderer_problem() is None  # this machine renders
    blocked = tmp_path / "blocked" / "cairosvg"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text("raise ImportError('no cairo here')\n")
    code = "from svg_rlrf.render import renderer_problem; print(renderer_problem())"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": f"{blocked.parent}:{Path.cwd()}", "PATH": "/usr/bin:/bin"})
    assert "cairosvg cannot render on this machine (ImportError: no cairo here)" in proc.stdout, proc.stderr
    assert "apt-get install libcairo2" in proc.stdout

    problem = "cairosvg cannot render on this machine (OSError: no library called 'cairo-2' was found)"
    monkeypatch.setattr(render, "renderer_problem", lambda: problem)
    with pytest.raises(RuntimeError, match=r"RLRF's reward renders every sample, but cairosvg cannot render"):
        build_setup(_config(tmp_path / "data", f"model.path={tmp_path}", name="rlrf"))
    with pytest.raises(RuntimeError, match=r"rlab eval renders SVGs, but cairosvg cannot render"):
        evaluate_run(EvalRequest(tmp_path / "run"))
    with pytest.raises(RuntimeError, match=r"writing the dataset's target images renders SVGs, but cairosvg"):
        render_targets([HEAD + "</svg>"], 64, 56)
    monkeypatch.setattr(render, "renderer_problem", lambda: None)
    data = load_data(_config(tmp_path / "data").data)  # generated while rendering works
    monkeypatch.setattr(render, "renderer_problem", lambda: problem)
    with caplog.at_level("WARNING", logger="svg_rlrf.track"):
        setup = build_setup(_config(tmp_path / "data", "train.steps=0"), data)
    assert setup.model is not None and "evaluations during training will score every output -1" in caplog.text


# ------------------------------------------------------------------------------------ data, tokenizer


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    cfg = _config(tmp_path_factory.mktemp("cache"))
    return load_data(cfg.data)


def test_generated_data_loads_with_levels_and_canvas(data):
    assert len(data.train) == 48 and len(data.split("test")) == 8 and len(data.split("val")) == 8
    item = data.train[0]
    assert item["answer"].startswith("<svg") and item["meta"]["canvas"] == 64
    assert Path(item["images"][0]).is_absolute()


def test_train_stream_counts_rl_steps_after_the_warm_up(data):
    items = list(zip(range(20), train_stream(data.train, 0, 0, items_before_rl=8, prompts_per_step=4), strict=False))
    assert [it["rl_step"] for _, it in items] == [0] * 12 + [1] * 4 + [2] * 4
    resumed = train_stream(data.train, 0, 10, 8, 4)
    assert next(resumed)["id"] == items[10][1]["id"]


def test_svg_tokenizer_keeps_numbers_and_colours_whole(data):
    from vlm_rl.models import train_vlm_tokenizer

    tok = train_vlm_tokenizer(svg_corpus(data.train), 512, SVG_SPLIT)
    code = data.train[0]["answer"]
    ids = tok(code, add_special_tokens=False)["input_ids"]
    pieces = [tok.decode([i]) for i in ids]
    assert tok.decode(ids) == code
    colours = [p for p in pieces if p.startswith("#")]
    assert colours and all(len(c) == 7 for c in colours)  # "#rrggbb" is one token, never shattered
    assert len(ids) < len(code) / 3


# ------------------------------------------------------------------------------------------- reward


def _item(tmp_path: Path, code: str) -> dict:
    from svg_rlrf.render import render_many

    image = render_many([code], 56, viewbox=(0, 0, 64, 64))[0].image
    path = tmp_path / f"{abs(hash(code))}.png"
    Image.fromarray(image).save(path)
    return {"images": [str(path)], "answer": code, "meta": {"canvas": 64}}


def test_reward_prefers_the_target_over_the_hedges(tmp_path):
    target = HEAD + '<rect x="8" y="8" width="40" height="24" fill="#e6194b"/></svg>'
    item = _item(tmp_path, target)
    candidates = {
        "exact": target,
        "half area": HEAD + '<rect x="8" y="8" width="20" height="24" fill="#e6194b"/></svg>',
        "wrong colour": HEAD + '<rect x="8" y="8" width="40" height="24" fill="#4363d8"/></svg>',
        "cover canvas": HEAD + '<rect x="0" y="0" width="64" height="64" fill="#e6194b"/></svg>',
        "centred circle": HEAD + '<circle cx="32" cy="32" r="14" fill="#808080"/></svg>',
    }
    reward = RenderReward(RewardWeights())
    scores = dict(zip(candidates, reward(list(candidates.values()), [item] * len(candidates)), strict=True))
    assert scores["exact"].overall > 0.95
    for hedge in ("half area", "wrong colour", "cover canvas", "centred circle"):
        assert scores[hedge].overall < scores["exact"].overall - 0.3, (hedge, scores[hedge])
    assert scores["wrong colour"].components["colour_iou"] == pytest.approx(-1.0, abs=0.05)


def test_shapes_term_pays_for_keeping_a_shape_the_image_terms_let_go(tmp_path):
    red = '<rect x="8" y="8" width="20" height="20" fill="#e6194b"/>'
    blue = '<circle cx="44" cy="44" r="8" fill="#4363d8"/>'
    item = _item(tmp_path, HEAD + red + blue + "</svg>")
    dropped = HEAD + red + "</svg>"  # the blue circle left out
    misplaced = HEAD + red + '<circle cx="44" cy="14" r="8" fill="#4363d8"/></svg>'  # drawn, in the wrong place
    plain = RenderReward(RewardWeights())([dropped, misplaced], [item] * 2)
    counted = RenderReward(RewardWeights(shapes=1.0))([dropped, misplaced], [item] * 2)
    assert [s.components["shapes"] for s in plain] == [0.5, 1.0]  # logged whatever its weight
    assert plain[0].overall > plain[1].overall + 0.1  # the image and length terms alone prefer leaving it out
    assert counted[1].overall > counted[0].overall + 0.05  # with the shapes term, drawing it pays


@pytest.mark.parametrize("completion, reason", [
    ("I cannot draw that", "no <svg>"),
    (HEAD + "</svg>", "blank"),
    (HEAD + '<rect x="0" y="0" width="9" height="9" fill="red"', "render failed"),
    (HEAD + '<image href="http://10.255.255.1/x.png" width="64" height="64"/></svg>', "render failed"),
    ('<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY a "aaaa">]><svg>&a;</svg>', "render failed"),
])
def test_bad_outputs_score_minus_one_with_a_reason(tmp_path, completion, reason):
    item = _item(tmp_path, HEAD + '<circle cx="20" cy="20" r="10" fill="#3cb44b"/></svg>')
    score = RenderReward()([completion], [item])[0]
    assert score.overall == -1.0 and reason in score.reason


def test_extract_svg_takes_the_element_out_of_chatter():
    assert extract_svg("Sure! <svg viewBox='0 0 1 1'><rect/></svg> done") == "<svg viewBox='0 0 1 1'><rect/></svg>"
    assert extract_svg("nothing") is None


def test_length_weight_ramps_over_rl_steps():
    w = RewardWeights(length=0.2, length_start=0.0, length_ramp_steps=10)
    assert [w.length_weight(s) for s in (0, 5, 10, 50)] == pytest.approx([0.0, 0.1, 0.2, 0.2])
    assert w.length_weight(None) == 0.2


# ------------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    cache = tmp_path_factory.mktemp("cache")
    cfg = _config(cache)
    run_dir = tmp_path_factory.mktemp("runs") / "run"
    with Run.create("svg", cfg.name, to_yaml(cfg), cfg.train.seed, run_dir=run_dir, tensorboard=False) as run:
        train(cfg, run, resuming=False)
    return run_dir


def test_short_run_logs_reward_components_and_saves_a_loadable_model(trained):
    rows = read_metrics(trained)
    rl = [r for r in rows if "reward" in r and not r.get("warmup")]
    assert rl, "no RL step logged"
    assert "reward/svg/rendered" in rl[-1]  # the render rate; the other components only where something rendered
    assert (trained / "final" / "config.json").exists() and (trained / "final" / "tokenizer.json").exists()
    report = json.loads((trained / "data.json").read_text())
    assert report["train_rows"] == 48


def test_eval_cli_reports_metrics_baselines_and_writes_comparisons(trained):
    for split in ("test", "icons"):
        proc = subprocess.run([sys.executable, "-m", "shared.cli", "eval", str(trained), "--split", split,
                               "--limit", "4"], capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        metrics = json.loads((trained / "eval" / f"{split}.json").read_text())["metrics"]
        for key in ("model/mse", "model/ssim", "model/edge_l2", "model/render_success", "model/tokens",
                    "model/code_efficiency", "model/area_ratio", "model/colour_accuracy", "model/shapes_ratio",
                    "model/distinct_outputs", "vectorizer/mse", "vectorizer/colour_precision", "blank/ssim",
                    "blank/mse"):
            assert key in metrics and np.isfinite(metrics[key]), key
        assert "model/colour_precision" in metrics  # NaN when nothing the model drew rendered
        assert 0 <= metrics["model/same_count"] <= 1 and "model/kind_right" in metrics  # NaN if nothing matched
        assert split == "icons" or "model/level1/centre_error" in metrics
        assert metrics["blank/render_success"] == 0.0 and metrics["blank/area_ratio"] == 0.0
        failures = json.loads((trained / "eval" / f"{split}.json").read_text())["failures"]
        assert sum(failures.values()) == round(4 * (1 - metrics["model/render_success"]))
        outputs = [json.loads(line) for line in (trained / "eval" / f"{split}.outputs.jsonl").read_text().splitlines()]
        assert len(outputs) == 4 and sum(o["failure"] is not None for o in outputs) == sum(failures.values())
        assert metrics["vectorizer/mse"] < metrics["blank/mse"]
    images = [r for r in read_manifest(trained) if r.kind == "image" and (r.group or "").startswith("final_eval")]
    assert images and all((trained / r.path).exists() for r in images)


def test_failed_outputs_are_counted_by_kind_without_their_particulars():
    from svg_rlrf.evaluate import failure_kinds, failure_reason
    from svg_rlrf.render import render_many

    svgs = [HEAD + '<rect x="1" y="1" width="9" height="9" fill="red"',  # cut off inside a tag
            HEAD + '<rect x="1" y="1" width="9" height="9" fill="red"/><rect x="2"',  # the same, elsewhere
            HEAD + '<rect x="1" y="1" width="30" height="30" fill="red"/>',  # cut off before </svg>
            HEAD + "</svg>", HEAD + '<rect x="1e999" width="3" height="4"/></svg>',
            HEAD + '<circle cx="30" cy="30" r="9" fill="#3cb44b"/></svg>', None,
            # two mangled namespaces (seen in policy output): one kind, not split at the colons of their URLs
            '<svg xmlns="http://www.w3 0 64" viewBox="0 0 64 64"><rect width="9" height="9"/></svg>',
            '<svg xmlns="http://www.w3.org/" viewBox="0 0 64 64"><rect width="9" height="9"/></svg>']
    results = render_many([s or "" for s in svgs], 56, viewbox=(0, 0, 64, 64))
    reasons = [failure_reason(r if s else None) for s, r in zip(svgs, results, strict=True)]
    assert failure_kinds(reasons) == {
        "malformed XML: unclosed token": 2, "root <svg> is in namespace": 2, "malformed XML: no element found": 1,
        "blank render": 1, "number out of range": 1, "no <svg> element": 1}


def test_a_users_dataset_with_a_broken_image_loses_that_row_only(tmp_path):
    from svg_rlrf.data.synthetic import write_synthetic

    root = write_synthetic(tmp_path / "mine", 20, 4, 4, seed=3, image_size=56, progress=False)
    first = json.loads((root / "train.jsonl").read_text().splitlines()[0])
    (root / first["images"][0]).write_bytes(b"not a png")
    cfg = load_config(SVGConfig, "default", [f"data.path={root}", "data.n_val=0"], CONFIGS_DIR)
    data = load_data(cfg.data)
    assert len(data.train) == 19 and data.reports["train"].dropped
    with pytest.raises(ValueError, match=first["id"]):
        load_data(load_config(SVGConfig, "default", [f"data.path={root}", "data.strict=true"], CONFIGS_DIR).data)


def test_help_config_lists_the_reward_weights_and_a_bad_config_exits_2():
    proc = subprocess.run([sys.executable, "-m", "shared.cli", "train", "svg", "--help-config"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "reward.colour_iou" in proc.stdout and "reward.length_ramp_steps" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "shared.cli", "train", "svg", "--config", "rlrf"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "model.path" in proc.stderr
