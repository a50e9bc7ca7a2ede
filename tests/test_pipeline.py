"""The recipes in pipeline/, run in dry-run mode: the commands they would run, checked."""

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).parent.parent


def _dry_run(script: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(ROOT / "pipeline" / script)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "DRY_RUN": "1", "MARK1_PIPELINE": str(ROOT / "pipeline"), **env},
    )


def _commands(proc: subprocess.CompletedProcess) -> list[str]:
    return [line[2:] for line in proc.stdout.splitlines() if line.startswith("+ ")]


def test_kaggle_recipe_extracts_on_gpu0_trains_split_and_resumes(tmp_path: Path) -> None:
    data, work = tmp_path / "data", tmp_path / "work"
    (data / "train" / "videos").mkdir(parents=True)
    for i in range(3):
        (data / "train" / "videos" / f"{i}.mp4").write_bytes(b"\0" * 10)
    proc = _dry_run("kaggle_t4x2.sh", DATA=str(data), WORK=str(work))
    assert proc.returncode == 0, proc.stderr
    extract, train, predict = _commands(proc)
    assert (
        extract.startswith("mark1 extract") and f"--videos {data}" in extract and "--device cuda:0" in extract
    )
    assert "--device-map projector=cuda:0,llm=cuda:1" in train and "--resume" not in train
    assert predict.startswith("mark1 predict") and f"--out {work}/submission.csv" in predict
    assert "videos: 3" in proc.stdout
    (work / "runs" / "seed" / "last").mkdir(parents=True)  # a run cut by the session limit
    assert "--resume" in _commands(_dry_run("kaggle_t4x2.sh", DATA=str(data), WORK=str(work)))[1]


def test_kaggle_recipe_refuses_a_cache_that_does_not_fit(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.mp4").write_bytes(b"\0")
    proc = _dry_run(
        "kaggle_t4x2.sh", DATA=str(tmp_path / "data"), WORK=str(tmp_path / "w"), BYTES_PER_CLIP=str(10**18)
    )
    assert proc.returncode == 1 and "not enough disk" in proc.stderr and not _commands(proc)


def test_multi_gpu_recipe_uses_torchrun_for_both_stages() -> None:
    proc = _dry_run("multi_gpu.sh", NPROC="4", RESUME="1")
    assert proc.returncode == 0, proc.stderr
    extract, train = _commands(proc)
    assert extract.startswith("torchrun --nproc-per-node 4 -m mark1 extract")
    assert train.startswith("torchrun --nproc-per-node 4 -m mark1 train") and train.endswith("--resume")


def test_slurm_recipe_spans_the_nodes_for_extraction() -> None:
    proc = _dry_run("slurm/extract_train.sbatch", SLURM_NNODES="4", GPUS="8")
    assert proc.returncode == 0, proc.stderr
    extract, train = _commands(proc)
    assert extract.startswith("srun --ntasks-per-node=1 torchrun --nnodes 4 --nproc-per-node 8")
    assert "--rdzv-backend c10d" in extract and "-m mark1 extract" in extract
    assert train.startswith("srun --nodes=1 --ntasks=1 torchrun --nproc-per-node 8 -m mark1 train")
