"""The weights that ship: all present, checksums match, tampering is caught, records are complete."""

import json
import shutil

import pytest
from safetensors import safe_open

from diffdefense import shipped

DATASETS = ("mnist", "kmnist")
MODELS = ("model_a", "model_b", "unet")
# MNIST's BatchNorm U-Nets (wide; wide with ReLU; narrow; narrow on t < 15, behind mnist-fast; that one distilled
# from the wide one) and the Defense-GAN WGAN generator
EXTRA_MODELS = {
    "mnist": ("unet_bn", "unet_bn_relu", "unet_bn_small", "unet_bn_small_t15", "unet_bn_small_distilled", "generator")
}
EXPECTED = {
    f"{d}/{m}.{ext}" for d in DATASETS for m in (*MODELS, *EXTRA_MODELS.get(d, ())) for ext in ("safetensors", "json")
}


def test_manifest_lists_every_shipped_model_and_record():
    assert set(shipped.read_manifest()["files"]) == EXPECTED


def test_every_shipped_file_matches_its_checksum():
    assert set(shipped.verify_all()) == EXPECTED


def test_shipped_files_are_small():
    sizes = [entry["bytes"] for entry in shipped.read_manifest()["files"].values()]
    assert max(sizes) < 5_000_000


@pytest.fixture
def weights_copy(tmp_path):
    return shutil.copytree(shipped.WEIGHTS_DIR, tmp_path / "weights")


def test_a_flipped_bit_is_refused_naming_the_file(weights_copy):
    path = weights_copy / "mnist" / "unet.safetensors"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(shipped.ChecksumError, match=r"mnist/unet.safetensors has sha256 .* but the manifest records"):
        shipped.verify_all(weights_copy)


def test_swapped_files_are_refused(weights_copy):
    a, b = weights_copy / "kmnist" / "model_a.safetensors", weights_copy / "mnist" / "model_a.safetensors"
    a_bytes = a.read_bytes()
    a.write_bytes(b.read_bytes())
    b.write_bytes(a_bytes)
    with pytest.raises(shipped.ChecksumError, match="model_a.safetensors"):
        shipped.verify_all(weights_copy)


def test_a_missing_file_is_named(weights_copy):
    (weights_copy / "kmnist" / "model_b.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="kmnist/model_b.safetensors"):
        shipped.verify_all(weights_copy)


def test_an_unlisted_file_is_refused():
    with pytest.raises(FileNotFoundError, match="is not listed"):
        shipped.verify_file("mnist/model_c.safetensors")


@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("model", MODELS)
def test_each_model_has_a_training_record(dataset, model):
    record = json.loads((shipped.WEIGHTS_DIR / dataset / f"{model}.json").read_text())
    assert record["command"].startswith("diffdefense train")
    assert f"--dataset {dataset}" in record["command"] and f"--dataset {dataset}" in record["command"]
    assert {"seed", "epochs"} <= set(record["config"]) and record["wall_seconds"] > 0
    assert record["final_metrics"] and record["data"]
    with safe_open(str(shipped.WEIGHTS_DIR / dataset / f"{model}.safetensors"), "np") as handle:
        assert handle.metadata()["dataset"] == dataset
