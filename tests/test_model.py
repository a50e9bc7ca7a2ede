import numpy as np
import pytest
import torch

from mark1.annotations import QARecord
from mark1.config import ProjectorConfig
from mark1.data import IGNORE, collate, make_example, saliency_targets
from mark1.devices import Placement, parse_device_map
from mark1.model.projector import Projector
from mark1.model.video_qa import VideoQAModel


def _record(answer: int = 1, support: list[float] | None = None) -> QARecord:
    return QARecord(
        "q1",
        "v.mp4",
        "Biển báo màu gì?",
        ["A. Đỏ", "B. Xanh lá", "C. Xanh dương"],
        answer,
        support or [],
        [],
        1,
        "v.mp4",
    )


@pytest.mark.parametrize("temporal_head", ["scoring", "seed"])
def test_projector_shapes_follow_the_grid(tiny, temporal_head: str) -> None:
    cfg = ProjectorConfig(hidden_size=32, num_heads=4, intermediate_size=64, temporal_head=temporal_head)
    projector = Projector(cfg, tiny.video_dim, tiny.llm_dim)
    t, h, w, d = tiny.grid
    for frames in (t, 2 * t):  # the scoring head works for any T'
        out = projector(
            torch.randn(2, frames, h, w, d),
            torch.randn(2, 5, tiny.llm_dim),
            torch.ones(2, 5, dtype=torch.bool),
        )
        assert out.soft_tokens.shape == (2, cfg.num_visual_queries, tiny.llm_dim)
        assert out.saliency_logits.shape == (2, frames)


def test_question_padding_does_not_change_the_output(tiny) -> None:
    projector = Projector(
        ProjectorConfig(hidden_size=32, num_heads=4, intermediate_size=64, dropout=0.0),
        tiny.video_dim,
        tiny.llm_dim,
    ).eval()
    video, words = torch.randn(1, *tiny.grid), torch.randn(1, 5, tiny.llm_dim)
    short = projector(video, words, torch.ones(1, 5, dtype=torch.bool))
    padded_words = torch.cat([words, torch.randn(1, 3, tiny.llm_dim)], dim=1)
    mask = torch.tensor([[True] * 5 + [False] * 3])
    padded = projector(video, padded_words, mask)
    assert torch.allclose(short.soft_tokens, padded.soft_tokens, atol=1e-5)
    assert torch.allclose(short.saliency_logits, padded.saliency_logits, atol=1e-5)


def test_soft_tokens_replace_exactly_the_placeholders(model: VideoQAModel) -> None:
    example = make_example(_record(), model.tokenizer, model.num_video_tokens, np.arange(8.0), 8.0, 0.5)
    ids = torch.tensor([example.input_ids])
    soft = torch.randn(1, model.num_video_tokens, model.llm.hidden_size)
    embeds = model.llm.embed_prompt(ids, soft)
    placeholders = ids[0] == model.llm.video_token_id
    assert placeholders.sum() == model.num_video_tokens
    assert torch.equal(embeds[0, placeholders], soft[0])
    plain = model.llm.model.get_input_embeddings()(ids)[0]
    assert torch.equal(embeds[0, ~placeholders], plain[~placeholders])
    with pytest.raises(ValueError, match="placeholders"):
        model.llm.embed_prompt(ids, soft[:, :-1])


def test_only_answer_tokens_are_labelled(model: VideoQAModel) -> None:
    example = make_example(
        _record(answer=2), model.tokenizer, model.num_video_tokens, np.arange(8.0), 8.0, 0.5
    )
    labelled = [t for t in example.labels if t != IGNORE]
    assert model.tokenizer.decode(labelled) == "C. Xanh dương<|im_end|>"
    assert example.input_ids[-len(labelled) :] == labelled
    assert "Biển báo màu gì?" in model.tokenizer.decode(example.question_ids)


def test_saliency_targets_come_from_seconds() -> None:
    times = np.array([0.25, 1.25, 2.25, 3.25, 4.25])
    assert saliency_targets(times, [2.0], 0.5).tolist() == [0, 0, 1, 0, 0]
    assert saliency_targets(times, [1.75], 0.5).tolist() == [0, 1, 1, 0, 0]  # within 0.5 s of both
    assert saliency_targets(times, [9.0], 0.5).tolist() == [0, 0, 0, 0, 1]  # nearest, even when far
    assert saliency_targets(times, [], 0.5).sum() == 0


def test_gradients_reach_the_projector_and_never_the_llm(model: VideoQAModel, tiny) -> None:
    example = make_example(
        _record(support=[1.0]), model.tokenizer, model.num_video_tokens, np.arange(8.0), 8.0, 0.5
    )
    batch = collate([(np.random.randn(*tiny.grid).astype(np.float16), example)] * 2)
    out = model.loss(batch, lambda_temp=2.0, pos_weight=10.0)
    out.total.backward()
    assert torch.isfinite(out.total) and out.saliency > 0
    assert all(p.grad is None for p in model.llm.model.parameters())
    assert all(
        p.grad is not None
        for p in model.projector.parameters()
        if p.requires_grad and p.dim() > 1 and p is not model.projector.time_pos.weight
    )


