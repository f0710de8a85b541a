"""diffdefense_fused: DiffDefense's fused defence steps (the reverse step, the final-step loss with its
straight-through gradient, the Adam update) in C++ on the CPU and in CUDA on device pointers.

The CPU functions take C-contiguous numpy float32 arrays and compute what diffdefense.runtime.steps computes:

    reverse_step(x, eps, a, b, s, noise, out=None)
    loss_and_gradient(x0, target, gain, output_map, with_gradient=True) -> (image, loss, grad or None)
    adam_update(z, grad, m, v, step, lr, beta1, beta2, eps=1e-8, out=None)

Arrays of at least build_info()["parallel_min_elements"] elements are split over OpenMP threads
(set_num_threads, or OMP_NUM_THREADS). cuda() returns the CUDA module (diffdefense_fused._cuda) when this build has one.
"""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

from diffdefense_fused._core import _build_info, adam_update, loss_and_gradient, reverse_step, set_num_threads

__all__ = ["adam_update", "build_info", "cuda", "loss_and_gradient", "reverse_step", "set_num_threads"]


def build_info() -> dict:
    """version, compilers, OpenMP threads, and whether (and for which architectures) CUDA was built."""
    info = dict(_build_info())
    info["cuda_architectures"] = info["cuda_architectures"].split()
    return info


def cuda() -> ModuleType:
    """The CUDA ops module. Raises ImportError if this build has none."""
    if not _build_info()["cuda_built"]:
        raise ImportError("diffdefense_fused was built without CUDA (no nvcc, or DIFFDEFENSE_FUSED_CUDA=OFF).")
    return import_module("diffdefense_fused._cuda")


__version__ = _build_info()["version"]
