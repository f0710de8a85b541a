"""A bundle with folded timestep graphs (float32 and int8): what the manifest records, parity of the folded graphs
with the general one through the whole defence, the choice of graphs, and the refusals."""

import json
import shutil

import numpy as np
import pytest

from tests.conftest import write_idx_folder

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def folded_bundle(tmp_path_factory):
    """The default preset's bundle of a small random BatchNorm U-Net, with folded float32 and int8 graphs."""
    import diffdefense.export.bundle as bundle_module
    from diffdefense.schedule import NoiseSchedule
    from diffdefense.training.models import ModelA, UNet

    torch.manual_seed(0)
    unet, classifier = UNet((8, 16, 16), norm="batch").eval(), ModelA().eval()
    root = tmp_path_factory.mktemp("data")
    write_idx_folder(root / "mnist")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bundle_module, "load_unet", lambda dataset, name: (unet, NoiseSchedule.linear()))
        patch.setattr(bundle_module, "load_classifier", lambda dataset, arch: classifier)
        patch.setattr(bundle_module, "source_checksums", lambda dataset, name: {name: "test", "model_a": "test"})
        return bundle_module.export_bundle(
            "mnist",
            tmp_path_factory.mktemp("out") / "bundle",
            "default",
            root,
            calibration_images=8,
            unet_name="unet_bn",
            vjp=False,
        )


def test_the_manifest_records_each_timesteps_graphs_and_their_errors(folded_bundle):
    from diffdefense.runtime.bundle import load_bundle

    manifest = load_bundle(folded_bundle).manifest
    assert manifest.unet_source == "unet_bn"
    assert manifest.folded_graphs("float32") == {14: "unet_t14.onnx", 0: "unet_t0.onnx"}
    assert manifest.folded_graphs("int8") == {14: "unet_t14.int8.onnx", 0: "unet_t0.int8.onnx"}
    assert manifest.parity["unet_t0_real_max_abs_error"] < 1e-4
    assert 0 < manifest.parity["unet_t14_int8_relative_l2"] < 0.5  # int8 is close, and not bit-exact
    assert json.loads((folded_bundle / "manifest.json").read_text()) == manifest.to_json()


def test_the_int8_graphs_quantise_the_input_inside_the_unets_input_clamp(folded_bundle):
    """The defence's latents reach |x| of 20 and more; the graph clamps its input first, so the first uint8 range
    spans at most +-INPUT_BOUND whatever the calibration inputs' extent."""
    import onnx
    from onnx import numpy_helper

    from diffdefense.training.models.unet import INPUT_BOUND

    graph = onnx.load(str(folded_bundle / "unet_t14.int8.onnx")).graph
    clip = next(node for node in graph.node if node.input and node.input[0] == "x")
    assert clip.op_type == "Clip"
    quantize = next(node for node in graph.node if node.op_type == "QuantizeLinear" and node.input[0] == clip.output[0])
    scale = next(numpy_helper.to_array(i) for i in graph.initializer if i.name == quantize.input[1])
    assert 0 < float(scale) <= 2 * INPUT_BOUND / 255 * 1.001


def test_folded_graphs_give_the_general_graphs_defense(folded_bundle):
    from diffdefense.runtime.defender import Defender

    images = np.random.default_rng(0).random((3, 1, 28, 28), dtype=np.float32)
    with (
        Defender(folded_bundle, unet_graphs="folded") as folded,
        Defender(folded_bundle, unet_graphs="general") as general,
    ):
        assert folded.unet.general is None and sorted(folded.unet.folded) == [0, 14]
        a, b = folded(images), general(images)
    assert np.abs(a.reconstructions - b.reconstructions).max() < 1e-3
    assert np.abs(a.reconstruction_error - b.reconstruction_error).max() < 1e-4


