"""A hostile user's sweep over every command: bad arguments and bad files are refused with exit 1 (or 2 for a
usage error typer reports), one `error:` line, no traceback, and nothing written where the command was refused.

Every case runs in its own temporary directory (the current directory, so relative paths land there); the
whole directory is compared before and after the command.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

A_FILE = "a-file.txt"  # a regular file in the case's directory
A_DIR = "a-dir"  # an empty directory in the case's directory
QUESTION = "Biển báo màu gì?"
CHOICES = ["A. Đỏ", "B. Xanh lá"]
TWENTY_SEVEN_CHOICES = [f"{chr(65 + i)}. lựa chọn {i}" for i in range(26)] + ["AA. lựa chọn 26"]


def tree(root: Path) -> dict[str, object]:
    """What lies under `root`: each file's size and mtime, each directory; a run lock only as present (a
    refused writer may take it and let it go)."""
    found: dict[str, object] = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.is_dir():
            found[key] = "dir"
        elif path.name == ".lock":
            found[key] = "lock"
        else:
            stat = path.stat()
            found[key] = (stat.st_size, stat.st_mtime_ns)
    return found


@dataclass
class Sweep:
    """The case's directory (also the current directory) and working inputs for every command, from the
    shared tiny backbones and trained run; a case replaces one input with a bad one."""

    root: Path
    cli: Callable
    encoder: Path
    llm: Path
    videos: Path
    cache: Path
    data: Path
    best: Path

    def defaults(self, command: str) -> dict[str, object]:
        """Options that make `command` work; outputs are relative, so they land in `root`."""
        ckpt = {"checkpoint": self.best, "cache": self.cache}
        return {
            "extract": {
                "videos": self.videos,
                "cache": "cache",
                "config": "tiny",
                "encoder": self.encoder,
                "decode_workers": 0,
            },
            "train": {
                "cache": self.cache,
                "annotations": self.data / "train.json",
                "out": "run",
                "config": "tiny",
                "llm": self.llm,
            },
            "eval": {**ckpt, "annotations": self.data / "test.json", "out": "eval"},
            "predict": {**ckpt, "annotations": self.data / "public_test.json", "out": "submission.csv"},
            "infer": {
                "checkpoint": self.best,
                "video": self.videos / "clip_0000.mp4",
                "question": QUESTION,
                "choice": CHOICES,
                "timeline": "timeline.png",
            },
            "bench": {"json": "bench.json"},
            "demo": {"out": "demo"},
        }[command]

    def args(self, command: str, *extra: object, **flags: object) -> list[object]:
        """`mark1 COMMAND` with its working options, `flags` replacing some (None drops one; a list repeats
        the option), then `extra`."""
        args: list[object] = command.split()
        for name, value in {**self.defaults(command.split()[0]), **flags}.items():
            for item in value if isinstance(value, list) else [] if value is None else [value]:
                args += [f"--{name.replace('_', '-')}", item]
        return [*args, *extra]

    def refused(
        self, *args: object, code: int | tuple[int, ...] = 1, match: str = "", wrote_nothing: bool = True
    ) -> None:
        """Run `mark1 ARGS`; check the refusal: the exit code, no traceback, one `error:` line (exit 1) or
        typer's usage box (exit 2) holding `match`, and (`wrote_nothing`) the directory as it was."""
        before = tree(self.root)
        try:
            result = self.cli(*args)
        except Exception as err:  # in a real process: a traceback
            pytest.fail(f"traceback: {type(err).__name__}: {str(err).splitlines()[0][:300]}")
        codes = code if isinstance(code, tuple) else (code,)
        assert result.code in codes, f"exit {result.code}\n{result.err}"
        assert "Traceback" not in result.err, result.err
        if result.code == 1:
            assert result.err.count("error:") == 1, result.err
            line = result.err[result.err.index("error:") :].strip()
            assert "\n" not in line, f"the error spans several lines:\n{line}"
            assert match in line, line
        else:
            assert "Usage:" in result.err and match in " ".join(result.err.split()), result.err
        if wrote_nothing:
            assert tree(self.root) == before, (
                f"the refused command wrote {set(tree(self.root)) - set(before)}"
            )


