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
