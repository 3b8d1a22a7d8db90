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

from jaffnet.inference.openvino_runtime import import_runtime, signal_stack_guard
from jaffnet.inference.openvino_backend import OpenVinoPredictor

# What a terminal gives Python; a child of a background job (CI) inherits SIGINT ignored.
signal.signal(signal.SIGINT, signal.default_int_handler)


def press_ctrl_c(part):
    try:
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
        time.sleep(5)
    except KeyboardInterrupt:
        print(part, "interrupted", flush=True)


onnx = sys.argv[1]

# jaffnet's own predictors, released in the order made (as a dict of them is).
first = OpenVinoPredictor(onnx, threads=1)
second = OpenVinoPredictor(onnx, threads=1)
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


def _tiny_probability_model(path: Path) -> Path:
    """A 1x1 convolution + sigmoid with the exported model's input and output names (no torch export)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from jaffnet.inference.onnx_export import INPUT_NAME, OUTPUT_NAME

    weight = numpy_helper.from_array(np.full((1, 3, 1, 1), 0.1, dtype=np.float32), "weight")
    graph = helper.make_graph(
        [helper.make_node("Conv", [INPUT_NAME, "weight"], ["logit"]),
         helper.make_node("Sigmoid", ["logit"], ["map"]),
         helper.make_node("Squeeze", ["map", "axis"], [OUTPUT_NAME])],
        "tiny", [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["n", 3, "h", "w"])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["n", "h", "w"])],
        initializer=[weight, numpy_helper.from_array(np.array([1], dtype=np.int64), "axis")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_ctrl_c_raises_keyboard_interrupt_after_openvino_models_are_released_in_the_order_made(tmp_path):
    onnx_path = _tiny_probability_model(tmp_path / "model.onnx")
    done = subprocess.run([sys.executable, "-c", SCENARIO, str(onnx_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"exit {done.returncode} (-11: SIGSEGV)\n{done.stdout}\n{done.stderr[-3000:]}"
    lines = [line for line in done.stdout.splitlines() if line.endswith(" interrupted")]
    assert lines == ["predictors interrupted", "library cores interrupted"]
