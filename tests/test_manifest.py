"""The typed bundle manifest: the shipped manifests read into BundleManifest and write back byte for byte, optional
keys stay optional, and one sha256 serves the weights, the bundles and the engines."""

import hashlib
import json
from dataclasses import replace

import pytest

from diffdefense import shipped
from diffdefense.checksums import sha256_of
from diffdefense.runtime.manifest import BundleError, BundleManifest, DetectionRecord, FileEntry
from diffdefense.settings import PRESETS
from diffdefense.shipped import BUNDLES_DIR


def shipped_manifest(dataset: str) -> tuple[str, BundleManifest]:
    path = BUNDLES_DIR / dataset / "manifest.json"
    text = path.read_text()
    return text, BundleManifest.from_json(json.loads(text), path)


@pytest.mark.parametrize("dataset", ["mnist", "mnist-fast", "kmnist"])
def test_the_shipped_manifests_write_back_byte_for_byte(dataset):
    text, manifest = shipped_manifest(dataset)
    assert json.dumps(manifest.to_json(), indent=2, ensure_ascii=False) + "\n" == text
    assert manifest.to_json() == json.loads(text)  # JSON values throughout: lists, not tuples
    assert BundleManifest.from_json(manifest.to_json(), BUNDLES_DIR) == manifest


def test_fields_are_typed_and_frozen():
    _, m = shipped_manifest("mnist")
    assert m.dataset == "mnist" and m.labels == tuple("0123456789") and m.image_shape == (1, 28, 28)
    assert m.default_preset == "default" and m.default_settings == PRESETS["default"]
    assert isinstance(m.files["unet.onnx"], FileEntry) and m.roles["unet"] == "unet.onnx"
    assert m.files["unet.onnx"].sha256 == sha256_of(BUNDLES_DIR / "mnist" / "unet.onnx")
    assert isinstance(m.detection, DetectionRecord) and m.detection.settings == m.default_settings
    assert m.schedule().num_steps == len(m.betas) == 100
    with pytest.raises(AttributeError):
        m.dataset = "kmnist"
    with pytest.raises(TypeError):
        m.roles["unet"] = "classifier.onnx"  # a read-only view


def test_optional_keys_stay_optional():
    _, m = shipped_manifest("mnist")
    bare = replace(m, default_preset=None, detection=None, parity=None, sources=None, versions=None)
    written = bare.to_json()
    assert not {"detection", "parity", "sources", "versions"} & set(written) and "preset" not in written["defaults"]
    assert BundleManifest.from_json(written, BUNDLES_DIR) == bare
    record = DetectionRecord(threshold=0.5, settings=PRESETS["paper"])
    settings = json.loads(json.dumps(PRESETS["paper"].to_dict()))
    assert record.to_json() == {"score": "best_mse", "threshold": 0.5, "settings": settings}


def test_a_detection_record_without_a_score_is_the_best_candidates_error_and_an_unknown_score_is_refused():
    manifest = json.loads((BUNDLES_DIR / "mnist" / "manifest.json").read_text())
    assert BundleManifest.from_json(manifest, BUNDLES_DIR).detection.score == "refined_l1"
    del manifest["detection"]["score"]  # a bundle exported before the score was recorded
    assert BundleManifest.from_json(manifest, BUNDLES_DIR).detection.score == "best_mse"
    manifest["detection"]["score"] = "max_pixel"
    with pytest.raises(BundleError, match="the detection's score to be one of"):
        BundleManifest.from_json(manifest, BUNDLES_DIR)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.update(parity=[1.0]), "'parity' to map checks to their errors"),
        (lambda m: m.update(versions={"onnx": 1}), "'versions' to map packages to versions"),
        (lambda m: m["defaults"].update(preset=3), "the default preset's name as a string"),
        (lambda m: m["detection"].update(calibration=5), "the detection's calibration as a string"),
    ],
)
def test_a_typed_optional_field_of_the_wrong_type_is_refused(change, message):
    manifest = json.loads((BUNDLES_DIR / "mnist" / "manifest.json").read_text())
    change(manifest)
    with pytest.raises(BundleError, match=message):
        BundleManifest.from_json(manifest, BUNDLES_DIR / "mnist" / "manifest.json")


def test_the_fast_bundle_carries_the_narrow_net_trained_on_the_defences_timesteps():
    _, m = shipped_manifest("mnist-fast")
    assert m.unet_source == "unet_bn_small_t15" and m.unet_trained_timesteps == 15
    assert m.default_settings == PRESETS["default"] and set(m.timestep_graphs) == {"float32"}


def test_a_unet_trained_on_low_timesteps_is_recorded_and_bounds_the_start_step():
    _, m = shipped_manifest("mnist")
    low = replace(m, unet_trained_timesteps=15)
    assert BundleManifest.from_json(low.to_json(), BUNDLES_DIR) == low
    written = replace(m, unet_trained_timesteps=10).to_json()  # the default settings start at 14
    with pytest.raises(BundleError, match=r"refining pass.s\) below the U-Net.s 10 trained timesteps, but got 14"):
        BundleManifest.from_json(written, BUNDLES_DIR)
    written["unet_trained_timesteps"] = 1000
    with pytest.raises(BundleError, match=r"unet_trained_timesteps as an integer in \[1, 100\]"):
        BundleManifest.from_json(written, BUNDLES_DIR)


def test_one_sha256_for_bytes_and_files(tmp_path):
    data = bytes(range(256)) * 5000  # more than one block
    (tmp_path / "blob").write_bytes(data)
    assert sha256_of(data) == sha256_of(tmp_path / "blob") == hashlib.sha256(data).hexdigest()
    assert shipped.sha256_of is sha256_of


def test_the_weights_manifest_uses_the_bundles_format_key(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"weights")
    (tmp_path / "manifest.json").write_text(json.dumps({"format": 1, "files": {}}))  # the key's earlier name
    assert shipped.read_manifest(tmp_path)["format_version"] == 1
    shipped.add_files(["a.bin"], tmp_path)
    written = json.loads((tmp_path / "manifest.json").read_text())
    assert written == {"format_version": 1, "files": {"a.bin": {"sha256": sha256_of(b"weights"), "bytes": 7}}}
    (tmp_path / "manifest.json").write_text(json.dumps({"format_version": 2, "files": {}}))
    with pytest.raises(ValueError, match="has format version 2, but format version 1 was expected"):
        shipped.read_manifest(tmp_path)


def test_the_runtime_refuses_settings_that_start_above_the_unets_trained_timesteps(tmp_path):
    import shutil

    from diffdefense.runtime.defender import Defender

    folder = shutil.copytree(BUNDLES_DIR / "mnist", tmp_path / "bundle")
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, "unet_trained_timesteps": 15}))
    with pytest.raises(
        ValueError, match="trained on timesteps below 15 only, but the settings start the chain at index 20"
    ):
        Defender(folder, PRESETS["default"].with_(start_step=20))
    with Defender(folder) as defender:  # the default settings start at 14
        assert defender.settings.start_step == 14


def test_a_shipped_bundle_loads_by_its_name_and_a_wrong_name_lists_them(tmp_path, monkeypatch):
    from diffdefense.runtime.bundle import load_bundle

    monkeypatch.chdir(tmp_path)  # no folder of that name here
    assert load_bundle("mnist").root == BUNDLES_DIR / "mnist"
    with pytest.raises(BundleError, match=r"but there is none \(the shipped bundles, by name: kmnist, mnist"):
        load_bundle("mnist-typo")
