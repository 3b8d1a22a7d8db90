"""Starting Ray at an entry point (the CLI commands, the demo), the same way everywhere,
and the one module that relies on Ray internals (tested on the Ray range pyproject.toml
pins; tests/pipelines/test_runtime.py fails loudly when an upgrade moves them).

Ray Data logs every dataset execution ("Starting execution ...", "... execution finished
in ...") at INFO on the console of whichever process runs it; with one training dataset
re-executed each epoch, those lines bury the epoch lines. Every worker process (through
Ray's ``worker_process_setup_hook``) and the driver keep Ray Data's *console* handler at
WARNING; everything still goes to Ray Data's log files in the session directory. Two more
start-up lines per run are dropped from the console: Ray Data's notice that progress bars
are off (we turn them off on purpose) and a deprecation warning Ray Data's own
``DatasetManager`` raises about an option it still uses itself (Ray 2.60); MLflow's
"Creating initial MLflow database tables" info lines; and, on a local instance, the
core-worker error that starting Ray Train's preemption watcher prints.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import warnings
from pathlib import Path
from typing import Any

QUIET_HOOK = "pipelines.runtime.quiet_ray_data_console"
# Ray internals, all in this module (no public API offers these):
RAY_DATA_PROGRESS_LOGGER = "ray.data._internal.progress"  # logs "Progress bars disabled"
TRAIN_REPORT_LOG_SOURCE = "ray.train.v2._internal.execution.context"  # logs "Reporting training result"


def quiet_ray_data_console() -> None:
    """Raise Ray Data's console handler to WARNING in this process; its file handlers keep INFO."""
    import ray.data  # noqa: F401  - configures Ray Data's loggers on first import

    for handler in logging.getLogger("ray.data").handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.WARNING)
    logging.getLogger(RAY_DATA_PROGRESS_LOGGER).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=r".*ExecutionOptions\.exclude_resources.* is deprecated")


# How long a recorded Ray head gets to accept a connection before it counts as gone.
HEAD_PROBE_TIMEOUT_S = 2.0


def recorded_head_not_answering(temp_dir: str | None = None,
                                timeout_s: float = HEAD_PROBE_TIMEOUT_S) -> tuple[str, str] | None:
    """``(record file, address)`` when the Ray head that ``ray start --head`` recorded does not
    accept connections any more; None when no head is recorded or it answers.

    ``ray.init()`` without an address joins the head named in ``<Ray temp dir>/ray_current_cluster``.
    A head that died without ``ray stop`` leaves that file behind, and Ray 2.60 then waits for its
    GCS forever, printing "Failed to connect to GCS" every few seconds."""
    from ray._common.utils import get_ray_address_file

    record = get_ray_address_file(temp_dir)
    try:
        address = Path(record).read_text().strip()
    except OSError:
        return None
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return None  # not an address we can probe: Ray reports it
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return None
    except OSError:
        return record, address


def init_ray(**kwargs: Any) -> None:
    """``ray.init(**kwargs)`` unless Ray is up already, with the quiet-console hook in the
    job's runtime environment (joins the cluster at ``RAY_ADDRESS`` when set, else the head
    ``ray start`` recorded if it answers, else starts a local instance)."""
    import ray

    if not ray.is_initialized():
        runtime_env = dict(kwargs.pop("runtime_env", None) or {})
        runtime_env.setdefault("worker_process_setup_hook", QUIET_HOOK)
        if not kwargs.get("address") and not os.environ.get("RAY_ADDRESS"):
            stale = recorded_head_not_answering(kwargs.get("_temp_dir"))
            if stale:
                record, address = stale
                print(f"note: {record} names a Ray head at {address} that does not answer (stopped without "
                      "`ray stop`?): starting a local Ray instance instead. `ray stop` clears that record.",
                      file=sys.stderr)
                kwargs["address"] = "local"
            # A local single-node instance is never drained, so Ray Train's preemption watcher
            # has nothing to watch, and starting its actor prints a core-worker error (Ray 2.60).
            env_vars = dict(runtime_env.get("env_vars") or {})
            env_vars.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
            runtime_env["env_vars"] = env_vars
            _drop_auth_default_notice()
        ray.init(runtime_env=runtime_env, **kwargs)
        keep_auth_token_private()
    quiet_ray_data_console()
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)


# Ray 2.60 turns token authentication on for a new local instance and says so at every start, with
# how to opt out. The default is what we want (docs/security.md): the notice is dropped, the setting kept.
AUTH_SETUP_LOGGER = "ray._private.authentication.authentication_token_setup"
AUTH_DEFAULT_NOTICE = "Token authentication is enabled for this Ray cluster"


def _is_not_auth_default_notice(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith(AUTH_DEFAULT_NOTICE)


def _drop_auth_default_notice() -> None:
    logger = logging.getLogger(AUTH_SETUP_LOGGER)
    if _is_not_auth_default_notice not in logger.filters:
        logger.addFilter(_is_not_auth_default_notice)


def keep_auth_token_private() -> Path | None:
    """Make Ray's default token file (``~/.ray/auth_token``) readable by its owner alone.

    Ray 2.60 writes it with the process umask, commonly world-readable (0644), and the token admits
    anyone holding it to the cluster. Returns the file when its mode was tightened."""
    from ray._private.authentication.authentication_token_setup import _get_default_token_path

    token = _get_default_token_path()
    try:
        status = token.stat()
        if status.st_uid != os.getuid() or not status.st_mode & 0o077:
            return None
        token.chmod(0o600)
    except OSError:  # no file (token auth off, or a token from the environment), or not ours to change
        return None
    return token


def quiet_train_report_log(level: str) -> None:
    """Ray 2.60 logs "Reporting training result ..." through a logger named after its
    source file, which ``LoggingConfig(log_level=...)`` does not reach: apply the level here."""
    import importlib

    source = importlib.import_module(TRAIN_REPORT_LOG_SOURCE)
    logging.getLogger(source.__file__).setLevel(level)


def configure_data_context() -> None:
    """Ray Data settings for every reader of ingested datasets (training, evaluation, ``jaffnet bench data``).

    - Parquet datasource V1: V2 (the 2.60 default) starts 32 footer-reader actors for
      every read (15-20 s on a 2-core machine, against 0.3 s with V1).
    - No progress bars and no "Starting execution" / plan lines: one set per epoch drowns
      the epoch lines (they stay in Ray Data's log files).
    """
    from ray.data import DataContext

    context = DataContext.get_current()
    context.use_datasource_v2 = False
    context.enable_progress_bars = False
    context.print_on_execution_start = False