@pytest.fixture
def sweep(cli, tiny, trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Sweep:
    monkeypatch.chdir(tmp_path)
    (tmp_path / A_FILE).write_text("not what the command wants\n")
    (tmp_path / A_DIR).mkdir()
    return Sweep(
        tmp_path,
        cli,
        tiny.encoder_dir,
        tiny.llm_dir,
        trained.data_dir / "videos",
        trained.cache_dir,
        trained.data_dir,
        trained.run_dir / "best",
    )


def copy_llm(sweep: Sweep, **config: object) -> Path:
    """A copy of the tiny LLM in the case's directory, with `config` merged into its config.json."""
    target = sweep.root / "llm-copy"
    shutil.copytree(sweep.llm, target)
    data = json.loads((target / "config.json").read_text())
    (target / "config.json").write_text(json.dumps({**data, **config}))
    return target


def damaged_checkpoint(sweep: Sweep, damage: str) -> Path:
    """A copy of the trained run's best/ with one file damaged (the shared fixture stays whole)."""
    target = sweep.root / "best-copy"
    shutil.copytree(sweep.best, target)
    if damage == "config.json cut short":
        (target / "config.json").write_text('{"format": "mark1-checkpoint", "version": ')
    elif damage == "config.json a list":
        (target / "config.json").write_text("[1, 2]")
    elif damage == "projector.safetensors truncated":
        weights = target / "projector.safetensors"
        weights.write_bytes(weights.read_bytes()[:1000])
    elif damage == "projector.safetensors missing":
        (target / "projector.safetensors").unlink()
    elif damage == "projector.json cut short":
        (target / "projector.json").write_text('{"hidden_size": ')
    return target


# --- missing inputs -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "flags", "match"),
    [
        ("extract", {"videos": "no-such-dir"}, "does not exist"),
        ("extract", {"encoder": "./no-such-model-dir"}, "has no config.json"),
        ("extract", {"config": "no-such.yaml"}, "not found"),
        ("train", {"cache": "no-such-cache"}, "does not exist"),
        ("train", {"annotations": "no-such.json"}, "does not exist"),
        ("train", {"val": "no-such-val.json"}, "does not exist"),
        ("train", {"config": "no-such.yaml"}, "not found"),
        ("eval", {"checkpoint": "no-such-run/best"}, "no Mark-1 checkpoint"),
        ("eval", {"cache": "no-such-cache"}, "does not exist"),
        ("eval", {"annotations": "no-such.json"}, "does not exist"),
        ("eval", {"llm": "./no-such-model-dir"}, "has no config.json"),
        ("predict", {"checkpoint": "no-such-run/best"}, "no Mark-1 checkpoint"),
        ("predict", {"cache": "no-such-cache"}, "does not exist"),
        ("predict", {"annotations": "no-such.json"}, "does not exist"),
        ("predict", {"llm": "./no-such-model-dir"}, "has no config.json"),
        ("infer", {"checkpoint": "no-such-run/best"}, "no Mark-1 checkpoint"),
        ("infer", {"video": "no-such.mp4"}, "no such video file"),
        ("infer", {"video": A_DIR}, "no such video file"),
        ("infer", {"encoder": "./no-such-model-dir"}, "has no config.json"),
        ("bench", {"config": "no-such.yaml"}, "not found"),
        ("demo", {"config": "no-such.yaml"}, "not found"),
    ],
)
def test_a_missing_input_is_refused_in_one_line(sweep: Sweep, command: str, flags: dict, match: str) -> None:
    sweep.refused(*sweep.args(command, **flags), match=match)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["validate", "no-such.json"], "does not exist"),
        (["validate", A_DIR], "does not exist"),
        (["validate", "{data}/train.json", "--cache", "no-such-cache"], "does not exist"),
        (["cache", "info", "no-such-cache"], "does not exist"),
        (["cache", "verify", "no-such-cache"], "does not exist"),
    ],
)
def test_a_missing_file_for_validate_or_cache_is_refused(sweep: Sweep, args: list[str], match: str) -> None:
    sweep.refused(*(a.format(data=sweep.data) for a in args), match=match)


# --- configs --------------------------------------------------------------------------------------------

