"""Choosing the elementwise steps' implementation (diffdefense.runtime.fused), and the Defender giving the same
answers with the compiled extension as with numpy on the shipped MNIST bundle."""

import sys

import numpy as np
import pytest

from diffdefense.runtime import steps
from diffdefense.runtime.backends import BackendError
from diffdefense.runtime.defender import Defender
from diffdefense.runtime.fused import load_step_ops
from diffdefense.settings import DefenseSettings
from diffdefense.shipped import BUNDLES_DIR, SAMPLES_DIR
from tests.fused_support import import_extension

# Short chains, with the paper preset's learning rates (Adam's large steps are where differences would grow).
SMALL = DefenseSettings(num_candidates=3, iterations=3, num_steps=5, start_step=14, lr=25.0, first_lr=0.02)


@pytest.fixture
def without_extension(monkeypatch):
    monkeypatch.setitem(sys.modules, "diffdefense_fused", None)  # import raises ImportError


def test_numpy_is_numpy_and_unknown_kinds_are_refused():
    assert load_step_ops("numpy").name == "numpy"
    with pytest.raises(ValueError, match=r"Expected step_ops in \['auto', 'cpp_ext', 'numpy'\], but got 'torch'"):
        load_step_ops("torch")


def test_auto_falls_back_to_numpy_but_an_explicit_cpp_ext_does_not(without_extension):
    assert load_step_ops("auto").name == "numpy"
    with pytest.raises(BackendError, match=r"diffdefense_fused.*python -m pip install \./cpp_ext"):
        load_step_ops("cpp_ext")


def test_auto_takes_the_extension_when_installed():
    import_extension()
    assert load_step_ops("auto").name == "cpp_ext"


def test_numpy_ops_take_per_candidate_coefficients():
    rng = np.random.default_rng(0)
    x, eps, noise = rng.standard_normal((3, 4, 1, 2, 2), dtype=np.float32)
    a, b, s = rng.random((3, 4), dtype=np.float32)
    got = load_step_ops("numpy").reverse_step(x, eps, a, b, s, noise)
    np.testing.assert_array_equal(got[2], steps.reverse_step(x[2], eps[2], a[2], b[2], s[2], noise[2]))


def test_the_extension_ops_have_the_numpy_semantics():
    import_extension()
    rng = np.random.default_rng(1)
    z, grad = rng.standard_normal((2, 5, 1, 4, 4), dtype=np.float32)
    before = z.copy()
    m, v = np.zeros_like(z), np.zeros_like(z)
    new_z = load_step_ops("cpp_ext").adam_update(z, grad, m, v, 1, 0.1, 0.5, 0.999)
    np.testing.assert_array_equal(z, before)  # z is left alone, as steps.adam_update leaves it
    np.testing.assert_array_equal(
        new_z, steps.adam_update(z, grad, np.zeros_like(z), np.zeros_like(z), 1, 0.1, 0.5, 0.999)
    )


@pytest.fixture(scope="module")
def mnist_samples():
    if not (BUNDLES_DIR / "mnist").is_dir():
        pytest.skip("no shipped MNIST bundle: make one with tools/export.py")
    samples = np.load(SAMPLES_DIR / "mnist.npz")
    return samples["images"][[0, 8]]  # one clean image, one attacked by PGD


@pytest.mark.parametrize("output_map", ["sigmoid", "clip"])
def test_the_defender_answers_the_same_with_either_implementation(mnist_samples, output_map):
    import_extension()
    settings = SMALL.with_(output_map=output_map)
    defenders = {kind: Defender(BUNDLES_DIR / "mnist", settings, step_ops=kind) for kind in ("numpy", "cpp_ext")}
    assert [d.step_ops_name for d in defenders.values()] == ["numpy", "cpp_ext"]
    numpy_result, fused_result = (d(mnist_samples) for d in defenders.values())
    assert (numpy_result.step_ops, fused_result.step_ops) == ("numpy", "cpp_ext")
    np.testing.assert_array_equal(fused_result.labels, numpy_result.labels)
    np.testing.assert_allclose(fused_result.reconstructions, numpy_result.reconstructions, rtol=0, atol=1e-5)
    np.testing.assert_allclose(fused_result.reconstruction_error, numpy_result.reconstruction_error, rtol=1e-5)


def test_a_missing_extension_skips_its_tests_but_fails_them_under_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="not installed"):
        import_extension("diffdefense_no_such_module")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI is set"):
        import_extension("diffdefense_no_such_module")
