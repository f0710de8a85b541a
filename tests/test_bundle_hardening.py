"""Bundles as untrusted input (issue 7): every corruption of a copy of the shipped MNIST bundle is refused by
load_bundle with a BundleError that names the file, before any graph runs, and never with another exception.

CORRUPTIONS is also the record of what was tried: (id, how the copy is corrupted, the file the refusal must name,
a fragment of the refusal).
"""

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import onnxruntime
import pytest

import diffdefense.runtime.bundle as bundle_module
import diffdefense.runtime.defender as defender_module
import diffdefense.runtime.graph_checks as graph_checks
import diffdefense.runtime.manifest as manifest_module
from diffdefense.runtime.backends import OnnxRunner
from diffdefense.runtime.bundle import MAX_MANIFEST_BYTES, BundleError, load_bundle
from diffdefense.runtime.defender import Defender
from diffdefense.settings import DefenseSettings
from diffdefense.shipped import BUNDLES_DIR, SAMPLES_DIR

SHIPPED = BUNDLES_DIR / "mnist"
# A pickle (of a reference to os.system), as an attacker would plant one; nothing on the load path unpickles it.
PICKLE_BYTES = b"\x80\x04\x95\x1d\x00\x00\x00\x00\x00\x00\x00\x8c\x05posix\x94\x8c\x06system\x94\x93\x94."


@pytest.fixture
def copy(tmp_path) -> Path:
    return shutil.copytree(SHIPPED, tmp_path / "bundle")


def edit(change):
    """A corruption that rewrites the manifest through change(manifest)."""

    def corrupt(folder: Path) -> None:
        manifest = json.loads((folder / "manifest.json").read_text())
        change(manifest)
        (folder / "manifest.json").write_text(json.dumps(manifest))

    return corrupt


def settings_edit(**changes):
    return edit(lambda m: m["defaults"]["settings"].update(changes))


def rewrite(name: str, make, rehash: bool = False):
    """A corruption that replaces a file's bytes with make(old bytes); rehash also updates the manifest's sha256 and
    size to match, so that the checksums pass and the later checks must catch it."""

    def corrupt(folder: Path) -> None:
        data = make((folder / name).read_bytes())
        (folder / name).write_bytes(data)
        if rehash:
            edit(lambda m: m["files"][name].update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data)))(folder)

    return corrupt


def flip(data: bytes, offset: int) -> bytes:
    changed = bytearray(data)
    changed[offset] ^= 0x01
    return bytes(changed)


def swap(a: str, b: str, manifest_too: bool = True):
    """Two files swapped on disk; manifest_too swaps their manifest entries with them, so every checksum passes."""

    def corrupt(folder: Path) -> None:
        data_a, data_b = (folder / a).read_bytes(), (folder / b).read_bytes()
        (folder / a).write_bytes(data_b)
        (folder / b).write_bytes(data_a)
        if manifest_too:
            edit(lambda m: m["files"].update({a: m["files"][b], b: m["files"][a]}))(folder)

    return corrupt


def replace_path(name: str, make):
    def corrupt(folder: Path) -> None:
        (folder / name).unlink()
        make(folder / name)

    return corrupt


def symlink_outside(name: str):
    """The file replaced by a link to an identical copy outside the bundle: the checksum alone would pass."""

    def corrupt(folder: Path) -> None:
        outside = folder.parent / f"outside-{name}"
        shutil.copy(folder / name, outside)
        (folder / name).unlink()
        (folder / name).symlink_to(outside)

    return corrupt


def write_manifest_text(text: str | bytes):
    def corrupt(folder: Path) -> None:
        data = text.encode() if isinstance(text, str) else text
        (folder / "manifest.json").write_bytes(data)

    return corrupt


def shipped_manifest_text() -> str:
    return (SHIPPED / "manifest.json").read_text()


UNET, CLASSIFIER, MANIFEST = "unet.onnx", "classifier.onnx", "manifest.json"
# Sizes of the shipped files, read from disk: the messages name them, and a re-export changes them.
UNET_BYTES = (BUNDLES_DIR / "mnist" / UNET).stat().st_size
CLASSIFIER_BYTES = (BUNDLES_DIR / "mnist" / CLASSIFIER).stat().st_size
NOT_A_GRAPH = "is not a (well-formed ONNX protobuf|graph onnxruntime can load)"

