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


def test_decode_bench_reports_each_resolution_and_the_worker_ratio(tmp_path) -> None:
    from mark1.bench import BenchResult, bench_decode

    result = BenchResult("cpu", "tiny")
    bench_decode(result, 16, 64, tmp_path, repeat=2, sizes=((160, 96),))
    assert [r["figure"] for r in result.rows] == [
        "96p, 1 decode worker(s), decord",
        "96p, 2 decode worker(s), decord",
        "96p, 2 workers / 1 worker",
    ]
    assert all(r["value"] > 0 for r in result.rows)