CONFIG_COMMANDS = ["extract", "train", "eval", "predict", "infer", "bench cache", "demo"]
BAD_CONFIGS = {
    "bundled name that does not exist": (["--config", "no-such-bundled-name"], "not found"),
    "YAML with an unknown key": (["--config", "unknown-key.yaml"], "unknown key(s) num_frame"),
    "YAML value of the wrong type": (["--config", "wrong-type.yaml"], "num_frames must be int, got 'many'"),
    "YAML that is a list": (["--config", "a-list.yaml"], "must hold a mapping"),
    "--set without =": (["--set", "train.lr"], "must look like section.key=value"),
    "--set with an unknown key": (["--set", "train.no_such_key=1"], "unknown key(s) no_such_key"),
    "--set with a value of the wrong type": (["--set", "train.epochs=2.5"], "epochs must be int"),
    "--set of a key below a value": (["--set", "train.lr.x=1"], "is not a section"),
}


@pytest.mark.parametrize("command", CONFIG_COMMANDS)
@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_a_bad_config_is_refused_in_one_line(sweep: Sweep, command: str, case: str) -> None:
    (sweep.root / "unknown-key.yaml").write_text("video:\n  num_frame: 16\n")
    (sweep.root / "wrong-type.yaml").write_text("video:\n  num_frames: many\n")
    (sweep.root / "a-list.yaml").write_text("- video\n- train\n")
    extra, match = BAD_CONFIGS[case]
    flags = {"config": None} if extra[0] == "--config" and command in ("extract", "train") else {}
    sweep.refused(*sweep.args(command, *extra, **flags), match=match)


def test_a_yaml_syntax_error_is_one_line(sweep: Sweep) -> None:
    (sweep.root / "syntax.yaml").write_text("video:\n  num_frames: [16\n  pool: 1\n")
    sweep.refused(*sweep.args("extract", config="syntax.yaml"), match="not valid YAML")


def test_a_config_that_is_not_utf8_is_refused(sweep: Sweep) -> None:
    (sweep.root / "latin1.yaml").write_bytes("encoder: café\n".encode("latin-1"))
    sweep.refused(*sweep.args("extract", config="latin1.yaml"), match="UTF-8")


def test_a_set_value_that_is_not_yaml_is_refused(sweep: Sweep) -> None:
    sweep.refused(*sweep.args("extract", "--set", "video.num_frames=[16"), match="video.num_frames")


# --- extract --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "match"),
    [
        ({"cache": A_FILE}, "is a file"),
        ({"cache": f"{A_FILE}/cache"}, "is a file"),
        ({"videos": A_FILE}, A_FILE),
        ({"videos": A_DIR}, "no videos"),
        ({"num_frames": 3}, "even number"),
        ({"pool": 0}, "video.pool must be >= 1"),
        ({"batch_size": 0}, "extract.batch_size must be >= 1"),
        ({"decode_workers": -1}, "decode_workers must be >= 0"),
        ({"decode_backend": "ffmpeg"}, "decode_backend must be one of"),
        ({"device": "cuda:7"}, "cuda:7"),
        ({"device": "tpu"}, "'tpu' is not a device name"),
    ],
)
def test_extract_refuses_bad_paths_and_values(sweep: Sweep, flags: dict, match: str) -> None:
    sweep.refused(*sweep.args("extract", **flags), match=match)


def test_extract_refuses_an_llm_as_encoder(sweep: Sweep) -> None:
    sweep.refused(*sweep.args("extract", encoder=sweep.llm), match="Mark-1's encoder is V-JEPA2")


def test_extract_refuses_a_cache_of_another_config(sweep: Sweep) -> None:
    shutil.copytree(sweep.cache, sweep.root / "cache")
    sweep.refused(*sweep.args("extract", num_frames=4), match="num_frames=16")


def test_extract_refuses_an_encoder_that_asks_to_run_its_code(sweep: Sweep) -> None:
    target = sweep.root / "encoder-copy"
    shutil.copytree(sweep.encoder, target)
    data = json.loads((target / "config.json").read_text())
    (target / "config.json").write_text(json.dumps({**data, "auto_map": {"AutoModel": "modeling_x.X"}}))
    sweep.refused(*sweep.args("extract", encoder=target), match="auto_map")


def test_extract_refuses_a_negative_limit(sweep: Sweep) -> None:
    sweep.refused(*sweep.args("extract", limit=-1), code=(1, 2), match="limit")


