"""The tiny Qwen2.5-VL: tokenizer, build -> save -> load, CLI, folder errors; Qwen2-VL through the same loader."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from shared.config import ConfigError
from vlm_rl.models import (
    EOS_TOKEN,
    PAD_TOKEN,
    SPECIAL_TOKENS,
    TinyVLMConfig,
    build_tiny_vlm,
    default_corpus,
    load_vlm,
    tiny_vlm,
    train_vlm_tokenizer,
    visual_tokens,
    vlm_banned_ids,
)

CFG = TinyVLMConfig()


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    return build_tiny_vlm(CFG, tmp_path_factory.mktemp("tiny") / "tiny-vl", seed=0)


@pytest.fixture(scope="module")
def loaded(built):
    return load_vlm(built)


def test_module_import_is_light() -> None:
    # `rlab --help` registers tiny_vlm through an entry point: importing it must not import torch
    code = ("import sys, vlm_rl.models, vlm_rl.inputs; "
            "heavy = [m for m in ('torch', 'transformers', 'qwen_vl_utils') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


def test_tokenizer_splits_digits_and_keeps_specials_whole() -> None:
    tok = train_vlm_tokenizer(default_corpus(), 400)
    assert len(tok) <= 400
    assert tok.tokenize("1234") == ["1", "2", "3", "4"]
    for special in SPECIAL_TOKENS:
        assert tok.tokenize(special) == [special]
    assert tok.eos_token == EOS_TOKEN and tok.pad_token == PAD_TOKEN and tok.padding_side == "left"
    text = "<think>3 + 4 = 7</think><answer>7</answer>"
    assert tok.decode(tok(text)["input_ids"]) == text


def test_config_is_validated_with_the_key_named() -> None:
    with pytest.raises(ConfigError, match="num_kv_heads"):
        TinyVLMConfig(num_heads=4, num_kv_heads=3)
    with pytest.raises(ConfigError, match="max_pixels"):
        TinyVLMConfig(min_pixels=112 * 112, max_pixels=56 * 56)
    with pytest.raises(ConfigError, match="rope_theta"):
        TinyVLMConfig(rope_theta=0.5)
    assert sum(CFG.mrope_section) == CFG.hidden_size // CFG.num_heads // 2


def test_the_rotary_base_reaches_the_model_config() -> None:
    from vlm_rl.models import _model_config, default_corpus, train_vlm_tokenizer

    tok = train_vlm_tokenizer(default_corpus(), TinyVLMConfig().vocab_size)
    for theta in (1.0e6, 100.0):
        rope = _model_config(TinyVLMConfig(rope_theta=theta), tok).text_config.rope_parameters
        assert rope["rope_theta"] == theta and rope["mrope_section"] == [4, 6, 6]


def test_round_trip_keeps_weights_processor_and_template(built, loaded) -> None:
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor

    model, processor = loaded
    assert isinstance(model, Qwen2_5_VLForConditionalGeneration) and isinstance(processor, Qwen2_5_VLProcessor)
    # the saved weights are the seed-0 initialisation of the saved config
    torch.manual_seed(0)
    fresh = Qwen2_5_VLForConditionalGeneration(model.config)
    saved, again = model.state_dict(), fresh.state_dict()
    assert saved.keys() == again.keys()
    for name, value in saved.items():
        assert torch.equal(value, again[name]), name
    # token ids of the config are the tokenizer's
    tok = processor.tokenizer
    assert model.config.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>") == processor.image_token_id
    assert model.config.vision_start_token_id == tok.convert_tokens_to_ids("<|vision_start|>")
    assert model.config.vision_config.out_hidden_size == CFG.hidden_size
    assert model.generation_config.eos_token_id == tok.eos_token_id
    # processor: pixel bounds and patch sizes of the config; 16 visual tokens per 112x112 image
    ip = processor.image_processor
    assert (ip.size["shortest_edge"], ip.size["longest_edge"]) == (CFG.min_pixels, CFG.max_pixels)
    assert (ip.patch_size, ip.merge_size, ip.temporal_patch_size) == (14, 2, 2)
    assert visual_tokens(processor, 112, 112) == 16 and visual_tokens(processor, 224, 224) == 64
    assert tok.padding_side == "left"


def test_chat_template_is_qwen25_vl_instruct(loaded) -> None:
    _, processor = loaded
    content = [{"type": "image", "image": "x.png"}, {"type": "text", "text": "How many?"}]
    messages = [{"role": "user", "content": content}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                    "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>How many?<|im_end|>\n"
                    "<|im_start|>assistant\n")
    with_system = [{"role": "system", "content": "Count."}, *messages,
                   {"role": "assistant", "content": "<answer>3</answer>"}]
    text = processor.apply_chat_template(with_system, tokenize=False)
    assert text.startswith("<|im_start|>system\nCount.<|im_end|>\n<|im_start|>user\n<|vision_start|>")
    assert text.endswith("<|im_start|>assistant\n<answer>3</answer><|im_end|>\n")


def test_banned_ids_cover_every_special_but_eos(loaded) -> None:
    _, processor = loaded
    tok = processor.tokenizer
    banned = set(vlm_banned_ids(processor))
    expected = {tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS} - {tok.eos_token_id}
    assert banned == expected
    assert tok.convert_tokens_to_ids("<|image_pad|>") in banned and tok.pad_token_id in banned


def test_cli_builds_and_prints_size(tmp_path: Path) -> None:
    import typer
    from typer.testing import CliRunner

    app = typer.Typer()
    app.command()(tiny_vlm)
    app.command("other")(lambda: None)  # two commands: typer keeps tiny_vlm's name and options as `rlab models` does
    out = tmp_path / "cli-vl"
    result = CliRunner().invoke(app, ["tiny-vlm", "--out", str(out), "--seed", "1"])
    assert result.exit_code == 0, result.output
    print(result.output)
    assert str(out) in result.output and "visual tokens per 112x112 image: 16" in result.output
    params = sum(p.numel() for p in load_vlm(out)[0].parameters())
    assert f"parameters: {params:,}" in result.output
    bad = CliRunner().invoke(app, ["tiny-vlm", "--out", str(tmp_path / "bad"), "--hidden-size", "100"])
    assert bad.exit_code == 2 and "hidden_size" in bad.output and not (tmp_path / "bad").exists()


@pytest.mark.parametrize(("remove", "message"), [
    ("processor_config.json", "preprocessor_config.json"),
    ("chat_template.jinja", "chat template"),
    ("config.json", "config.json"),
])
def test_load_vlm_names_what_is_missing(built, tmp_path: Path, remove: str, message: str) -> None:
    folder = tmp_path / "broken"
    shutil.copytree(built, folder)
    (folder / remove).unlink()
    with pytest.raises(FileNotFoundError, match=message):
        load_vlm(folder)


def test_load_vlm_rejects_a_file_or_missing_folder(built, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a folder"):
        load_vlm(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="not a folder"):
        load_vlm(built / "config.json")


def _build_tiny_qwen2_vl(out: Path) -> Path:
    """A tiny Qwen2-VL (the previous generation) from transformers' classes, saved like the real one."""
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    from vlm_rl.models import CHAT_TEMPLATE  # Qwen2-VL-Instruct's template is the same

    tok = train_vlm_tokenizer(default_corpus(), 350)
    ids = {f"{name}_token_id": tok.convert_tokens_to_ids(f"<|{name}|>".replace("_token", ""))
           for name in ("image_pad", "video_pad", "vision_start", "vision_end")}
    config = Qwen2VLConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                         rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [4, 6, 6]},
                         bos_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id),
        vision_config=dict(depth=1, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2),
        image_token_id=ids["image_pad_token_id"], video_token_id=ids["video_pad_token_id"],
        vision_start_token_id=ids["vision_start_token_id"], vision_end_token_id=ids["vision_end_token_id"],
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    Qwen2VLForConditionalGeneration(config).save_pretrained(out)
    size = {"shortest_edge": 112 * 112, "longest_edge": 112 * 112 * 4}
    Qwen2VLProcessor(image_processor=Qwen2VLImageProcessor(size=size), tokenizer=tok,
                     video_processor=Qwen2VLVideoProcessor(), chat_template=CHAT_TEMPLATE).save_pretrained(out)
    return out


