from mark1.bench import run_bench


def test_bench_reports_every_stage_on_the_tiny_backbones(tiny) -> None:
    result = run_bench(
        ("extract", "cache", "train", "answer"), tiny.config(), size="tiny", device="cpu", num_clips=2
    )
    figures = {(r["stage"], r["unit"]) for r in result.rows}
    assert {
        ("extract", "clips/s"),
        ("extract", "ratio"),
        ("cache", "ratio"),
        ("train", "ratio"),
        ("answer", "ratio"),
        ("extract", "bytes"),
    } <= figures
    assert all(r["value"] > 0 for r in result.rows)
    assert "CPU" in result.machine