def test_extract_refuses_truncated_encoder_weights(sweep: Sweep) -> None:
    target = sweep.root / "encoder-copy"
    shutil.copytree(sweep.encoder, target)
    (target / "model.safetensors").write_bytes((target / "model.safetensors").read_bytes()[:500])
    sweep.refused(*sweep.args("extract", encoder=target), match="encoder")


# --- train ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "match"),
    [
        ({"out": A_FILE}, "is a file"),
        ({"out": f"{A_FILE}/run"}, "is a file"),
        ({"lr": "nan"}, "train.lr must be a finite number > 0, got nan"),
        ({"lr": "inf"}, "train.lr must be a finite number > 0, got inf"),
        ({"lr": -1}, "train.lr must be a finite number > 0, got -1.0"),
        ({"lr": 0}, "train.lr must be a finite number > 0, got 0.0"),
        ({"batch_size": 0}, "train.batch_size must be >= 1"),
        ({"epochs": 0}, "train.epochs must be >= 1"),
        ({"val_fraction": 1}, "train.val_fraction must be in [0, 1)"),
        ({"val_fraction": "nan"}, "train.val_fraction must be in [0, 1)"),
        ({"cache": A_DIR}, "not a Mark-1 feature cache"),
        ({"annotations": "{data}/public_test.json"}, "answer"),
    ],
)
def test_train_refuses_bad_paths_and_values(sweep: Sweep, flags: dict, match: str) -> None:
    flags = {k: v.format(data=sweep.data) if isinstance(v, str) else v for k, v in flags.items()}
    sweep.refused(*sweep.args("train", **flags), match=match)


def test_train_refuses_a_run_directory_that_holds_a_run(sweep: Sweep, trained) -> None:
    """Without --resume the run is refused; its files (best/, last/, metrics.jsonl) stay as they were."""
    shutil.copytree(trained.run_dir, sweep.root / "run")
    sweep.refused(*sweep.args("train"), match="already holds a run; pass --resume")


def test_train_resume_refuses_a_run_directory_with_no_run(sweep: Sweep) -> None:
    """--resume in an empty run directory and in none at all; the config comes from the missing last/."""
    (sweep.root / "run").mkdir()
    sweep.refused(*sweep.args("train", "--resume"), match="no Mark-1 checkpoint")
    sweep.refused(*sweep.args("train", "--resume", out="no-run", config=None), match="no Mark-1 checkpoint")


def test_train_refuses_an_annotation_whose_video_is_not_cached(sweep: Sweep) -> None:
    data = json.loads((sweep.data / "train.json").read_text())
    data["data"][0]["video_path"] = "videos/not_cached.mp4"
    (sweep.root / "train.json").write_text(json.dumps(data, ensure_ascii=False))
    sweep.refused(*sweep.args("train", annotations="train.json"), match="is not in the cache")


def test_train_refuses_an_llm_that_asks_to_run_its_code(sweep: Sweep) -> None:
    llm = copy_llm(sweep, auto_map={"AutoModelForCausalLM": "modeling_x.X"})
    sweep.refused(*sweep.args("train", llm=llm), match="auto_map", wrote_nothing=False)


@pytest.mark.parametrize(
    ("flags", "match"),
    [
        ({"llm": "./no-such-model-dir"}, "has no config.json"),
        ({"device_map": "bogus"}, "expected items like"),
        ({"device_map": "projector=cuda:7,llm=cuda:7"}, "cuda:7"),
    ],
)
def test_train_refuses_a_bad_llm_or_placement_in_one_line(sweep: Sweep, flags: dict, match: str) -> None:
    sweep.refused(*sweep.args("train", **flags), match=match, wrote_nothing=False)


@pytest.mark.parametrize("case", ["llm with auto_map", "missing llm directory", "bad --device-map"])
def test_train_refused_at_model_loading_leaves_no_run_dir(sweep: Sweep, case: str) -> None:
    flags = {
        "llm with auto_map": {"llm": copy_llm(sweep, auto_map={"AutoModelForCausalLM": "modeling_x.X"})},
        "missing llm directory": {"llm": "./no-such-model-dir"},
        "bad --device-map": {"device_map": "bogus"},
    }[case]
    sweep.refused(*sweep.args("train", **flags))
    assert not (sweep.root / "run").exists()


