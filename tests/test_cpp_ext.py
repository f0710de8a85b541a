"""The compiled CPU ops (cpp_ext, module diffdefense_fused) against the numpy steps they replace, their refusals
of bad arguments, and what the build holds (the CUDA architectures, where nvcc is on PATH)."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from diffdefense.runtime import steps
from tests.fused_support import import_extension

fused = import_extension()

CUDA_SASS = {"sm_80", "sm_86", "sm_87", "sm_89", "sm_90"}  # what CMakeLists.txt asks nvcc for
FAST = settings(max_examples=40, deadline=None)
shapes = st.tuples(st.integers(1, 6), st.integers(1, 2), st.integers(1, 9), st.integers(1, 9))


def float32_arrays(shape, low=-40.0, high=40.0):
    return arrays(np.float32, shape, elements=st.floats(low, high, width=32))


@st.composite
def step_inputs(draw):
    """x, eps, noise of one random shape, and coefficients that are numbers or one float32 per row."""
    shape = draw(shapes)
    x, eps, noise = (draw(float32_arrays(shape)) for _ in range(3))
    per_row = draw(st.booleans())
    coefficients = [draw(float32_arrays((shape[0],), -3, 3)) if per_row else draw(st.floats(-3, 3)) for _ in range(3)]
    return x, eps, noise, coefficients


def per_row_view(c, ndim):
    return c.reshape(-1, *[1] * (ndim - 1)) if isinstance(c, np.ndarray) else c


@FAST
@given(step_inputs())
def test_reverse_step_equals_numpy_bit_for_bit(inputs):
    x, eps, noise, (a, b, s) = inputs
    expected = steps.reverse_step(x, eps, *(per_row_view(c, x.ndim) for c in (a, b, s)), noise)
    np.testing.assert_array_equal(fused.reverse_step(x, eps, a, b, s, noise), expected)


def test_reverse_step_writes_into_out_even_when_it_is_x():
    x, eps, noise = np.random.default_rng(0).standard_normal((3, 5, 1, 4, 4)).astype(np.float32)
    expected = steps.reverse_step(x, eps, 0.9, -0.2, 0.1, noise)
    assert fused.reverse_step(x, eps, 0.9, -0.2, 0.1, noise, out=x) is x
    np.testing.assert_array_equal(x, expected)


@FAST
@given(
    shapes.flatmap(
        lambda s: st.tuples(float32_arrays(s, -30, 30), arrays(np.float32, s, elements=st.floats(0, 1, width=32)))
    ),
    st.sampled_from(["clip", "sigmoid"]),
    st.floats(0.01, 10),
    st.booleans(),
)
def test_loss_and_gradient_match_numpy(x0_target, output_map, gain, with_gradient):
    x0, target = x0_target
    image, loss, grad = fused.loss_and_gradient(x0, target, gain, output_map, with_gradient)
    expected_image, expected_loss, expected_grad = steps.loss_and_gradient(x0, target, gain, output_map, with_gradient)
    assert image.dtype == loss.dtype == np.float32 and loss.shape == (x0.shape[0],)
    np.testing.assert_allclose(
        loss, expected_loss, rtol=2e-6, atol=1e-12
    )  # numpy sums in float32, the extension in double
    assert (grad is None) == (not with_gradient)
    if output_map == "clip":  # no library function involved: the same bits
        np.testing.assert_array_equal(image, expected_image)
        if with_gradient:
            np.testing.assert_array_equal(grad, expected_grad)
    else:  # exp_f32 and numpy's exp each lie within a few ulp of the exact value
        np.testing.assert_allclose(image, expected_image, rtol=1e-6, atol=1e-37)
        if with_gradient:  # 1 - image cancels near 1: bound the error by the gradient's scale
            scale = gain * 2 / x0[0].size
            np.testing.assert_allclose(grad, expected_grad, rtol=1e-5, atol=1e-6 * scale)


def test_the_clip_passes_its_gradient_at_both_bounds_as_numpy_does():
    step = np.float32(1e-6)  # a few ulp beyond -1 and 1
    x0 = np.array([-1 - step, -1, 0, 1, 1 + step, np.inf, -np.inf, np.nan], np.float32).reshape(1, 1, 1, -1)
    target = np.full_like(x0, 0.25)
    with np.errstate(invalid="ignore"):
        expected = steps.loss_and_gradient(x0, target, 1.0, "clip")
    image, _, grad = fused.loss_and_gradient(x0, target, 1.0, "clip")
    np.testing.assert_array_equal(image, expected[0])
    np.testing.assert_array_equal(grad, expected[2])
    assert (grad.ravel()[:7] != 0).tolist() == [False, True, True, True, False, False, False]
    assert np.isnan(image.ravel()[-1]) and np.isnan(grad.ravel()[-1])


def test_the_sigmoid_saturates_without_overflow_and_keeps_nan():
    x0 = np.array([-400, -200, -1, 200, 400, np.inf, -np.inf, np.nan], np.float32).reshape(1, 1, 1, -1)
    with np.errstate(over="ignore", invalid="ignore"):
        expected = steps.loss_and_gradient(x0, np.zeros_like(x0), 1.0, "sigmoid")
    got = fused.loss_and_gradient(x0, np.zeros_like(x0), 1.0, "sigmoid")
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[2], expected[2])


def test_the_sigmoid_is_within_two_and_a_half_ulp_of_exact():
    x0 = np.linspace(-200, 200, 4_000_001, dtype=np.float32).reshape(1, 1, 1, -1)
    image = fused.loss_and_gradient(x0, np.zeros_like(x0), 1.0, "sigmoid", False)[0].ravel()
    unit = ((x0 + np.float32(1)) * np.float32(0.5)).ravel()  # as the extension computes it, in float32
    exact = 1 / (1 + np.exp(-unit.astype(np.float64)))
    normal = exact > np.finfo(np.float32).tiny
    ulp_error = np.abs(image - exact)[normal] / np.spacing(exact.astype(np.float32))[normal]
    assert ulp_error.max() < 2.5


def test_adam_equals_numpy_over_several_steps_and_updates_in_place():
    rng = np.random.default_rng(1)
    z, grad = rng.standard_normal((2, 5, 1, 28, 28)).astype(np.float32)
    m, v = np.zeros_like(z), np.zeros_like(z)
    m_fused, v_fused, z_fused = m.copy(), v.copy(), z.copy()
    for step in range(1, 4):
        g = grad * np.float32(step)
        z = steps.adam_update(z, g, m, v, step, 25.0, 0.5, 0.999)
        assert fused.adam_update(z_fused, g, m_fused, v_fused, step, 25.0, 0.5, 0.999) is z_fused  # in place
        for got, expected in ((z_fused, z), (m_fused, m), (v_fused, v)):
            np.testing.assert_array_equal(got, expected)


def test_adam_into_out_leaves_z_alone():
    z, grad = np.random.default_rng(2).standard_normal((2, 3, 4)).astype(np.float32)
    before, out = z.copy(), np.empty_like(z)
    m, v = np.zeros_like(z), np.zeros_like(z)
    assert fused.adam_update(z, grad, m, v, 1, 0.1, 0.9, 0.999, out=out) is out
    np.testing.assert_array_equal(z, before)
    np.testing.assert_array_equal(
        out, steps.adam_update(z, grad, np.zeros_like(z), np.zeros_like(z), 1, 0.1, 0.9, 0.999)
    )


def test_big_batches_take_the_threaded_path_with_the_same_numbers():
    n = fused.build_info()["parallel_min_elements"] // 784 + 3
    rng = np.random.default_rng(3)
    x, eps, noise = rng.standard_normal((3, n, 1, 28, 28), dtype=np.float32)
    a = rng.random(n, dtype=np.float32)
    np.testing.assert_array_equal(
        fused.reverse_step(x, eps, a, 0.5, 0.1, noise),
        steps.reverse_step(x, eps, a[:, None, None, None], 0.5, 0.1, noise),
    )
    image, loss, grad = fused.loss_and_gradient(x, noise * 0 + 0.5, 3.0, "clip")
    expected = steps.loss_and_gradient(x, noise * 0 + 0.5, 3.0, "clip")
    np.testing.assert_array_equal(grad, expected[2])
    np.testing.assert_allclose(loss, expected[1], rtol=2e-6)


X = np.zeros((2, 1, 4, 4), np.float32)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            lambda: fused.reverse_step(X.astype(np.float64), X, 1.0, 1.0, 1.0, X),
            TypeError,
            "x: expected dtype float32, but got float64",
        ),
        (
            lambda: fused.reverse_step(X.tolist(), X, 1.0, 1.0, 1.0, X),
            TypeError,
            "x: expected a numpy float32 array, but got list",
        ),
        (
            lambda: fused.reverse_step(X, np.zeros((2, 1, 4, 3), np.float32), 1.0, 1.0, 1.0, X),
            ValueError,
            r"eps: expected the shape of x \(2, 1, 4, 4\), but got \(2, 1, 4, 3\)",
        ),
        (
            lambda: fused.reverse_step(X, X, 1.0, 1.0, 1.0, np.zeros((2, 1, 4, 8), np.float32)[..., ::2]),
            ValueError,
            "noise: expected a C-contiguous array",
        ),
        (
            lambda: fused.reverse_step(X, X, np.ones(3, np.float32), 1.0, 1.0, X),
            ValueError,
            r"a: expected a number or a float32 array of shape \(2,\) \(one value per row of x\), but got shape \(3,\)",
        ),
        (
            lambda: fused.reverse_step(X, X, 1.0, np.ones(2), 1.0, X),
            TypeError,
            "b: expected dtype float32, but got float64",
        ),
        (
            lambda: fused.reverse_step(X, X, 1.0, 1.0, "0.1", X),
            TypeError,
            "s: expected a number or a float32 array .* but got str",
        ),
        (
            lambda: fused.reverse_step(X, X, 1.0, 1.0, 1.0, X, out=X[:1]),
            ValueError,
            r"out: expected the shape of x \(2, 1, 4, 4\), but got \(1, 1, 4, 4\)",
        ),
        (
            lambda: fused.reverse_step(X[:0], X[:0], 1.0, 1.0, 1.0, X[:0]),
            ValueError,
            r"x: expected at least one element, but got shape \(0, 1, 4, 4\)",
        ),
        (lambda: fused.reverse_step(np.float32(1), X, 1.0, 1.0, 1.0, X), ValueError, "x: expected an array of shape"),
        (
            lambda: fused.loss_and_gradient(X, X, 1.0, "tanh"),
            ValueError,
            "output_map: expected 'clip' or 'sigmoid', but got 'tanh'",
        ),
        (lambda: fused.loss_and_gradient(X, X[:1], 1.0, "clip"), ValueError, "target: expected the shape of x0"),
        (
            lambda: fused.loss_and_gradient(X, X.astype(np.float16), 1.0, "clip"),
            TypeError,
            "target: expected dtype float32, but got float16",
        ),
        (
            lambda: fused.adam_update(X, X, X, X.copy(), 0, 0.1, 0.5, 0.999),
            ValueError,
            "step: expected a count from 1, but got 0",
        ),
        (
            lambda: fused.adam_update(X, X, np.broadcast_to(X, X.shape), X, 1, 0.1, 0.5, 0.999),
            ValueError,
            "m: expected a writable array",
        ),
        (
            lambda: fused.adam_update(X, X, X.copy(), X.reshape(2, 16), 1, 0.1, 0.5, 0.999),
            ValueError,
            r"v: expected the shape of z \(2, 1, 4, 4\), but got \(2, 16\)",
        ),
    ],
)
def test_bad_arguments_are_refused_with_what_was_expected_and_what_came(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_numpy_scalars_and_integers_are_coefficients():
    x = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(
        fused.reverse_step(x, x, np.float32(0.5), 2, np.float64(0.25), x), np.full_like(x, 2.75)
    )


def test_build_info_describes_the_build():
    info = fused.build_info()
    assert info["version"] == fused.__version__ and info["cpu_threads"] >= 1
    assert info["cuda_built"] == bool(info["cuda_architectures"])


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on PATH: the build had no CUDA part to check")
def test_the_cuda_module_holds_code_for_orin_and_hopper():
    from diffdefense_fused.fatbin import cuda_binary_architectures

    info = fused.build_info()
    assert info["cuda_built"], "nvcc is on PATH but the extension was built without CUDA"
    assert {"87-real", "90"} <= set(info["cuda_architectures"])
    binary = cuda_binary_architectures(Path(fused.cuda().__file__))
    assert CUDA_SASS <= set(binary.sass) and binary.ptx == ["compute_90"]
