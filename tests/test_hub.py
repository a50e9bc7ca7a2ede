"""Mark-1 checkpoints and the Hugging Face Hub, all offline: export (save_pretrained, model card), loading
by Hub id from a Hub cache laid out as huggingface_hub lays it out, and the one-line errors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

from mark1.errors import CheckpointError, HubError, Mark1Error
from mark1.model.checkpoint import Checkpoint
from mark1.model.hub import (
    CHECKPOINT_FILES,
    HUB_FILES,
    export_checkpoint,
    is_hub_id,
    model_card,
    names_hub_repo,
    push_checkpoint,
)

REPO_ID = "mark1-test/tiny-visual"
QUESTION = "Biển báo xuất hiện trong video màu gì?"
CHOICES = ["A. Đỏ", "B. Xanh lá", "C. Xanh dương", "D. Vàng"]


def lay_out_hub_cache(cache: Path, repo_id: str, files: Path, revision: str = "main") -> Path:
    """`files` as huggingface_hub's cache holds a downloaded snapshot: blobs named by the file's hash,
    snapshots/<commit>/ of relative symlinks to them, refs/<revision> naming the commit. (The Hub names an
    LFS file's blob by its sha256, a small file's by its git blob sha1; resolving only follows the links.)"""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    (repo / "refs").mkdir()
    for path in sorted(files.iterdir()):
        data = path.read_bytes()
        blob = hashlib.sha256(data).hexdigest()
        (repo / "blobs" / blob).write_bytes(data)
        (snapshot / path.name).symlink_to(Path("..", "..", "blobs", blob))
    (repo / "refs" / revision).write_text(commit)
    return snapshot


@pytest.fixture
def offline_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty Hub cache of this test's own, offline."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


@pytest.fixture(scope="module")
def eval_metrics(trained, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real `mark1 eval` metrics.json of the trained run on its test questions."""
    from mark1.stages.evaluate import evaluate

    out = tmp_path_factory.mktemp("hub-eval") / "eval"
    evaluate(trained.run_dir / "best", trained.cache_dir, trained.data_dir / "test.json", out)
    return out / "metrics.json"


@pytest.fixture(scope="module")
def local_model(trained):
    """The checkpoint loaded from its run directory."""
    from mark1.model.mark1 import Mark1

    return Mark1.from_pretrained(trained.run_dir / "best")


@pytest.fixture(scope="module")
def local_answer(trained, local_model) -> dict:
    """The local checkpoint's answer: what every other way of loading it must give."""
    result = local_model.answer(trained.data_dir / "videos" / "clip_0000.mp4", QUESTION, CHOICES)
    return {"answer": result.answer, "probs": result.probs, "windows": result.windows}


def _same_answer(result, expected: dict) -> None:
    assert result.answer == expected["answer"]
    assert result.probs.keys() == expected["probs"].keys()
    for letter, p in expected["probs"].items():
        assert result.probs[letter] == pytest.approx(p, abs=1e-5)
    assert [w["start_s"] for w in result.windows] == pytest.approx(
        [w["start_s"] for w in expected["windows"]]
    )


def test_hub_ids_are_told_from_paths(tmp_path, monkeypatch) -> None:
    assert is_hub_id("owner/name") and is_hub_id("Owner-1/name.v2_x") and is_hub_id("owner/name@v1.0")
    for path in ("runs/seed/best", "./owner/name", "/abs/name", "~/x/y", "a/../b", "best", "owner/"):
        assert not is_hub_id(path), path
    # A missing local run reads as one, not as a Hub repo to look up.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    assert names_hub_repo(Path("owner/name")) and names_hub_repo(Path("owner/name@v1"))
    for path in ("runs/seed", "no-such-run/best", "seed/last", "runs/seed/best"):
        assert not names_hub_repo(Path(path)), path