def test_int8_runs_its_own_graphs_and_stays_near_float32(folded_bundle):
    from diffdefense.runtime.defender import Defender

    images = np.random.default_rng(1).random((2, 1, 28, 28), dtype=np.float32)
    with Defender(folded_bundle, precision="int8") as int8, Defender(folded_bundle) as float32:
        assert int8.unet_graphs == "folded" and float32.unet_graphs == "auto"
        assert sorted(int8.unet.folded) == [0, 14] and int8.unet.general is None
        gap = np.abs(int8(images).reconstructions - float32(images).reconstructions).mean()
    assert 0 < gap < 0.2


def test_settings_needing_a_missing_timestep_are_refused_unless_asked_to_fall_back(folded_bundle):
    from diffdefense.respace import settings_timesteps
    from diffdefense.runtime.defender import Defender
    from diffdefense.settings import PRESETS

    with pytest.raises(ValueError, match=r"missing \[13, 12, 11"):
        Defender(folded_bundle, "paper", unet_graphs="folded")
    with pytest.raises(ValueError, match="int8 U-Net graphs"):
        Defender(folded_bundle, "paper", precision="int8")
    with pytest.raises(ValueError, match="float32 only"):
        Defender(folded_bundle, precision="int8", unet_graphs="general")
    with Defender(folded_bundle, "paper", unet_graphs="auto") as mixed:
        assert sorted(mixed.unet.folded) == [0, 14] and mixed.unet.general is not None
    # The refining pass's own level is a timestep the settings use like the chain's.
    deeper = PRESETS["default"].with_(refine_start_step=24)
    assert settings_timesteps(deeper) == [24, 14, 0]
    with pytest.raises(ValueError, match=r"missing \[24\]"):
        Defender(folded_bundle, deeper, unet_graphs="folded")
    with Defender(folded_bundle, deeper, unet_graphs="auto") as mixed:
        assert sorted(mixed.unet.folded) == [0, 14] and mixed.unet.general is not None


def test_a_timestep_graph_the_manifest_does_not_list_is_refused(folded_bundle, tmp_path):
    from diffdefense.runtime.bundle import BundleError, load_bundle

    forged = tmp_path / "bundle"
    shutil.copytree(folded_bundle, forged)
    manifest = json.loads((forged / "manifest.json").read_text())
    manifest["timestep_graphs"]["int8"]["14"] = "elsewhere.onnx"
    (forged / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="a listed file for the int8 graph at t=14"):
        load_bundle(forged)
    manifest["timestep_graphs"] = {"int4": {"14": "unet_t14.onnx"}}
    (forged / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="'timestep_graphs' to map float32 or int8"):
        load_bundle(forged)


