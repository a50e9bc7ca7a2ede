import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from mark1.backbones import load_encoder, load_llm, load_tokenizer
from mark1.errors import ConfigError
from mark1.tiny import TinySizes, build_tiny_tokenizer, write_tiny_backbones


@pytest.mark.slow
def test_tiny_backbones_are_the_same_bytes_every_time(tiny, tmp_path: Path) -> None:
    encoder_dir, llm_dir = write_tiny_backbones(tmp_path)
    for a, b in [(encoder_dir, tiny.encoder_dir), (llm_dir, tiny.llm_dir)]:
        assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()


def test_tiny_backbones_are_seeded_hf_models(tiny, tmp_path: Path) -> None:
    """Seeded with a short warm-up (the full one is the slow test above); loadable as the real ones are."""
    short = TinySizes(warmup_steps=3)
    encoder_dir, llm_dir = write_tiny_backbones(tmp_path / "a", short)
    again = write_tiny_backbones(tmp_path / "b", short)
    for a, b in zip((encoder_dir, llm_dir), again, strict=True):
        assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    encoder, llm = load_encoder(str(encoder_dir)), load_llm(str(llm_dir))
    assert type(encoder).__name__ == "VJEPA2Model" and type(llm).__name__ == "Qwen3ForCausalLM"
    assert not any(p.requires_grad for p in encoder.parameters()) and not encoder.training
    video = torch.rand(1, tiny.num_frames, 3, tiny.crop_size, tiny.crop_size)
    tokens = encoder.encoder(pixel_values_videos=video).last_hidden_state
    t, h, w, d = tiny.grid
    assert tokens.shape == (1, t * h * w, d)


def test_tiny_tokenizer_round_trips_vietnamese_and_has_a_chat_template(tiny) -> None:
    tokenizer = load_tokenizer(str(tiny.llm_dir))
    text = "Biển chỉ dẫn cho biết đi thẳng sẽ tới đâu? A. TP. Hồ Chí Minh — Đường Võ Văn Kiệt"
    assert tokenizer.decode(tokenizer(text).input_ids) == text
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hỏi"}],
        tokenize=False,
        add_generation_prompt=True,
        enable_thinking=False,
    )
    assert prompt == "<|im_start|>user\nhỏi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    pad = tokenizer.convert_tokens_to_ids("<|video_pad|>")
    assert tokenizer("<|video_pad|><|video_pad|>").input_ids == [pad, pad]
    assert len(build_tiny_tokenizer()) == len(tokenizer)


def test_an_encoder_that_is_not_vjepa2_is_refused_in_one_line(
    tiny, cli, videos: Path, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="is a 'qwen3' model; Mark-1's encoder is V-JEPA2"):
        load_encoder(str(tiny.llm_dir))
    result = cli(
        "extract",
        "--videos",
        videos,
        "--cache",
        tmp_path / "cache",
        "--config",
        "tiny",
        "--encoder",
        tiny.llm_dir,
    )
    assert result.code == 1 and "is a 'qwen3' model" in result.err and "Traceback" not in result.err
    assert not (tmp_path / "cache").exists()


def test_weights_that_leave_parameters_unset_are_refused(tiny, tmp_path: Path) -> None:
    broken = tmp_path / "encoder"
    shutil.copytree(tiny.encoder_dir, broken)
    weights = load_file(broken / "model.safetensors")
    dropped = sorted(weights)[:2]
    save_file({k: v for k, v in weights.items() if k not in dropped}, broken / "model.safetensors")
    with pytest.raises(ConfigError, match=f"lacks weights for 2 parameter\\(s\\) \\({dropped[0]}"):
        load_encoder(str(broken))


def test_a_model_that_asks_to_run_its_own_code_is_refused(tiny, tmp_path: Path) -> None:
    hostile = tmp_path / "llm"
    shutil.copytree(tiny.llm_dir, hostile)
    config = json.loads((hostile / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    (hostile / "config.json").write_text(json.dumps(config))
    (hostile / "modeling_evil.py").write_text("raise SystemExit('model code ran')\n")
    for load in (load_llm, load_tokenizer):
        with pytest.raises(ConfigError, match="asks to run its own code"):
            load(str(hostile))


def test_tiny_models_of_an_older_mark1_are_written_again(tmp_path: Path, monkeypatch) -> None:
    """Tiny models under $MARK1_HOME from before a warm-up change lack the current version file: written
    again on first use; current ones are kept."""
    import mark1.tiny as tiny_module

    monkeypatch.setenv("MARK1_HOME", str(tmp_path))
    written = []
    monkeypatch.setattr(tiny_module, "write_tiny_backbones", lambda out: written.append(out))
    llm_dir = tmp_path / "tiny" / "qwen3-tiny"
    llm_dir.mkdir(parents=True)
    (llm_dir / "config.json").write_text("{}")
    tiny_module.ensure_available(str(llm_dir))  # no version file: an older Mark-1 wrote it
    (llm_dir / tiny_module.VERSION_FILE).write_text("1")
    tiny_module.ensure_available(str(llm_dir))
    (llm_dir / tiny_module.VERSION_FILE).write_text(tiny_module.TINY_VERSION)
    tiny_module.ensure_available(str(llm_dir))
    tiny_module.ensure_available(
        str(tmp_path / "elsewhere" / "qwen3-tiny")
    )  # not the default place: untouched
    assert written == [tmp_path / "tiny", tmp_path / "tiny"]
