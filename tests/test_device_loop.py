"""The device loop (runtime/device_loop.py): when it runs and what it refuses, checked everywhere; its bookkeeping
(bindings, buffer offsets, step order, Adam's step count, the full-gradient chain) checked here by running it on
onnxruntime's CPU buffers with numpy stand-ins for the CUDA kernels; its numbers on a GPU against the host loop,
which skip without one, saying why."""

import ctypes
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from diffdefense.runtime import device_loop, steps
from diffdefense.runtime.backends import PROVIDERS, BackendError, BackendOptions, available_providers
from diffdefense.runtime.defender import Defender
from diffdefense.runtime.device_loop import DeviceLoop, buffer_shapes, choose_kernels, find_kernels
from diffdefense.settings import PRESETS, DefenseSettings
from diffdefense.shipped import BUNDLES_DIR, SAMPLES_DIR

BUNDLE = BUNDLES_DIR / "mnist"
SMALL = DefenseSettings(num_candidates=3, iterations=3, num_steps=4, start_step=14, lr=25.0, first_lr=0.02)


@pytest.fixture(scope="module")
def samples():
    if not BUNDLE.is_dir():
        pytest.skip("no shipped MNIST bundle: make one with tools/export.py")
    images = np.load(SAMPLES_DIR / "mnist.npz")["images"]
    return images[[0, 1, 2, 3, 8, 9, 10, 11]]  # four clean images, four attacked by PGD


@pytest.fixture
def cuda_provider_present(monkeypatch):
    """onnxruntime claims the GPU providers, so that the checks after it are reached on any machine."""
    monkeypatch.setattr(device_loop, "available_providers", lambda: [*PROVIDERS.values()])


def test_the_device_loop_runs_on_gpu_providers_only():
    assert find_kernels("cpu") == (
        None,
        "The device loop runs on onnxruntime's 'cuda' or 'tensorrt' provider, not on 'cpu'.",
    )
    with pytest.raises(BackendError, match="not on 'cpu'"):
        Defender(BUNDLE, SMALL, provider="cpu", device_loop=True)
    with pytest.raises(ValueError, match=r"step_ops='numpy' asks for a host implementation; leave step_ops='auto'"):
        choose_kernels("cuda", True, "numpy")


def test_a_missing_provider_is_named(monkeypatch):
    monkeypatch.setattr(device_loop, "available_providers", lambda: ["CPUExecutionProvider"])
    message = (
        "needs onnxruntime's CUDAExecutionProvider, which this onnxruntime lacks (installed: CPUExecutionProvider)"
    )
    assert message in find_kernels("cuda")[1]
    assert "TensorrtExecutionProvider" in find_kernels("tensorrt")[1]
    with pytest.raises(BackendError, match=r"diffdefense\[gpu\]"):
        choose_kernels("cuda", True, "auto")


def test_a_missing_extension_is_named(cuda_provider_present, monkeypatch):
    monkeypatch.setitem(sys.modules, "diffdefense_fused", None)  # import raises ImportError
    with pytest.raises(BackendError, match=r"diffdefense_fused\._cuda.*python -m pip install \./cpp_ext"):
        choose_kernels("cuda", True, "auto")


def test_a_machine_without_a_gpu_is_named(cuda_provider_present, monkeypatch):
    no_gpu = SimpleNamespace(cuda=lambda: SimpleNamespace(device_count=lambda: 0))
    monkeypatch.setitem(sys.modules, "diffdefense_fused", no_gpu)
    with pytest.raises(BackendError, match="needs a CUDA device, but this process sees none"):
        choose_kernels("tensorrt", True, "auto")


def test_unrequested_it_runs_only_where_it_can(cuda_provider_present, monkeypatch):
    monkeypatch.setitem(sys.modules, "diffdefense_fused", None)
    assert choose_kernels("cuda", None, "auto") is None  # missing pieces: the host loop, no error
    with_gpu = SimpleNamespace(cuda=lambda: SimpleNamespace(device_count=lambda: 1))
    monkeypatch.setitem(sys.modules, "diffdefense_fused", with_gpu)
    assert choose_kernels("cuda", None, "auto") is not None
    assert choose_kernels("cuda", False, "auto") is None
    assert choose_kernels("cuda", None, "cpp_ext") is None  # a host implementation asked for by name


def test_on_the_cpu_provider_the_host_loop_runs_and_says_so(samples):
    result = Defender(BUNDLE, SMALL.with_(iterations=1), provider="cpu")(samples[:1])
    assert not result.device_loop and result.step_ops in ("cpp_ext", "numpy")


def test_buffer_plan():
    image = (15, 1, 28, 28)
    straight = buffer_shapes(SMALL.with_(num_candidates=5, fresh_noise=True), 15, (1, 28, 28))
    assert straight["chain"] == (1, *image) and "vjp" not in straight  # one chain state, updated in place
    assert straight["noise"] == (3, 4, *image) and straight["loss"] == (15,) and straight["m"] == image
    full = buffer_shapes(SMALL.with_(gradient="full", fresh_noise=False), 15, (1, 28, 28))
    assert full["chain"] == (4, *image) and full["vjp"] == image  # every step's state, for the VJP graph
    assert full["noise"] == (1, 4, *image)


def _view(pointer: int, count: int) -> np.ndarray:
    return np.ctypeslib.as_array(ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float)), shape=(count,))


