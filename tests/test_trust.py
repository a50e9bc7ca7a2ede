"""Nothing from outside is trusted: each test is one of the hostile trials that used to end in a traceback,
a lost file or a wrong one that looked valid (docs/reliability.md lists them)."""

import csv
import hashlib
import json
import shutil
import struct
from pathlib import Path

import av
import h5py
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mark1.annotations import load_annotations
from mark1.backbones import load_llm
from mark1.cache import FeatureCache, damaged_shards
from mark1.errors import AnnotationError, CheckpointError, ConfigError, TrainingError
from mark1.files import acquire_lock
from mark1.stages.evaluate import evaluate, predict
from mark1.stages.extract import extract
from mark1.stages.train import RUN_LOCK, train
from mark1.video import DECODERS, load_clip


def test_a_second_train_into_a_run_directory_is_refused_naming_the_holder(trained, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    holder = acquire_lock(run_dir, RUN_LOCK, "run", CheckpointError)  # the first writer, still running
    try:
        with pytest.raises(CheckpointError, match=r"being written by another process \(pid \d+ on "):
            train(trained.config, trained.cache_dir, trained.data_dir / "train.json", run_dir)
        assert not (run_dir / "last").exists() and not (run_dir / "metrics.jsonl").exists()
    finally:
        holder.close()


def test_a_failed_write_keeps_the_old_submission_and_no_partial_file(
    trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    test_json, submission = trained.data_dir / "public_test.json", tmp_path / "submission.csv"
    predict(trained.run_dir / "best", trained.cache_dir, test_json, submission, trained.config)
    before = submission.read_bytes()
    rows = {"n": 0}
    real_writerow = csv.writer(open(tmp_path / "scratch.csv", "w")).writerow.__class__  # noqa: SIM115

    class DyingWriter:  # the process dies halfway through the rows
        def __init__(self, f) -> None:
            self.f = f

        def writerow(self, row) -> None:
            rows["n"] += 1
            if rows["n"] == 3:
                raise KeyboardInterrupt
            self.f.write(",".join(row) + "\n")

    assert real_writerow is not None
    monkeypatch.setattr(csv, "writer", DyingWriter)
    with pytest.raises(KeyboardInterrupt):
        predict(trained.run_dir / "best", trained.cache_dir, test_json, submission, trained.config)
    assert submission.read_bytes() == before
    assert not list(tmp_path.glob("*.tmp"))


def test_metrics_name_the_predictions_they_summarise(trained, tmp_path: Path) -> None:
    result = evaluate(
        trained.run_dir / "best", trained.cache_dir, trained.data_dir / "test.json", tmp_path, trained.config
    )
    metrics = json.loads(result.metrics_path.read_text())
    assert metrics["predictions_sha256"] == hashlib.sha256(result.predictions_path.read_bytes()).hexdigest()


def test_outputs_that_would_overwrite_each_other_are_refused_before_any_work(trained, tmp_path: Path) -> None:
    test_json = trained.data_dir / "public_test.json"
    with pytest.raises(AnnotationError, match="would be overwritten by predictions.jsonl"):
        predict(trained.run_dir / "best", trained.cache_dir, test_json, tmp_path / "predictions.jsonl")
    (tmp_path / "taken").write_text("a file")
    with pytest.raises(Exception, match="is a file"):
        evaluate(
            trained.run_dir / "best", trained.cache_dir, trained.data_dir / "test.json", tmp_path / "taken"
        )
    assert not (tmp_path / "submission.csv").exists()


def _long_question_file(trained, tmp_path: Path, question_chars: int) -> Path:
    data = json.loads((trained.data_dir / "test.json").read_text())
    data["data"][0]["question"] = "Biển báo " * (question_chars // 9)
    path = tmp_path / "long.json"
    path.write_text(json.dumps(data, ensure_ascii=False))
    return path


def test_a_huge_question_is_cut_to_the_budget_when_answering(trained, tmp_path: Path, caplog) -> None:
    path = _long_question_file(trained, tmp_path, 100_000)
    result = predict(trained.run_dir / "best", trained.cache_dir, path, tmp_path / "sub.csv", trained.config)
    rows = [json.loads(line) for line in result.predictions_path.read_text().splitlines()]
    assert rows[0]["truncated"] and not any(r["truncated"] for r in rows[1:])
    assert "row 1 (id" in caplog.text and "cut to the prompt's token caps" in caplog.text


def test_training_cuts_questions_exactly_as_answering_does(trained, tmp_path: Path) -> None:
    from mark1.data import make_example
    from mark1.model.checkpoint import Checkpoint
    from mark1.prompt import fit_text, question_text

    path = _long_question_file(trained, tmp_path, 10_000)
    record = load_annotations(path)[0][0]
    record.key = record.video.removeprefix("videos/")
    model = Checkpoint.open(trained.run_dir / "best").load_model(FeatureCache(trained.cache_dir).spec)
    example = make_example(
        record, model.tokenizer, model.num_video_tokens, np.arange(8.0), 8.0, 0.5, model.budget
    )
    text = fit_text(model.tokenizer, record.question, record.choices, model.budget)  # what answering reads
    assert example.truncated and len(model.llm.encode_text(text.question)) <= model.budget.max_question_tokens
    assert example.question_ids == model.llm.encode_text(question_text(text.question, text.choices))


def test_a_prompt_past_the_cap_is_refused_naming_the_row(trained, tmp_path: Path) -> None:
    path = _long_question_file(trained, tmp_path, 10_000)
    cfg = type(trained.config).from_dict(
        {**trained.config.to_dict(), "prompt": {"max_question_tokens": 256, "max_prompt_tokens": 400}}
    )
    with pytest.raises(AnnotationError, match=r"row \d+ \(id .*prompt.max_prompt_tokens=400"):
        train(cfg, trained.cache_dir, path, tmp_path / "run")


def _poison(cache_dir: Path) -> list[str]:
    """NaN into every clip's features, as a broken encoder or fp16 overflow would leave them."""
    cache = FeatureCache(cache_dir)
    for key in cache:
        row = cache.row(key)
        with h5py.File(cache_dir / "shards" / row["shard"], "r+") as f:
            f[row["dataset"]][0, 0, 0, :4] = np.nan
    return sorted({cache.row(key)["shard"] for key in cache})


def test_nan_features_are_found_redone_and_never_trained_on(tiny, videos: Path, tmp_path: Path) -> None:
    from mark1.demo import make_data

    make_data(tmp_path / "data", 6, "visual", seed=4)
    cache_dir = tmp_path / "cache"
    extract(tiny.config(), tmp_path / "data" / "videos", cache_dir)
    shards = _poison(cache_dir)
    assert [s for s, _ in damaged_shards(cache_dir)] == shards  # what `mark1 cache verify` reports
    cfg = tiny.config("train.epochs=1", "train.val_fraction=0")
    with pytest.raises(TrainingError, match="NaN or infinite loss"):
        train(cfg, cache_dir, tmp_path / "data" / "train.json", tmp_path / "run")
    assert not (tmp_path / "run" / "best").exists() and not (tmp_path / "run" / "last").exists()
    redo = extract(tiny.config("extract.verify=true"), tmp_path / "data" / "videos", cache_dir)
    assert redo.num_extracted == len(FeatureCache(cache_dir)) and damaged_shards(cache_dir) == []


def test_an_encoder_giving_nan_is_a_recorded_failure(tiny, videos: Path, tmp_path: Path) -> None:
    from mark1.encoder import VideoEncoder

    class Broken(VideoEncoder):
        def __call__(self, frames: torch.Tensor) -> torch.Tensor:
            return torch.full_like(super().__call__(frames), float("nan"))

    cfg = tiny.config()
    encoder = VideoEncoder.load(cfg, torch.device("cpu"))
    broken = Broken(encoder.model, encoder.num_frames, encoder.pool, encoder.name)
    result = extract(cfg, videos, tmp_path / "cache", limit=2, encoder=broken)
    assert result.num_failed == 2 and result.num_extracted == 0
    assert all("NaN" in e for e in FeatureCache(tmp_path / "cache").failures().values())


def _write_clip(path: Path, pix_fmt: str = "yuv420p", codec: str = "libx264") -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=12)
        stream.width, stream.height, stream.pix_fmt = 96, 64, pix_fmt
        for i in range(12):
            image = np.zeros((64, 96, 3), np.uint8)
            image[:, :32] = (200, 30, 30)  # a red band on the left: which way is up shows
            image[:16] = (30, 200, 60)
            image[32:, 48:] = np.linspace(0, 255, 48, dtype=np.uint8)[None, :, None]
            image[..., 2] += 10 * i
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())


def _rotate(path: Path, degrees: int) -> None:
    """Set the MP4 track's display matrix (tkhd), as a phone held sideways records it."""
    data = bytearray(path.read_bytes())
    box = data.find(b"tkhd")
    fields = (
        4 + 4 + 4 + 4 + 4 + 4 + 8 + 2 + 2 + 2 + 2 if data[box + 4] == 0 else 4 + 8 + 8 + 4 + 4 + 8 + 8 + 8
    )
    one = 0x10000
    a, b, c, d = {90: (0, one, -one, 0), 180: (-one, 0, 0, -one), 270: (0, -one, one, 0)}[degrees]
    data[box + 4 + fields : box + 4 + fields + 36] = struct.pack(">9i", a, b, 0, c, d, 0, 0, 0, 0x40000000)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("name", "pix_fmt", "codec", "degrees"),
    [
        ("rot90.mp4", "yuv420p", "libx264", 90),
        ("rot180.mp4", "yuv420p", "libx264", 180),
        ("rot270.mp4", "yuv420p", "libx264", 270),
        ("h264_10bit.mp4", "yuv420p10le", "libx264", 0),
        ("hevc_10bit.mp4", "yuv420p10le", "libx265", 0),
    ],
)
def test_both_decoders_give_the_same_upright_frames(
    tmp_path: Path, name: str, pix_fmt: str, codec: str, degrees: int
) -> None:
    path = tmp_path / name
    _write_clip(path, pix_fmt, codec)
    if degrees:
        _rotate(path, degrees)
    clips = {backend: load_clip(path, 8, 64, backend=backend) for backend in DECODERS}
    pyav, decord = clips["pyav"], clips["decord"]
    assert torch.equal(pyav.frames, decord.frames) and pyav.frame_times_s == decord.frame_times_s
    upright = (pyav.width, pyav.height) == ((64, 96) if degrees in (90, 270) else (96, 64))
    assert upright and (decord.width, decord.height) == (pyav.width, pyav.height)


