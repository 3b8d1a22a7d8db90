"""``jaffnet keys`` and the checks ``jaffnet serve`` makes before starting anything."""

import json
import os

import pytest

from cli.main import main
from serving.commands import LOOPBACK_NODE_ENV, access_for, application_settings, is_loopback_host
from serving.keys import read_keys_file


def test_keys_add_prints_the_key_once_and_list_never_shows_it(tmp_path, capsys):
    keys = tmp_path / "keys"
    assert main(["keys", "add", "--file", str(keys), "--role", "line", "--line", "L3"]) == 0
    captured = capsys.readouterr()
    token = captured.out.strip()
    assert token.startswith("jk_") and token not in captured.err and "shown this once" in captured.err
    assert main(["keys", "add", "--file", str(keys), "--role", "operator", "--name", "shift-lead"]) == 0
    capsys.readouterr()
    assert main(["keys", "list", "--file", str(keys), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["role"], r["line"], r["name"], r["status"]) for r in rows] == [
        ("line", "L3", "line-L3", "active"), ("operator", None, "shift-lead", "active")]
    assert token not in keys.read_text() and all(token not in json.dumps(r) for r in rows)
    assert main(["keys", "revoke", "--file", str(keys), rows[0]["id"]]) == 0
    assert read_keys_file(keys).keys[rows[0]["id"]].revoked
    assert main(["keys", "revoke", "--file", str(keys), "000000000000"]) == 2
    assert "no key with id" in capsys.readouterr().err


def test_keys_add_refuses_a_line_key_without_its_line(tmp_path, capsys):
    assert main(["keys", "add", "--file", str(tmp_path / "keys"), "--role", "line"]) == 2
    assert "needs --line" in capsys.readouterr().err and not (tmp_path / "keys").exists()


def test_serve_refuses_a_network_address_without_keys_before_starting_anything(capsys, monkeypatch):
    import pipelines.runtime

    monkeypatch.setattr(pipelines.runtime, "init_ray", lambda **kwargs: pytest.fail("Ray was started"))
    assert main(["serve", "--host", "0.0.0.0", "--model", "unused"]) == 2
    error = capsys.readouterr().err
    assert "refusing to listen on 0.0.0.0 without a keys file" in error and "--keys" in error


def test_serve_refuses_a_malformed_keys_file_naming_the_line(tmp_path, capsys, tracking):
    keys = tmp_path / "keys"
    keys.write_text("session-secret " + "ab" * 32 + "\nkey nonsense\n")
    keys.chmod(0o600)
    assert main(["serve", "--keys", str(keys), "--model", str(tmp_path), "--tracking-uri", tracking]) == 2
    assert f"keys file {keys}, line 2: a key line has 8 fields" in capsys.readouterr().err


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("::1", True), ("localhost", True),
                                            ("127.0.0.2", True), ("0.0.0.0", False), ("10.1.2.3", False),
                                            ("inspect.plant.example", False)])
def test_loopback_hosts(host, loopback):
    assert is_loopback_host(host) is loopback


def test_the_access_settings_serve_runs_with():
    assert access_for({}, "127.0.0.1", None, None) == {}
    assert access_for({}, "10.1.2.3", "keys", None)["allowed_hosts"] == ["127.0.0.1", "localhost", "::1", "10.1.2.3"]
    assert "allowed_hosts" not in access_for({}, "0.0.0.0", "keys", None)  # the loopback names, until told more
    assert access_for({"keys_file": "k"}, "0.0.0.0", None, ["inspect.plant"])["allowed_hosts"][-1] == "inspect.plant"
    with pytest.raises(ValueError, match="without a keys file"):
        access_for({}, "0.0.0.0", None, ["inspect.plant"])


def test_serve_overrides_the_configs_model_and_decision_log_settings():
    from cli.main import build_parser
    from serving.config import DEFAULT_CONFIG_PATH, application_section, read_serve_config

    application = application_section(read_serve_config(DEFAULT_CONFIG_PATH))
    parse = build_parser().parse_args
    plain = application_settings(application, parse(["serve"]))
    assert plain == application["args"]
    settings = application_settings(application, parse(["serve", "--model", "models:/jaffnet/3", "--keep-frames",
                                                         "ng+sample", "--decision-log", "/var/log/line"]))
    assert settings["model_uri"] == "models:/jaffnet/3"
    assert settings["decision_log"] == {**application["args"]["decision_log"], "frames": "ng+sample",
                                        "folder": "/var/log/line"}
    with pytest.raises(SystemExit):
        parse(["serve", "--keep-frames", "some"])


def test_a_local_ray_node_takes_the_loopback_address():
    import subprocess
    import sys

    probe = ("from serving.commands import keep_ray_node_on_loopback; keep_ray_node_on_loopback(False); "
             "from ray._private import services; print(services.get_node_ip_address())")  # what ray.init would use
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", LOOPBACK_NODE_ENV)}
    answer = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert answer.stdout.strip() == "127.0.0.1", answer.stderr[-2000:]


def test_the_ray_node_is_left_alone_when_asked_or_joining_a_cluster(monkeypatch):
    from serving.commands import keep_ray_node_on_loopback

    monkeypatch.delenv(LOOPBACK_NODE_ENV, raising=False)
    keep_ray_node_on_loopback(True)  # --expose-metrics
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    keep_ray_node_on_loopback(False)
    assert LOOPBACK_NODE_ENV not in os.environ
