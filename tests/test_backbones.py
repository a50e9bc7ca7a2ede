from pathlib import Path

import torch

from mark1.backbones import build_tiny_tokenizer, load_encoder, load_llm, load_tokenizer, write_tiny_backbones


def test_tiny_backbones_are_seeded_hf_models(tiny, tmp_path: Path) -> None:
    encoder_dir, llm_dir = write_tiny_backbones(tmp_path)
    for a, b in [(encoder_dir, tiny.encoder_dir), (llm_dir, tiny.llm_dir)]:
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
