"""The defence loop's elementwise steps, from the compiled extension (cpp_ext, module diffdefense_fused) or from
numpy (diffdefense.runtime.steps): the same signatures and, within float32 rounding, the same numbers.

load_step_ops("auto") takes the extension when it imports and numpy otherwise; the result's name says which.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np

from diffdefense.runtime import steps
from diffdefense.runtime.backends import STEP_OPS, BackendError

KINDS = STEP_OPS  # ("auto", "cpp_ext", "numpy"), written once in BackendOptions
INSTALL_HINT = "install it from the repository root with `python -m pip install ./cpp_ext` (needs a C++ compiler)"


class NumpyStepOps:
    """steps.py, with the extension's per-candidate coefficients (float32 arrays of length N) as well."""

    name = "numpy"

    @staticmethod
    def reverse_step(x, eps, a, b, s, noise):
        a, b, s = (c.reshape(-1, *[1] * (x.ndim - 1)) if isinstance(c, np.ndarray) else c for c in (a, b, s))
        return steps.reverse_step(x, eps, a, b, s, noise)

    loss_and_gradient = staticmethod(steps.loss_and_gradient)
    adam_update = staticmethod(steps.adam_update)


class CppStepOps:
    """The extension's CPU ops. Unlike the extension's default, adam_update leaves z alone, as steps.py does."""

    name = "cpp_ext"

    def __init__(self, extension: ModuleType) -> None:
        self.extension = extension
        self.reverse_step = extension.reverse_step
        self.loss_and_gradient = extension.loss_and_gradient

    def adam_update(self, z, grad, m, v, step, lr, beta1, beta2, eps=1e-8):
        return self.extension.adam_update(z, grad, m, v, step, lr, beta1, beta2, eps, out=np.empty_like(z))


def load_step_ops(kind: str = "auto") -> NumpyStepOps | CppStepOps:
    """'cpp_ext' (the extension, or BackendError if it is missing), 'numpy', or 'auto' (the extension if present)."""
    if kind not in KINDS:
        raise ValueError(f"Expected step_ops in {list(KINDS)}, but got {kind!r}.")
    if kind == "numpy":
        return NumpyStepOps()
    try:
        import diffdefense_fused
    except ImportError as error:
        if kind == "auto":
            return NumpyStepOps()
        raise BackendError(
            f"step_ops='cpp_ext' needs the compiled extension diffdefense_fused, which does not import ({error}); "
            f"{INSTALL_HINT}, or use step_ops='numpy'."
        ) from error
    return CppStepOps(diffdefense_fused)