def with_default_precision(bundle, tmp_path, precision: str, drop_int8_at: str | None = None):
    """A copy of the bundle whose manifest names another default precision (and, if asked, lacks an int8 graph)."""
    copy = tmp_path / f"bundle_{precision}"
    shutil.copytree(bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["defaults"]["precision"] = precision
    if drop_int8_at is not None:
        del manifest["timestep_graphs"]["int8"][drop_int8_at]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


def test_an_int8_default_runs_on_the_cpu_and_float32_where_int8_cannot_run_as_asked(folded_bundle, tmp_path):
    from diffdefense.runtime.bundle import load_bundle
    from diffdefense.runtime.defender import Defender

    assert load_bundle(folded_bundle).manifest.default_precision == "float32"
    with Defender(folded_bundle) as plain:
        assert plain.precision == "float32"
    int8_default = with_default_precision(folded_bundle, tmp_path, "int8")
    manifest = load_bundle(int8_default).manifest
    assert manifest.default_precision == "int8"
    assert json.loads((int8_default / "manifest.json").read_text()) == manifest.to_json()
    with Defender(int8_default) as default, Defender(int8_default, unet_graphs="folded") as folded:
        assert default.precision == folded.precision == "int8" and default.unet_graphs == "folded"
    for asked in (dict(unet_graphs="general"), dict(unet_graphs="auto"), dict(precision="float32")):
        with Defender(int8_default, **asked) as defender:
            assert defender.precision == "float32", asked
    with Defender(int8_default, "paper") as paper:  # timesteps 14..0: int8 graphs for two of them only
        assert paper.precision == "float32"


def test_each_precision_flags_with_the_threshold_calibrated_in_it(folded_bundle, tmp_path):
    """int8's clean scores differ from float32's, so the export calibrates a threshold in each; a bundle from before
    the int8 threshold gives int8 the float32 one."""
    from diffdefense.runtime.bundle import load_bundle
    from diffdefense.runtime.defender import Defender

    detection = load_bundle(folded_bundle).manifest.detection
    assert detection.int8_threshold is not None and detection.int8_threshold != detection.threshold
    with Defender(folded_bundle, precision="int8") as int8, Defender(folded_bundle, precision="float32") as float32:
        assert (int8.threshold, float32.threshold) == (detection.int8_threshold, detection.threshold)
    older = tmp_path / "older"
    shutil.copytree(folded_bundle, older)
    manifest = json.loads((older / "manifest.json").read_text())
    del manifest["detection"]["int8_threshold"]
    (older / "manifest.json").write_text(json.dumps(manifest))
    with Defender(older, precision="int8") as int8:
        assert int8.threshold == detection.threshold
    manifest["detection"]["int8_threshold"] = -1.0
    (older / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="a finite, non-negative int8 detection threshold"):
        Defender(older)


def test_a_default_precision_the_bundle_cannot_run_is_refused(folded_bundle, tmp_path):
    from diffdefense.runtime.bundle import BundleError, load_bundle

    with pytest.raises(BundleError, match="a default precision in"):
        load_bundle(with_default_precision(folded_bundle, tmp_path, "int4"))
    with pytest.raises(BundleError, match=r"int8 graphs for every timestep the default settings use \(\[14, 0\]\)"):
        load_bundle(with_default_precision(folded_bundle, tmp_path, "int8", drop_int8_at="0"))


def test_export_refuses_an_int8_default_without_int8_graphs(tmp_path):
    from diffdefense.export.bundle import export_bundle

    with pytest.raises(ValueError, match="default_precision 'int8' needs the int8 graphs"):
        export_bundle("mnist", tmp_path / "bundle", int8=False, default_precision="int8")
    with pytest.raises(ValueError, match="Expected default_precision 'float32' or 'int8', but got 'int4'"):
        export_bundle("mnist", tmp_path / "bundle", default_precision="int4")


def test_runtime_accuracy_reports_int8_against_float32_on_every_set(folded_bundle, tmp_path, monkeypatch):
    """tools/runtime_accuracy.py --agreement-with: both precisions on the same images, and the share of same labels;
    an extra set (an adaptive attack's) is measured on the first images it holds."""
    from click.testing import CliRunner

    from diffdefense.reference.runtime_accuracy import main

    data = tmp_path / "data"
    write_idx_folder(data / "mnist")
    monkeypatch.setenv("DIFFDEFENSE_DATA", str(data))
    cache = tmp_path / "attacks"
    cache.mkdir()
    (cache / "identity.json").write_text(json.dumps({"dataset": "mnist", "indices": [0, 3, 5, 8], "seed": 0}))
    rng = np.random.default_rng(0)
    np.savez(cache / "adversarial_white_box_FGSM.npz", array=rng.random((4, 1, 28, 28), dtype=np.float32))
    np.savez(tmp_path / "adversarial_adaptive_bpda.npz", array=rng.random((2, 1, 28, 28), dtype=np.float32))
    out = tmp_path / "accuracy.json"
    arguments = ["--attack-cache", str(cache), "--bundle", str(folded_bundle), "--precision", "int8"]
    arguments += ["--agreement-with", "float32", "--extra-set", str(tmp_path / "adversarial_adaptive_bpda.npz")]
    result = CliRunner().invoke(main, [*arguments, "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["results"]
    assert list(rows) == ["clean", "FGSM", "adaptive_bpda"]
    assert [row["images"] for row in rows.values()] == [4, 4, 2]
    for row in rows.values():
        assert 0.0 <= row["same_label_as_float32"] <= 1.0 and 0.0 <= row["accuracy_float32"] <= 1.0
    assert "detection_auroc" in rows["adaptive_bpda"] and "detection_auroc" not in rows["clean"]
    assert "same label as float32 (%)" in result.output
