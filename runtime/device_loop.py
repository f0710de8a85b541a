"""The defence loop with its state on the GPU: onnxruntime's CUDA or TensorRT provider runs the U-Net (and its VJP
graph) through IOBinding on device buffers, and the CUDA module of cpp_ext (diffdefense_fused._cuda) runs the
elementwise steps (reverse step, loss and gradient, Adam) on the same buffers. Per call the latents, targets and
the call's noise (drawn on the host, as for every backend) go up once; images, losses and latents come back once.

Synchronisation. The kernels go to the legacy default stream (0), so they run in launch order. onnxruntime runs on a
stream of its own, which need not wait for that one (a non-blocking stream does not), so before each run the loop
waits for the device (kernels.synchronize(0), cudaDeviceSynchronize); and a run returns only once the provider's
stream has finished (the run option below, onnxruntime's default, set because the loop relies on it), so kernels
launched after it see its outputs. IOBinding.synchronize_inputs() would do the same wait through the provider's
Sync(), which the CUDA provider implements as cudaDeviceSynchronize; calling it ourselves gives the TensorRT
provider the same guarantee. Handing the provider our own stream (user_compute_stream) would save these host waits,
but needs the sessions built with that stream.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Protocol

import numpy as np

from diffdefense.runtime.backends import PROVIDERS, BackendError, Runner, available_providers
from diffdefense.runtime.fused import INSTALL_HINT
from diffdefense.settings import DefenseSettings

DEVICE_PROVIDERS = ("cuda", "tensorrt")


class SessionRunner(Runner, Protocol):
    """A Runner whose onnxruntime session the loop binds its device buffers to (OnnxRunner on 'cuda' or
    'tensorrt'): session is an onnxruntime InferenceSession, input_names its inputs in run's order."""

    session: Any
    input_names: list[str]


def find_kernels(provider: str) -> tuple[ModuleType | None, str | None]:
    """(the CUDA kernels module, None) when the device loop can run on this provider here, else (None, a
    sentence naming what is missing)."""
    if provider not in DEVICE_PROVIDERS:
        return None, f"The device loop runs on onnxruntime's 'cuda' or 'tensorrt' provider, not on {provider!r}."
    wanted, installed = PROVIDERS[provider], available_providers()
    if wanted not in installed:
        return None, (
            f"The device loop needs onnxruntime's {wanted}, which this onnxruntime lacks (installed: "
            f"{', '.join(installed) or 'none'}); install onnxruntime-gpu with pip install 'diffdefense[gpu]'."
        )
    try:
        import diffdefense_fused

        kernels = diffdefense_fused.cuda()
    except ImportError as error:
        return None, (
            f"The device loop needs the CUDA module of the compiled extension (diffdefense_fused._cuda), which "
            f"does not import ({error}); {INSTALL_HINT} and nvcc on PATH."
        )
    if kernels.device_count() < 1:
        return None, "The device loop needs a CUDA device, but this process sees none (no GPU, or no driver)."
    return kernels, None


def choose_kernels(provider: str, requested: bool | None, step_ops: str) -> ModuleType | None:
    """The kernels when the device loop is to run: requested True (BackendError naming what is missing if it
    cannot), None (whenever it can and step_ops is 'auto'), False (never)."""
    if requested and step_ops != "auto":
        raise ValueError(
            f"device_loop=True runs the elementwise steps on the GPU, but step_ops={step_ops!r} asks for a host "
            "implementation; leave step_ops='auto'."
        )
    if requested is False or step_ops != "auto":
        return None
    kernels, missing = find_kernels(provider)
    if missing and requested:
        raise BackendError(missing)
    return kernels


def buffer_shapes(settings: DefenseSettings, candidates: int, image_shape: tuple[int, ...]) -> dict[str, tuple]:
    """The device buffers of one call: name -> shape. 'chain' holds the chain's states: all T* of them in the
    full-gradient mode (the VJP graph needs each step's input), one updated in place otherwise."""
    image = (candidates, *image_shape)
    full = settings.gradient == "full"
    shapes = {name: image for name in ("z", "target", "eps", "image", "grad", "m", "v")}
    shapes["loss"] = (candidates,)
    shapes["noise"] = (settings.iterations if settings.fresh_noise else 1, settings.num_steps, *image)
    shapes["chain"] = (settings.num_steps if full else 1, *image)
    if full:
        shapes["vjp"] = image
    return shapes


