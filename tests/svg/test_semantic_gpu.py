"""The semantic term on CUDA (marker gpu: skipped without it): the same embeddings and scores as on the CPU."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gpu


def _images(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n):
        image = np.full((56, 56, 3), 255, np.uint8)
        x, y = rng.integers(0, 40, size=2)
        image[y:y + 16, x:x + 16] = rng.integers(0, 255, size=3)
        images.append(image)
    return images


@pytest.mark.parametrize("kind", ["clip", "dinov2"])
def test_semantic_similarity_on_cuda_matches_the_cpu(kind, tmp_path):
    import torch

    from svg_rlrf.semantic import SemanticSimilarity

    torch.manual_seed(0)
    if kind == "clip":
        from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

        CLIPVisionModelWithProjection(CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                                       num_attention_heads=2, image_size=56, patch_size=14,
                                                       projection_dim=16)).save_pretrained(tmp_path)
        CLIPImageProcessor(size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56}).save_pretrained(tmp_path)
    else:
        from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

        Dinov2Model(Dinov2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                 image_size=56, patch_size=14)).save_pretrained(tmp_path)
        BitImageProcessor(size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56}).save_pretrained(tmp_path)
    renders, targets = _images(6, 1), _images(3, 2) * 2  # each target twice, as in a GRPO group
    keys = [f"t{i % 3}" for i in range(6)]
    cpu = SemanticSimilarity(tmp_path, device="cpu")
    gpu = SemanticSimilarity(tmp_path, device="cuda")
    assert next(gpu.model.parameters()).is_cuda
    assert torch.allclose(cpu.embed(renders), gpu.embed(renders), atol=1e-3)
    assert gpu(renders, targets, keys) == pytest.approx(cpu(renders, targets, keys), abs=1e-3)
    assert gpu(targets, targets) == pytest.approx([1.0] * 6, abs=1e-4)