def test_save_pretrained_round_trip_gives_the_same_answers(
    trained, local_model, local_answer, eval_metrics, tmp_path
) -> None:
    from mark1.model.mark1 import Mark1

    model = local_model
    out = model.save_pretrained(tmp_path / "export", eval_metrics=eval_metrics, repo_id=REPO_ID)
    assert sorted(p.name for p in out.iterdir()) == sorted(HUB_FILES)  # no training_state.pt, no temp dir
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]
    saved = json.loads((out / "config.json").read_text())
    original = json.loads((trained.run_dir / "best" / "config.json").read_text())
    assert saved == original  # config.json exactly as the checkpoint has it
    reloaded = Mark1.from_pretrained(out)  # its config alone names the backbones
    _same_answer(
        reloaded.answer(trained.data_dir / "videos" / "clip_0000.mp4", QUESTION, CHOICES), local_answer
    )
    card = (out / "README.md").read_text()
    assert f'Mark1.from_pretrained("{REPO_ID}")' in card and f"--checkpoint {REPO_ID}" in card
    # An earlier export is replaced whole; a directory holding anything else is refused.
    model.save_pretrained(out)
    assert sorted(p.name for p in out.iterdir()) == sorted(HUB_FILES)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(Mark1Error, match="already holds other files") as err:
        model.save_pretrained(tmp_path / "other")
    assert "\n" not in str(err.value)
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


def test_model_card_front_matter_backbones_and_eval_table() -> None:
    meta = {
        "encoder": "facebook/vjepa2-vitg-fpc64-256",
        "llm": "Qwen/Qwen3-0.6B",
        "prompt_format": "mark1-chat-v1",
        "cache": {"num_frames": 16, "crop_size": 256, "grid": [8, 16, 16, 1408], "pool": 1},
        "config": {
            "llm": {"quantization": "nf4"},
            "projector": {"hidden_size": 1024},
            "prompt": {"template": "chat"},
        },
        "metrics": {"accuracy": 0.875, "hit@1_1s": 0.5, "accuracy_by_num_choices": {"2": 0.75}},
    }
    evaluation = {"accuracy": 0.8125, "questions": 48, "predictions_sha256": "ab" * 32}
    card = model_card(meta, REPO_ID, evaluation, num_parameters=12_345_678, license="apache-2.0")
    _, front, body = card.split("---\n", 2)
    data = yaml.safe_load(front)
    assert data["library_name"] == "mark1"
    assert "video-question-answering" in data["tags"]
    assert data["base_model"] == ["facebook/vjepa2-vitg-fpc64-256", "Qwen/Qwen3-0.6B"]
    assert data["base_model_relation"] == "adapter" and data["license"] == "apache-2.0"
    assert (
        "https://huggingface.co/facebook/vjepa2-vitg-fpc64-256" in body
        and "(https://huggingface.co/Qwen/Qwen3-0.6B)" in body
    )
    assert "nf4" in body and "12.35 M parameters" in body
    assert "| accuracy | 0.812 | 0.875 |" in body  # eval, then validation at training
    assert "| questions | 48 | - |" in body and "| accuracy_by_num_choices.2 | - | 0.750 |" in body
    assert "ab" * 32 not in body
    # Backbones under different licenses and none given: no license claimed for the whole.
    assert "license" not in yaml.safe_load(model_card(meta).split("---\n", 2)[1])


def test_export_cli_writes_the_card_with_the_eval_table(trained, eval_metrics, cli, tmp_path) -> None:
    out = tmp_path / "export"
    run = cli("export", "--checkpoint", trained.run_dir / "best", "--out", out, "--eval", eval_metrics)
    assert run.code == 0, run.err
    assert sorted(p.name for p in out.iterdir()) == sorted(HUB_FILES)
    metrics = json.loads(eval_metrics.read_text())
    validation = json.loads((out / "config.json").read_text())["metrics"]
    card = (out / "README.md").read_text()
    assert f"| accuracy | {metrics['accuracy']:.3f} | {validation['accuracy']:.3f} |" in card
    assert str(trained.config.encoder) in card and str(trained.config.llm.name) in card
    assert "base_model" not in card.split("---\n", 2)[1]  # local backbones are no Hub base models
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    run = cli("export", "--checkpoint", trained.run_dir / "best", "--out", tmp_path / "x", "--eval", bad)
    assert run.code == 1 and "holds no metrics" in run.err and "Traceback" not in run.err
    assert not (tmp_path / "x").exists()


