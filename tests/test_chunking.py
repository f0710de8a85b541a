"""A large defence call cut into chunks (runtime/chunking.py): each chunk's random draws are its share of the
whole call's, so a call gives the same labels, reconstructions, errors and latents, bit for bit, however it is cut;
and a bad max_batch or memory_budget is refused with a sentence that says what came."""

import re

import numpy as np
import pytest

from diffdefense.draws import draw, draw_chunks
from diffdefense.runtime.chunking import DEFAULT_MEMORY_BUDGET, candidate_bytes, chunk_bounds, images_per_chunk
from diffdefense.runtime.defender import Defender
from diffdefense.settings import PRESETS
from diffdefense.shipped import SAMPLES_DIR, bundle_dir

CHEAP = PRESETS["default"].with_(num_candidates=2, iterations=2)  # fresh noise, blank start, refining pass
IMAGE = (1, 28, 28)
FIELDS = ("labels", "reconstructions", "reconstruction_error", "latents", "probabilities")


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.load(SAMPLES_DIR / "mnist.npz")["images"][:7]


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.mark.parametrize(
    "settings",
    [PRESETS["paper"], PRESETS["default"], PRESETS["default"].with_(fresh_noise=False, refine=False)],
    ids=["paper", "default", "fixed-noise"],
)
def test_draw_chunks_are_slices_of_the_whole_calls_draws(settings):
    whole = draw(settings, 7)
    bounds = [(0, 3), (3, 4), (4, 7)]
    for (start, stop), part in zip(bounds, draw_chunks(settings, 7, bounds), strict=True):
        assert same_bits(part.latents, whole.latents[start:stop])
        assert same_bits(part.noise, whole.noise[:, :, start:stop])
        if settings.refine:
            assert same_bits(part.refine_noise, whole.refine_noise[:, start:stop])
        else:
            assert part.refine_noise is None
    # A chunk drawn as a batch of its own would differ: the noise depends on the batch size.
    assert not np.array_equal(draw(settings, 4).noise, whole.noise[:, :, :4])


def test_a_small_call_in_one_chunk_reuses_its_draws_read_only_and_a_large_one_draws_afresh(monkeypatch):
    import diffdefense.draws as draws_module

    settings = PRESETS["default"]
    (first,), (second,) = draw_chunks(settings, 1, [(0, 1)]), draw_chunks(settings, 1, [(0, 1)])
    assert first.noise is second.noise and not first.noise.flags.writeable
    assert same_bits(first.noise, draw(settings, 1).noise) and same_bits(first.latents, draw(settings, 1).latents)
    with pytest.raises(ValueError, match="read-only"):
        first.latents[0] = 0.0
    monkeypatch.setattr(draws_module, "REUSED_DRAW_NUMBERS", 0)
    (third,), (fourth,) = draw_chunks(settings, 1, [(0, 1)]), draw_chunks(settings, 1, [(0, 1)])
    assert third.noise is not fourth.noise and third.noise.flags.writeable
    assert same_bits(third.noise, first.noise)


@pytest.mark.parametrize("bounds", [[], [(0, 3)], [(0, 3), (4, 7)], [(0, 4), (4, 4), (4, 7)], [(1, 7)]])
def test_draw_chunks_refuses_chunks_that_do_not_tile_the_batch(bounds):
    with pytest.raises(ValueError, match="Expected non-empty consecutive chunks from 0 to 7"):
        draw_chunks(CHEAP, 7, bounds)


