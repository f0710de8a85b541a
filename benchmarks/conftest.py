import numpy as np
import pytest

from diffdefense.data import load_dataset
from diffdefense.shipped import BUNDLES_DIR
from tests.conftest import real_data_root  # noqa: F401  (the benchmarks read the real data like the tests)

BATCH = 8  # MNIST test images per defended batch


@pytest.fixture(scope="module")
def images(real_data_root):  # noqa: F811
    """The first BATCH MNIST test images, with the shipped bundle present."""
    if not (BUNDLES_DIR / "mnist").is_dir():
        pytest.skip("no shipped MNIST bundle: make one with tools/export.py")
    return load_dataset("mnist", "test", real_data_root).subset(np.arange(BATCH)).float_images()
