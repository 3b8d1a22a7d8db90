"""The Ray internals pipelines/runtime.py relies on still exist in the installed Ray."""

import importlib
import re
import tomllib
from pathlib import Path

import ray

from pipelines import runtime

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def _pinned_ray_range() -> tuple[tuple[int, ...], tuple[int, ...]]:
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    spec = next(d for d in dependencies if d.startswith("ray["))
    low, high = re.search(r">=([\d.]+),<([\d.]+)", spec).groups()
    return tuple(map(int, low.split("."))), tuple(map(int, high.split(".")))


def test_installed_ray_is_in_the_pinned_tested_range():
    low, high = _pinned_ray_range()
    installed = tuple(int(part) for part in ray.__version__.split(".")[:2])
    assert low[:2] <= installed < high[:2], f"Ray {ray.__version__} is outside the tested range {low}..{high}"


def test_the_internal_modules_whose_loggers_runtime_quiets_exist():
    for name in (runtime.RAY_DATA_PROGRESS_LOGGER, runtime.TRAIN_REPORT_LOG_SOURCE):
        assert importlib.import_module(name).__file__


def test_no_other_module_imports_ray_internals():
    root = PYPROJECT.parent
    offenders = [str(path.relative_to(root)) for package in ("jaffnet", "pipelines", "tuning", "serving", "cli")
                 for path in (root / package).rglob("*.py")
                 if path.name != "runtime.py" and re.search(r"ray[\w.]*\._(internal|private)", path.read_text())]
    assert offenders == []


def test_quiet_train_report_log_sets_the_level_of_rays_report_logger():
    import logging

    runtime.quiet_train_report_log("WARNING")
    source = importlib.import_module(runtime.TRAIN_REPORT_LOG_SOURCE).__file__
    assert logging.getLogger(source).level == logging.WARNING


def test_only_rays_auth_default_notice_is_dropped_and_the_default_kept():
    """Ray's "token authentication is enabled" notice at every local start is noise for a newcomer; the
    setting it announces (token auth on) is what we want, so only the notice goes, no other warning."""
    import inspect
    import logging

    from ray._private.authentication import authentication_token_setup as setup

    assert setup.logger.name == runtime.AUTH_SETUP_LOGGER  # still where Ray 2.60 logs it
    assert runtime.AUTH_DEFAULT_NOTICE in inspect.getsource(setup._warn_token_auth_enabled)
    runtime._drop_auth_default_notice()
    runtime._drop_auth_default_notice()  # once, however many starts
    logger = logging.getLogger(runtime.AUTH_SETUP_LOGGER)
    assert logger.filters.count(runtime._is_not_auth_default_notice) == 1

    def record(message: str) -> logging.LogRecord:
        return logger.makeRecord(logger.name, logging.WARNING, __file__, 1, message, None, None)

    assert not logger.filter(record(runtime.AUTH_DEFAULT_NOTICE + ". Set RAY_AUTH_MODE=disabled to opt out."))
    assert logger.filter(record("Token authentication is disabled for this Ray cluster. Anyone with network access"))


def test_rays_token_file_is_made_private_to_its_owner(tmp_path, monkeypatch):
    """Ray writes ~/.ray/auth_token with the umask (0644 here): a local jaffnet start leaves it 0600."""
    monkeypatch.setenv("HOME", str(tmp_path))
    assert runtime.keep_auth_token_private() is None  # no token file: nothing to do
    token = tmp_path / ".ray" / "auth_token"
    token.parent.mkdir()
    token.write_text("secret")
    token.chmod(0o644)
    assert runtime.keep_auth_token_private() == token
    assert token.stat().st_mode & 0o777 == 0o600 and token.read_text() == "secret"
    assert runtime.keep_auth_token_private() is None  # already private


def _closed_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_recorded_head_that_does_not_answer_is_found_and_one_that_answers_is_not(tmp_path):
    import socket

    assert runtime.recorded_head_not_answering(str(tmp_path)) is None  # nothing recorded
    record = tmp_path / "ray_current_cluster"
    with socket.socket() as head:
        head.bind(("127.0.0.1", 0))
        head.listen()
        record.write_text(f"127.0.0.1:{head.getsockname()[1]}\n")
        assert runtime.recorded_head_not_answering(str(tmp_path)) is None
    dead = f"127.0.0.1:{_closed_port()}"
    record.write_text(dead + "\n")
    assert runtime.recorded_head_not_answering(str(tmp_path)) == (str(record), dead)
    record.write_text("not an address")
    assert runtime.recorded_head_not_answering(str(tmp_path)) is None


def test_init_ray_starts_a_local_instance_instead_of_waiting_for_a_dead_head(tmp_path, monkeypatch, capsys):
    """Ray 2.60's ray.init() would wait forever for the GCS named by a stale record."""
    calls = []
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    (tmp_path / "ray_current_cluster").write_text(f"127.0.0.1:{_closed_port()}")
    runtime.init_ray(_temp_dir=str(tmp_path))
    assert calls[0]["address"] == "local"
    assert "does not answer" in capsys.readouterr().err
    (tmp_path / "ray_current_cluster").unlink()
    runtime.init_ray(_temp_dir=str(tmp_path))
    assert "address" not in calls[1]  # nothing recorded: Ray's own choice, as before
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    runtime.init_ray()
    assert "address" not in calls[2]  # a job's address is Ray's to use, never probed
