"""`mark1 eval --report`: the HTML page's content, its escaping, its frames, and the page in a real browser."""

from __future__ import annotations

import base64
import html
import io
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

HOSTILE_QUESTION = '<script>alert("q")</script> Biển báo & "màu" gì?'
HOSTILE_CHOICE = '"><img src=x onerror=alert(1)>'
WORST = 3


@dataclass
class Evaluated:
    page: str
    report: Path
    out_dir: Path
    annotations: Path
    rows: list[dict]
    metrics: dict
    videos: Path
    seconds: float


@pytest.fixture(scope="module")
def evaluated(trained, tmp_path_factory: pytest.TempPathFactory) -> Evaluated:
    """The trained run's eval with a report, over its test questions (4: more than the report lists), every one
    made hostile; the annotation file lies away from the videos, so they are found through `videos`."""
    from mark1.stages.evaluate import evaluate

    root = tmp_path_factory.mktemp("report")
    data = json.loads((trained.data_dir / "test.json").read_text(encoding="utf-8"))
    for row in data["data"]:  # every row, so that every listed question carries it
        row["question"] = HOSTILE_QUESTION + " " + row["question"]
        last = row["choices"][-1]
        row["choices"][-1] = f"{last} {HOSTILE_CHOICE}"
        if row["answer"] == last:
            row["answer"] = row["choices"][-1]
    annotations = root / "hostile.json"
    annotations.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    report = root / "site" / "report.html"
    started = time.perf_counter()
    result = evaluate(
        trained.run_dir / "best",
        trained.cache_dir,
        annotations,
        root / "eval",
        report=report,
        report_worst=WORST,
        videos=trained.data_dir / "videos",
    )
    seconds = time.perf_counter() - started
    assert result.report_path == report
    rows = [json.loads(line) for line in (root / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) > WORST  # so the page lists a choice of them
    return Evaluated(
        report.read_text(encoding="utf-8"),
        report,
        root / "eval",
        annotations,
        rows,
        result.metrics,
        trained.data_dir / "videos",
        seconds,
    )


def _sections(page: str) -> list[str]:
    return re.findall(r'<section class="question .*?</section>', page, flags=re.S)


def test_page_holds_metrics_breakdowns_and_confusion(evaluated: Evaluated) -> None:
    from mark1.report import METRIC_NAMES

    page, metrics = evaluated.page, evaluated.metrics
    for key, value in metrics.items():
        if isinstance(value, dict):
            for group, share in value.items():  # per type and per number of choices, with their values
                assert re.search(
                    rf"<td>{re.escape(group)}</td><td class=\"num\">\d+</td><td class=\"num\">{share:.3f}</td>",
                    page,
                )
        else:
            shown = f"{value:.3f}" if isinstance(value, float) else str(value)
            assert f'<td>{html.escape(METRIC_NAMES[key])}</td><td class="num">{shown}</td>' in page, key
    assert "Accuracy per question type" in page and "Accuracy per number of choices" in page
    written = json.loads((evaluated.out_dir / "metrics.json").read_text())
    # the page names the predictions it shows
    assert f"predictions.jsonl sha256 {written['predictions_sha256']}" in page
    # the confusion table: its counts add up to the multiple-choice questions with an answer
    confusion = page.split("Confusion, multiple choice", 1)[1].split("</table>", 1)[0]
    counts = [int(n) for n in re.findall(r'<td class="num (?:diag|off)"[^>]*>(\d+)</td>', confusion)]
    choice_rows = [r for r in evaluated.rows if r.get("kind") == "choice" and r.get("answer") is not None]
    assert sum(counts) == len(choice_rows)
    right = sum(r["correct"] for r in choice_rows)
    diagonal = [int(n) for n in re.findall(r'<td class="num diag"[^>]*>(\d+)</td>', confusion)]
    assert sum(diagonal) == right


def test_worst_questions_listed_first_each_with_one_timeline_and_two_frames(evaluated: Evaluated) -> None:
    import av

    from mark1.report import THUMB_WIDTH

    sections = _sections(evaluated.page)
    assert len(sections) == WORST
    assert evaluated.page.count('<svg class="timeline"') == WORST
    # the order: wrong before right, then the lowest probability of the gold answer
    expected = sorted(evaluated.rows, key=lambda r: (r["pred"] == r["answer"], r["probs"][r["answer"]]))[
        :WORST
    ]
    shown_ids = [re.search(r"<code>(.*?)</code>", s).group(1) for s in sections]
    assert shown_ids == [r["id"] for r in expected]
    for section, row in zip(sections, expected, strict=True):
        timeline = re.search(r"<svg .*?</svg>", section, flags=re.S).group(0)
        assert timeline.count('<circle class="dot"') == len(row["times"])  # one per temporal position
        assert timeline.count('<line class="support"') == len(row["support_frames"])
        assert timeline.count('<line class="predicted"') == 1
        assert timeline.count('<rect class="window"') == (1 if row["windows"] else 0)
        images = re.findall(r'<img src="data:image/jpeg;base64,([A-Za-z0-9+/=]+)"', section)
        assert len(images) == 2  # the predicted moment's frame and the support frame's
        with av.open(str(evaluated.videos / row["video"])) as container:
            source = container.streams.video[0]
            width, height = source.width, source.height
        with av.open(io.BytesIO(base64.b64decode(images[0]))) as container:
            frame = next(container.decode(video=0))
        # a JPEG thumbnail, never wider than THUMB_WIDTH, in the video's proportions
        assert frame.width == min(THUMB_WIDTH, width) // 2 * 2
        assert abs(frame.height / frame.width - height / width) < 0.02
    assert "http://" not in evaluated.page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in evaluated.page


def test_hostile_text_is_escaped(evaluated: Evaluated) -> None:
    page = evaluated.page
    assert "<script" not in page.lower()
    assert "<img src=x" not in page
    # in each listed question's text, and in its last choice
    assert (
        page.count("&lt;script&gt;alert(&quot;q&quot;)&lt;/script&gt; Biển báo &amp; &quot;màu&quot; gì?")
        == WORST
    )
    assert page.count("&quot;&gt;&lt;img src=x onerror=alert(1)&gt;") == WORST


def test_missing_videos_are_said_and_timelines_still_shown(evaluated: Evaluated, tmp_path: Path) -> None:
    """The saved eval reported afterwards from Python, with the annotation file away from the videos and no
    `videos`: each question says its video was not found, its timeline is still there."""
    from mark1.report import load_eval, write_report

    metrics, rows = load_eval(evaluated.out_dir)
    result = write_report(tmp_path / "later.html", metrics, rows, evaluated.annotations, worst=3)
    page = result.path.read_text(encoding="utf-8")
    sections = _sections(page)
    assert len(sections) == result.num_listed == 3 and result.num_frames == 0
    for section in sections:
        assert "video not found" in section and str(evaluated.annotations.parent / "videos") in section
        assert section.count('<svg class="timeline"') == 1
    assert "data:image/jpeg" not in page
    assert metrics["predictions_sha256"] in page


def test_cli_refuses_a_report_path_that_is_a_directory_before_any_work(trained, cli, tmp_path: Path) -> None:
    run = cli(
        "eval",
        "--checkpoint",
        trained.run_dir / "best",
        "--cache",
        trained.cache_dir,
        "--annotations",
        trained.data_dir / "test.json",
        "--report",
        tmp_path,
    )
    assert run.code == 1 and "--report" in run.err and "is a directory" in run.err


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if found := shutil.which(name):
            return found
    if os.environ.get("CI"):
        pytest.fail("CI is set and no chromium binary is on PATH: apt-get install -y chromium")
    pytest.skip("no chromium binary on PATH (apt-get install chromium); with CI set this fails instead")


# Appended to a copy of the page: after load, it writes what the browser rendered into the DOM, which
# --dump-dom prints. It logs nothing, so any console line comes from the page.
PROBE = """<script>
window.addEventListener("load", () => {
  const questions = [...document.querySelectorAll("section.question")];
  const result = {
    questions: questions.length,
    timelines: questions.map((q) => {
      const svgs = q.querySelectorAll("svg.timeline");
      const box = svgs.length === 1 ? svgs[0].getBoundingClientRect() : {width: 0, height: 0};
      return svgs.length === 1 && box.width > 300 && box.height > 50
        && svgs[0].querySelector("polyline.curve").getTotalLength() > 0;
    }),
    images: [...document.images].map((i) => i.complete && i.naturalWidth > 0),
    scripts: document.scripts.length,
  };
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify(result);
  document.body.append(out);
});
</script>"""


def test_page_in_a_headless_browser(evaluated: Evaluated, tmp_path: Path) -> None:
    """Chromium loads the page from file://: no console message, one rendered timeline per listed question,
    every frame decoded, and no script of the page's own."""
    browser = _chromium()
    page = tmp_path / "probed.html"
    page.write_text(evaluated.page.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    run = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",  # root in a container has no user namespace for the sandbox
            "--disable-gpu",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--enable-logging=stderr",
            "--v=0",  # console messages come out as INFO:CONSOLE lines
            "--window-size=1200,900",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    console_lines = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
    assert not console_lines, console_lines
    found = re.search(r'<pre id="probe">(.*?)</pre>', run.stdout, flags=re.S)
    assert found, run.stdout[-2000:]
    rendered = json.loads(found.group(1).replace("&quot;", '"'))
    assert rendered["questions"] == WORST
    assert rendered["timelines"] == [True] * WORST
    assert len(rendered["images"]) == 2 * WORST and all(rendered["images"])
    assert rendered["scripts"] == 1  # the probe alone


def test_open_and_grounding_rows_get_their_answer_and_timeline(tmp_path: Path) -> None:
    """Rows of the other kinds, as score_records writes them: an open answer shows both texts and its F1, a
    grounding query its spans; each has its timeline with the ground-truth span band, and no confusion
    table is drawn without multiple-choice rows."""
    from mark1.report import write_report

    annotations = tmp_path / "q.jsonl"
    lines = [
        {"id": "o1", "video": "a.mp4", "question": "Xe <b>màu</b> gì?", "answer": "đỏ <i>", "kind": "open"},
        {"id": "g1", "video": "a.mp4", "question": "khi nào?", "spans": [[1.0, 2.0]], "kind": "grounding"},
    ]
    annotations.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in lines), encoding="utf-8")
    timing = {"times": [0.5, 1.5, 2.5], "saliency": [0.1, 0.9, 0.2], "duration_s": 3.0, "video": "a.mp4"}
    rows = [
        {
            "id": "o1",
            "kind": "open",
            "text": "xanh",
            "answer": "đỏ <i>",
            "exact_match": False,
            "f1": 0.0,
            "support_frames": [],
            "spans": [],
            "windows": [],
            **timing,
        },
        {
            "id": "g1",
            "kind": "grounding",
            "support_frames": [],
            "spans": [[1.0, 2.0]],
            "windows": [[0.9, 2.1, 0.8]],
            **timing,
        },
    ]
    page = write_report(tmp_path / "r.html", {"questions": 2}, rows, annotations).path.read_text("utf-8")
    sections = _sections(page)
    assert [re.search(r"<code>(.*?)</code>", s).group(1) for s in sections] == ["o1", "g1"]  # wrong first
    assert "<dd>xanh</dd>" in sections[0] and "<dd>đỏ &lt;i&gt;</dd>" in sections[0]
    assert "Xe &lt;b&gt;màu&lt;/b&gt; gì?" in sections[0]
    assert "1.0-2.0 s" in sections[1] and sections[1].count('<rect class="gt-span"') == 1
    assert sections[1].count('<rect class="window"') == 1 and sections[0].count('<rect class="window"') == 0
    assert all(s.count('<svg class="timeline"') == 1 and "video not found" in s for s in sections)
    assert "Confusion" not in page
