"""The CUDA ops of cpp_ext (diffdefense_fused._cuda) on device memory against the numpy steps. They need a GPU
and skip without one; the error without a GPU or driver is checked where there is none."""

from contextlib import contextmanager

import numpy as np
import pytest

from diffdefense.runtime import steps
from tests.fused_support import import_extension

fused = import_extension()
if not fused.build_info()["cuda_built"]:
    pytest.skip("diffdefense_fused was built without its CUDA module", allow_module_level=True)
cuda = fused.cuda()
has_gpu = cuda.device_count() > 0
needs_gpu = pytest.mark.skipif(not has_gpu, reason="no CUDA device or driver on this machine")

SHAPE = (40, 1, 28, 28)  # 8 images x 5 candidates, the runtime's shape


@pytest.mark.skipif(has_gpu, reason="a GPU is present: the no-device error cannot be seen here")
def test_without_a_gpu_the_ops_say_so():
    with pytest.raises(RuntimeError, match="no usable CUDA device"):
        cuda.reverse_step(1, 1, 1, 1, 1, 1, 0.5, 0.5, 0.5)


def test_pointer_arguments_are_checked_before_the_device():
    with pytest.raises(ValueError, match="expected 1 <= rows"):
        cuda.reverse_step(1, 1, 1, 1, 0, 784, 0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="output_map: expected 'clip' or 'sigmoid'"):
        cuda.loss_and_gradient(1, 1, 1, 1, 0, 5, 784, 1.0, "tanh")


@contextmanager
def on_device(*arrays):
    """Device copies of float32 arrays; yields their pointers and frees them after."""
    pointers = [cuda.device_malloc(a.nbytes) for a in arrays]
    try:
        for pointer, array in zip(pointers, arrays, strict=True):
            cuda.copy_to_device(pointer, np.ascontiguousarray(array, np.float32))
        yield pointers
    finally:
        for pointer in pointers:
            cuda.device_free(pointer)


def fetch(pointer, shape):
    cuda.synchronize()
    host = np.empty(shape, np.float32)
    cuda.copy_to_host(host, pointer)
    return host


# The kernels run ops.h's arithmetic with FMA contraction off (CMakeLists.txt), so they should give the CPU's
# bits; the tolerances are a float32 rounding, so that a compiler's liberty does not fail the suite.
def close(got, expected):
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@needs_gpu
@pytest.mark.parametrize("per_row", [False, True])
def test_reverse_step(rng, per_row):
    x, eps, noise = rng.standard_normal((3, *SHAPE), dtype=np.float32)
    coefficients = rng.random((3, SHAPE[0]), dtype=np.float32) if per_row else np.array([0.9, -0.2, 0.1], np.float32)
    rows, row_size = SHAPE[0], int(np.prod(SHAPE[1:]))
    with on_device(x, eps, noise, np.zeros(SHAPE, np.float32), *(coefficients if per_row else [])) as pointers:
        px, peps, pnoise, pout = pointers[:4]
        if per_row:
            cuda.reverse_step_rows(px, peps, pnoise, pout, rows, row_size, *pointers[4:])
            expected = fused.reverse_step(x, eps, *coefficients, noise)
        else:
            cuda.reverse_step(px, peps, pnoise, pout, rows, row_size, *(float(c) for c in coefficients))
            expected = steps.reverse_step(x, eps, *(float(c) for c in coefficients), noise)
        close(fetch(pout, SHAPE), expected)


@needs_gpu
@pytest.mark.parametrize("output_map", ["clip", "sigmoid"])
@pytest.mark.parametrize("with_gradient", [True, False])
def test_loss_and_gradient(rng, output_map, with_gradient):
    x0 = 3 * rng.standard_normal(SHAPE, dtype=np.float32)
    target = rng.random(SHAPE, dtype=np.float32)
    rows, row_size = SHAPE[0], int(np.prod(SHAPE[1:]))
    outputs = np.zeros(SHAPE, np.float32), np.zeros(rows, np.float32), np.zeros(SHAPE, np.float32)
    with on_device(x0, target, *outputs) as (px0, ptarget, pimage, ploss, pgrad):
        grad_pointer = pgrad if with_gradient else 0
        cuda.loss_and_gradient(px0, ptarget, pimage, ploss, grad_pointer, rows, row_size, 0.7, output_map)
        image, loss, grad = fetch(pimage, SHAPE), fetch(ploss, (rows,)), fetch(pgrad, SHAPE)
    cpu_image, cpu_loss, cpu_grad = fused.loss_and_gradient(x0, target, 0.7, output_map, with_gradient)
    close(image, cpu_image)
    np.testing.assert_allclose(loss, steps.loss_and_gradient(x0, target, 0.7, output_map, False)[1], rtol=2e-6)
    np.testing.assert_allclose(loss, cpu_loss, rtol=1e-6)
    if with_gradient:
        close(grad, cpu_grad)
    else:
        assert not grad.any()  # nothing written


@needs_gpu
@pytest.mark.parametrize("in_place", [True, False])
def test_adam_update(rng, in_place):
    z, grad = rng.standard_normal((2, *SHAPE), dtype=np.float32)
    m, v = 0.1 * rng.standard_normal(SHAPE, dtype=np.float32), rng.random(SHAPE, dtype=np.float32)
    expected_m, expected_v = m.copy(), v.copy()
    expected_z = steps.adam_update(z, grad, expected_m, expected_v, 3, 25.0, 0.5, 0.999)
    with on_device(z, grad, m, v, np.zeros(SHAPE, np.float32)) as (pz, pgrad, pm, pv, pout):
        cuda.adam_update(pz, pgrad, pm, pv, 0 if in_place else pout, z.size, 3, 25.0, 0.5, 0.999)
        close(fetch(pz if in_place else pout, SHAPE), expected_z)
        close(fetch(pm, SHAPE), expected_m)
        close(fetch(pv, SHAPE), expected_v)
        if not in_place:
            np.testing.assert_array_equal(fetch(pz, SHAPE), z)