def test_train_resume_refuses_a_damaged_training_state_in_one_line(sweep: Sweep, trained) -> None:
    shutil.copytree(trained.run_dir, sweep.root / "run")
    (sweep.root / "run" / "last" / "training_state.pt").write_bytes(b"not a torch file")
    sweep.refused(*sweep.args("train", "--resume", config=None), match="training_state.pt")


def test_train_refuses_truncated_llm_weights(sweep: Sweep) -> None:
    llm = copy_llm(sweep)
    (llm / "model.safetensors").write_bytes((llm / "model.safetensors").read_bytes()[:500])
    sweep.refused(*sweep.args("train", llm=llm), match="llm", wrote_nothing=False)


@pytest.mark.parametrize("command", ["train", "eval", "predict", "infer"])
def test_an_encoder_as_llm_is_refused(sweep: Sweep, command: str) -> None:
    sweep.refused(*sweep.args(command, llm=sweep.encoder), match="llm", wrote_nothing=command != "train")


# --- eval and predict -----------------------------------------------------------------------------------

DAMAGES = [
    ("config.json cut short", "is damaged"),
    ("config.json a list", "is not a Mark-1 checkpoint"),
    ("projector.safetensors truncated", "cannot load the projector"),
    ("projector.safetensors missing", "cannot load the projector"),
    ("projector.json cut short", "cannot load the projector"),
]


@pytest.mark.parametrize("command", ["eval", "predict"])
@pytest.mark.parametrize(("damage", "match"), DAMAGES)
def test_a_damaged_checkpoint_is_refused(sweep: Sweep, command: str, damage: str, match: str) -> None:
    checkpoint = damaged_checkpoint(sweep, damage)
    sweep.refused(*sweep.args(command, checkpoint=checkpoint), match=match)


@pytest.mark.parametrize(
    ("command", "flags", "match"),
    [
        ("eval", {"out": A_FILE}, "is a file"),
        ("eval", {"out": f"{A_FILE}/eval"}, "is a file"),
        ("eval", {"annotations": "{data}/public_test.json"}, "no answers, support frames or spans to score"),
        ("eval", {"cache": A_DIR}, "not a Mark-1 feature cache"),
        ("eval", {"device_map": "gpu"}, "expected items like"),
        ("predict", {"out": A_DIR}, "is a directory"),
        ("predict", {"out": f"{A_DIR}/predictions.jsonl"}, "would be overwritten by predictions.jsonl"),
        ("predict", {"out": "new-dir/predictions.jsonl"}, "would be overwritten by predictions.jsonl"),
        ("predict", {"out": f"{A_FILE}/submission.csv"}, "is a file"),
        ("predict", {"cache": A_DIR}, "not a Mark-1 feature cache"),
    ],
)
def test_eval_and_predict_refuse_bad_paths(sweep: Sweep, command: str, flags: dict, match: str) -> None:
    flags = {k: v.format(data=sweep.data) for k, v in flags.items()}
    sweep.refused(*sweep.args(command, **flags), match=match)


def test_eval_refuses_an_llm_that_asks_to_run_its_code(sweep: Sweep) -> None:
    llm = copy_llm(sweep, auto_map={"AutoModelForCausalLM": "modeling_x.X"})
    sweep.refused(*sweep.args("eval", llm=llm), match="auto_map")


# --- infer ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "match"),
    [
        ({"choice": ["A. Đỏ"]}, "give 2 to 26 choices"),
        ({"choice": TWENTY_SEVEN_CHOICES}, "got 27"),
        ({"question": ""}, "the question is empty"),
        ({"question": "   "}, "the question is empty"),
        ({"timeline": A_DIR}, "is a directory"),
        ({"timeline": f"{A_FILE}/timeline.png"}, "is a file"),
        ({"video": "text.mp4"}, "cannot decode"),
        ({"video": "empty.mp4"}, "empty file"),
        ({"video": "truncated.mp4"}, "cannot decode"),
        ({"encoder": "{llm}"}, "Mark-1's encoder is V-JEPA2"),
        ({"decode_backend": "bogus"}, "decode_backend must be one of"),
        ({"max_new_tokens": 0}, "max_new_tokens must be >= 1"),
    ],
)
def test_infer_refuses_bad_questions_choices_videos_and_paths(sweep: Sweep, flags: dict, match: str) -> None:
    (sweep.root / "text.mp4").write_text("a text file renamed .mp4\n")
    (sweep.root / "empty.mp4").write_bytes(b"")
    (sweep.root / "truncated.mp4").write_bytes((sweep.videos / "clip_0000.mp4").read_bytes()[:2000])
    flags = {k: v.format(llm=sweep.llm) if isinstance(v, str) else v for k, v in flags.items()}
    sweep.refused(*sweep.args("infer", **flags), match=match)


