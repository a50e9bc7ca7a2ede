from mark1.bench.run import run_bench


def test_bench_reports_every_stage_on_the_tiny_backbones(tiny) -> None:
    stages = ("extract", "precision", "cache", "train", "answer", "infer")
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
    precision = {r["figure"]: r["value"] for r in result.rows if r["stage"] == "precision"}
    assert precision["fp16 / fp32 features: lowest cosine per token"] >= 0.999
    assert precision["share of fp16 features that are finite"] == 1.0
    assert all(r["value"] > 0 for r in result.rows)
    assert "CPU" in result.machine


def test_decode_bench_reports_each_resolution_backend_and_the_ratios(tmp_path) -> None:
    from mark1.bench.decode import bench_decode
    from mark1.bench.measure import BenchResult

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
    from mark1.bench.measure import largest_batch

    # 3 GB fixed + 0.5 GB a sample: 24 samples fit in 15 GB, 25 do not
    assert largest_batch({4: 5.0, 8: 7.0}, 15.0) == 24
    assert largest_batch({8: 7.0, 4: 5.0}, 4.0) == 2
    assert largest_batch({4: 5.0, 8: 7.0}, 2.0) == 0


def test_a_stage_out_of_gpu_memory_is_reported_and_the_run_stops(tiny, monkeypatch) -> None:
    import torch

    from mark1.bench import run as bench

    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(bench, "bench_cache", out_of_memory)
    result = bench.run_bench(("cache", "answer"), tiny.config(), "tiny", "cpu", memory_gb=15.0)
    assert [(r["stage"], r["value"]) for r in result.rows] == [("cache", 15.0)]
    assert "out of GPU memory" in result.rows[0]["figure"]


def test_counted_flops_include_attention_on_the_cpu(tiny) -> None:
    """The encoder's counted FLOPs equal 2 x weights x tokens (linear layers and the patch embedding) + the
    attention's 4 x layers x tokens^2 x width, which torch alone does not count on the CPU."""
    import torch

    from mark1.bench.measure import counted_flops
    from mark1.encoder import VideoEncoder

    encoder = VideoEncoder.load(tiny.config(), torch.device("cpu"))
    cfg = encoder.model.config
    tokens = encoder.grid[0] * (cfg.crop_size // cfg.patch_size) ** 2
    weights = 2 * tokens * sum(p.numel() for p in encoder.model.encoder.parameters() if p.dim() > 1)
    attention = 4 * cfg.num_hidden_layers * tokens**2 * cfg.hidden_size
    frames = torch.zeros(1, encoder.num_frames, 3, encoder.crop_size, encoder.crop_size, dtype=torch.uint8)
    counted = counted_flops(lambda: encoder(frames))
    assert attention > 0 and abs(counted - weights - attention) / counted < 0.01
