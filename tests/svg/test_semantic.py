"""The svg reward's semantic term (svg_rlrf.semantic): a local image model's embeddings, cosine similarity of
render and target. The models are tiny, built here from configs (a CLIP vision tower with its projection, a
whole CLIP, DINOv2); nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from shared.config import ConfigError, load_config
from svg_rlrf.rewards import RenderReward, RewardWeights
from svg_rlrf.track import CONFIGS_DIR, SVGConfig

HEAD = '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 64">'
TARGET = (HEAD + '<rect x="8" y="8" width="30" height="20" fill="#e6194b"/>'
          '<circle cx="44" cy="44" r="9" fill="#4363d8"/></svg>')
OTHER = HEAD + '<polygon points="50,4 60,30 30,20" fill="#3cb44b"/></svg>'

pytestmark = pytest.mark.usefixtures("one_thread")


def _clip(folder: Path) -> Path:
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    cfg = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=56, patch_size=14, projection_dim=16)
    CLIPVisionModelWithProjection(cfg).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56}).save_pretrained(folder)
    return folder


def _dinov2(folder: Path) -> Path:
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    cfg = Dinov2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                       image_size=56, patch_size=14)
    Dinov2Model(cfg).save_pretrained(folder)
    BitImageProcessor(size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module", params=["clip", "dinov2"])
def model_dir(request, tmp_path_factory) -> Path:
    import torch

    torch.manual_seed(0)
    build = {"clip": _clip, "dinov2": _dinov2}[request.param]
    return build(tmp_path_factory.mktemp(request.param))


def _item(tmp_path: Path, code: str) -> dict:
    from svg_rlrf.render import render_many

    path = tmp_path / "target.png"
    Image.fromarray(render_many([code], 56, viewbox=(0, 0, 64, 64))[0].image).save(path)
    return {"images": [str(path)], "answer": code, "meta": {"canvas": 64}}


def test_semantic_term_is_one_for_the_target_and_less_for_another_drawing(model_dir, tmp_path):
    item = _item(tmp_path, TARGET)
    weights = RewardWeights(semantic=1.0, semantic_model=str(model_dir))
    reward = RenderReward(weights)
    exact, other, broken = reward([TARGET, OTHER, HEAD + "<rect"], [item] * 3)
    assert exact.components["semantic"] == pytest.approx(1.0, abs=1e-4)
    assert other.components["semantic"] < exact.components["semantic"] - 1e-3
    assert broken.overall == -1.0 and "semantic" not in broken.components  # nothing rendered, nothing embedded
    plain = RenderReward(RewardWeights())([OTHER], [item])[0]  # the same components without the semantic one
    total = sum((0.5, 0.25, 1.0, 0.1, 1.0))  # pixel, edge, colour_iou, length, semantic
    assert other.overall == pytest.approx((plain.overall * (total - 1.0) + other.components["semantic"]) / total)
    assert len(reward.semantic._targets) == 1  # the target was embedded once


def test_each_kind_of_folder_gives_its_models_image_embedding(tmp_path):
    """A vision tower saved with its projection keeps it (AutoModel alone would drop it), a whole CLIP embeds
    through get_image_features, DINOv2 through its pooled output."""
    import numpy as np
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from svg_rlrf.semantic import SemanticSimilarity

    torch.manual_seed(0)
    images = [np.full((56, 56, 3), 255, np.uint8), np.zeros((56, 56, 3), np.uint8)]
    images[1][10:40, 5:30] = (230, 25, 75)
    tiny = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
    CLIPModel(CLIPConfig(text_config=tiny, vision_config={**tiny, "image_size": 56, "patch_size": 14},
                         projection_dim=16)).save_pretrained(tmp_path / "whole")
    CLIPImageProcessor(size={"shortest_edge": 56},
                       crop_size={"height": 56, "width": 56}).save_pretrained(tmp_path / "whole")
    for folder, want, cls in ((_clip(tmp_path / "tower"), "image_embeds", "CLIPVisionModelWithProjection"),
                              (tmp_path / "whole", "get_image_features", "CLIPModel"),
                              (_dinov2(tmp_path / "dinov2"), "pooler_output", "Dinov2Model")):
        sim = SemanticSimilarity(folder)
        assert type(sim.model).__name__ == cls
        pixels = sim.processor(images=images, return_tensors="pt")["pixel_values"]
        with torch.inference_mode():
            if want == "get_image_features":
                out = sim.model.get_image_features(pixel_values=pixels)
                out = out if isinstance(out, torch.Tensor) else out.pooler_output
            else:
                out = getattr(sim.model(pixel_values=pixels), want)
        assert out.shape[-1] == (32 if want == "pooler_output" else 16), folder
        torch.testing.assert_close(sim.embed(images), torch.nn.functional.normalize(out.float(), dim=-1))


def test_a_semantic_model_that_is_not_there_stops_the_run_naming_the_key(tmp_path):
    from svg_rlrf.semantic import SemanticSimilarity

    with pytest.raises(ConfigError, match=r"reward\.semantic_model: .*missing is not a folder"):
        RewardWeights(semantic=1.0, semantic_model=str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="reward.semantic_model"):
        SemanticSimilarity(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="reward.semantic_model"):
        RenderReward(RewardWeights(semantic=1.0, semantic_model=str(tmp_path / "empty")))
    with pytest.raises(ConfigError, match=r"reward\.semantic_model"):
        load_config(SVGConfig, "default", ["reward.semantic=0.5"], CONFIGS_DIR)
    with pytest.raises(ConfigError, match=r"reward\.semantic_model.*missing is not a folder"):
        load_config(SVGConfig, "default", [f"reward.semantic_model={tmp_path / 'missing'}"], CONFIGS_DIR)