def test_infer_refuses_empty_choices(sweep: Sweep) -> None:
    sweep.refused(*sweep.args("infer", choice=["", ""]), match="choice")


# --- validate -------------------------------------------------------------------------------------------


def _row(**fields: object) -> dict:
    row = {"id": "q1", "video_path": "clip_0000.mp4", "question": QUESTION, "choices": CHOICES}
    return {**row, "answer": CHOICES[0], **fields}


BAD_ROWS = {
    "27 choices": (_row(choices=TWENTY_SEVEN_CHOICES, answer="A"), "2 to 26 non-empty strings"),
    "an id of true": (_row(id=True), "'id' must be a non-empty string or integer"),
    "an id of null": (_row(id=None), "'id' must be a non-empty string or integer"),
    "empty choices": (_row(choices=["", ""], answer="A"), "2 to 26 non-empty strings"),
    "choices as a string": (_row(choices="A. Đỏ"), "2 to 26 non-empty strings"),
    "an answer not among the choices": (_row(answer="Z"), "is not one of the choices"),
    "support frames as text": (_row(support_frames="abc"), "'support_frames' must be a list"),
    "a question that is a number": (_row(question=5), "'question'"),
    "a row that is a number": (7, "expected an object"),
}


@pytest.mark.parametrize("case", list(BAD_ROWS))
def test_validate_names_a_bad_row_on_one_line(sweep: Sweep, case: str) -> None:
    row, match = BAD_ROWS[case]
    (sweep.root / "bad.json").write_text(json.dumps([row], ensure_ascii=False))
    before = tree(sweep.root)
    result = sweep.cli("validate", "bad.json")
    assert result.code == 1 and "Traceback" not in result.err, result.err
    errors = [line for line in result.err.splitlines() if line.startswith("error row")]
    assert len(errors) == 1 and match in errors[0], result.err
    assert tree(sweep.root) == before


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("cp1258.json", '[{"id": "q1", "question": "đi đâu?"}]'.encode("cp1258"), "not UTF-8"),
        ("bytes.json", bytes(range(256)), "not UTF-8"),
        ("number.json", b"42", "expected a RoadBuddy object"),
        ("null.json", b"null", "expected a RoadBuddy object"),
        ("data-not-a-list.json", b'{"__count__": 1, "data": 5}', "expected a RoadBuddy object"),
        ("empty.json", b"", "not valid JSON"),
        ("cut-short.json", b'[{"id": ', "not valid JSON"),
        ("bad-line.jsonl", b'{"id": "a"}\nnot json\n', "line 2 is not valid JSON"),
        ("garbage.parquet", b"PAR1garbage", "cannot read"),
    ],
)
def test_validate_refuses_an_unreadable_file_in_one_line(
    sweep: Sweep, name: str, content: bytes, match: str
) -> None:
    (sweep.root / name).write_bytes(content)
    sweep.refused("validate", name, match=match)


def test_validate_refuses_a_cache_that_is_not_one(sweep: Sweep) -> None:
    sweep.refused("validate", sweep.data / "train.json", "--cache", A_DIR, match="not a Mark-1 feature cache")


def test_validate_prints_an_id_with_brackets(sweep: Sweep) -> None:
    (sweep.root / "brackets.json").write_text(json.dumps([_row(id="[/]", choices=["A. x"])]))
    result = sweep.cli("validate", "brackets.json")
    assert result.code == 1 and "[/]" in result.err and "Traceback" not in result.err


def test_an_error_naming_a_path_with_brackets_is_one_line(sweep: Sweep) -> None:
    (sweep.root / "[").mkdir()
    sweep.refused("validate", "[/]missing.json", match="[/]missing.json")


# --- cache info / verify --------------------------------------------------------------------------------