@pytest.mark.parametrize(
    "settings, call",
    [
        (CHEAP, {}),
        (CHEAP.with_(gradient="full"), {}),
        (CHEAP, {"iterations": 1, "initial_latents": "drawn"}),
    ],
    ids=["straight-through", "full-gradient", "warm-start"],
)
def test_a_call_cut_in_chunks_gives_the_unchunked_results_bit_for_bit(images, settings, call):
    defender = Defender(bundle_dir("mnist"), settings)
    if call.get("initial_latents") == "drawn":
        rng = np.random.default_rng(5)
        call = {**call, "initial_latents": rng.standard_normal((len(images), 1, *IMAGE)).astype(np.float32)}
    whole = defender(images, **call)
    assert images_per_chunk(settings, IMAGE) >= len(images)  # the default budget holds them in one chunk
    for cut in ({"max_batch": 3}, {"max_batch": 1}, {"memory_budget": 1}):
        chunked = defender(images, **call, **cut)
        for field in FIELDS:
            assert same_bits(getattr(chunked, field), getattr(whole, field)), f"{field} differs with {cut}"


def test_a_defender_made_with_a_budget_cuts_every_call_and_a_call_may_override_it(images, monkeypatch):
    import diffdefense.runtime.defender as defender_module

    sizes = []
    real = defender_module.chunk_bounds
    monkeypatch.setattr(defender_module, "chunk_bounds", lambda n, size: sizes.append(size) or real(n, size))
    whole = Defender(bundle_dir("mnist"), CHEAP)(images)
    chunked = Defender(bundle_dir("mnist"), CHEAP, max_batch=2)
    by_budget = Defender(bundle_dir("mnist"), CHEAP, memory_budget=1)
    sizes.clear()
    results = [chunked(images), by_budget(images), chunked(images, max_batch=5)]
    assert sizes == [2, 1, 5]
    for result in results:
        for field in FIELDS:
            assert same_bits(getattr(result, field), getattr(whole, field)), field


def test_the_chunk_size_follows_the_budget_and_max_batch():
    per_image = CHEAP.num_candidates * candidate_bytes(CHEAP, IMAGE)
    assert images_per_chunk(CHEAP, IMAGE, memory_budget=5 * per_image) == 5
    assert images_per_chunk(CHEAP, IMAGE, memory_budget=5 * per_image - 1) == 4
    assert images_per_chunk(CHEAP, IMAGE, max_batch=3, memory_budget=5 * per_image) == 3
    assert images_per_chunk(CHEAP, IMAGE, memory_budget=1) == 1  # never less than one image
    assert images_per_chunk(CHEAP, IMAGE) == DEFAULT_MEMORY_BUDGET // per_image
    # Full gradients keep the vector-Jacobian graph's activations too: fewer images fit the same budget.
    assert images_per_chunk(CHEAP.with_(gradient="full"), IMAGE) < images_per_chunk(CHEAP, IMAGE)
    assert chunk_bounds(7, 3) == [(0, 3), (3, 6), (6, 7)] and chunk_bounds(2, 8) == [(0, 2)]


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"max_batch": 0}, "Expected max_batch to be None or an integer of at least 1, but got 0."),
        ({"max_batch": 2.5}, "Expected max_batch to be None or an integer of at least 1, but got 2.5."),
        ({"max_batch": True}, "Expected max_batch to be None or an integer of at least 1, but got True."),
        ({"max_batch": "8"}, "Expected max_batch to be None or an integer of at least 1, but got '8'."),
        (
            {"memory_budget": 0},
            "Expected memory_budget to be None or a whole number of bytes of at least 1, but got 0.",
        ),
        ({"memory_budget": -(2**30)}, "a whole number of bytes of at least 1, but got -1073741824."),
        ({"memory_budget": 1e9}, "a whole number of bytes of at least 1, but got 1000000000.0."),
    ],
)
def test_a_bad_max_batch_or_memory_budget_is_refused_before_any_work(images, arguments, message):
    defender = Defender(bundle_dir("mnist"), CHEAP)
    with pytest.raises(ValueError, match=re.escape(message)):
        defender(images, **arguments)
    with pytest.raises(ValueError, match=re.escape(message)):  # and by the constructor, before any session
        Defender(bundle_dir("mnist"), CHEAP, **arguments)