def test_loss_equals_the_full_logits_reference_on_a_mixed_batch(model: VideoQAModel, tiny) -> None:
    """Answers of different lengths (padding), one row with support frames and one without: the loss read at
    answer positions found on the CPU equals CE over the full logits and BCE over the supported row."""
    import torch.nn.functional as F

    rows = [_record(answer=0, support=[2.0]), _record(answer=2)]  # "A. Đỏ" and the longer "C. Xanh dương"
    examples = [
        make_example(r, model.tokenizer, model.num_video_tokens, np.arange(8.0), 8.0, 0.5) for r in rows
    ]
    rng = np.random.default_rng(0)
    batch = collate([(rng.standard_normal(tiny.grid).astype(np.float16), e) for e in examples])
    model.train(False)
    out = model.loss(batch, lambda_temp=2.0, pos_weight=10.0)
    projected = model.project(batch.features, batch.question_ids, batch.question_mask)
    embeds = model.llm.embed_prompt(batch.input_ids, projected.soft_tokens)
    logits = model.llm.model(inputs_embeds=embeds, attention_mask=batch.attention_mask).logits
    answer = F.cross_entropy(logits[:, :-1].flatten(0, 1), batch.labels[:, 1:].flatten(), ignore_index=IGNORE)
    saliency = F.binary_cross_entropy_with_logits(
        projected.saliency_logits[:1], batch.saliency_target[:1], pos_weight=torch.tensor(10.0)
    )
    assert torch.allclose(out.answer, answer, atol=1e-5) and torch.allclose(out.saliency, saliency, atol=1e-6)
    assert torch.allclose(out.total, answer + 2.0 * saliency, atol=1e-5)


def test_kv_cache_scoring_equals_rerunning_the_prompt(model: VideoQAModel, tiny) -> None:
    features = torch.randn(*tiny.grid)
    choices = ["A. Đỏ", "B. Xanh lá", "C. Xanh dương", "D. Vàng"]
    cached = model.answer(features, "Biển báo màu gì?", choices, duration_s=8.0, reuse_prompt=True)
    rerun = model.answer(features, "Biển báo màu gì?", choices, duration_s=8.0, reuse_prompt=False)
    assert np.allclose(cached.probs, rerun.probs, atol=1e-5)
    assert abs(sum(cached.probs) - 1) < 1e-5 and len(cached.saliency) == tiny.grid[0]


def test_an_open_question_generates_text_and_a_grounding_query_skips_the_llm(
    model: VideoQAModel, tiny
) -> None:
    features = torch.randn(*tiny.grid)
    out = model.answer(features, "Mô tả video", [], duration_s=8.0, max_new_tokens=5)
    assert out.text and out.index is None and len(out.saliency) == tiny.grid[0]
    assert len(model.answer(features, "Mô tả video", [], duration_s=8.0, max_new_tokens=1).text) <= 1
    windows = out.windows
    assert len(windows) == 5 and all(0 <= a <= b <= 8.0 for a, b, _ in windows)
    assert [c for *_, c in windows] == sorted((c for *_, c in windows), reverse=True)
    located = model.answer(features, "Mô tả video", [], duration_s=8.0, generate=False)
    assert located.text == "" and located.windows == windows


def test_device_map_parsing() -> None:
    cpu = torch.device("cpu")
    assert parse_device_map("projector=cpu,llm=cpu") == Placement(cpu, cpu, (cpu,))
    assert parse_device_map("encoder=cpu,projector=cpu,llm=cpu").encoder == cpu
    from mark1.errors import ConfigError

    with pytest.raises(ConfigError, match="does not place llm"):
        parse_device_map("projector=cpu")
    with pytest.raises(ConfigError, match="only the LLM can be spread, and only over GPUs"):
        parse_device_map("projector=cpu,llm=cpu+cpu")
    with pytest.raises(ConfigError, match="only the LLM can be spread"):
        parse_device_map("projector=cuda:0+cuda:1,llm=cpu")
    if not torch.cuda.is_available():
        assert parse_device_map("auto").llm == (cpu,)
        with pytest.raises(ConfigError, match="does not have"):
            parse_device_map("projector=cuda:0,llm=cuda:1")
        with pytest.raises(ConfigError, match="does not have"):
            parse_device_map("projector=cuda:0,llm=cuda:0+cuda:1")


def test_device_maps_place_each_part_once_on_a_real_device() -> None:
    from mark1.errors import ConfigError

    with pytest.raises(ConfigError, match="places llm twice"):
        parse_device_map("projector=cpu,llm=cpu,llm=cpu")
    with pytest.raises(ConfigError, match="runs on cpu or cuda:N"):
        parse_device_map("projector=cpu,llm=meta")
