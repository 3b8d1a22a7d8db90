"""Starting Ray at an entry point (the CLI commands, the demo), the same way everywhere.

Ray Data logs every dataset execution ("Starting execution ...", "... execution finished
in ...") at INFO on the console of whichever process runs it; with one training dataset
re-executed each epoch, those lines bury the epoch lines. Every worker process (through
Ray's ``worker_process_setup_hook``) and the driver keep Ray Data's *console* handler at
WARNING; everything still goes to Ray Data's log files in the session directory.
"""

from __future__ import annotations

import logging
from typing import Any

QUIET_HOOK = "pipelines.runtime.quiet_ray_data_console"


def quiet_ray_data_console() -> None:
    """Raise Ray Data's console handler to WARNING in this process; its file handlers keep INFO."""
    import ray.data  # noqa: F401  - configures Ray Data's loggers on first import

    for handler in logging.getLogger("ray.data").handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.WARNING)


def init_ray(**kwargs: Any) -> None:
    """``ray.init(**kwargs)`` unless Ray is up already, with the quiet-console hook in the
    job's runtime environment (joins the cluster at ``RAY_ADDRESS`` when set)."""
    import ray

    if not ray.is_initialized():
        runtime_env = dict(kwargs.pop("runtime_env", None) or {})
        runtime_env.setdefault("worker_process_setup_hook", QUIET_HOOK)
        ray.init(runtime_env=runtime_env, **kwargs)
    quiet_ray_data_console()
