"""Sharded U-Net calls (runtime/backends/sharded.py): the batch cut into parts that separate CPU sessions run at the
same time gives every image the result one session gives it, bit for bit; the options that choose the split are
checked, and a closed or failing part says so."""

import numpy as np
import pytest

from diffdefense.runtime.backends import BackendError, BackendOptions, OnnxRunner, ShardedRunner, make_runner
from diffdefense.runtime.backends.sharded import resolve_shards, usable_cores
from diffdefense.runtime.defender import Defender
from diffdefense.settings import DefenseSettings
from diffdefense.shipped import BUNDLES_DIR

BUNDLE = BUNDLES_DIR / "mnist"
TINY = DefenseSettings(num_candidates=3, iterations=2, num_steps=2, start_step=14)


def latents(batch: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-3, 3, (batch, 1, 28, 28)).astype(np.float32)


@pytest.mark.parametrize("graph", ["unet_t14.int8.onnx", "unet_t14.onnx"])
@pytest.mark.parametrize("batch", [1, 2, 7, 12])
def test_every_image_gets_what_one_session_gives_it(graph, batch):
    one = OnnxRunner(BUNDLE / graph, threads=1)
    sharded = make_runner(BUNDLE / graph, threads=2, shards=2)
    assert isinstance(sharded, ShardedRunner) and len(sharded.runners) == 2
    x = latents(batch)
    np.testing.assert_array_equal(sharded.run(x), one.run(x))


def test_the_general_graph_shards_both_of_its_inputs():
    one = OnnxRunner(BUNDLE / "unet.onnx", threads=1)
    sharded = make_runner(BUNDLE / "unet.onnx", threads=3, shards=3)
    x, t = latents(5), np.array([14, 0, 14, 3, 0], dtype=np.int64)  # per-image timesteps must follow their image
    np.testing.assert_array_equal(sharded.run(x, t), one.run(x, t))


def test_the_split_follows_the_thread_budget():
    assert resolve_shards(None, 1, "cpu") == (1, 1)  # one thread: nothing to share
    assert resolve_shards(None, 4, "cpu") == (2, 2)  # two halves, each with half the threads
    assert resolve_shards(3, 7, "cpu") == (3, 2)
    assert resolve_shards(4, 2, "cpu") == (4, 1)  # at least one thread per part
    assert resolve_shards(1, None, "cpu") == (1, None)  # one session keeps onnxruntime's default
    assert resolve_shards(None, None, "cuda") == (1, None)
    assert resolve_shards(None, None, "cpu")[0] == min(2, usable_cores())
    with pytest.raises(BackendError, match="Sharded calls run on the CPU provider only, but provider is 'cuda'"):
        resolve_shards(2, None, "cuda")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"shards": 0}, "Expected shards to be None or a positive integer, but got 0."),
        ({"shards": 1.5}, "Expected shards to be None or a positive integer, but got 1.5."),
        ({"shards": True}, "Expected shards to be None or a positive integer, but got True."),
        ({"shards": 2, "provider": "cuda"}, "Expected shards None or 1 with provider 'cuda'"),
    ],
)
def test_a_bad_shard_count_is_refused_with_a_sentence(options, message):
    with pytest.raises(ValueError, match=message):
        BackendOptions(**options)


def test_a_sharded_defender_gives_the_one_session_result_and_keeps_the_classifier_whole():
    images = np.load(BUNDLES_DIR.parent / "samples" / "mnist.npz")["images"][:2]
    with Defender(BUNDLE, TINY, backend=BackendOptions(threads=2, shards=2)) as sharded:
        assert all(isinstance(r, ShardedRunner) for r in sharded.unet.folded.values())
        assert isinstance(sharded.classifier, OnnxRunner)
        result = sharded(images)
    with Defender(BUNDLE, TINY, backend=BackendOptions(threads=2, shards=1)) as whole:
        assert all(isinstance(r, OnnxRunner) for r in whole.unet.folded.values())
        expected = whole(images)
    np.testing.assert_array_equal(result.reconstructions, expected.reconstructions)
    np.testing.assert_array_equal(result.probabilities, expected.probabilities)


def test_close_releases_every_part_and_run_after_it_is_refused():
    sharded = make_runner(BUNDLE / "unet_t0.onnx", threads=2, shards=2)
    sharded.close()
    sharded.close()  # a second close does nothing
    assert all(r.session is None for r in sharded.runners)
    with pytest.raises(BackendError, match="sharded sessions of unet_t0.onnx were closed"):
        sharded.run(latents(4))


class FailingRunner:
    name, provider = "broken.onnx", "CPUExecutionProvider"

    def run(self, *inputs):
        raise BackendError("onnxruntime's CPUExecutionProvider failed while running broken.onnx: out of memory")

    def close(self):
        pass


def test_a_part_that_fails_fails_the_call_with_its_sentence():
    sharded = ShardedRunner([OnnxRunner(BUNDLE / "unet_t0.onnx", threads=1), FailingRunner()])
    with pytest.raises(BackendError, match="failed while running broken.onnx: out of memory"):
        sharded.run(latents(4))
    with pytest.raises(ValueError, match="Expected at least 2 runners to shard over, but got 1"):
        ShardedRunner([FailingRunner()])
