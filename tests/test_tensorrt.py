"""TensorRT engines (built through polygraphy, cached per GPU and version) and the native TensorRT backend.

The key and the refusals run everywhere; building and running engines needs TensorRT and an NVIDIA GPU and skips,
saying why, without them."""

import shutil

import numpy as np
import pytest

from diffdefense.runtime.backends import BackendError
from diffdefense.runtime.backends.tensorrt_engines import BatchProfile, engine_key
from diffdefense.runtime.defender import Defender
from diffdefense.settings import DefenseSettings

SETTINGS = DefenseSettings(num_candidates=3, iterations=3, num_steps=4, start_step=14, lr=0.1)
GPU = {"gpu": "NVIDIA H100", "compute_capability": "9.0"}


def test_the_engine_key_changes_with_everything_an_engine_depends_on():
    pytest.importorskip("polygraphy", reason="polygraphy comes with the [dev] and [tensorrt] extras")
    base = engine_key("a" * 64, GPU, "10.9.0", BatchProfile(), fp16=False)
    assert base == engine_key("a" * 64, dict(GPU), "10.9.0", BatchProfile(), fp16=False)
    others = [
        engine_key("b" * 64, GPU, "10.9.0", BatchProfile(), fp16=False),
        engine_key("a" * 64, {**GPU, "gpu": "Orin"}, "10.9.0", BatchProfile(), fp16=False),
        engine_key("a" * 64, {**GPU, "compute_capability": "8.7"}, "10.9.0", BatchProfile(), fp16=False),
        engine_key("a" * 64, GPU, "11.0.0", BatchProfile(), fp16=False),
        engine_key("a" * 64, GPU, "10.9.0", BatchProfile(max=8192), fp16=False),
        engine_key("a" * 64, GPU, "10.9.0", BatchProfile(), fp16=True),
    ]
    assert base not in others and len(set(others)) == len(others)


def test_a_bad_profile_is_refused():
    with pytest.raises(ValueError, match="Expected 1 <= min <= opt <= max"):
        BatchProfile(min=8, opt=4, max=16)


def test_fp16_on_onnxruntime_is_refused(exported_bundle):
    with pytest.raises(BackendError, match="fp16 applies to the 'tensorrt-engine' backend only"):
        Defender(exported_bundle.path, SETTINGS, fp16=True)


def _have_tensorrt_and_gpu() -> str | None:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "TensorRT is not installed (pip install 'diffdefense[tensorrt]')"
    if shutil.which("nvidia-smi") is None:
        return "no NVIDIA GPU (nvidia-smi not found)"
    return None


def test_without_tensorrt_or_a_gpu_the_native_backend_says_what_is_missing(exported_bundle):
    if _have_tensorrt_and_gpu() is None:
        pytest.skip("TensorRT and a GPU are present: nothing is missing")
    with pytest.raises(BackendError, match="TensorRT|GPU|nvidia-smi|polygraphy"):
        Defender(exported_bundle.path, SETTINGS, provider="tensorrt-engine")


@pytest.mark.parametrize("fp16", [False, True])
def test_native_tensorrt_matches_the_cpu(exported_bundle, tmp_path, monkeypatch, fp16):
    missing = _have_tensorrt_and_gpu()
    if missing:
        pytest.skip(missing)
    monkeypatch.setenv("DIFFDEFENSE_ENGINE_CACHE", str(tmp_path))
    import diffdefense.runtime.backends.tensorrt_engines as engines

    monkeypatch.setattr(engines, "DEFAULT_CACHE", tmp_path)
    images = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
    cpu = Defender(exported_bundle.path, SETTINGS, provider="cpu")(images)
    gpu = Defender(exported_bundle.path, SETTINGS, provider="tensorrt-engine", fp16=fp16)(images)
    assert len(list(tmp_path.glob("*.engine"))) == 2  # the U-Net's and the classifier's, cached
    assert np.abs(gpu.reconstructions - cpu.reconstructions).max() < (5e-2 if fp16 else 1e-2)
    np.testing.assert_array_equal(gpu.labels, cpu.labels)


class FakeTrtRunner:
    """polygraphy's TrtRunner as TensorRTRunner uses it, on the host: one reused output buffer (as polygraphy keeps
    its host buffers between calls) and a batch limit standing for the engine's profile."""

    def __init__(self, engine_loader) -> None:
        self.buffer = np.zeros((4, 1, 28, 28), np.float32)

    def activate(self) -> None:
        pass

    def get_input_metadata(self, use_numpy_dtypes=None):
        from polygraphy.common import TensorMetadata
        from polygraphy.datatype import DataType

        assert use_numpy_dtypes is False  # numpy dtypes are deprecated there
        return TensorMetadata().add("x", DataType.FLOAT16, (-1, 1, 28, 28)).add("t", DataType.INT64, (-1,))

    def infer(self, feed, check_inputs=True):
        assert feed["x"].dtype == np.float16 and feed["t"].dtype == np.int64
        if len(feed["x"]) > len(self.buffer):
            raise RuntimeError("input shape is outside the profile's range")
        self.buffer[: len(feed["x"])] = feed["x"]
        return {"eps": self.buffer[: len(feed["x"])]}


def test_the_tensorrt_runner_casts_inputs_copies_outputs_and_names_its_engine_in_errors(monkeypatch):
    import sys
    import types

    import polygraphy.backend.trt as trt_backend

    from diffdefense.runtime.backends.tensorrt import TensorRTRunner

    monkeypatch.setitem(sys.modules, "tensorrt", sys.modules.get("tensorrt") or types.ModuleType("tensorrt"))
    monkeypatch.setattr(trt_backend, "TrtRunner", FakeTrtRunner)
    monkeypatch.setattr(trt_backend, "EngineFromBytes", lambda data: data)
    runner = TensorRTRunner(b"engine bytes", "unet-abc.engine")
    first = runner.run(np.ones((2, 1, 28, 28)), np.array([3, 3]))
    runner.run(np.zeros((2, 1, 28, 28)), np.array([3, 3]))
    assert first.dtype == np.float32 and (first == 1).all()  # not overwritten by the next call's output
    with pytest.raises(BackendError, match="TensorRT failed while running unet-abc.engine: input shape is outside"):
        runner.run(np.zeros((8, 1, 28, 28)), np.zeros(8))


def test_the_default_engine_profile_covers_the_default_preset_at_the_largest_checked_batch():
    from diffdefense.settings import PRESETS

    profile = BatchProfile()
    assert profile.opt == 8 * PRESETS["default"].num_candidates and profile.max >= 4096
