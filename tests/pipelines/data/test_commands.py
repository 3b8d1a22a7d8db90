import re

from cli.main import main
from pipelines.data.dataset import read_manifest


def test_synth_then_ingest_then_refuse_overwrite(ray_session, tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path / "src"), "--count", "12", "--size", "32",
                 "--seed", "1"]) == 0
    assert "wrote 12 frames of 32x32 (hard)" in capsys.readouterr().out
    assert main(["synth", "--out", str(tmp_path / "src"), "--count", "12"]) == 2
    assert "--overwrite" in capsys.readouterr().err

    args = ["ingest", "--format", "folder", str(tmp_path / "src"), "--out", str(tmp_path / "ds")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "ingested 12 samples" in out and re.search(r"total\s+\d+\s+\d+\s+\d+", out)
    assert read_manifest(tmp_path / "ds")["num_samples"] == 12
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err


def test_ingest_reports_rejections_and_strict_fails(ray_session, sd900_source, tmp_path, capsys):
    args = ["ingest", "--format", "sd900", str(sd900_source), "--out", str(tmp_path / "ds")]
    assert main(args + ["--strict"]) == 1
    captured = capsys.readouterr()
    assert "rejected 3 files" in captured.out and "Sc_9.bmp: missing mask" in captured.out
    assert not (tmp_path / "ds").exists()
    assert main(args) == 0
    assert "rejected 3 files" in capsys.readouterr().out


def test_ingest_of_a_wrong_folder_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"x")
    assert main(["ingest", "--format", "dagm", str(tmp_path / "photos"), "--out",
                 str(tmp_path / "ds")]) == 2
    assert "not a DAGM 2007 download" in capsys.readouterr().err


def test_bench_data_prints_both_rates(ray_session, capsys):
    assert main(["bench", "data", "--count", "16", "--size", "64", "--batch-size", "8"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"plain loop .*\d+\.\d images/s", out)
    assert re.search(r"Ray Data, warm epoch .*\d+\.\d images/s .*\d\.\d\dx the plain loop", out)
    assert re.search(r"demo trainer consumes .*\d+\.\d images/s .*Ray Data supplies .*\d\.\dx that", out)


def test_bench_data_times_the_demo_configs_trainer(monkeypatch):
    from types import SimpleNamespace

    import pipelines.training.bench
    from pipelines.data.bench import demo_trainer_rate
    from pipelines.training.config import DEMO_CONFIG, load_config

    calls = []

    def fake_bench_training(cfg, image_size, batch_size, steps):
        calls.append((cfg, image_size, batch_size))
        return SimpleNamespace(images_per_s=10.0)

    monkeypatch.setattr(pipelines.training.bench, "bench_training", fake_bench_training)
    demo = load_config(DEMO_CONFIG)
    assert demo_trainer_rate(64) == 10.0 * demo.num_workers
    (cfg, image_size, batch_size), = calls
    assert (cfg, image_size, batch_size) == (demo, 64, demo.batch_size)  # the demo's model and recipe


def test_cpus_per_task_must_be_a_positive_number(tmp_path, capsys):
    import pytest

    for command in (["ingest", "--format", "folder", str(tmp_path), "--out", str(tmp_path / "ds")],
                    ["bench", "data", "--count", "8"]):
        for bad in ("0", "-1", "nan", "abc"):
            with pytest.raises(SystemExit) as exit_:
                main(command + [f"--num-cpus={bad}"])
            assert exit_.value.code == 2 and "--num-cpus" in capsys.readouterr().err
    assert not (tmp_path / "ds").exists()