def test_a_hub_id_loads_from_the_hub_cache_offline(trained, local_answer, offline_hub, cli, tmp_path) -> None:
    from mark1.model.mark1 import Mark1

    export_checkpoint(trained.run_dir / "best", tmp_path / "export", repo_id=REPO_ID)
    snapshot = lay_out_hub_cache(offline_hub, REPO_ID, tmp_path / "export")
    assert Checkpoint.open(REPO_ID).path == snapshot
    model = Mark1.from_pretrained(REPO_ID)
    _same_answer(model.answer(trained.data_dir / "videos" / "clip_0000.mp4", QUESTION, CHOICES), local_answer)
    video = trained.data_dir / "videos" / "clip_0000.mp4"
    args = [
        "--video",
        video,
        "--question",
        QUESTION,
        *[a for c in CHOICES for a in ("--choice", c)],
        "--json",
    ]
    run = cli("infer", "--checkpoint", REPO_ID, *args)
    assert run.code == 0, run.err
    assert json.loads(run.out)["answer"] == local_answer["answer"]
    run = cli("infer", "--checkpoint", f"{REPO_ID}@main", *args)  # a revision, from refs/main
    assert run.code == 0, run.err


def test_a_missing_repo_or_file_is_one_line(trained, offline_hub, cli, tmp_path) -> None:
    with pytest.raises(CheckpointError) as err:
        Checkpoint.open("mark1-test/absent")
    message = str(err.value)
    assert "mark1-test/absent" in message and "offline" in message and "\n" not in message
    run = cli(
        "eval", "--checkpoint", "mark1-test/absent", "--cache", trained.cache_dir, "--annotations", "x.json"
    )
    assert run.code == 1 and "mark1-test/absent" in run.err and "Traceback" not in run.err
    export_checkpoint(trained.run_dir / "best", tmp_path / "export")
    snapshot = lay_out_hub_cache(offline_hub, REPO_ID, tmp_path / "export")
    (snapshot / "projector.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"lacks projector\.safetensors; offline") as err:
        Checkpoint.open(REPO_ID)
    assert "\n" not in str(err.value)
    # A link whose blob is gone is as missing as no link.
    (snapshot / "projector.json").resolve().unlink()
    with pytest.raises(CheckpointError, match=r"lacks projector\.json, projector\.safetensors"):
        Checkpoint.open(REPO_ID)
    with pytest.raises(CheckpointError, match="no revision|not in the Hub cache"):
        Checkpoint.open(REPO_ID, revision="v9")


def test_resume_reads_a_local_directory_only(offline_hub) -> None:
    with pytest.raises(CheckpointError, match="a local runs/NAME/last") as err:
        Checkpoint.open(REPO_ID, hub=False)
    assert "Hub" not in str(err.value)


def test_local_files_only_reads_the_hub_cache_only(monkeypatch, tmp_path) -> None:
    """Without HF_HUB_OFFLINE, local_files_only alone keeps the Hub out of it."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    with pytest.raises(
        CheckpointError, match=r"not in the Hub cache .*offline \(HF_HUB_OFFLINE or local_files_only\)"
    ):
        Checkpoint.open("mark1-test/absent", local_files_only=True)


def test_push_offline_or_without_token_is_one_line(
    trained, local_model, offline_hub, cli, monkeypatch
) -> None:
    run = cli("push", "--checkpoint", trained.run_dir / "best", "--repo-id", REPO_ID)
    assert run.code == 1 and "offline" in run.err and "HF_HUB_OFFLINE" in run.err
    assert "Traceback" not in run.err and len(run.err.strip().splitlines()) == 1
    with pytest.raises(HubError, match="offline") as err:
        local_model.push_to_hub(REPO_ID)
    assert "\n" not in str(err.value)
    run = cli("push", "--checkpoint", trained.run_dir / "best", "--repo-id", "not a repo")
    assert run.code == 1 and "not a Hub id" in run.err

    from huggingface_hub import constants, get_token

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    if constants.HF_HUB_OFFLINE or get_token():  # offline since import, or a token on this machine
        pytest.skip("cannot test the missing token here")
    with pytest.raises(HubError, match="no Hugging Face token") as err:
        push_checkpoint(trained.run_dir / "best", REPO_ID)
    assert "\n" not in str(err.value)


def test_export_from_a_hub_id_copies_files_not_links(trained, offline_hub, tmp_path) -> None:
    export_checkpoint(trained.run_dir / "best", tmp_path / "first")
    lay_out_hub_cache(offline_hub, REPO_ID, tmp_path / "first")
    out = export_checkpoint(REPO_ID, tmp_path / "second", repo_id=REPO_ID)
    for name in CHECKPOINT_FILES:
        assert not (out / name).is_symlink()
        assert (out / name).read_bytes() == (trained.run_dir / "best" / name).read_bytes()
