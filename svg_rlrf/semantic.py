"""The svg reward's optional semantic term: cosine similarity of a local perceptual model's image embeddings.

RLRF adds a semantic similarity (DreamSim, CLIP) to its pixel and edge rewards, so that a render that looks
like the target scores well even where its pixels are off. Here any transformers image model in a local
folder serves (`AutoModel` + `AutoImageProcessor`): CLIP or SigLIP (their ``get_image_features``), a
vision tower saved with its projection (``CLIPVisionModelWithProjection`` and the like: its ``image_embeds``),
DINOv2 or a ViT (the pooled output, else the mean of the last hidden states). Nothing is downloaded: the folder
must exist (``reward.semantic_model``), or the run stops before its first step with the path named.

The score of a render is ``cos(e(render), e(target))`` in [-1, 1]; target embeddings are cached by key
(the target image's path), so each target is embedded once per run.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any


class SemanticSimilarity:
    """Cosine similarity of image embeddings from the model in `path`, on `device` (CPU by default)."""

    def __init__(self, path: str | Path, device: str = "cpu", batch_size: int = 32, cache: int = 4096) -> None:
        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"reward.semantic_model: {folder} is not a folder (a local transformers "
                                    "image model: CLIP, SigLIP, DINOv2 ...; nothing is downloaded)")
        import transformers
        from transformers import AutoConfig, AutoImageProcessor, AutoModel

        try:
            # AutoModel maps a vision tower saved with its projection to the tower alone and drops the
            # projection; the class the folder names keeps it.
            arch = (getattr(AutoConfig.from_pretrained(folder), "architectures", None) or [""])[0]
            named = arch.endswith("WithProjection") and "Vision" in arch and hasattr(transformers, arch)
            cls = getattr(transformers, arch) if named else AutoModel
            self.model = cls.from_pretrained(folder).to(device).eval()
            self.processor = AutoImageProcessor.from_pretrained(folder)
        except (OSError, ValueError, KeyError) as err:
            raise ValueError(f"reward.semantic_model: {folder} does not load as a transformers image model "
                             f"with its image processor: {err}") from None
        self.device = device
        self.batch_size = batch_size
        self.capacity = cache
        self._targets: OrderedDict[str, Any] = OrderedDict()

    def embed(self, images: list[Any]) -> Any:
        """Unit-norm embeddings (``N x D`` float32 tensor) of ``H x W x 3`` uint8 images."""
        import numpy as np
        import torch

        chunks = []
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                chunk = [np.array(image, dtype=np.uint8) for image in images[start:start + self.batch_size]]
                batch = self.processor(images=chunk, return_tensors="pt")
                pixels = batch["pixel_values"].to(self.device)
                if hasattr(self.model, "get_image_features"):
                    out = self.model.get_image_features(pixel_values=pixels)
                else:
                    out = self.model(pixel_values=pixels)
                if not isinstance(out, torch.Tensor):
                    pooled = getattr(out, "image_embeds", None)
                    if pooled is None:
                        pooled = getattr(out, "pooler_output", None)
                    out = pooled if pooled is not None else out.last_hidden_state.mean(dim=1)
                chunks.append(torch.nn.functional.normalize(out.float().reshape(len(pixels), -1), dim=-1).cpu())
        return torch.cat(chunks) if chunks else torch.zeros(0, 0)

    def target_embeddings(self, targets: list[Any], keys: list[str]) -> Any:
        """Embeddings of the targets, each computed once per key (the most recent `cache` kept)."""
        import torch

        missing: dict[str, int] = {}
        for i, key in enumerate(keys):
            if key not in self._targets:
                missing.setdefault(key, i)  # a GRPO group shares its target: embed it once
        if missing:
            for key, emb in zip(missing, self.embed([targets[i] for i in missing.values()]), strict=True):
                self._targets[key] = emb
            while len(self._targets) > max(self.capacity, len(set(keys))):
                self._targets.popitem(last=False)
        for key in keys:
            self._targets.move_to_end(key)
        return torch.stack([self._targets[key] for key in keys])

    def __call__(self, renders: list[Any], targets: list[Any], keys: list[str] | None = None) -> list[float]:
        """``cos(e(render), e(target))`` per pair; `keys` name the targets for the cache (none: no caching)."""
        if not renders:
            return []
        rendered = self.embed(renders)
        reference = self.target_embeddings(targets, keys) if keys is not None else self.embed(targets)
        return [float(v) for v in (rendered * reference).sum(dim=-1).clamp(-1.0, 1.0)]
