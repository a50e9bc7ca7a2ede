"""The README's promises that code can check: its Python snippet runs as written."""

import os
import re
import shutil
from pathlib import Path

import pytest

README = Path(__file__).parent.parent / "README.md"


def test_the_python_snippet_runs_as_written(tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mark1.demo import make_data

    snippet = re.search(
        r"## Python API\n\n```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S
    ).group(1)
    home = Path(os.environ["MARK1_HOME"]) / "tiny"  # where configs/tiny.yaml looks: the session's tiny models
    for source in (tiny.encoder_dir, tiny.llm_dir):
        if not (home / source.name).exists():
            shutil.copytree(source, home / source.name)
    make_data(tmp_path, 6, "visual", seed=2)  # videos/clip_0000.mp4 ... and train.json
    monkeypatch.chdir(tmp_path)
    exec(compile(snippet, "README.md", "exec"), {})
    assert (tmp_path / "runs" / "seed" / "best" / "projector.safetensors").is_file()