class HostPointerKernels:
    """diffdefense_fused._cuda's signatures on host pointers (onnxruntime's CPU OrtValues), computed by steps.py."""

    def reverse_step(self, x, eps, noise, out, rows, row_size, a, b, s, stream=0):
        n = rows * row_size
        _view(out, n)[:] = steps.reverse_step(_view(x, n), _view(eps, n), a, b, s, _view(noise, n))

    def loss_and_gradient(self, x0, target, image, loss, grad, rows, row_size, gain, output_map, stream=0):
        shape, n = (rows, 1, 1, row_size), rows * row_size
        x0, target = _view(x0, n).reshape(shape), _view(target, n).reshape(shape)
        got = steps.loss_and_gradient(x0, target, gain, output_map, with_gradient=grad != 0)
        _view(image, n)[:], _view(loss, rows)[:] = got[0].ravel(), got[1]
        if grad:
            _view(grad, n)[:] = got[2].ravel()

    def adam_update(self, z, grad, m, v, out, size, step, lr, beta1, beta2, eps=1e-8, stream=0):
        new = steps.adam_update(
            _view(z, size), _view(grad, size), _view(m, size), _view(v, size), step, lr, beta1, beta2
        )
        _view(out or z, size)[:] = new

    def copy_to_host(self, destination, source):
        destination.ravel()[:] = _view(source, destination.size)

    def synchronize(self, stream=0):
        pass


@pytest.mark.parametrize(
    "settings",
    [
        SMALL.with_(output_map="sigmoid", fresh_noise=True),
        SMALL.with_(output_map="clip"),
        SMALL.with_(gradient="full", num_steps=3, fresh_noise=True, latent_init="input"),
    ],
    ids=["sigmoid-fresh-noise", "clip", "full"],
)
def test_the_loop_bookkeeping_matches_the_host_loop(samples, settings):
    options = BackendOptions(step_ops="numpy", shards=1)  # the device loop binds one session per graph
    defender = Defender(BUNDLE, settings, backend=options, unet_graphs="general")
    host = defender(samples[[0, 4]])
    defender.device_loop = DeviceLoop(defender.unet, defender.unet_vjp, HostPointerKernels(), device="cpu")
    bound = defender(samples[[0, 4]])
    assert bound.device_loop and bound.step_ops == "cpu"
    np.testing.assert_allclose(bound.reconstructions, host.reconstructions, rtol=0, atol=1e-6)
    np.testing.assert_allclose(bound.reconstruction_error, host.reconstruction_error, rtol=1e-6)
    np.testing.assert_allclose(bound.latents, host.latents, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(bound.labels, host.labels)


class FailingBindings:
    """An onnxruntime session whose IOBinding runs fail, as a lost device's do."""

    def __init__(self, session) -> None:
        self.session = session

    def io_binding(self):
        return self.session.io_binding()

    def get_outputs(self):
        return self.session.get_outputs()

    def run_with_iobinding(self, binding, run_options=None):
        raise RuntimeError("[ONNXRuntimeError] : 1 : FAIL : CUDA failure 999: unknown error (device lost)")


def test_a_failing_run_on_the_device_loops_buffers_names_the_graph_and_the_provider(samples):
    settings = SMALL.with_(gradient="full", num_steps=2)
    options = BackendOptions(step_ops="numpy", shards=1)  # the device loop binds one session per graph
    defender = Defender(BUNDLE, settings, backend=options, unet_graphs="general")
    defender.device_loop = DeviceLoop(defender.unet, defender.unet_vjp, HostPointerKernels(), device="cpu")
    defender.unet_vjp.session = FailingBindings(defender.unet_vjp.session)
    expected = r"CPUExecutionProvider failed while running unet_vjp\.onnx on the device loop's buffers: .*device lost"
    with pytest.raises(BackendError, match=expected):
        defender(samples[:1])


def needs_device_loop(provider: str) -> None:
    if PROVIDERS[provider] not in available_providers():
        pytest.skip(f"onnxruntime has no {PROVIDERS[provider]} here (installed: {', '.join(available_providers())})")
    _, missing = find_kernels(provider)
    if missing:
        pytest.skip(missing)


GPU_CASES = [("default", "straight-through"), ("paper", "straight-through"), ("paper", "full")]


@pytest.mark.parametrize("provider", ["cuda", "tensorrt"])
@pytest.mark.parametrize(("preset", "gradient"), GPU_CASES, ids=["default", "paper", "paper-full"])
def test_the_device_loop_matches_the_host_loop_on_a_gpu(samples, provider, preset, gradient):
    needs_device_loop(provider)
    defender = Defender(BUNDLE, PRESETS[preset].with_(gradient=gradient), provider=provider, device_loop=True)
    device = defender(samples)
    assert device.device_loop and device.step_ops == "cuda"
    defender.device_loop = None  # the host loop on the same sessions: the same U-Net kernels, only the steps move
    host = defender(samples)
    assert not host.device_loop
    np.testing.assert_array_equal(device.labels, host.labels)
    difference = np.abs(device.reconstructions - host.reconstructions)
    if gradient == "full":  # the VJP graph's transposed convolutions may sum in any order (see test_runtime)
        assert difference.mean() < 1e-3 and difference.max() < 0.1
    else:
        assert difference.max() < 1e-4
        np.testing.assert_allclose(device.reconstruction_error, host.reconstruction_error, rtol=1e-4)


@pytest.mark.parametrize("preset", ["default", "paper"])
def test_the_device_loop_gives_the_cpu_providers_labels(samples, preset):
    needs_device_loop("cuda")
    device = Defender(BUNDLE, preset, provider="cuda", device_loop=True)(samples)
    cpu = Defender(BUNDLE, preset, provider="cpu")(samples)
    np.testing.assert_array_equal(device.labels, cpu.labels)
    # The CUDA provider's convolutions may use TF32, and Adam's first steps move a pixel by about lr * sign(g)
    # wherever rounding flips a near-zero gradient: a loose bound on the whole, not a pixel's.
    assert np.abs(device.reconstructions - cpu.reconstructions).mean() < 1e-2
