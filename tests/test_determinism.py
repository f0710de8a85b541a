"""Determinism on the CPU backend (issue 7): the same seed and settings give the same labels, reconstructions and
errors, bit for bit, in this process, in two fresh processes, and in threads that share one Defender."""

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from diffdefense.runtime.defender import Defender
from diffdefense.shipped import BUNDLES_DIR, SAMPLES_DIR

BUNDLE = BUNDLES_DIR / "mnist"
FIELDS = ("labels", "reconstructions", "reconstruction_error")
RUN_AND_SAVE = """
import sys
import numpy as np
from diffdefense.runtime.defender import Defender
from diffdefense.shipped import BUNDLES_DIR, SAMPLES_DIR

images = np.load(SAMPLES_DIR / "mnist.npz")["images"][:4]
result = Defender(BUNDLES_DIR / "mnist", "default")(images)
for field in sys.argv[2:]:
    np.save(f"{sys.argv[1]}/{field}.npy", getattr(result, field))
print(result.step_ops)
"""


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.load(SAMPLES_DIR / "mnist.npz")["images"]


@pytest.fixture(scope="module")
def defender() -> Defender:
    return Defender(BUNDLE, "default")


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def test_two_processes_and_this_one_agree_bit_for_bit(defender, images, tmp_path):
    here = defender(images[:4])
    for run in ("first", "second"):
        out = tmp_path / run
        out.mkdir()
        done = subprocess.run(
            [sys.executable, "-c", RUN_AND_SAVE, str(out), *FIELDS], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == here.step_ops  # the same elementwise implementation ran
        for field in FIELDS:
            saved = np.load(out / f"{field}.npy")
            assert same_bits(saved, np.asarray(getattr(here, field))), f"{field} differs in the {run} process"


def test_threads_sharing_one_defender_get_the_single_threaded_results(defender, images):
    """Four threads on one Defender: the same batch four times, then four different batches at once (which would
    show results crossing between calls if the Defender kept per-call state)."""
    distinct = [images[i : i + 2] for i in range(0, 8, 2)]
    alone = [defender(batch) for batch in distinct]
    assert len({result.reconstructions.tobytes() for result in alone}) == 4  # distinct, so a mix-up would show
    with ThreadPoolExecutor(max_workers=4) as pool:
        together = list(pool.map(defender, [distinct[0]] * 4 + distinct))
    for i, shared in enumerate(together):
        one = alone[0] if i < 4 else alone[i - 4]
        for field in FIELDS:
            assert same_bits(getattr(shared, field), getattr(one, field)), f"{field} differs in call {i}"
