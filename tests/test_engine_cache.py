"""The TensorRT engine cache without a GPU (issue 7): an engine is reused only while the record beside it matches
this machine and its bytes; one from another GPU or TensorRT version, a half-written one, or one without a record is
rebuilt. TensorRT and nvidia-smi are replaced by stand-ins, so only the pure-Python cache logic runs."""

import hashlib
import json
import logging
import shutil
import subprocess

import pytest

import diffdefense.runtime.backends.tensorrt_engines as engines
from diffdefense.runtime.backends.tensorrt_engines import EngineBuildError, cached_engine, record_path
from diffdefense.shipped import BUNDLES_DIR

pytest.importorskip("polygraphy", reason="the engine key records polygraphy's version ([dev] or [tensorrt] extras)")

H100 = {"gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}
A100 = {"gpu": "NVIDIA A100-SXM4-40GB", "compute_capability": "8.0"}


@pytest.fixture
def machine(monkeypatch, tmp_path):
    """This machine: an H100 with TensorRT 10.9; build_engine records each build and returns bytes naming it."""
    state = {"gpu": H100, "tensorrt": "10.9.0", "builds": []}
    monkeypatch.setattr(engines, "gpu_identity", lambda: dict(state["gpu"]))
    monkeypatch.setattr(engines, "tensorrt_version", lambda: state["tensorrt"])

    def build(data, profile, fp16, name):
        state["builds"].append(name)
        state["built_from"] = data
        return f"engine of {name} for {state['gpu']['gpu']}, TensorRT {state['tensorrt']}".encode()

    monkeypatch.setattr(engines, "build_engine", build)
    onnx_path = shutil.copy(BUNDLES_DIR / "mnist" / "unet.onnx", tmp_path / "unet.onnx")
    return state, onnx_path, tmp_path / "cache"


def test_an_engine_is_built_once_and_reused(machine):
    state, onnx_path, cache = machine
    first = cached_engine(onnx_path, cache)
    assert cached_engine(onnx_path, cache) == first and state["builds"] == ["unet.onnx"]
    record = json.loads(record_path(first).read_text())
    assert record["parts"]["gpu"] == H100["gpu"] and record["bytes"] == len(first.read_bytes())
    assert not list(cache.glob("*.tmp-*"))


def test_another_gpu_or_tensorrt_version_gets_its_own_engine(machine):
    state, onnx_path, cache = machine
    h100 = cached_engine(onnx_path, cache)
    state["gpu"] = A100
    a100 = cached_engine(onnx_path, cache)
    state["tensorrt"] = "11.0.0"
    trt11 = cached_engine(onnx_path, cache)
    assert len({h100, a100, trt11}) == 3 and len(state["builds"]) == 3
    assert b"A100" in a100.read_bytes() and b"TensorRT 11.0.0" in trt11.read_bytes()


def test_an_engine_copied_from_another_gpu_under_this_machines_name_is_rebuilt(machine, caplog):
    state, onnx_path, cache = machine
    state["gpu"] = A100
    foreign = cached_engine(onnx_path, cache)
    state["gpu"] = H100
    expected_name = cached_engine(onnx_path, cache)  # builds the H100 engine and tells us its name
    shutil.copy(foreign, expected_name)  # someone copies the A100 cache over it, record and all
    shutil.copy(record_path(foreign), record_path(expected_name))
    with caplog.at_level(logging.WARNING, logger=engines.__name__):
        assert cached_engine(onnx_path, cache) == expected_name
    assert len(state["builds"]) == 3 and b"H100" in expected_name.read_bytes()
    assert "it was built for compute_capability='8.0' (here: '9.0'), gpu='NVIDIA A100-SXM4-40GB'" in caplog.text


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda engine: engine.write_bytes(engine.read_bytes()[:10]), "half-written or changed"),
        (lambda engine: engine.write_bytes(engine.read_bytes().replace(b"H100", b"H200")), "half-written or changed"),
        (lambda engine: record_path(engine).unlink(), "missing or unreadable"),
        (lambda engine: record_path(engine).write_text("{not json"), "missing or unreadable"),
        (lambda engine: record_path(engine).write_text("[]"), "does not say what it was built for"),
    ],
    ids=["truncated engine", "changed engine", "no record (an older cache)", "broken record", "record a list"],
)
def test_a_damaged_cache_entry_is_rebuilt(machine, caplog, damage, reason):
    state, onnx_path, cache = machine
    engine = cached_engine(onnx_path, cache)
    damage(engine)
    with caplog.at_level(logging.WARNING, logger=engines.__name__):
        assert cached_engine(onnx_path, cache) == engine
    assert len(state["builds"]) == 2 and reason in caplog.text
    assert engines.stale_reason(engine, json.loads(record_path(engine).read_text())["parts"]) is None


