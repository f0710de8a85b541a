"""Backends behind one protocol: BackendOptions checks a Defender's backend choice in one place, the older keyword
arguments still build one, and a Defender owns its runners (close(), a context manager, refusal once closed)."""

import numpy as np
import pytest

from diffdefense.runtime.backends import BackendError, BackendOptions, OnnxRunner, Runner
from diffdefense.runtime.defender import Defender
from diffdefense.settings import DefenseSettings
from diffdefense.shipped import BUNDLES_DIR

BUNDLE = BUNDLES_DIR / "mnist"
TINY = DefenseSettings(num_candidates=2, iterations=2, num_steps=2, start_step=14)


def test_the_defaults_are_written_once():
    assert BackendOptions() == BackendOptions("cpu", None, False, "auto", None)
    assert BackendOptions(threads=np.int64(2)).threads == 2 and type(BackendOptions(threads=np.int64(2)).threads) is int


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"provider": "gpu"}, r"Expected provider to be one of \['cpu', 'cuda', 'tensorrt', 'tensorrt-engine'\], but "),
        ({"threads": 0}, "Expected threads to be None or a positive integer, but got 0."),
        ({"threads": 1.5}, "Expected threads to be None or a positive integer, but got 1.5."),
        ({"threads": True}, "Expected threads to be None or a positive integer, but got True."),
        ({"fp16": "yes"}, "Expected fp16 to be True or False, but got 'yes'."),
        ({"step_ops": "torch"}, r"Expected step_ops in \['auto', 'cpp_ext', 'numpy'\], but got 'torch'."),
        ({"device_loop": 1}, "Expected device_loop to be None, True or False, but got 1."),
    ],
)
def test_a_bad_option_is_refused_with_a_sentence(options, message):
    with pytest.raises(ValueError, match=message):
        BackendOptions(**options)
    with pytest.raises(ValueError, match=message):  # the same check behind the Defender's keyword arguments
        Defender(BUNDLE, TINY, **options)


def test_keywords_and_options_give_the_same_defender_but_not_both_at_once():
    by_keywords = Defender(BUNDLE, TINY, provider="cpu", threads=1, step_ops="numpy")
    by_options = Defender(BUNDLE, TINY, backend=BackendOptions(threads=1, step_ops="numpy"))
    assert by_keywords.backend == by_options.backend == BackendOptions("cpu", 1, False, "numpy", None)
    images = np.load(BUNDLES_DIR.parent / "samples" / "mnist.npz")["images"][:2]
    np.testing.assert_array_equal(by_keywords(images).reconstructions, by_options(images).reconstructions)
    with pytest.raises(ValueError, match="either as backend=BackendOptions.* but got both: backend and threads"):
        Defender(BUNDLE, TINY, threads=2, backend=BackendOptions())


def test_spinning_threads_change_the_time_not_the_bits():
    with pytest.raises(ValueError, match="Expected spin to be True or False, but got 'no'."):
        BackendOptions(spin="no")
    images = np.load(BUNDLES_DIR.parent / "samples" / "mnist.npz")["images"][:2]
    results = []
    for spin in (True, False):
        with Defender(BUNDLE, TINY, backend=BackendOptions(threads=2, spin=spin)) as defender:
            results.append(defender(images).reconstructions)
    np.testing.assert_array_equal(*results)


def test_runners_follow_the_protocol_and_close_once():
    runner = OnnxRunner(BUNDLE / "classifier.onnx")
    assert isinstance(runner, Runner)
    runner.close()
    runner.close()  # a second close does nothing
    with pytest.raises(BackendError, match="session of classifier.onnx was closed"):
        runner.run(np.zeros((1, 1, 28, 28), np.float32))


def test_a_defender_closes_its_runners_and_refuses_to_run_after():
    images = np.load(BUNDLES_DIR.parent / "samples" / "mnist.npz")["images"][:1]
    with Defender(BUNDLE, TINY) as defender:  # the bundle's default precision on the CPU: int8
        unet = defender.unet
        assert defender(images).labels.shape == (1,)
    runners = [*unet.folded.values(), unet.general]
    sessions = [part for r in runners if r is not None for part in getattr(r, "runners", [r])]  # sharded: parts
    assert defender.closed and sessions and all(runner.session is None for runner in sessions)
    defender.close()  # twice is fine
    with pytest.raises(
        BackendError, match="This Defender was closed, so it cannot run its unet \\(t=14: unet_t14.int8.onnx"
    ):
        defender(images)
