from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sim import textures


@pytest.mark.parametrize("family", textures.FAMILIES)
def test_each_family_is_a_patterned_uint8_image_and_reproducible(family: str) -> None:
    a = textures.make_texture(family, np.random.default_rng(3), 64)
    b = textures.make_texture(family, np.random.default_rng(3), 64)
    c = textures.make_texture(family, np.random.default_rng(4), 64)
    assert a.shape == (64, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.astype(float).std() > 5.0, "a texture must show a pattern, not a flat colour"


def test_train_and_heldout_families_are_disjoint() -> None:
    assert not set(textures.TRAIN_FAMILIES) & set(textures.HELDOUT_FAMILIES)
    assert set(textures.FAMILIES) == set(textures.TRAIN_FAMILIES) | set(textures.HELDOUT_FAMILIES)


def test_families_look_different() -> None:
    means = {f: textures.make_texture(f, np.random.default_rng(0), 64) for f in textures.FAMILIES}
    flat = [m.reshape(-1) for m in means.values()]
    assert len({m.tobytes() for m in flat}) == len(flat)


def test_png_cache_is_stable_across_calls(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("RLAB_TEXTURE_CACHE", str(tmp_path))
    path = textures.texture_png("bricks", 5, 32)
    first = np.asarray(Image.open(path))
    path.unlink()
    again = np.asarray(Image.open(textures.texture_png("bricks", 5, 32)))
    assert np.array_equal(first, again)
    assert not list(tmp_path.glob(".*")), "no temporary files left behind"


def test_bad_texture_requests_name_the_problem() -> None:
    with pytest.raises(ValueError, match="unknown texture family 'marble'.*noise"):
        textures.make_texture("marble", np.random.default_rng(0))
    with pytest.raises(ValueError, match="index must be in 0..31"):
        textures.texture_png("noise", 32)
    with pytest.raises(ValueError, match=">= 8"):
        textures.make_texture("noise", np.random.default_rng(0), 4)
