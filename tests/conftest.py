import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from diffdefense.data import IMAGE_MAGIC, LABEL_MAGIC, default_data_root


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx_folder(folder: Path, n_train: int = 64, n_test: int = 32, gz: bool = True, seed: int = 0) -> Path:
    """A tiny MNIST-format folder: blobs of random digits whose label is learnable from the image."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
        for i, label in enumerate(labels):  # a bright bar whose row encodes the label
            images[i, 2 + 2 * label : 4 + 2 * label, 4:24] = 255
        for kind, array, magic in (("images-idx3", images, IMAGE_MAGIC), ("labels-idx1", labels, LABEL_MAGIC)):
            raw = idx_bytes(array, magic)
            name = f"{prefix}-{kind}-ubyte"
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(raw))
            else:
                (folder / name).write_bytes(raw)
    return folder


@pytest.fixture
def tiny_data_root(tmp_path: Path) -> Path:
    """A data root with a tiny mnist/ folder (gzipped IDX)."""
    write_idx_folder(tmp_path / "data" / "mnist")
    return tmp_path / "data"


@pytest.fixture(scope="session")
def real_data_root() -> Path:
    """The data root holding the real MNIST and KMNIST files; the test is skipped, saying why, where it does not."""
    root = default_data_root()
    missing = [name for name in ("mnist", "kmnist") if not (root / name / "t10k-images-idx3-ubyte.gz").is_file()]
    if missing:
        pytest.skip(
            f"the real {' and '.join(missing)} data are not in {root}: set DIFFDEFENSE_DATA to a folder holding "
            f"them, or run `diffdefense data fetch {missing[0]}`"
        )
    return root


@dataclass(frozen=True)
class ExportedBundle:
    path: Path
    unet: object
    classifier: object


@pytest.fixture(scope="session")
def exported_bundle(tmp_path_factory) -> ExportedBundle:
    """A bundle exported from small random-weight models (fast, and independent of the shipped weights)."""
    torch = pytest.importorskip("torch")
    import diffdefense.export.bundle as bundle_module
    from diffdefense.schedule import NoiseSchedule
    from diffdefense.training.models import ModelA, UNet

    torch.manual_seed(0)
    unet, classifier = UNet().eval(), ModelA().eval()
    root = tmp_path_factory.mktemp("data")
    write_idx_folder(root / "mnist")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bundle_module, "load_unet", lambda dataset, name: (unet, NoiseSchedule.linear()))
        patch.setattr(bundle_module, "load_classifier", lambda dataset, arch: classifier)
        patch.setattr(bundle_module, "source_checksums", lambda dataset, name: {"unet": "test", "model_a": "test"})
        # the paper preset's 15 timesteps would take 15 folded graphs: tests/test_timestep_bundle.py exports those
        path = bundle_module.export_bundle(
            "mnist",
            tmp_path_factory.mktemp("out") / "bundle",
            "paper",
            root,
            calibration_images=8,
            unet_name="unet",
            folded=False,
        )
    return ExportedBundle(path, unet, classifier)
