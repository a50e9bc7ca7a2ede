from mark1.bench import run_bench


def test_bench_reports_every_stage_on_the_tiny_backbones(tiny) -> None:
    stages = ("extract", "cache", "train", "answer", "infer")
    result = run_bench(stages, tiny.config(), "tiny", "cpu", num_clips=2, clip=(160, 96, 2.0))
    figures = {(r["stage"], r["unit"]) for r in result.rows}
    assert {
        ("extract", "clips/s"),
        ("extract", "ratio"),
        ("extract", "bytes"),
        ("cache", "ratio"),
        ("train", "ratio"),
        ("train", "TFLOP/s"),
        ("answer", "ratio"),
        ("infer", "s"),
    } <= figures
    backends = {r["figure"].split(":")[0] for r in result.rows if r["figure"].endswith("whole stage")}
    assert backends == {"pyav", "decord"}
    assert all(r["value"] > 0 for r in result.rows)
    assert "CPU" in result.machine


def test_decode_bench_reports_each_resolution_backend_and_the_ratios(tmp_path) -> None:
    from mark1.bench import BenchResult, bench_decode

    result = BenchResult("cpu", "tiny")
    bench_decode(result, 16, 64, tmp_path, repeat=2, clips=((160, 96, 30),))
    assert [r["figure"] for r in result.rows] == [
        "96p gop 30, pyav, 1 worker(s)",
        "96p gop 30, pyav, 2 worker(s)",
        "96p gop 30, pyav, 2 workers / 1 worker",
        "96p gop 30, decord, 1 worker(s)",
        "96p gop 30, decord, 2 worker(s)",
        "96p gop 30, decord, 2 workers / 1 worker",
        "96p gop 30, pyav / decord (best of each)",
    ]
    assert all(r["value"] > 0 for r in result.rows)


def test_largest_batch_follows_the_memory_line() -> None:
    from mark1.bench import largest_batch

    # 3 GiB fixed + 0.5 GiB a sample: 24 samples fit in 15 GiB, 25 do not
    assert largest_batch({4: 5.0, 8: 7.0}, 15.0) == 24
    assert largest_batch({8: 7.0, 4: 5.0}, 4.0) == 2
    assert largest_batch({4: 5.0, 8: 7.0}, 2.0) == 0


def test_a_stage_out_of_gpu_memory_is_reported_and_the_run_stops(tiny, monkeypatch) -> None:
    import torch

    from mark1 import bench

    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(bench, "bench_cache", out_of_memory)
    result = bench.run_bench(("cache", "answer"), tiny.config(), "tiny", "cpu", memory_gib=15.0)
    assert [(r["stage"], r["value"]) for r in result.rows] == [("cache", 15.0)]
    assert "out of GPU memory" in result.rows[0]["figure"]
