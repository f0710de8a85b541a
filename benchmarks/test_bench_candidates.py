"""Per-image latency of the runtime at the `default` preset with fewer candidates R (the cost lever that changes
accuracy; pytest-benchmark, not in the default test run):

    python -m pytest benchmarks/test_bench_candidates.py --benchmark-json benchmarks/results/candidates_cpu.json

The shipped MNIST bundle's folded float32 graphs (the default runtime), in batches of 8 and frame by frame; each
row records its U-Net evaluations per image. The accuracy of each R on attacked training images is the preset
sweep's (docs/performance.md, the ablation); the CPU model is in the JSON's machine_info.
"""

import numpy as np
import pytest

from benchmarks.conftest import BATCH
from diffdefense.runtime.defender import Defender
from diffdefense.settings import PRESETS
from diffdefense.shipped import BUNDLES_DIR

CANDIDATES = (12, 6, 4, 3)


@pytest.mark.parametrize("batch_size", (BATCH, 1))
@pytest.mark.parametrize("num_candidates", CANDIDATES)
def test_runtime_with_fewer_candidates(benchmark, images, num_candidates, batch_size):
    settings = PRESETS["default"].with_(num_candidates=num_candidates)
    with Defender(BUNDLES_DIR / "mnist", settings, unet_graphs="folded") as defender:
        batches = [images[i : i + batch_size] for i in range(0, len(images), batch_size)]
        labels = benchmark.pedantic(
            lambda: np.concatenate([defender(batch).labels for batch in batches]), rounds=3, warmup_rounds=1
        )
    assert labels.shape == (len(images),)
    benchmark.extra_info.update(
        ms_per_image=1000 * benchmark.stats.stats.median / len(images),
        batch_size=batch_size,
        num_candidates=num_candidates,
        unet_evaluations=settings.unet_evaluations,
    )
