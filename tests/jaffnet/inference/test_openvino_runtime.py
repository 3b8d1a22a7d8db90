"""Ctrl+C still works after OpenVINO models come and go (the failure it guards against is a SIGSEGV,
so the scenario runs in a child process)."""

import subprocess
import sys
from pathlib import Path

import pytest

from jaffnet.inference.quantization import runtime_available

pytestmark = pytest.mark.skipif(not runtime_available(),
                                reason="OpenVINO/NNCF cannot be imported (pip install 'jaffnet[openvino]')")

REPO = Path(__file__).resolve().parents[3]

# Each part releases two OpenVINO CPU plugins in the order they were made, which leaves the main
# thread's signal stack pointing at unmapped memory unless jaffnet prevents it; then presses Ctrl+C.
SCENARIO = """
import gc, signal, sys, threading, time

from jaffnet.inference import build_predictor, export_onnx
from jaffnet.inference.openvino_runtime import import_runtime, signal_stack_guard
from jaffnet.model import JAFFNet

# What a terminal gives Python; a child of a background job (CI) inherits SIGINT ignored.
signal.signal(signal.SIGINT, signal.default_int_handler)


def press_ctrl_c(part):
    try:
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
        time.sleep(5)
    except KeyboardInterrupt:
        print(part, "interrupted", flush=True)


model = JAFFNet(width=0.125).eval()
onnx = str(export_onnx(model, sys.argv[1], image_size=64))

# jaffnet's own predictors, released in the order made (as a dict of them is).
first = build_predictor(model, "openvino", threads=1, onnx_path=onnx)
second = build_predictor(model, "openvino", threads=1, onnx_path=onnx)
del first; gc.collect()
del second; gc.collect()
press_ctrl_c("predictors")

# Cores made and dropped by a library (NNCF makes one per engine), inside the guard.
ov, _ = import_runtime()
with signal_stack_guard():
    first, second = ov.Core(), ov.Core()
    first.compile_model(onnx, "CPU")
    second.compile_model(onnx, "CPU")
    del first; gc.collect()
    del second; gc.collect()
press_ctrl_c("library cores")
"""


def test_ctrl_c_raises_keyboard_interrupt_after_openvino_models_are_released_in_the_order_made(tmp_path):
    done = subprocess.run([sys.executable, "-c", SCENARIO, str(tmp_path / "model.onnx")], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"exit {done.returncode} (-11: SIGSEGV)\n{done.stdout}\n{done.stderr[-3000:]}"
    lines = [line for line in done.stdout.splitlines() if line.endswith(" interrupted")]
    assert lines == ["predictors interrupted", "library cores interrupted"]
