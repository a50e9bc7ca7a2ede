"""pipeline/kaggle_t4x2.ipynb: a valid notebook that runs the recipe's commands, end to end on the CPU.

The notebook runs under nbclient (a real kernel) where it is installed, else its code cells are exec'd in
order in one namespace, as "Run all" would; the parameters are overridden by a cell inserted after the
parameters cell, as papermill does.
"""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import io
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest

ROOT = Path(__file__).parent.parent
NOTEBOOK = ROOT / "pipeline" / "kaggle_t4x2.ipynb"
RECIPE = ROOT / "pipeline" / "kaggle_t4x2.sh"
# The notebook runs Mark-1 as `python -m mark1` (a kernel's PATH may lack the console script).
LAUNCHER = shlex.join([sys.executable, "-m", "mark1"])
EXECUTORS = [
    "exec",
    pytest.param(
        "nbclient",
        marks=[
            pytest.mark.slow,  # a kernel starts in 2-3 s per run; the exec'd cells run the same code at once
            pytest.mark.skipif(
                importlib.util.find_spec("nbclient") is None,
                reason="nbclient and ipykernel are not installed",
            ),
        ],
    ),
]


class NotebookFailed(Exception):
    """A cell raised; the message holds the error's name and text."""


def _code_cells(params: dict[str, object]) -> list[str]:
    cells = [c for c in json.loads(NOTEBOOK.read_text(encoding="utf-8"))["cells"] if c["cell_type"] == "code"]
    sources = ["".join(c["source"]) for c in cells]
    at = next(i for i, c in enumerate(cells) if "parameters" in c["metadata"].get("tags", []))
    overrides = "\n".join(f"{name} = {_literal(value)}" for name, value in params.items())
    return [*sources[: at + 1], "from pathlib import Path\n" + overrides, *sources[at + 1 :]]


def _literal(value: object) -> str:
    return f"Path({str(value)!r})" if isinstance(value, Path) else repr(value)


def _run_notebook(executor: str, cwd: Path, **params: object) -> str:
    """The notebook's printed output; raises NotebookFailed when a cell raises."""
    sources = _code_cells(params)
    if executor == "nbclient":
        return _run_nbclient(sources, cwd)
    out = io.StringIO()
    namespace: dict[str, object] = {"__name__": "__main__"}
    # The notebook sets HF_HUB_OFFLINE and changes nothing else of the process; keep it out of the tests'.
    before = Path.cwd()
    os.chdir(cwd)  # a kernel starts in the notebook's directory
    try:
        with mock.patch.dict(os.environ), contextlib.redirect_stdout(out):
            for source in sources:
                exec(compile(source, "<cell>", "exec"), namespace)
    except Exception as err:
        raise NotebookFailed(f"{type(err).__name__}: {err}\n{out.getvalue()}") from err
    finally:
        os.chdir(before)
    return out.getvalue()


def _run_nbclient(sources: list[str], cwd: Path) -> str:
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    client = NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
    )
    try:
        client.execute()
    except CellExecutionError as err:
        raise NotebookFailed(str(err)) from err
    return "".join(o.get("text", "") for c in nb.cells for o in c.outputs if o["output_type"] == "stream")


def _run_recipe(cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(RECIPE)], capture_output=True, text=True, cwd=cwd, env={**os.environ, **env}
    )


def _mark1_commands(output: str) -> list[str]:
    commands = [line[2:] for line in output.splitlines() if line.startswith("+ ")]
    commands = [c.replace(LAUNCHER, "mark1", 1) if c.startswith(LAUNCHER) else c for c in commands]
    return [c for c in commands if c.startswith("mark1 ")]


def _fake_data(root: Path, num_videos: int = 3) -> Path:
    (root / "train" / "videos").mkdir(parents=True)
    for i in range(num_videos):
        (root / "train" / "videos" / f"{i}.mp4").write_bytes(b"\0" * 10)
    return root