def test_the_cache_records_the_decoder_that_built_it(tiny, videos: Path, tmp_path: Path) -> None:
    extract(tiny.config("extract.decode_backend=decord"), videos, tmp_path / "cache", limit=1)
    assert json.loads((tmp_path / "cache" / "cache.json").read_text())["decode_backend"] == "decord"


def test_pickled_weights_are_refused_unless_allowed(tiny, tmp_path: Path) -> None:
    pickled = tmp_path / "llm"
    shutil.copytree(tiny.llm_dir, pickled)
    torch.save(load_file(pickled / "model.safetensors"), pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()
    with pytest.raises(ConfigError, match=r"pickle \(.bin\) files, which run code when loaded"):
        load_llm(str(pickled))
    assert load_llm(str(pickled), allow_pickle=True).config.hidden_size == tiny.llm_dim


def test_a_damaged_projector_file_is_one_error(trained, tmp_path: Path) -> None:
    from mark1.model.checkpoint import Checkpoint

    best = tmp_path / "best"
    shutil.copytree(trained.run_dir / "best", best)
    weights = best / "projector.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="cannot load the projector"):
        Checkpoint.open(best).projector()


def test_a_feature_grid_past_the_position_tables_is_a_config_error(trained, tmp_path: Path) -> None:
    cfg = type(trained.config).from_dict(
        {
            **trained.config.to_dict(),
            "projector": {**trained.config.to_dict()["projector"], "max_temporal_positions": 4},
        }
    )
    with pytest.raises(ConfigError, match="past the projector's position tables"):
        train(cfg, trained.cache_dir, trained.data_dir / "train.json", tmp_path / "run")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"choices": [f"{chr(65 + i % 26)}. c{i}" for i in range(27)]}, "2 to 26 non-empty strings"),
        ({"id": True}, "'id' must be a non-empty string or integer, got True"),
    ],
)
def test_rows_that_used_to_pass_or_crash_are_reported(tmp_path: Path, change: dict, message: str) -> None:
    row = {
        "id": "q1",
        "question": "Có gì?",
        "choices": ["A. Có", "B. Không"],
        "video_path": "v.mp4",
        **change,
    }
    path = tmp_path / "a.json"
    path.write_text(json.dumps([row]))
    _, issues = load_annotations(path)
    assert any(message in str(i) and i.level == "error" for i in issues)


