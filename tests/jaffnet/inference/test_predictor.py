import numpy as np
import pytest
import torch

from jaffnet.inference import BACKENDS, CPU_BACKENDS, build_predictor, error_bound
from jaffnet.inference.torch_backend import cpu_has_native_bf16
from tests.jaffnet.inference.conftest import TOLERANCE, random_batch

# torch.compile with the "aot_eager" compiler checks graph capture of the fused model in
# seconds; Inductor's C++ code generation takes minutes on 2 cores (docs/benchmarks/cpu.md).
# Two shapes (batch, height, width) each, except compile: every new shape recompiles.
SHAPES = [(2, 64, 64), (1, 96, 64)]
NO_BF16 = pytest.mark.skipif(not cpu_has_native_bf16(),
                             reason="this CPU has no native bfloat16 (AVX512-BF16/AMX); cpu-bf16 refuses to run")
TORCH_CASES = [("fused", {}, SHAPES), ("compile", {"compiler": "aot_eager"}, SHAPES[:1]),
               pytest.param("cpu-bf16", {}, SHAPES, marks=NO_BF16)]


@pytest.fixture(scope="module")
def eager(model):
    return build_predictor(model, "eager")


@pytest.mark.parametrize("backend,options,shapes", TORCH_CASES, ids=["fused", "compile", "cpu-bf16"])
def test_fast_paths_match_eager(model, eager, backend, options, shapes):
    predictor = build_predictor(model, backend, **options)
    assert predictor.backend == backend
    for shape in shapes:
        batch = random_batch(*shape)
        expected = eager(batch)
        assert expected.std() > 0.02  # a spread-out map, so the comparison means something
        got = predictor(batch)
        assert got.shape == shape and got.dtype == np.float32
        assert np.abs(got - expected).max() <= error_bound(backend)


@pytest.mark.skipif(cpu_has_native_bf16(), reason="this CPU has native bfloat16")
def test_cpu_bf16_refuses_a_cpu_without_native_bf16(model):
    with pytest.raises(RuntimeError, match="native bfloat16"):
        build_predictor(model, "cpu-bf16")


def test_fp32_paths_keep_the_issue_bound():
    assert error_bound("fused") == error_bound("onnx") == error_bound("compile") == TOLERANCE


def test_eager_matches_the_model_itself(model, eager):
    batch = random_batch(2, 32, 64)
    with torch.no_grad():
        expected = torch.sigmoid(model(torch.from_numpy(batch)))[:, 0].numpy()
    np.testing.assert_allclose(eager(batch), expected, atol=1e-6)
    assert ((eager(batch) >= 0) & (eager(batch) <= 1)).all()


def test_unknown_backend_lists_the_choices(model):
    with pytest.raises(ValueError, match="choose one of") as info:
        build_predictor(model, "tensorrt")
    assert all(name in str(info.value) for name in BACKENDS)


def test_unknown_option_is_refused(model):
    with pytest.raises(ValueError, match="does not take"):
        build_predictor(model, "fused", cuda_graphs=True)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b.startswith("cuda")])
def test_cuda_backends_need_a_gpu(model, backend):
    if torch.cuda.is_available():
        predictor = build_predictor(model, backend)
        batch = random_batch(2, 64, 64)
        expected = build_predictor(model, "eager")(batch)
        assert np.abs(predictor(batch) - expected).max() <= error_bound(backend)
    else:
        with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
            build_predictor(model, backend)
    with pytest.raises(ValueError, match="runs on a CUDA device"):
        build_predictor(model, backend, device="cpu")


def test_cpu_only_backends_refuse_cuda(model):
    assert "onnx" in CPU_BACKENDS
    with pytest.raises(ValueError, match="CPU only"):
        build_predictor(model, "onnx", device="cuda")


def test_the_model_is_not_a_model():
    with pytest.raises(TypeError, match="JAFFNet"):
        build_predictor(object(), "eager")


@pytest.mark.parametrize("batch,error", [
    (np.zeros((3, 64, 64), np.float32), "shape"),
    (np.zeros((1, 4, 64, 64), np.float32), "shape"),
    (np.zeros((0, 3, 64, 64), np.float32), "N >= 1"),
    (np.zeros((1, 3, 64, 48), np.float32), "multiples of 32"),
    (np.zeros((1, 3, 64, 64), np.uint8), "normalise"),
])
def test_bad_batches_get_clear_errors(eager, batch, error):
    with pytest.raises(ValueError, match=error):
        eager(batch)


def test_a_list_is_not_a_batch(eager):
    with pytest.raises(TypeError, match="numpy array"):
        eager([[0.0]])


def test_float64_batches_are_accepted(eager):
    batch = random_batch(1, 32, 32)
    np.testing.assert_array_equal(eager(batch.astype(np.float64)), eager(batch))


@pytest.mark.parametrize("threads", [0, -1, 1.5, True])
def test_bad_thread_counts_are_refused(model, threads):
    with pytest.raises(ValueError, match="threads"):
        build_predictor(model, "eager", threads=threads)