def test_notebook_is_valid_nbformat_4_with_plain_python_cells() -> None:
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    assert nb["nbformat"] == 4 and nb["metadata"]["kernelspec"]["language"] == "python"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert [c for c in code if "parameters" in c["metadata"].get("tags", [])], "no cell tagged parameters"
    for cell in code:
        source = "".join(cell["source"])
        compile(source, "<cell>", "exec")  # plain Python: a `!` or `%` magic would not compile
        assert cell["outputs"] == [] and cell["execution_count"] is None, "the notebook is saved with outputs"
    if importlib.util.find_spec("nbformat"):
        import nbformat

        nbformat.validate(nbformat.read(NOTEBOOK, as_version=4))


@pytest.mark.parametrize("executor", EXECUTORS)
def test_notebook_and_recipe_run_the_same_commands_from_any_directory(executor: str, tmp_path: Path) -> None:
    _fake_data(tmp_path / "data")
    models = tmp_path / "models"
    for name in ("vjepa2-vitg-fpc64-256", "Qwen3-0.6B"):
        (models / name).mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"  # neither the repo root nor the data's parent
    elsewhere.mkdir()
    # Relative DATA and WORK: the commands must carry them as absolute paths.
    params = {"DATA": "../data", "WORK": "../work", "DRY_RUN": True, "INTERNET": False, "INSTALL": False}
    notebook = _run_notebook(executor, elsewhere, **params, MODELS=models)
    recipe = _run_recipe(
        elsewhere,
        DATA="../data",
        WORK="../work",
        DRY_RUN="1",
        ENCODER=str(models / "vjepa2-vitg-fpc64-256"),
        LLM=str(models / "Qwen3-0.6B"),
    )
    assert recipe.returncode == 0, recipe.stderr
    extract, train, predict = _mark1_commands(notebook)
    assert _mark1_commands(recipe.stdout) == [extract, train, predict]
    data, work = elsewhere / ".." / "data", elsewhere / ".." / "work"
    assert extract == (
        f"mark1 extract --videos {data} --cache {work}/cache --config mark1-vjepa2-qwen3 "
        f"--encoder {models}/vjepa2-vitg-fpc64-256 --device cuda:0"
    )
    assert f"--llm {models}/Qwen3-0.6B --device-map projector=cuda:0,llm=cuda:1" in train
    assert "--resume" not in train and f"--out {work}/submission.csv" in predict
    assert "videos: 3" in notebook and "videos: 3" in recipe.stdout
    (tmp_path / "work" / "runs" / "seed" / "last").mkdir(parents=True)  # a run cut by the session limit
    notebook = _run_notebook(executor, elsewhere, **params, MODELS=models)
    recipe = _run_recipe(elsewhere, DATA="../data", WORK="../work", DRY_RUN="1")
    assert _mark1_commands(notebook)[1].endswith("--resume") and _mark1_commands(recipe.stdout)[1].endswith(
        "--resume"
    )
    assert "pip install" not in notebook  # INSTALL = False


def _pip_commands(output: str) -> list[str]:
    return [line[2:] for line in output.splitlines() if line.startswith("+ ") and " -m pip install " in line]


def test_notebook_installs_from_wheels_offline_and_from_source_online(tmp_path: Path) -> None:
    from importlib.metadata import version

    data, work, wheels = _fake_data(tmp_path / "data"), tmp_path / "work", tmp_path / "wheels"
    params = {"DATA": data, "WORK": work, "WHEELS": wheels, "INSTALL": True, "DRY_RUN": True}
    (pip,) = _pip_commands(_run_notebook("exec", tmp_path, **params, INTERNET=False))
    # Offline: Mark-1 from the wheels only, torch held at the installed version by a constraint.
    assert pip.endswith(f"-c {work}/pip-constraints.txt --no-index --find-links {wheels} mark1")
    assert (work / "pip-constraints.txt").read_text() == f"torch=={version('torch')}\n"
    source = "git+https://example.org/mark1.git"
    (pip,) = _pip_commands(_run_notebook("exec", tmp_path, **params, INTERNET=True, MARK1_SOURCE=source))
    assert pip.endswith(f"-c {work}/pip-constraints.txt {source}")
    # Online without a source: the wheels again, never a bare `pip install mark1` from an index.
    (pip,) = _pip_commands(_run_notebook("exec", tmp_path, **params, INTERNET=True))
    assert pip.endswith(f"--no-index --find-links {wheels} mark1")
    with pytest.raises(NotebookFailed, match=r"WHEELS: .*wheels is not a directory"):
        _run_notebook("exec", tmp_path, **{**params, "DRY_RUN": False}, INTERNET=True)