def test_spans_past_the_clip_are_reported(trained, tmp_path: Path) -> None:
    from mark1.matching import check_against_cache

    data = json.loads((trained.data_dir / "test.json").read_text())
    data["data"][0]["spans"] = [[500.0, 501.0]]
    data["data"][1]["spans"] = [[0.5, 500.0]]
    path = tmp_path / "spans.json"
    path.write_text(json.dumps(data, ensure_ascii=False))
    records, _ = load_annotations(path)
    issues = check_against_cache(records, FeatureCache(trained.cache_dir))
    assert [(i.row, i.level) for i in issues if "span" in i.message] == [(1, "error"), (2, "warning")]


def test_infer_refuses_an_empty_question_and_a_single_choice(trained) -> None:
    from mark1.model.mark1 import Mark1

    model = Mark1.from_pretrained(trained.run_dir / "best", trained.config)
    video = next((trained.data_dir / "videos").glob("*.mp4"))
    with pytest.raises(AnnotationError, match="the question is empty"):
        model.answer(video, "  ", ["A. Có", "B. Không"])
    with pytest.raises(AnnotationError, match="give 2 to 26 choices"):
        model.answer(video, "Có gì?", ["A. Có"])


def test_unmatched_questions_are_counted_and_listed_in_a_file(trained, tmp_path: Path, caplog) -> None:
    data = json.loads((trained.data_dir / "public_test.json").read_text())
    lost = [dict(data["data"][0], id=f"lost{i}", video_path=f"videos/gone{i}.mp4") for i in range(50)]
    path = tmp_path / "test.json"
    path.write_text(json.dumps({"data": data["data"] + lost}, ensure_ascii=False))
    result = predict(trained.run_dir / "best", trained.cache_dir, path, tmp_path / "sub.csv", trained.config)
    listed = [json.loads(line) for line in (tmp_path / "unmatched.jsonl").read_text().splitlines()]
    assert result.num_fallback == 50 and [r["id"] for r in listed] == [f"lost{i}" for i in range(50)]
    assert caplog.text.count("no cached video") == 1
    predict(
        trained.run_dir / "best",
        trained.cache_dir,
        trained.data_dir / "public_test.json",
        tmp_path / "sub.csv",
    )
    assert not (tmp_path / "unmatched.jsonl").exists()  # the earlier list would name questions now answered


def test_validate_reports_the_rows_the_token_caps_would_cut_or_refuse(trained, cli, tmp_path: Path) -> None:
    path = _long_question_file(trained, tmp_path, 10_000)
    result = cli("validate", path, "--llm", trained.config.llm.name, "--config", "tiny")
    assert result.code == 0 and "row 1 (id" in result.err and "will be cut to the token caps" in result.err
    refused = cli("validate", path, "--llm", trained.config.llm.name, "--set", "prompt.max_prompt_tokens=300")
    assert refused.code == 1 and "prompt.max_prompt_tokens=300" in refused.err
