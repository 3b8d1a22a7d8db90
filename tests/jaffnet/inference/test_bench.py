import json

import pytest

from cli.main import main
from jaffnet.inference import build_predictor
from jaffnet.inference.bench import bench_inference, format_inference, time_call


def test_bench_inference_reports_speedups_against_eager(model):
    predictors = {name: build_predictor(model, name) for name in ("fused", "eager")}
    results = bench_inference(predictors, image_sizes=[32], batch_sizes=[1, 2], iters=2)
    assert [(r.backend, r.batch_size) for r in results] == [("eager", 1), ("fused", 1), ("eager", 2), ("fused", 2)]
    eager = results[0]
    assert eager.speedup == pytest.approx(1.0) and eager.max_abs_diff == 0.0
    fused = results[1]
    assert fused.speedup == pytest.approx(eager.latency_ms / fused.latency_ms)
    assert fused.images_per_s == pytest.approx(1e3 / fused.latency_ms)
    assert fused.cpu_speedup == pytest.approx(eager.cpu_ms / fused.cpu_ms)
    assert fused.max_abs_diff < 1e-3
    assert "fused" in format_inference(results)


def test_time_call_counts_iterations():
    calls = []
    timings = time_call(lambda: calls.append(1), iters=3, warmup=2)
    assert len(timings.wall) == len(timings.cpu) == 3 and len(calls) == 5
    assert all(t >= 0 for t in timings.wall + timings.cpu)
    with pytest.raises(ValueError):
        time_call(lambda: None, iters=0, warmup=0)


def test_bench_model_command(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["bench", "model", "--width", "0.125", "--image-size", "32", "--batch-sizes", "1,2",
            "--backends", "fused", "--device", "cpu", "--iters", "1", "--train-batch-size", "2", "--json", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "vs eager" in printed and "training on cpu" in printed and "took" in printed
    report = json.loads(out.read_text())
    assert {(r["backend"], r["batch_size"]) for r in report["inference"]} == {
        ("eager", 1), ("fused", 1), ("eager", 2), ("fused", 2)}
    assert report["training"][0]["images_per_s"] > 0


def test_bench_model_rejects_unknown_backends(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "model", "--backends", "tensorrt"])
    assert "unknown backend" in capsys.readouterr().err
