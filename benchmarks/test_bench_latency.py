"""Latency of the runtime per backend and setting: end to end (defence and classifier, per image, batches of 1
and 8) and the U-Net engine alone (one call on all B x R candidates), with p50 and p99 over the rounds.

    python -m pytest benchmarks/test_bench_latency.py --benchmark-json benchmarks/results/latency_cpu.json
    python tools/latency_table.py benchmarks/results/latency_cpu.json   # docs/performance.md's table and the plot

Backends that this machine lacks are skipped with the reason. Settings: the two presets and the T*, L, R
variants of the paper's optimiser that tools/tune_preset.py measured for accuracy (so the plot can join them).
"""

import numpy as np
import pytest

from diffdefense.runtime.backends import PROVIDERS, BackendError, available_providers
from diffdefense.runtime.defender import Defender
from diffdefense.settings import PRESETS
from diffdefense.shipped import BUNDLES_DIR

SETTINGS = {
    "paper": PRESETS["paper"],
    "default": PRESETS["default"],
    "R3 T*10 L4": PRESETS["paper"].with_(num_candidates=3, num_steps=10),
    "R6 T*5 L4": PRESETS["paper"].with_(num_candidates=6, num_steps=5),
    "R12 T*2 L2": PRESETS["default"].with_(iterations=2),
    "R12 T*2 L3": PRESETS["default"].with_(iterations=3),
}
BACKENDS = {
    "onnxruntime-cpu": "cpu",
    "onnxruntime-cuda": "cuda",
    "onnxruntime-tensorrt": "tensorrt",
    "tensorrt": "tensorrt-engine",
}
ROUNDS = {1: 10, 8: 4}


def make_defender(backend: str, settings) -> Defender:
    provider = BACKENDS[backend]
    if provider == "tensorrt-engine":
        pytest.importorskip("tensorrt", reason="TensorRT is not installed")
    elif PROVIDERS[provider] not in available_providers():
        pytest.skip(f"onnxruntime has no {provider} provider here (installed: {', '.join(available_providers())})")
    try:
        return Defender(BUNDLES_DIR / "mnist", settings, provider=provider)
    except BackendError as err:
        pytest.skip(f"{backend} cannot run here: {err}")


def record(benchmark, backend: str, setting: str, batch: int, defender: Defender, kind: str) -> None:
    """Milliseconds per image (end to end) or per call (engine), p50 and p99 over the rounds."""
    data = np.array(benchmark.stats.stats.sorted_data)
    per = batch if kind == "end-to-end" else 1
    benchmark.extra_info.update(
        backend=backend,
        setting=setting,
        settings=defender.settings.to_dict(),
        batch=batch,
        kind=kind,
        unet_evaluations=defender.settings.unet_evaluations,
        step_ops=defender.step_ops_name,
        precision=defender.precision,  # the bundle's default on the CPU provider (int8 for mnist), float32 elsewhere
        p50_ms=1000 * float(np.percentile(data, 50)) / per,
        p99_ms=1000 * float(np.percentile(data, 99)) / per,
    )


@pytest.mark.parametrize("batch", sorted(ROUNDS))
@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("backend", list(BACKENDS))
def test_end_to_end(benchmark, images, backend, setting, batch):
    defender = make_defender(backend, SETTINGS[setting])
    result = benchmark.pedantic(defender, args=(images[:batch],), rounds=ROUNDS[batch], warmup_rounds=1)
    record(benchmark, backend, setting, batch, defender, "end-to-end")
    assert result.labels.shape == (batch,)


@pytest.mark.parametrize("setting", ["paper", "default"])
@pytest.mark.parametrize("backend", list(BACKENDS))
def test_unet_engine(benchmark, images, backend, setting):
    """One U-Net call on the B x R candidates of a batch of 8: the engine alone, no loop around it."""
    defender = make_defender(backend, SETTINGS[setting])
    n = len(images) * defender.settings.num_candidates
    x = np.random.default_rng(0).standard_normal((n, 1, 28, 28), dtype=np.float32)
    t = np.full(n, defender.chain.timesteps[0], dtype=np.int64)
    eps = benchmark.pedantic(defender.unet.run, args=(x, t), rounds=20, warmup_rounds=2)
    record(benchmark, backend, setting, len(images), defender, "unet-engine")
    assert eps.shape == x.shape
