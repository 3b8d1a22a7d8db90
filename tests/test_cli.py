"""The console script: every layer's commands are there, building the parser (`jaffnet --help`)
imports none of the heavy libraries the handlers use, and `evaluate` reaches both of its layers.
Which package may import which: tests/test_layering.py."""

import subprocess
import sys

from cli.main import build_parser

COMMANDS = {"synth", "ingest", "train", "evaluate", "demo", "tune", "serve", "inspect", "export", "import-weights",
            "replay", "bench"}


def test_every_layer_registers_its_commands():
    parser = build_parser()
    commands = next(action for action in parser._actions if action.dest == "command").choices
    assert COMMANDS <= set(commands)


def test_building_the_parser_imports_no_torch_ray_or_mlflow():
    code = ("import sys; from cli.main import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'ray', 'mlflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_evaluate_endpoint_scores_through_serving_with_the_key_file(tmp_path, monkeypatch, capsys):
    """`jaffnet evaluate --endpoint URL --key-file F` posts through serving's acceptance test with F's key."""
    import serving.acceptance
    from cli.main import main

    class Scored:
        def table(self):
            return "the table"

    calls = []
    monkeypatch.setattr(serving.acceptance, "evaluate_endpoint",
                        lambda url, data, split, *, concurrency, key: calls.append((url, data, split, concurrency, key))
                        or Scored())
    key_file = tmp_path / "admin.key"
    key_file.write_text("secret-key\n")
    assert main(["evaluate", "--endpoint", "http://127.0.0.1:8000", "--data", str(tmp_path), "--split", "val",
                 "--concurrency", "2", "--key-file", str(key_file)]) == 0
    assert calls == [("http://127.0.0.1:8000", str(tmp_path), "val", 2, "secret-key")]
    assert "the table" in capsys.readouterr().out
    assert main(["evaluate", "--endpoint", "http://x", "--data", str(tmp_path),
                 "--key-file", str(tmp_path / "missing.key")]) == 2  # an unreadable key file: a clear error
    assert "cannot read the API key file" in capsys.readouterr().err
