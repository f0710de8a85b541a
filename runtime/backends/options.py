"""A Defender's backend choice in one frozen object, its defaults written once; checked when it is made."""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Literal, get_args

Provider = Literal["cpu", "cuda", "tensorrt", "tensorrt-engine"]
StepOps = Literal["auto", "cpp_ext", "numpy"]
PROVIDER_NAMES: tuple[str, ...] = get_args(Provider)
STEP_OPS: tuple[str, ...] = get_args(StepOps)


@dataclass(frozen=True)
class BackendOptions:
    """Where a Defender runs its models and its elementwise steps.

    provider: 'cpu', 'cuda' or 'tensorrt' (onnxruntime execution providers), or 'tensorrt-engine' (TensorRT itself,
        with engines built for this GPU on first use and cached); never a silent fallback.
    threads: onnxruntime's threads (intra-op) for one model call in all; None: onnxruntime's default, one per usable
        core. A sharded U-Net call shares them among its parts.
    shards: the parts each U-Net call on the CPU provider cuts its batch into, each run at the same time by its own
        session with threads / shards threads (runtime/backends/sharded.py); every image's result is the same.
        None: 2 where the thread budget has at least 2 threads, else 1; 1: one session per graph. Other providers
        run one part (None or 1).
    fp16: half-precision TensorRT engines ('tensorrt-engine' only; make_runner refuses it elsewhere).
    step_ops: the elementwise steps' implementation, 'auto' (cpp_ext if installed), 'cpp_ext' or 'numpy'.
    device_loop: keep the loop's buffers on the GPU (runtime/device_loop.py): None runs it wherever it can (provider
        'cuda' or 'tensorrt', step_ops 'auto', cpp_ext's CUDA module, a visible GPU), True insists (BackendError
        naming what is missing), False never.
    spin: onnxruntime's threads spin between the operators of a call and stop when it returns (True), or sleep
        between operators (False: less CPU taken from other work on the same cores, slower calls).

    Example: Defender(bundle, "default", backend=BackendOptions(provider="cuda", device_loop=True)).
    """

    provider: Provider = "cpu"
    threads: int | None = None
    fp16: bool = False
    step_ops: StepOps = "auto"
    device_loop: bool | None = None
    spin: bool = True
    shards: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.provider, str) or self.provider not in PROVIDER_NAMES:
            raise ValueError(f"Expected provider to be one of {list(PROVIDER_NAMES)}, but got {self.provider!r}.")
        if self.threads is not None:
            if not isinstance(self.threads, numbers.Integral) or isinstance(self.threads, bool) or self.threads < 1:
                raise ValueError(f"Expected threads to be None or a positive integer, but got {self.threads!r}.")
            object.__setattr__(self, "threads", int(self.threads))
        if self.shards is not None:
            if not isinstance(self.shards, numbers.Integral) or isinstance(self.shards, bool) or self.shards < 1:
                raise ValueError(f"Expected shards to be None or a positive integer, but got {self.shards!r}.")
            object.__setattr__(self, "shards", int(self.shards))
            if self.shards > 1 and self.provider != "cpu":
                raise ValueError(
                    f"Expected shards None or 1 with provider {self.provider!r}: only the CPU provider shards a call."
                )
        if not isinstance(self.fp16, bool):
            raise ValueError(f"Expected fp16 to be True or False, but got {self.fp16!r}.")
        if not isinstance(self.step_ops, str) or self.step_ops not in STEP_OPS:
            raise ValueError(f"Expected step_ops in {list(STEP_OPS)}, but got {self.step_ops!r}.")
        if not isinstance(self.spin, bool):
            raise ValueError(f"Expected spin to be True or False, but got {self.spin!r}.")
        if self.device_loop is not None and not isinstance(self.device_loop, bool):
            raise ValueError(f"Expected device_loop to be None, True or False, but got {self.device_loop!r}.")