class DeviceLoop:
    """run(...) -> (images, losses, latents) of all candidates, as the Defender's host loop returns them.

    unet, unet_vjp: SessionRunners, OnnxRunners on the CUDA or TensorRT provider (unet_vjp None outside the
    full-gradient mode), owned by the caller;
    kernels: diffdefense_fused._cuda; device: where onnxruntime allocates the buffers, 'cuda' (device 0, where the
    provider and the kernels run by default). tests/test_device_loop.py passes 'cpu' with numpy stand-ins for the
    kernels, to check the loop's bookkeeping without a GPU; name then says 'cpu'.
    """

    def __init__(
        self, unet: SessionRunner, unet_vjp: SessionRunner | None, kernels: ModuleType, device: str = "cuda"
    ) -> None:
        import onnxruntime

        self.ort_value = onnxruntime.OrtValue
        self.unet, self.unet_vjp = unet, unet_vjp
        self.kernels, self.device = kernels, device
        self.name = device  # what the Defender reports as its step_ops
        self.run_options = onnxruntime.RunOptions()
        self.run_options.add_run_config_entry("disable_synchronize_execution_providers", "0")

    def _upload(self, array: np.ndarray):
        return self.ort_value.ortvalue_from_numpy(np.ascontiguousarray(array), self.device, 0)

    def _empty(self, shape: tuple[int, ...]):
        return self.ort_value.ortvalue_from_shape_and_type(list(shape), np.float32, self.device, 0)

    def _bind(self, runner: SessionRunner, inputs: tuple, output):
        binding = runner.session.io_binding()
        for name, value in zip(runner.input_names, inputs, strict=True):
            binding.bind_ortvalue_input(name, value)
        binding.bind_ortvalue_output(runner.session.get_outputs()[0].name, output)
        return binding

    def _run(self, runner: SessionRunner, binding) -> None:
        self.kernels.synchronize(0)  # the kernels that wrote this run's inputs have finished (module docstring)
        try:
            runner.session.run_with_iobinding(binding, self.run_options)
        except Exception as err:  # onnxruntime raises its own types
            raise BackendError(
                f"onnxruntime's {runner.provider} failed while running {runner.name} on the device loop's buffers: "
                f"{err}"
            ) from err

    def _download(self, value, shape: tuple[int, ...]) -> np.ndarray:
        host = np.empty(shape, np.float32)
        self.kernels.copy_to_host(host, value.data_ptr())
        return host

    def run(self, z, target, noise, timesteps, coefficients, settings: DefenseSettings, gain: float):
        """z, target (N, C, H, W) float32; noise (runs, T*, N, C, H, W); timesteps, coefficients: per chain step;
        gain: d x_0 / d z for the straight-through gradient."""
        s, k, full = settings, self.kernels, settings.gradient == "full"
        rows, row_size = z.shape[0], int(np.prod(z.shape[1:]))
        shapes = buffer_shapes(s, rows, z.shape[1:])
        held = {"z": self._upload(z), "target": self._upload(target), "noise": self._upload(noise)}
        held |= {name: self._upload(np.zeros_like(z)) for name in ("m", "v")}  # Adam's moments start at 0
        held |= {name: self._empty(shapes[name]) for name in ("eps", "image", "grad", "loss", "vjp") if name in shapes}
        chain = [self._empty(z.shape) for _ in range(shapes["chain"][0])]
        outputs = chain if full else chain * s.num_steps  # step i writes outputs[i] and reads the one before it
        inputs = [held["z"], *outputs[:-1]]
        steps = [self._upload(np.full(rows, t, dtype=np.int64)) for t in timesteps]
        unet_runs = [self._bind(self.unet, (x, t), held["eps"]) for x, t in zip(inputs, steps, strict=True)]
        if full:
            vjp_inputs = [(x, t, held["grad"]) for x, t in zip(inputs, steps, strict=True)]
            vjp_runs = [self._bind(self.unet_vjp, args, held["vjp"]) for args in vjp_inputs]
        p = {name: value.data_ptr() for name, value in held.items()}  # OrtValues keep their memory: fixed pointers
        step_bytes = rows * row_size * np.dtype(np.float32).itemsize
        rates, (beta1, beta2) = s.learning_rates(), s.adam_betas
        for run in range(s.iterations):
            run_noise = p["noise"] + (run if shapes["noise"][0] > 1 else 0) * s.num_steps * step_bytes
            for i in range(s.num_steps):
                self._run(self.unet, unet_runs[i])
                x, out = inputs[i].data_ptr(), outputs[i].data_ptr()
                k.reverse_step(x, p["eps"], run_noise + i * step_bytes, out, rows, row_size, *coefficients[i])
            update = run < s.num_updates
            grad = p["grad"] if update else 0  # 0: no gradient; the last run only chooses the best candidate
            scale = 1.0 if full else gain  # full: d loss / d x_0, carried back through the chain below
            loss_buffers = (outputs[-1].data_ptr(), p["target"], p["image"], p["loss"], grad)
            k.loss_and_gradient(*loss_buffers, rows, row_size, scale, s.output_map)
            if update and full:
                for i in reversed(range(s.num_steps)):  # g <- a g + b (d eps / d x_i)^T g
                    self._run(self.unet_vjp, vjp_runs[i])
                    a, b, _ = coefficients[i]  # s = 0: the noise argument (here vjp, any valid buffer) drops out
                    k.reverse_step(grad, p["vjp"], p["vjp"], grad, rows, row_size, a, b, 0.0)
            if update:
                k.adam_update(p["z"], grad, p["m"], p["v"], 0, rows * row_size, run + 1, rates[run], beta1, beta2)
        k.synchronize(0)  # surfaces an asynchronous kernel error here, as a RuntimeError that names it
        return tuple(self._download(held[name], shapes[name]) for name in ("image", "loss", "z"))
