"""A data set of your own, end to end through the command line: train both models, export a bundle, defend. The weights
go to a folder of the test's own ($DIFFDEFENSE_WEIGHTS), never into the shipped one."""

import hashlib
import json

import numpy as np
import pytest
from click.testing import CliRunner

from diffdefense import shipped
from diffdefense.cli import main
from diffdefense.data import DATA_ENV_VAR, load_dataset
from tests.conftest import write_idx_folder

pytest.importorskip("torch")

CLASS_NAMES = [f"bar {row}" for row in range(10)]


def shipped_weights_fingerprint() -> dict[str, str]:
    return {
        str(path.relative_to(shipped.WEIGHTS_DIR)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(shipped.WEIGHTS_DIR.rglob("*"))
        if path.is_file()
    }


def invoke(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.slow
def test_a_dataset_of_your_own_trains_exports_and_defends(tmp_path, monkeypatch):
    folder = write_idx_folder(tmp_path / "data" / "bars", n_train=64, n_test=32, gz=False)
    (folder / "labels.txt").write_text("\n".join(CLASS_NAMES) + "\n")
    monkeypatch.setenv(DATA_ENV_VAR, str(tmp_path / "data"))
    monkeypatch.setenv(shipped.WEIGHTS_ENV_VAR, str(tmp_path / "weights"))
    before = shipped_weights_fingerprint()

    tiny = ["--dataset", "bars", "--epochs", "1", "--batch-size", "32"]
    invoke("train", "classifier", *tiny, "--out", str(tmp_path / "a"))
    invoke("train", "ddpm", *tiny, "--channels", "8", "8", "8", "--out", str(tmp_path / "u"))
    trained = {f"bars/{name}.{ext}" for name in ("model_a", "unet") for ext in ("json", "safetensors")}
    assert set(shipped.verify_all()) == trained  # the test's own weights folder, and nothing else in it

    # Evaluation needs Model B as well, and says how to train it.
    result = CliRunner().invoke(main, ["evaluate", "--dataset", "bars", "-n", "4", "--out", str(tmp_path / "report")])
    assert result.exit_code == 1 and "--dataset bars --arch model_b --out DIR" in result.output

    bundle = tmp_path / "bundle"
    invoke("export", "--dataset", "bars", "--calibration-images", "8", "--tensorrt", "off", "--out", str(bundle))
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["dataset"] == "bars" and manifest["labels"] == CLASS_NAMES
    assert manifest["detection"]["threshold"] > 0

    test = load_dataset("bars", "test").subset(np.arange(4))
    np.savez(tmp_path / "in.npz", images=test.images, labels=test.labels)
    report = json.loads(invoke("defend", str(tmp_path / "in.npz"), "--bundle", str(bundle), "--json"))
    assert [row["true_label"] for row in report["results"]] == [CLASS_NAMES[label] for label in test.labels]
    assert all(row["label"] in CLASS_NAMES for row in report["results"])

    assert shipped_weights_fingerprint() == before
