"""A provider that fails while it runs (issue 7): the error comes out as a BackendError that names the graph file
and the provider, whether onnxruntime raised it on its own or a device gave out mid-run."""

import numpy as np
import pytest

from diffdefense.runtime.backends import BackendError, BackendOptions, OnnxRunner
from diffdefense.runtime.defender import Defender
from diffdefense.settings import DefenseSettings
from diffdefense.shipped import BUNDLES_DIR

BUNDLE = BUNDLES_DIR / "mnist"
FAST = DefenseSettings(num_candidates=2, iterations=2, num_steps=2, start_step=14)


class FailsAfter:
    """An onnxruntime session that runs `calls` times and then fails as a lost device does."""

    def __init__(self, session, calls: int) -> None:
        self.session, self.calls = session, calls

    def run(self, output_names, feed):
        if self.calls == 0:
            raise RuntimeError("[ONNXRuntimeError] : 1 : FAIL : CUDA failure 999: unknown error (device lost)")
        self.calls -= 1
        return self.session.run(output_names, feed)


def test_a_provider_that_fails_mid_run_names_the_graph_and_the_provider():
    # the general graph's session, in one part, is the one made to fail
    defender = Defender(BUNDLE, FAST, unet_graphs="general", backend=BackendOptions(shards=1))
    images = np.full((1, 1, 28, 28), 0.5, np.float32)
    defender.unet.session = FailsAfter(defender.unet.session, calls=3)  # the 4th U-Net call of 4 fails
    with pytest.raises(BackendError, match=r"onnxruntime's CPUExecutionProvider failed while running unet\.onnx: "):
        defender(images)
    with pytest.raises(BackendError, match="device lost"):  # and keeps failing, clearly, on the next batch
        defender(images)


def test_an_error_from_onnxruntime_itself_is_wrapped_too():
    runner = OnnxRunner(BUNDLE / "classifier.onnx")
    with pytest.raises(BackendError, match=r"failed while running classifier\.onnx: .*tensor\(double\)"):
        runner.run(np.zeros((1, 1, 28, 28), np.float64))  # a float64 feed to a float32 graph
    assert runner.run(np.zeros((1, 1, 28, 28), np.float32)).shape == (1, 10)  # the session still works after


def test_a_graph_onnxruntime_cannot_load_is_a_backend_error(tmp_path):
    (tmp_path / "broken.onnx").write_bytes(b"not a protobuf")
    with pytest.raises(BackendError, match=r"CPUExecutionProvider could not load broken\.onnx"):
        OnnxRunner(tmp_path / "broken.onnx")


def test_a_runner_built_from_verified_bytes_ignores_the_file_on_disk(tmp_path):
    data = (BUNDLE / "classifier.onnx").read_bytes()
    (tmp_path / "classifier.onnx").write_bytes(b"swapped after the check")
    runner = OnnxRunner(tmp_path / "classifier.onnx", data=data)
    assert runner.run(np.zeros((2, 1, 28, 28), np.float32)).shape == (2, 10)
