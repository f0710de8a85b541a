"""Export to an ONNX bundle (dynamic batch, parity with PyTorch), and the runtime's refusal of a bad bundle."""

import json
import shutil

import numpy as np
import onnxruntime as ort
import pytest

from diffdefense.runtime.bundle import BundleError, load_bundle
from diffdefense.settings import PRESETS

ROLES = ("unet", "unet_vjp", "classifier")


@pytest.fixture(scope="module")
def bundle_dir(exported_bundle):
    return exported_bundle.path


def test_bundle_manifest_and_parity(bundle_dir):
    bundle = load_bundle(bundle_dir)
    m = bundle.manifest
    assert m.labels == tuple(str(d) for d in range(10)) and m.image_shape == (1, 28, 28)
    assert len(m.betas) == 100 and m.default_preset == "paper" and m.default_settings == PRESETS["paper"]
    assert set(m.parity) == {
        f"{r}_{k}_max_abs_error" for r in ("unet", "unet_vjp", "classifier") for k in ("random", "real")
    }
    assert max(m.parity.values()) < 1e-4
    # What the exporter wrote is to_json's output, in to_json's order, and reads back as the same manifest.
    written = json.loads((bundle_dir / "manifest.json").read_text())
    assert list(written) == list(m.to_json()) and written == m.to_json()
    assert written["image"]["range"] == [0.0, 1.0] and written["format_version"] == 1
    assert not list(bundle_dir.parent.glob("*.tmp-*"))


@pytest.mark.parametrize("batch", [1, 13])
def test_graphs_take_any_batch(bundle_dir, batch):
    bundle = load_bundle(bundle_dir)
    unet = ort.InferenceSession(str(bundle.path("unet")), providers=["CPUExecutionProvider"])
    eps = unet.run(None, {"x": np.zeros((batch, 1, 28, 28), np.float32), "t": np.zeros(batch, np.int64)})[0]
    classifier = ort.InferenceSession(str(bundle.path("classifier")), providers=["CPUExecutionProvider"])
    logits = classifier.run(None, {"images": np.zeros((batch, 1, 28, 28), np.float32)})[0]
    vjp = ort.InferenceSession(str(bundle.path("unet_vjp")), providers=["CPUExecutionProvider"])
    zeros = np.zeros((batch, 1, 28, 28), np.float32)
    grad = vjp.run(None, {"x": zeros, "t": np.zeros(batch, np.int64), "v": zeros})[0]
    assert eps.shape == grad.shape == (batch, 1, 28, 28) and logits.shape == (batch, 10)


@pytest.fixture
def copy(bundle_dir, tmp_path):
    return shutil.copytree(bundle_dir, tmp_path / "copy")


def edit_manifest(folder, change):
    manifest = json.loads((folder / "manifest.json").read_text())
    change(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_a_changed_file_is_refused_by_name(copy):
    data = bytearray((copy / "unet.onnx").read_bytes())
    data[-10] ^= 0xFF
    (copy / "unet.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="unet.onnx does not match its sha256"):
        load_bundle(copy)


def test_a_truncated_file_is_refused_by_name(copy):
    (copy / "classifier.onnx").write_bytes((copy / "classifier.onnx").read_bytes()[:100])
    with pytest.raises(BundleError, match="classifier.onnx has 100 bytes"):
        load_bundle(copy)


def test_swapped_files_are_refused(copy):
    unet, classifier = (copy / "unet.onnx").read_bytes(), (copy / "classifier.onnx").read_bytes()
    (copy / "unet.onnx").write_bytes(classifier)
    (copy / "classifier.onnx").write_bytes(unet)
    with pytest.raises(BundleError, match=r"(unet|classifier)\.onnx"):
        load_bundle(copy)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.update(format_version=2), "format version 2; this runtime reads version 1"),
        (lambda m: m.pop("format_version"), "format version None"),
        (lambda m: m["files"].update({"../outside.onnx": {"sha256": "0", "bytes": 1}}), "outside the bundle"),
        (lambda m: m["files"].update({"extra.onnx": {"sha256": "0", "bytes": 1}}), "extra.onnx .* is missing"),
        (lambda m: m["roles"].update(unet="other.onnx"), "role 'unet' to 'other.onnx'"),
    ],
)
def test_a_manifest_that_lies_is_refused(copy, change, message):
    edit_manifest(copy, change)
    with pytest.raises(BundleError, match=message):
        load_bundle(copy)