def test_notebook_offline_needs_the_backbones_dataset(tmp_path: Path) -> None:
    with pytest.raises(NotebookFailed, match=r"ENCODER: .*vjepa2-vitg-fpc64-256 is not a directory"):
        _run_notebook(
            "exec",
            tmp_path,
            DATA=_fake_data(tmp_path / "data"),
            WORK=tmp_path / "w",
            INTERNET=False,
            MODELS=tmp_path / "missing",
        )


@pytest.mark.parametrize("executor", EXECUTORS)
def test_notebook_and_recipe_refuse_a_cache_that_does_not_fit(executor: str, tmp_path: Path) -> None:
    data, work = _fake_data(tmp_path / "data", 1), tmp_path / "w"
    with pytest.raises(NotebookFailed, match="not enough disk for the cache") as failed:
        _run_notebook(
            executor,
            tmp_path,
            DATA=data,
            WORK=work,
            BYTES_PER_CLIP=10**18,
            DRY_RUN=True,
            INTERNET=True,
            INSTALL=False,
        )
    assert "mark1 extract" not in str(failed.value)
    recipe = _run_recipe(tmp_path, DATA=str(data), WORK=str(work), DRY_RUN="1", BYTES_PER_CLIP=str(10**18))
    assert (
        recipe.returncode == 1 and "not enough disk" in recipe.stderr and not _mark1_commands(recipe.stdout)
    )


@pytest.mark.slow
def test_notebook_runs_end_to_end_on_cpu(tiny, tmp_path: Path) -> None:
    import yaml

    from mark1.config import CONFIG_DIR
    from mark1.demo import make_data

    # Kaggle's layout: train/ (videos, train.json) and public_test/ (its own videos, public_test.json).
    data = tmp_path / "data"
    make_data(data / "train", 5, "visual", seed=7)
    (data / "public_test" / "videos").mkdir(parents=True)
    (data / "train" / "public_test.json").rename(data / "public_test" / "public_test.json")
    test = json.loads((data / "public_test" / "public_test.json").read_text(encoding="utf-8"))["data"]
    for video in {row["video_path"] for row in test}:
        (data / "train" / video).rename(data / "public_test" / video)
    config = yaml.safe_load((CONFIG_DIR / "tiny.yaml").read_text(encoding="utf-8"))
    config["extract"]["decode_workers"] = 0
    config["train"].update(epochs=1, val_fraction=0.25)
    (tmp_path / "tiny-1-epoch.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")

    executor = "nbclient" if importlib.util.find_spec("nbclient") else "exec"
    output = _run_notebook(
        executor,
        tmp_path,
        DATA=data,
        WORK=tmp_path / "working",
        CONFIG="tiny-1-epoch.yaml",  # relative to the notebook's directory: made absolute
        ENCODER=tiny.encoder_dir,
        LLM=tiny.llm_dir,
        GPU0="cpu",
        GPU1="cpu",
        INTERNET=False,
        INSTALL=False,
    )
    extract, train, predict = _mark1_commands(output)
    assert f"--config {tmp_path}/tiny-1-epoch.yaml" in extract and "--resume" not in train
    with (tmp_path / "working" / "submission.csv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["id"] for r in rows] == [q["id"] for q in test] and len(test) >= 2
    assert all(r["answer"] in "ABCD" and r["answer"] for r in rows)
    assert f"{tmp_path}/working/submission.csv: {len(test)} answers" in output
