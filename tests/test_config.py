"""The config: one YAML reader that rejects what it cannot use, --set overrides, typed flags on top."""

from pathlib import Path

import pytest

from mark1.config import Config, load_config, with_flags
from mark1.errors import ConfigError


def test_bundled_configs_load_by_name_and_the_seed_defaults_hold() -> None:
    full, tiny = load_config("mark1-vjepa2-qwen3"), load_config("tiny")
    assert full.encoder == "facebook/vjepa2-vitg-fpc64-256" and full.llm.name == "Qwen/Qwen3-0.6B"
    assert (full.train.lr, full.train.batch_size, full.train.epochs) == (5e-5, 4, 5)
    assert (full.projector.hidden_size, full.projector.num_fusion_layers) == (1024, 2)
    assert tiny.projector.hidden_size == 64 and tiny.train.lr == 2e-3
    with pytest.raises(ConfigError, match="mark1-vjepa2-qwen3"):  # the error lists what is bundled
        load_config("no-such-config")


def test_model_paths_expand_mark1_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MARK1_HOME", str(tmp_path))
    assert load_config("tiny").encoder == str(tmp_path / "tiny" / "vjepa2-tiny")
    assert load_config(None, ["llm=Qwen/Qwen3-8B"]).llm.name == "Qwen/Qwen3-8B"  # hub ids pass through


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("video:\n  num_frame: 16\n", "unknown key\\(s\\) num_frame"),
        ("train:\n  epochs: many\n", "train must be int, got 'many'|epochs must be int"),
        ("train:\n  epochs: true\n", "epochs must be int"),
        ("video: 16\n", "expected a mapping"),
        ("- a\n- b\n", "must hold a mapping"),
        ("video: [\n", "not valid YAML"),
        ("video:\n  num_frames: 7\n", "even number"),
        ("projector:\n  hidden_size: 100\n  num_heads: 16\n", "divisible"),
        ("answer:\n  decode_backend: vlc\n", "answer.decode_backend must be one of"),
    ],
)
def test_bad_files_are_one_config_error_naming_the_key(tmp_path: Path, yaml_text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_set_overrides_parse_yaml_values() -> None:
    cfg = load_config("tiny", ["train.lr=5e-3", "train.epochs=3", "projector.saliency_reread=false"])
    assert cfg.train.lr == 5e-3 and cfg.train.epochs == 3 and cfg.projector.saliency_reread is False
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config("tiny", ["train.lr"])
    with pytest.raises(ConfigError, match="not a section"):
        load_config("tiny", ["encoder.x=1"])


def test_flags_are_typed_and_checked_and_never_change_the_given_config() -> None:
    base = load_config("tiny")
    cfg = with_flags(
        base, {"train.lr": 0.5, "train.epochs": None, "llm.name": "~/m", "answer.device_map": "cpu"}
    )
    assert cfg.train.lr == 0.5 and cfg.train.epochs == base.train.epochs  # None: not given
    assert cfg.llm.name == str(Path.home() / "m") and cfg.answer.device_map == "cpu"
    assert base.train.lr == 2e-3 and base.answer.device_map == "auto"
    with pytest.raises(ConfigError, match="train.batch_size must be >= 1"):
        with_flags(base, {"train.batch_size": 0})


def test_a_config_saved_before_the_answer_section_existed_still_loads() -> None:
    saved = Config().to_dict()
    del saved["answer"]
    assert Config.from_dict(saved).answer.device_map == "auto"
    assert Config.from_dict(Config().to_dict()) == Config()