def test_qwen2_vl_loads_and_matches_sampling(tmp_path: Path) -> None:
    from PIL import Image

    from shared.lm.logprobs import completion_logprobs
    from shared.lm.sampling import sample_completions
    from vlm_rl.inputs import encode_vlm_prompts, expand_vlm_inputs

    model, processor = load_vlm(_build_tiny_qwen2_vl(tmp_path / "qwen2-vl"))
    assert type(model).__name__ == "Qwen2VLForConditionalGeneration"
    for i, colour in enumerate(["red", "blue"]):
        Image.new("RGB", (112 + 28 * i, 112), colour).save(tmp_path / f"{i}.png")
    items = [{"id": str(i), "images": [f"{i}.png"], "question": "How many?" + " Count." * i} for i in range(2)]
    inputs = encode_vlm_prompts(processor, items, tmp_path, 112 * 112, 112 * 112 * 4)
    banned = vlm_banned_ids(processor)
    torch.manual_seed(0)
    ro = sample_completions(model, processor.tokenizer, expand_vlm_inputs(inputs, 2), 1, 8, banned_ids=banned)
    with torch.no_grad():
        logp, _ = completion_logprobs(model, ro.prompt_ids, ro.prompt_mask, ro.completion_ids, ro.completion_mask,
                                      torch.tensor(banned), 1.0, ro.model_inputs)
    torch.testing.assert_close(logp, ro.logp, atol=1e-5, rtol=0)
