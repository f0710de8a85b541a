"""The defence loop's elementwise work in numpy: the reverse step, the final-step loss with its
straight-through gradient, and the Adam update. These are the operations that cpp_ext fuses; the numbers
here are the ones it must reproduce, and the PyTorch reference's too."""

from __future__ import annotations

import numpy as np


def reverse_step(x: np.ndarray, eps: np.ndarray, a: float, b: float, s: float, noise: np.ndarray) -> np.ndarray:
    """x_prev = a x + b eps + s n (DDIM formula 12; eta = 1 is the DDPM step)."""
    return a * x + b * eps + s * noise


def unit_to_image(unit: np.ndarray, output_map: str) -> np.ndarray:
    """(x0 + 1) / 2 -> the image in [0, 1]: its sigmoid, or clipped (see diffdefense.settings)."""
    return 1.0 / (1.0 + np.exp(-unit)) if output_map == "sigmoid" else np.clip(unit, 0.0, 1.0)


def loss_and_gradient(x0: np.ndarray, target: np.ndarray, gain: float, output_map: str, with_gradient: bool = True):
    """The output image, its per-candidate MSE to the target, and the straight-through gradient on z.

    x0 (the chain output on the model's [-1, 1] scale), target: (N, C, H, W). The image is (x0 + 1) / 2 clipped
    to [0, 1], or its sigmoid (see diffdefense.settings). Returns (image, loss (N,), grad (N, C, H, W) or None),
    where grad = gain * d loss / d x0 and gain = prod(a) = d x0 / d z with eps held constant.
    """
    unit = (x0 + 1.0) * 0.5
    image = unit_to_image(unit, output_map)
    diff = image - target
    pixels = diff[0].size
    loss = np.einsum("nchw,nchw->n", diff, diff) / pixels
    if not with_gradient:  # the last run only chooses the best candidate
        return image, loss, None
    if output_map == "sigmoid":
        slope = 0.5 * image * (1.0 - image)
    else:  # clip: the slope 0.5 passes where (x0 + 1) / 2 lies in [0, 1], bounds included, as torch.clamp
        slope = np.where((unit >= 0.0) & (unit <= 1.0), 0.5, 0.0)
    grad = (gain * 2.0 / pixels) * diff * slope
    return image, loss, grad.astype(x0.dtype, copy=False)


def adam_update(z, grad, m, v, step: int, lr: float, beta1: float, beta2: float, eps: float = 1e-8):
    """Adam (Kingma and Ba 2015, Algorithm 1), as torch.optim.Adam computes it. Updates m, v in place;
    returns the new z. step counts from 1."""
    m *= beta1
    m += (1.0 - beta1) * grad
    v *= beta2
    v += (1.0 - beta2) * grad * grad
    denominator = np.sqrt(v / (1.0 - beta2**step)) + eps
    return z - (lr / (1.0 - beta1**step)) * m / denominator