def test_an_engine_is_built_from_the_verified_bytes_and_keyed_by_them(machine):
    """Given the bytes load_bundle verified, the file on disk (swapped since) is never read: the engine is built
    from those bytes and its record holds their sha256."""
    state, onnx_path, cache = machine
    verified = onnx_path.read_bytes()
    onnx_path.write_bytes(b"swapped after the check")
    engine = cached_engine(onnx_path, cache, data=verified)
    assert state["built_from"] == verified and engine.name.startswith("unet-")
    assert json.loads(record_path(engine).read_text())["parts"]["onnx"] == hashlib.sha256(verified).hexdigest()
    assert cached_engine(onnx_path, cache) != engine  # by path, the swapped bytes: another key, another engine
    assert state["built_from"] == b"swapped after the check"


def test_the_profile_covers_each_input_read_from_the_bytes():
    pytest.importorskip("onnx")
    shapes = engines._input_shapes((BUNDLES_DIR / "mnist" / "unet.onnx").read_bytes())
    assert shapes == {"x": ["batch", 1, 28, 28], "t": ["batch"]}


@pytest.mark.parametrize("printed", ["", "\n", "NVIDIA H100 80GB HBM3\n", ", 9.0\n"])
def test_nvidia_smi_output_that_names_no_gpu_is_a_clear_error(monkeypatch, printed):
    completed = subprocess.CompletedProcess(args=[], returncode=0, stdout=printed)
    monkeypatch.setattr(engines.subprocess, "run", lambda *args, **kwargs: completed)
    with pytest.raises(EngineBuildError, match="Expected nvidia-smi to print a GPU's name and compute capability"):
        engines.gpu_identity()


def test_a_gpu_name_with_a_comma_is_read_whole(monkeypatch):
    completed = subprocess.CompletedProcess(args=[], returncode=0, stdout="NVIDIA RTX A6000, Ada, 8.9\n")
    monkeypatch.setattr(engines.subprocess, "run", lambda *args, **kwargs: completed)
    assert engines.gpu_identity() == {"gpu": "NVIDIA RTX A6000, Ada", "compute_capability": "8.9"}


def test_the_engine_bytes_given_to_run_are_those_built_or_checked(machine, monkeypatch):
    state, onnx_path, cache = machine
    path, built = engines.verified_engine(onnx_path, cache)
    assert built == path.read_bytes() == b"engine of unet.onnx for NVIDIA H100 80GB HBM3, TensorRT 10.9.0"
    reads = []
    read_bytes = engines.Path.read_bytes
    monkeypatch.setattr(engines.Path, "read_bytes", lambda self: reads.append(self.name) or read_bytes(self))
    assert engines.verified_engine(onnx_path, cache) == (path, built)
    assert reads.count(path.name) == 1  # read once: the bytes checked against the record are the bytes returned


@pytest.mark.parametrize(("visible", "expected"), [(None, []), ("2,0", ["--id=2"]), ("GPU-8f2c", ["--id=GPU-8f2c"])])
def test_the_gpu_asked_about_is_the_one_cuda_uses(monkeypatch, visible, expected):
    asked = []

    def run(command, **kwargs):
        asked.append(command)
        return subprocess.CompletedProcess(args=command, returncode=0, stdout="NVIDIA A100-SXM4-40GB, 8.0\n")

    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    monkeypatch.setattr(engines.subprocess, "run", run)
    assert engines.gpu_identity() == {"gpu": "NVIDIA A100-SXM4-40GB", "compute_capability": "8.0"}
    assert asked[0][1:-2] == expected


def test_nvidia_smi_that_cannot_run_is_a_clear_error(monkeypatch):
    def run(command, **kwargs):
        raise PermissionError(13, "Permission denied", "nvidia-smi")

    monkeypatch.setattr(engines.subprocess, "run", run)
    with pytest.raises(EngineBuildError, match="nvidia-smi could not name one"):
        engines.gpu_identity()