@pytest.mark.parametrize("subcommand", ["info", "verify"])
@pytest.mark.parametrize(
    ("case", "match"),
    [
        ("an empty directory", "not a Mark-1 feature cache"),
        ("a regular file", "does not exist"),
        ("a damaged cache.json", "cache.json is damaged"),
        ("cache.json of another format", "is not a Mark-1 cache spec"),
        ("a damaged manifest", "manifest.parquet is damaged"),
    ],
)
def test_cache_commands_refuse_what_is_not_a_cache(
    sweep: Sweep, subcommand: str, case: str, match: str
) -> None:
    target = sweep.root / "cache"
    if case == "a regular file":
        target = sweep.root / A_FILE
    elif case == "an empty directory":
        target.mkdir()
    else:
        shutil.copytree(sweep.cache, target)
        if case == "a damaged cache.json":
            (target / "cache.json").write_text("{oops")
        elif case == "cache.json of another format":
            (target / "cache.json").write_text('{"version": 999}')
        elif case == "a damaged manifest":
            (target / "manifest.parquet").write_bytes(b"garbage")
    sweep.refused("cache", subcommand, target, match=match)


@pytest.mark.parametrize("subcommand", ["info", "verify"])
def test_cache_commands_refuse_a_cache_json_that_is_a_list(sweep: Sweep, subcommand: str) -> None:
    shutil.copytree(sweep.cache, sweep.root / "cache")
    (sweep.root / "cache" / "cache.json").write_text("[1, 2]")
    sweep.refused("cache", subcommand, "cache", match="cache.json")


def test_cache_verify_names_a_truncated_shard_and_exits_1(sweep: Sweep) -> None:
    shutil.copytree(sweep.cache, sweep.root / "cache")
    shard = next((sweep.root / "cache" / "shards").glob("*.h5"))
    shard.write_bytes(shard.read_bytes()[:3000])
    before = tree(sweep.root)
    result = sweep.cli("cache", "verify", "cache")
    assert result.code == 1 and "Traceback" not in result.err, result.err
    assert f"damaged {shard.name}" in result.err and "mark1 extract --verify" in result.err
    assert tree(sweep.root) == before


# --- bench, demo, tiny-backbones and usage errors -------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["bench", "no-such-stage"], "stage must be one of"),
        (["bench", "decode", "--size", "huge"], "size tiny or full"),
        (["bench", "decode", "--clips", "0"], "--clips"),
        (["demo", "--family", "nope"], "--family must be one of"),
        (["demo", "--num-videos", "3"], "--num-videos"),
        (["extract"], "Missing option '--videos'"),
        (["train", "--cache", "cache"], "Missing option '--annotations'"),
        (["eval"], "Missing option '--checkpoint'"),
        (["infer", "--checkpoint", "run/best", "--video", "v.mp4"], "Missing option '--question'"),
        (["validate"], "Missing argument"),
        (["extract", "--videos", "videos", "--limit", "ten"], "--limit"),
        (["train", "--cache", "c", "--annotations", "a.json", "--lr", "fast"], "--lr"),
        (["no-such-command"], "No such command"),
        (["cache", "repair", "cache"], "No such command"),
    ],
)
def test_usage_errors_exit_2(sweep: Sweep, args: list[str], match: str) -> None:
    sweep.refused(*args, code=2, match=match)


@pytest.mark.parametrize(
    ("flags", "match"),
    [({"json": A_DIR}, "is a directory"), ({"json": f"{A_FILE}/bench.json"}, "is a file")],
)
def test_bench_refuses_a_json_path_of_the_wrong_kind(sweep: Sweep, flags: dict, match: str) -> None:
    sweep.refused(*sweep.args("bench cache", **flags), match=match)


def test_demo_refuses_a_bad_setting_before_writing(sweep: Sweep) -> None:
    sweep.refused(*sweep.args("demo", "--set", "train.lr=-1"), match="train.lr must be a finite number")


def test_demo_refuses_an_out_that_is_a_file(sweep: Sweep) -> None:
    sweep.refused(*sweep.args("demo", out=A_FILE), match=A_FILE)


def test_tiny_backbones_refuses_an_out_that_is_a_file(sweep: Sweep) -> None:
    sweep.refused("tiny-backbones", "--out", A_FILE, match=A_FILE)


def test_tiny_backbones_refuses_an_unknown_family_before_writing(sweep: Sweep) -> None:
    out = sweep.root / "tiny-out"
    sweep.refused("tiny-backbones", "--out", out, "--family", "nope", code=2, match="no tiny LLM family")
    assert not out.exists()