def test_missing_or_broken_manifest_is_refused(copy):
    (copy / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(copy)
    (copy / "manifest.json").unlink()
    with pytest.raises(BundleError, match="Expected a bundle manifest"):
        load_bundle(copy)


@pytest.mark.parametrize("role", ["unet", "unet_vjp", "classifier"])
def test_graphs_pass_polygraphy_lint(bundle_dir, role):
    import subprocess

    if shutil.which("polygraphy") is None:
        pytest.skip("polygraphy is not installed (it comes with the [dev] extra)")
    result = subprocess.run(
        ["polygraphy", "check", "lint", str(bundle_dir / f"{role}.onnx")], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and "PASSED" in result.stdout + result.stderr, result.stdout + result.stderr


@pytest.mark.parametrize("batch", [1, 6])
def test_vjp_graph_matches_autograd(exported_bundle, batch):
    """The exported (d eps / d x)^T v against torch.autograd on the same random-weight U-Net."""
    import torch

    from diffdefense.export.vjp_export import autograd_vjp

    rng = np.random.default_rng(batch)
    x = rng.standard_normal((batch, 1, 28, 28)).astype(np.float32)
    t = rng.integers(0, 100, batch).astype(np.int64)
    v = rng.standard_normal((batch, 1, 28, 28)).astype(np.float32)
    vjp = ort.InferenceSession(
        str(load_bundle(exported_bundle.path).path("unet_vjp")), providers=["CPUExecutionProvider"]
    )
    got = vjp.run(None, {"x": x, "t": t, "v": v})[0]
    expected = autograd_vjp(exported_bundle.unet, *map(torch.from_numpy, (x, t, v))).numpy()
    assert np.abs(expected).max() > 0.1  # a product worth comparing
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def racy_scatters(path) -> list[str]:
    """Scatter nodes that reduce: onnxruntime's CPU kernels split their updates over threads unguarded."""
    import onnx

    graph = onnx.load(str(path)).graph
    return [
        node.name or node.op_type
        for node in graph.node
        if node.op_type in ("ScatterND", "ScatterElements")
        and any(a.name == "reduction" and a.s != b"none" for a in node.attribute)
    ]


def racy_scatters_per_role(folder) -> dict[str, list[str]]:
    return {role: racy_scatters(folder / f"{role}.onnx") for role in ROLES}


def test_the_exported_graphs_have_no_reducing_scatter(bundle_dir):
    assert racy_scatters_per_role(bundle_dir) == {role: [] for role in ROLES}


@pytest.mark.parametrize("dataset", ["mnist", "kmnist"])
def test_the_shipped_graphs_have_no_reducing_scatter(dataset):
    from diffdefense.shipped import bundle_dir

    assert racy_scatters_per_role(bundle_dir(dataset)) == {role: [] for role in ROLES}


def test_the_vjp_graph_gives_the_same_gradient_on_many_threads(exported_bundle):
    """A ScatterND(add) here once raced on a CI machine: 0.28 off, now and then. Eight threads, a batch big
    enough to be split, repeated runs: every one must be bit-for-bit the first."""
    rng = np.random.default_rng(0)
    inputs = {
        "x": rng.standard_normal((32, 1, 28, 28)).astype(np.float32),
        "t": rng.integers(0, 100, 32).astype(np.int64),
        "v": rng.standard_normal((32, 1, 28, 28)).astype(np.float32),
    }
    options = ort.SessionOptions()
    options.intra_op_num_threads = 8
    vjp = ort.InferenceSession(
        str(load_bundle(exported_bundle.path).path("unet_vjp")), options, providers=["CPUExecutionProvider"]
    )
    first = vjp.run(None, inputs)[0]
    for _ in range(8):
        np.testing.assert_array_equal(vjp.run(None, inputs)[0], first)


def test_nearest_upsampling_backward_is_traced_as_matrix_products():
    """The decomposition that replaces the scatter sums what index_put(accumulate=True) sums, and refuses any
    other index_put rather than tracing it wrongly."""
    import torch

    from diffdefense.export.vjp_export import _nearest_index_put_as_matmuls

    generator = torch.Generator().manual_seed(0)
    destination = torch.randn(2, 3, 5, 7, generator=generator)
    values = torch.randn(2, 3, 10, 14, generator=generator)
    rows, cols = (torch.arange(10) // 2).unsqueeze(-1), torch.arange(14) // 2
    expected = torch.ops.aten.index_put(destination, [None, None, rows, cols], values, True)
    got = _nearest_index_put_as_matmuls(destination, [None, None, rows, cols], values, True)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    with pytest.raises(NotImplementedError, match="nearest upsampling"):
        _nearest_index_put_as_matmuls(destination, [None, None, rows, cols], values, False)
    with pytest.raises(NotImplementedError, match="nearest upsampling"):
        _nearest_index_put_as_matmuls(destination, [rows.squeeze(-1)], values, True)
