"""The OpenVINO runtime as this process uses it: imported lazily, one ``ov.Core`` for every
model jaffnet compiles, and a guard for the thread's alternate signal stack around NNCF.

Why one core and the guard: OpenVINO's CPU plugin (seen with 2026.4.1) gives the thread that
creates it an alternate signal stack of its own (AMX needs room for large signal frames) and,
when the plugin is destroyed, puts back the stack it found there, even if that one belonged to
another plugin that has been destroyed and unmapped since. Every ``ov.Core`` (and every
``ov.compile_model``, which makes a core) has its own plugin, so two cores released in the
order they were made leave the main thread's signal stack pointing at unmapped memory. The
next signal Python handles there (Ctrl+C, SIGTERM) then kills the process with SIGSEGV instead
of raising KeyboardInterrupt: this is what crashed the test suite in the interrupted-search
test after the INT8 tests had run. jaffnet's own models all go through ``shared_core()``, which
is never released; NNCF makes a core per engine, so after it runs the thread gets a signal stack
that lives as long as the process, and no plugin destroyed later puts back a dead one.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import sys

# Room for a signal frame with AMX tile state (~11 KB) many times over; OpenVINO's own is ~20 KB.
SIGNAL_STACK_BYTES = 256 * 1024


def import_runtime(with_nncf: bool = False):
    """``(openvino, nncf or None)``; ImportError naming the extra to install."""
    try:
        import openvino as ov
    except ImportError as exc:
        raise ImportError("the openvino and int8 backends need OpenVINO: pip install 'jaffnet[openvino]' "
                          f"(openvino, nncf) ({exc})") from exc
    if not with_nncf:
        return ov, None
    # NNCF sends usage telemetry to Google Analytics unless told it runs in CI; an inspection
    # station sends nothing anywhere. (OpenVINO's runtime itself sends none.)
    os.environ.setdefault("NNCF_CI", "1")
    try:
        import nncf
    except ImportError as exc:
        raise ImportError(f"quantising needs NNCF: pip install 'jaffnet[openvino]' (openvino, nncf) ({exc})") from exc
    return ov, nncf


@functools.cache
def shared_core():
    """The process's one ``ov.Core``: read and compile every model through it (see the module docstring)."""
    ov, _ = import_runtime()
    return ov.Core()


@contextlib.contextmanager
def signal_stack_guard():
    """Run code that makes and drops OpenVINO cores of its own (NNCF); afterwards give this
    thread a signal stack no plugin owns, so none can leave it pointing at freed memory."""
    try:
        yield
    finally:
        install_process_signal_stack()


class _SignalStack(ctypes.Structure):  # stack_t (x86-64 and aarch64 Linux)
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


@functools.cache
def _process_signal_stack() -> ctypes.Array:
    return ctypes.create_string_buffer(SIGNAL_STACK_BYTES)  # cached: never freed while the process runs


def install_process_signal_stack() -> bool:
    """Make a process-lifetime buffer this thread's alternate signal stack. Returns False
    where there is nothing to do (not Linux) or the call failed (e.g. while on that stack)."""
    if not sys.platform.startswith("linux"):
        return False
    buffer = _process_signal_stack()
    stack = _SignalStack(ctypes.cast(buffer, ctypes.c_void_p), 0, SIGNAL_STACK_BYTES)
    return ctypes.CDLL(None, use_errno=True).sigaltstack(ctypes.byref(stack), None) == 0