CORRUPTIONS = [
    # Damaged files, manifest untouched.
    ("truncated", rewrite(CLASSIFIER, lambda d: d[: len(d) // 2]), CLASSIFIER, "has 1857061 bytes, but the manifest"),
    (
        "grown",
        rewrite(UNET, lambda d: d + b"\0"),
        UNET,
        f"has {UNET_BYTES + 1} bytes, but the manifest says {UNET_BYTES}",
    ),
    ("bit flipped", rewrite(UNET, lambda d: flip(d, len(d) // 2)), UNET, "does not match its sha256"),
    ("bit flipped at the end", rewrite(CLASSIFIER, lambda d: flip(d, len(d) - 1)), CLASSIFIER, "its sha256"),
    (
        "swapped",
        swap(UNET, CLASSIFIER, manifest_too=False),
        UNET,
        f"unet.onnx has {CLASSIFIER_BYTES} bytes, but .* {UNET_BYTES}",
    ),
    ("missing", lambda f: (f / UNET).unlink(), UNET, "listed in .* is missing"),
    # Damaged files whose manifest was updated to match: the checksums pass, the graph checks must catch them.
    ("truncated, rehashed", rewrite(CLASSIFIER, lambda d: d[: len(d) // 2], True), CLASSIFIER, NOT_A_GRAPH),
    ("first bit flipped, rehashed", rewrite(UNET, lambda d: flip(d, 0), True), UNET, NOT_A_GRAPH),
    ("a pickle as the graph, rehashed", rewrite(UNET, lambda d: PICKLE_BYTES, True), UNET, NOT_A_GRAPH),
    ("empty file, rehashed", rewrite(UNET, lambda d: b"", True), MANIFEST, "positive integer size in bytes for unet"),
    ("unet and classifier swapped", swap(UNET, CLASSIFIER), UNET, "inputs and outputs of the 'unet' role"),
    ("unet and unet_vjp swapped", swap(UNET, "unet_vjp.onnx"), UNET, "inputs and outputs of the 'unet' role"),
    (
        "roles swapped",
        edit(lambda m: m["roles"].update(unet=CLASSIFIER, classifier=UNET)),
        CLASSIFIER,
        "expected inputs x \\(batch, 1, 28, 28\\) float, t \\(batch\\) int64",
    ),
    # Files that are not plain files inside the folder.
    ("symlink outside", symlink_outside(UNET), UNET, "is a symbolic link"),
    ("a folder", replace_path(UNET, lambda p: p.mkdir()), UNET, "is not a regular file"),
    ("a FIFO (must not hang)", replace_path(UNET, lambda p: os.mkfifo(p)), UNET, "is not a regular file"),
    # The manifest file itself.
    ("manifest missing", lambda f: (f / MANIFEST).unlink(), MANIFEST, "Expected a bundle manifest"),
    ("manifest not JSON", write_manifest_text("{not json"), MANIFEST, "is not valid JSON"),
    ("manifest not UTF-8", write_manifest_text(b'{"a": "\xff"}'), MANIFEST, "is not valid JSON"),
    ("manifest huge", write_manifest_text(" " * MAX_MANIFEST_BYTES + "{}"), MANIFEST, "has 1048578 bytes, more than"),
    ("manifest nested deep", write_manifest_text("[" * 200_000), MANIFEST, "is not valid JSON"),
    ("huge integer", write_manifest_text('{"format_version": 1' + "0" * 5000 + "}"), MANIFEST, "is not valid JSON"),
    ("manifest a list", write_manifest_text("[1, 2]"), MANIFEST, "must hold a JSON object, but holds list"),
    (
        "repeated key",
        write_manifest_text(shipped_manifest_text().replace('"dataset": "mnist"', '"roles": {}, "dataset": "mnist"')),
        MANIFEST,
        "'roles' appears more than once",
    ),
    ("manifest a symlink", symlink_outside(MANIFEST), MANIFEST, "is a symbolic link"),
    ("manifest a folder", replace_path(MANIFEST, lambda p: p.mkdir()), MANIFEST, "is not a regular file"),
    # Format versions.
    ("old version", edit(lambda m: m.update(format_version=0)), MANIFEST, "version 0; .* Export it again"),
    ("future version", edit(lambda m: m.update(format_version=2)), MANIFEST, "version 2; .* Upgrade diffdefense"),
    ("version a string", edit(lambda m: m.update(format_version="1")), MANIFEST, "format version '1'"),
    ("version true", edit(lambda m: m.update(format_version=True)), MANIFEST, "format version True"),
    ("version missing", edit(lambda m: m.pop("format_version")), MANIFEST, "format version None"),
    # Paths outside the bundle.
    ("parent path", edit(lambda m: m["files"].update({"../x.onnx": m["files"][UNET]})), MANIFEST, "outside the bundle"),
    ("absolute path", edit(lambda m: m["files"].update({"/etc/passwd": m["files"][UNET]})), MANIFEST, "outside"),
    ("subfolder path", edit(lambda m: m["files"].update({"sub/u.onnx": m["files"][UNET]})), MANIFEST, "outside"),
    ("NUL in a name", edit(lambda m: m["files"].update({"u.onnx\0": m["files"][UNET]})), MANIFEST, "outside"),
    ("role to ../", edit(lambda m: m["roles"].update(unet="../unet.onnx")), MANIFEST, "does not list"),
    # Sizes and checksums that lie.
    ("huge size", edit(lambda m: m["files"][UNET].update(bytes=1 << 40)), MANIFEST, "at most 536870912 bytes in all"),
    (
        "smaller size",
        edit(lambda m: m["files"][UNET].update(bytes=100)),
        UNET,
        f"has {UNET_BYTES} bytes, but .* says 100",
    ),
    ("negative size", edit(lambda m: m["files"][UNET].update(bytes=-1)), MANIFEST, "positive integer size"),
    (
        "size a string",
        edit(lambda m: m["files"][UNET].update(bytes=str(UNET_BYTES))),
        MANIFEST,
        "positive integer size",
    ),
    (
        "size a float",
        edit(lambda m: m["files"][UNET].update(bytes=float(UNET_BYTES))),
        MANIFEST,
        "positive integer size",
    ),
    ("size missing", edit(lambda m: m["files"][UNET].pop("bytes")), MANIFEST, "positive integer size"),
    ("sha256 a number", edit(lambda m: m["files"][UNET].update(sha256=0)), MANIFEST, "a sha256 string for unet"),
    ("sha256 wrong", edit(lambda m: m["files"][UNET].update(sha256="0" * 64)), UNET, "does not match its sha256"),
    # Wrong types and shapes of the manifest's fields.
    ("files a list", edit(lambda m: m.update(files=[UNET])), MANIFEST, "'files' to map file names"),
    ("files empty", edit(lambda m: m.update(files={})), MANIFEST, "'files' to map file names"),
    ("file entry a string", edit(lambda m: m["files"].update({UNET: "x"})), MANIFEST, "an object with 'sha256'"),
    ("roles missing", edit(lambda m: m.pop("roles")), MANIFEST, "'roles' to map roles"),
    ("roles a list", edit(lambda m: m.update(roles=[UNET])), MANIFEST, "'roles' to map roles"),
    ("classifier role missing", edit(lambda m: m["roles"].pop("classifier")), MANIFEST, "a 'classifier' role"),
    ("unknown role", edit(lambda m: m["roles"].update(decoder=UNET)), MANIFEST, "roles among"),
    ("role a number", edit(lambda m: m["roles"].update(unet=5)), MANIFEST, "gives role 'unet' to 5"),
    ("role to unlisted file", edit(lambda m: m["roles"].update(unet="o.onnx")), MANIFEST, "'o.onnx', which it does"),
    ("labels a string", edit(lambda m: m.update(labels="0123456789")), MANIFEST, "a non-empty list of labels"),
    ("labels numbers", edit(lambda m: m.update(labels=list(range(10)))), MANIFEST, "labels that are strings"),
    ("11 labels", edit(lambda m: m["labels"].append("10")), CLASSIFIER, "logits \\(batch, 11\\) float, but"),
    ("9 labels", edit(lambda m: m["labels"].pop()), CLASSIFIER, "'classifier' role: expected .* \\(batch, 9\\)"),
    ("image shape 3x32x32", edit(lambda m: m["image"].update(shape=[3, 32, 32])), UNET, "x \\(batch, 3, 32, 32\\)"),
    ("image shape 2-D", edit(lambda m: m["image"].update(shape=[28, 28])), MANIFEST, "three positive integers"),
    ("image shape strings", edit(lambda m: m["image"].update(shape=["1", "28", "28"])), MANIFEST, "three positive"),
    ("image shape huge", edit(lambda m: m["image"].update(shape=[1, 28, 10**6])), MANIFEST, "three positive"),
    ("image missing", edit(lambda m: m.pop("image")), MANIFEST, "an 'image' object"),
    ("image dtype", edit(lambda m: m["image"].update(dtype="float64")), MANIFEST, "image dtype 'float32'"),
    ("image range", edit(lambda m: m["image"].update(range=[0, 255])), MANIFEST, "image range \\[0, 1\\]"),
    ("model range", edit(lambda m: m.update(model_range=[0, 1])), MANIFEST, "model_range \\[-1, 1\\]"),
    ("schedule missing", edit(lambda m: m.pop("schedule")), MANIFEST, "'schedule' object"),
    ("schedule a bare list", edit(lambda m: m.update(schedule=m["schedule"]["betas"])), MANIFEST, "'schedule' object"),
    ("dataset missing", edit(lambda m: m.pop("dataset")), MANIFEST, "a dataset name"),
    ("dataset not a string", edit(lambda m: m.update(dataset=["mnist"])), MANIFEST, "a dataset name"),
    ("betas empty", edit(lambda m: m["schedule"].update(betas=[])), MANIFEST, "schedule betas"),
    ("beta above 1", edit(lambda m: m["schedule"]["betas"].append(1.5)), MANIFEST, "schedule betas"),
    ("beta NaN", edit(lambda m: m["schedule"]["betas"].append(float("nan"))), MANIFEST, "schedule betas"),
    ("defaults missing", edit(lambda m: m.pop("defaults")), MANIFEST, "a 'defaults' object"),
    ("settings missing", edit(lambda m: m["defaults"].pop("settings")), MANIFEST, "default settings as an object"),
    (
        "candidates a string",
        settings_edit(num_candidates="12"),
        MANIFEST,
        "the default settings are refused. Expected num_candidates to be a positive integer, but got '12'",
    ),
    ("candidates true", settings_edit(num_candidates=True), MANIFEST, "num_candidates .* integer, but got True"),
    (
        "a million candidates",
        settings_edit(num_candidates=10**6),
        MANIFEST,
        "expected num_candidates in the default settings to be at most 1024, but got 1000000",
    ),
    ("a million iterations", settings_edit(iterations=10**6), MANIFEST, "iterations .* at most 10000, but got"),
    ("zero iterations", settings_edit(iterations=0), MANIFEST, "iterations to be a positive integer"),
    ("lr a string", settings_edit(lr="fast"), MANIFEST, "lr to be a finite number above 0 .*, but got 'fast'"),
    ("lr infinite", settings_edit(lr=float("inf")), MANIFEST, "lr to be a finite number above 0 .*, but got inf"),
    ("eta a list", settings_edit(eta=[1.0]), MANIFEST, "eta in \\[0, 1\\] \\(a finite number\\), but got \\[1.0\\]"),
    (
        "one Adam beta",
        settings_edit(adam_betas=[0.5]),
        MANIFEST,
        "adam_betas to be two finite numbers in \\[0, 1\\), but got \\[0.5\\]",
    ),
    ("fresh_noise a string", settings_edit(fresh_noise="yes"), MANIFEST, "fresh_noise to be True or False, but got"),
    ("negative seed", settings_edit(seed=-1), MANIFEST, "seed to be a non-negative integer .*, but got -1"),
    ("seed of 300 digits", settings_edit(seed=10**300), MANIFEST, "seed .* but got an integer of 997 bits"),
    ("unknown gradient", settings_edit(gradient="magic"), MANIFEST, "Expected gradient 'straight-through' or 'full'"),
    ("unknown setting", settings_edit(speed=11), MANIFEST, "unknown keys \\['speed'\\]"),
    (
        "start step past the schedule",
        settings_edit(start_step=500),
        MANIFEST,
        "start steps .* below the schedule's 100",
    ),
    (
        "refining pass past the schedule",
        settings_edit(refine=True, refine_start_step=100),
        MANIFEST,
        "refining pass's\\) below the schedule's 100 steps, but got 100",
    ),
    ("detection a list", edit(lambda m: m.update(detection=[0.01])), MANIFEST, "'detection' to be an object"),
    ("threshold NaN", edit(lambda m: m["detection"].update(threshold=float("nan"))), MANIFEST, "detection threshold"),
    ("threshold a string", edit(lambda m: m["detection"].update(threshold="0.01")), MANIFEST, "detection threshold"),
    ("threshold negative", edit(lambda m: m["detection"].update(threshold=-1.0)), MANIFEST, "detection threshold"),
    ("detection settings gone", edit(lambda m: m["detection"].pop("settings")), MANIFEST, "detection settings as an"),
    (
        "detection seed a float",
        edit(lambda m: m["detection"]["settings"].update(seed=0.5)),
        MANIFEST,
        "the detection settings are refused. Expected seed",
    ),
]


@pytest.mark.parametrize(
    ("corrupt", "named", "fragment"), [c[1:] for c in CORRUPTIONS], ids=[c[0] for c in CORRUPTIONS]
)
def test_each_corruption_is_refused_naming_the_file(copy, corrupt, named, fragment):
    corrupt(copy)
    with pytest.raises(BundleError) as refusal:  # any other exception type fails the test
        load_bundle(copy)
    message = str(refusal.value)
    assert named in message, message
    assert re.search(fragment, message), message
    assert message.endswith((".", ")")) and len(message) < 1000, message


def test_the_untouched_copy_and_both_shipped_bundles_load(copy):
    bundle = load_bundle(copy)
    assert bundle.graph("unet") == (copy / UNET).read_bytes()
    for dataset in ("mnist", "kmnist"):
        assert set(load_bundle(BUNDLES_DIR / dataset).manifest.roles) == {"unet", "unet_vjp", "classifier"}


def test_nothing_runs_while_a_bundle_is_checked(copy, monkeypatch):
    def refuse_to_run(*args, **kwargs):
        raise AssertionError("load_bundle ran a graph")

    monkeypatch.setattr(onnxruntime.InferenceSession, "run", refuse_to_run)
    load_bundle(copy)
    swap(UNET, CLASSIFIER)(copy)
    with pytest.raises(BundleError, match="unet.onnx does not have the inputs and outputs"):
        load_bundle(copy)


def test_a_huge_declared_size_is_refused_before_any_graph_is_opened(copy, monkeypatch):
    opened = []
    real = bundle_module._read_regular_file
    monkeypatch.setattr(bundle_module, "_read_regular_file", lambda p, *a: opened.append(p.name) or real(p, *a))
    edit(lambda m: m["files"]["unet_vjp.onnx"].update(bytes=1 << 40))(copy)
    with pytest.raises(BundleError, match="at most 536870912 bytes"):
        load_bundle(copy)
    assert opened == [MANIFEST]


def test_a_file_is_never_read_past_its_declared_size(tmp_path):
    big = tmp_path / "big"
    big.write_bytes(b"x" * 10_000)
    assert bundle_module._read_regular_file(big, 100, "a file") == (10_000, None)  # larger: not read at all
    assert bundle_module._read_regular_file(big, 10_000, "a file") == (10_000, b"x" * 10_000)


def external_graph(location: str, where: str) -> bytes:
    """A classifier-shaped graph whose (10, 784) weight lives in the file `location`, as an initializer or as the
    tensor of a Constant node."""
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((10, 784), np.float32), "w")
    weight.data_location = TensorProto.EXTERNAL
    weight.ClearField("raw_data")
    for key, value in (("location", location), ("offset", "0"), ("length", str(10 * 784 * 4))):
        weight.external_data.add(key=key, value=value)
    nodes = [
        helper.make_node("Flatten", ["images"], ["flat"]),
        helper.make_node("Gemm", ["flat", "w"], ["logits"], transB=1),
    ]
    if where == "constant":
        nodes.insert(0, helper.make_node("Constant", [], ["w"], value=weight))
    graph = helper.make_graph(
        nodes,
        "external",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        [weight] if where == "initializer" else [],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString()


@pytest.mark.parametrize(
    ("location", "where"),
    [
        ("outside.bin", "initializer"),
        ("../../outside.bin", "initializer"),
        ("/etc/hostname", "initializer"),
        ("outside.bin", "constant"),
    ],
)
def test_a_graph_that_points_at_external_data_is_refused(copy, monkeypatch, location, where):
    """ONNX can keep weights in another file named inside the graph. That file is not in the manifest, so it is
    never verified, and onnxruntime reads a relative one from the working directory even for a graph given as
    bytes: here the working directory holds such a file, and the graph must still be refused."""
    pytest.importorskip("onnx")
    monkeypatch.chdir(copy.parent)
    (copy.parent / "outside.bin").write_bytes(np.ones((10, 784), np.float32).tobytes())
    rewrite(CLASSIFIER, lambda d: external_graph(location, where), rehash=True)(copy)
    with pytest.raises(BundleError, match="classifier.onnx keeps 1 tensor.* in external files"):
        load_bundle(copy)


def test_a_graph_swapped_on_disk_after_the_check_is_never_run(copy, monkeypatch):
    """Between load_bundle's check and the sessions, unet.onnx is replaced by another valid U-Net (KMNIST's): the
    Defender builds its sessions from the verified bytes, so it runs the MNIST U-Net all the same."""
    settings = DefenseSettings(num_candidates=2, iterations=2, num_steps=2, start_step=14)
    images = np.load(SAMPLES_DIR / "mnist.npz")["images"][:2]
    expected = Defender(copy, settings, unet_graphs="general")(images)  # unet.onnx, not the folded graphs
    real_load = defender_module.load_bundle

    def load_then_swap(root):
        bundle = real_load(root)
        shutil.copy(BUNDLES_DIR / "kmnist" / UNET, copy / UNET)
        return bundle

    monkeypatch.setattr(defender_module, "load_bundle", load_then_swap)
    defender = Defender(copy, settings, unet_graphs="general")
    assert (copy / UNET).read_bytes() != defender.bundle.graph("unet")  # the swap happened
    swapped = defender(images)
    np.testing.assert_array_equal(swapped.reconstructions, expected.reconstructions)
    np.testing.assert_array_equal(swapped.reconstruction_error, expected.reconstruction_error)
    # The test can tell: a session read from the path runs the other U-Net and gives other noise estimates.
    x, t = np.full((1, 1, 28, 28), 0.3, np.float32), np.array([7])
    assert np.abs(OnnxRunner(copy / UNET).run(x, t) - defender.unet.run(x, t)).max() > 1e-3


def test_checksums_are_not_signatures(copy):
    """The limit, recorded: a bit flipped in the weights, with the manifest rewritten to match, still loads.
    Whoever can rewrite the whole folder can forge a consistent bundle; guarding against that needs a signature
    or a checksum of the manifest kept outside the bundle."""
    rewrite(UNET, lambda d: flip(d, len(d) // 2), rehash=True)(copy)
    assert load_bundle(copy).graph("unet") != (SHIPPED / UNET).read_bytes()


def test_the_load_path_never_unpickles():
    for module in (bundle_module, manifest_module, graph_checks):
        source = Path(module.__file__).read_text()
        for word in ("pickle", "np.load", "torch.load", "allow_pickle"):
            assert word not in source.replace("Nothing is ever unpickled", ""), module.__name__
