"""Property tests (hypothesis, issue 7) on the runtime's public entry points. Every generated case gets a result
that passes the checks below or a ValueError with a message; never another exception, a hang, or a silent wrong
answer. Each test decides from the input alone, by the documented contract, which of the two it must be.

Generated cases per test by default; DIFFDEFENSE_HYPOTHESIS_EXAMPLES=N runs N for each instead, and pytest's
--hypothesis-show-statistics prints each test's count with the share of each outcome (its events):

    check_images: arrays of every dtype, shape, value, byte order and memory layout        500
    Defender.__call__: the same arrays (batches up to 4)                                   100
    Defender.__call__: initial_latents and iterations                                      100
    Defender.__call__: initial latents equal to the draws change nothing (every case)       12
    Defender.__call__: a batch of 128                                                        1
    FramePreprocessor.__call__: frames and settings of every kind                          500
    FramePreprocessor.batch and defend_frames: one frame, lists and stacks                  60
    read_image_file: random bytes, .npy, .npz, truncated files, pictures                   200
    WarmStart: settings and updates, against a model                                       300
    WarmStart in defend_stream with a real Defender                                         30
    FrameQueue: constructor and get's timeout                                              100
    FrameQueue: single thread against a model (state machines of up to 30 steps)           100
    FrameQueue: a producer and a consumer thread                                            60

A result passes when: labels are in range and the argmax of finite probabilities that sum to 1 (the classifier's on
the reconstruction); reconstructions are finite, in [0, 1]; errors are finite, >= 0 and the mean squared error
between reconstruction and input; flags follow the threshold; a strided, reversed or read-only view gives the bits
of its contiguous copy; a constant frame (or a region of interest filled with one value) maps to the value the
value range predicts.

Defects the property tests found are reproduced at the end of the file (once strict xfails, now fixed), with
the inputs that the strategies do not draw: damaged files, latents near float32's limit, absurd iterations.
"""

import math
import os
import re
import threading
import time
import warnings
import zipfile
from collections import deque
from pathlib import Path
from tempfile import TemporaryDirectory
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

cv2 = pytest.importorskip("cv2", reason="OpenCV (the [video] extra) is not installed")

from diffdefense.draws import draw  # noqa: E402
from diffdefense.runtime.defender import MAX_ITERATIONS, MAX_LATENT, Defender, softmax  # noqa: E402
from diffdefense.runtime.inputs import read_image_file  # noqa: E402
from diffdefense.runtime.stream import defend_stream  # noqa: E402
from diffdefense.runtime.stream.frame_queue import FrameQueue, QueueClosed  # noqa: E402
from diffdefense.runtime.stream.frames import FramePreprocessor, defend_frames  # noqa: E402
from diffdefense.runtime.stream.warm_start import WarmStart  # noqa: E402
from diffdefense.runtime.validation import check_images  # noqa: E402
from diffdefense.settings import PRESETS  # noqa: E402
from diffdefense.shipped import SAMPLES_DIR, bundle_dir  # noqa: E402

CHEAP = PRESETS["default"].with_(num_candidates=2, iterations=2)  # 8 U-Net evaluations per image
R = CHEAP.num_candidates
SAMPLES = np.load(SAMPLES_DIR / "mnist.npz")["images"]
IMAGE = (1, 28, 28)
FRAME_DTYPES = {
    np.dtype(t): top for t, top in (("uint8", 255.0), ("uint16", 65535.0), ("float32", 1.0), ("float64", 1.0))
}


def one_in(draw_, n: int) -> bool:
    """True one time in n. Not at an end of the range: hypothesis draws the ends of a range far more often."""
    return draw_(st.integers(0, n - 1)) == n // 2


def cases(default: int) -> settings:
    count = int(os.environ.get("DIFFDEFENSE_HYPOTHESIS_EXAMPLES", default))
    slow = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example]
    return settings(max_examples=count, deadline=None, database=None, suppress_health_check=slow)


@pytest.fixture(scope="module")
def defender() -> Defender:
    return Defender(bundle_dir("mnist"), CHEAP)


def refused(call, strict: bool = True) -> str:
    """Run call, which must raise ValueError with a message (strict: a sentence ending in a full stop)."""
    with pytest.raises(ValueError) as caught:
        call()
    message = str(caught.value)
    assert len(message) > 15 and (not strict or message.endswith(".")), message
    outcome(f"refused: {' '.join(message.split()[:6])}")
    return message


def outcome(text: str) -> None:
    """A hypothesis event (counted in --hypothesis-show-statistics); nothing outside a hypothesis test."""
    try:
        event(re.sub(r"/tmp/\S+", "FILE", text))
    except InvalidArgument:
        pass


def quietly(make):
    with warnings.catch_warnings(), np.errstate(all="ignore"):  # casts of NaN and overflow are the point here
        warnings.simplefilter("ignore")
        return make()


def laid_out(array: np.ndarray, layout: str) -> np.ndarray:
    """The same values in another memory layout: a strided, reversed, transposed, Fortran or read-only view."""
    if array.ndim == 0 or array.dtype == object:
        return array
    if layout == "strided":
        big = np.zeros((*array.shape[:-1], 2 * array.shape[-1]), array.dtype)
        big[..., ::2] = array
        return big[..., ::2]
    if layout == "reversed":
        return np.ascontiguousarray(array[::-1])[::-1]
    if layout == "transposed":
        return np.ascontiguousarray(array.T).T
    if layout == "fortran":
        return np.asfortranarray(array)
    if layout == "readonly":
        array = array.copy()
        array.setflags(write=False)
    return array


def usually(usual, rare, every: int = 5):
    """The strategy usual, or one time in `every` the strategy rare."""
    return st.integers(0, every - 1).flatmap(lambda k: rare if k == every // 2 else usual)


def mostly(draw_, usual, rare, every: int = 5):
    """A draw from the strategy usual, or one time in `every` from rare (the weights hypothesis' own choice among
    strategies would not give); shrinking goes towards usual."""
    return draw_(rare if one_in(draw_, every) else usual)


LAYOUTS = st.sampled_from(["strided", "reversed", "transposed", "fortran", "readonly"])


@st.composite
def image_batches(draw_, max_batch: int = 6):
    """Arrays meant as image batches: about half valid; the rest with a wrong dtype, shape or value (NaN,
    infinities, beyond [0, 1]), an empty batch, or not an array; every kind in every memory layout."""
    if one_in(draw_, 20):
        return draw_(st.sampled_from([None, 0.5, "images", [[0.5]], SAMPLES[:1].tolist()]))
    batch = mostly(draw_, st.integers(1, max_batch), st.just(0), every=8)
    shape = mostly(
        draw_,
        st.just((batch, *IMAGE)),
        st.sampled_from([(batch, 28, 28), (batch, 3, 28, 28), (batch, 1, 28, 27), IMAGE, (), (batch,)]),
    )
    rng = np.random.default_rng(draw_(st.integers(0, 2**32 - 1)))
    pattern = draw_(st.sampled_from(["uniform", "binary", "constant", "digits"]))
    values = {
        "uniform": lambda: rng.random(shape),
        "binary": lambda: rng.integers(0, 2, shape).astype(float),
        "constant": lambda: np.full(shape, rng.random()),
        "digits": lambda: np.resize(SAMPLES.astype(float), shape),
    }[pattern]()
    if values.size and one_in(draw_, 5):
        bad = draw_(st.sampled_from([np.nan, np.inf, -np.inf, -1e-6, -1.0, 1.0 + 1e-6, 2.0, 1e30]))
        values.flat[rng.integers(values.size)] = bad
    dtype = mostly(
        draw_,
        st.sampled_from(["float32", "float32", "float64", "float16"]),
        st.sampled_from([">f4", "uint8", "int32", "bool", "complex64"]),
    )
    array = quietly(lambda: values.astype(dtype))
    return mostly(draw_, st.just(array), LAYOUTS.map(lambda layout: laid_out(array, layout)), every=3)


def valid_images(x) -> bool:
    """The documented contract: a batch (B >= 1, 1, 28, 28) of native float16/32/64, finite, in [0, 1]."""
    return (
        isinstance(x, np.ndarray)
        and x.dtype in (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
        and x.shape[1:] == IMAGE
        and x.ndim == 4
        and x.shape[0] >= 1
        and bool(np.isfinite(x).all())
        and 0 <= x.min()
        and x.max() <= 1
    )


def check_result(defender: Defender, images: np.ndarray, result) -> None:
    """Everything a DefenseResult promises, for the float32 images the defender saw."""
    batch = len(images)
    labels, p = result.labels, result.probabilities
    assert labels.shape == (batch,) and labels.dtype.kind in "iu"
    assert ((0 <= labels) & (labels < len(defender.label_names))).all()
    assert p.shape == (batch, len(defender.label_names)) and np.isfinite(p).all() and (p >= 0).all()
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-6)
    assert (labels == p.argmax(axis=1)).all()
    recon = result.reconstructions
    assert recon.shape == (batch, *IMAGE) and recon.dtype == np.float32
    assert np.isfinite(recon).all() and recon.min() >= 0 and recon.max() <= 1
    # the label is the classifier's on the reconstruction, and the error is the reconstruction's distance
    np.testing.assert_allclose(p, softmax(defender.classifier.run(recon).astype(np.float64)), rtol=1e-6, atol=1e-9)
    error = result.reconstruction_error
    assert error.shape == (batch,) and np.isfinite(error).all() and (error >= 0).all()
    if not defender.settings.refine:  # with it, the error is the fit before the refining pass (a test below)
        mse = ((recon.astype(np.float64) - images) ** 2).mean(axis=(1, 2, 3))
        np.testing.assert_allclose(error, mse, rtol=1e-4, atol=1e-7)
    score = result.detection_score
    if defender.detection_score == "refined_l1":  # the output's mean absolute distance to the input
        l1 = np.abs(recon.astype(np.float64) - images).mean(axis=(1, 2, 3))
        np.testing.assert_allclose(score, l1, rtol=1e-5, atol=1e-7)
    else:
        np.testing.assert_array_equal(score, error)
    flags = result.attack_flag
    assert flags.dtype == bool and flags.shape == (batch,)
    assert (flags == (score > result.threshold)).all() if result.threshold is not None else not flags.any()
    assert result.latents.shape == (batch, *IMAGE) and np.isfinite(result.latents).all()


def test_the_refining_pass_changes_the_images_alone(defender):
    """The error and the latents are the chosen candidate's fit, as without the pass; the images are not (nor the
    detection score, which measures them)."""
    assert defender.settings.refine
    images = np.random.default_rng(0).random((3, *IMAGE), dtype=np.float32)
    refined = defender(images)
    without = Defender(bundle_dir("mnist"), defender.settings.with_(refine=False))
    plain = without(images)
    for field in ("reconstruction_error", "latents"):
        np.testing.assert_array_equal(getattr(refined, field), getattr(plain, field))
    check_result(without, images, plain)  # there the error is the images' distance to the input
    assert np.abs(refined.reconstructions - plain.reconstructions).max() > 0.1


def same_bits(a, b) -> bool:
    return all(
        np.asarray(getattr(a, f)).tobytes() == np.asarray(getattr(b, f)).tobytes()
        for f in ("labels", "probabilities", "reconstructions", "reconstruction_error")
    )


# --- check_images and Defender.__call__ ------------------------------------------------------------------------


@cases(500)
@given(images=image_batches())
def test_check_images_gives_float32_copies_of_valid_batches_and_refuses_the_rest(images):
    if not valid_images(images):
        refused(lambda: check_images(images))
        return
    outcome("valid")
    checked = check_images(images)
    assert checked.dtype == np.float32 and checked.flags.c_contiguous and checked.shape == images.shape
    assert checked.tobytes() == images.astype(np.float32).tobytes()


@cases(100)
@given(images=image_batches(max_batch=4))
def test_the_defender_answers_valid_batches_correctly_and_refuses_the_rest(defender, images):
    if not valid_images(images):
        refused(lambda: defender(images))
        return
    outcome("valid, contiguous" if images.flags.c_contiguous and images.flags.writeable else "valid, a view")
    result = defender(images)
    check_result(defender, images.astype(np.float32), result)
    if not (images.flags.c_contiguous and images.flags.writeable):
        assert same_bits(result, defender(np.ascontiguousarray(images)))


@st.composite
def latents(draw_, batch: int):
    """initial_latents: mostly (B, K, 1, 28, 28) with K around R, of numeric dtypes and magnitudes up to 1e30
    (above MAX_LATENT refused); wrong shapes, NaN and infinities mixed in; now and then not an array."""
    kind = draw_(st.integers(0, 14))
    if kind == 0:
        return None
    if kind == 1:
        return draw_(st.sampled_from([[0.0], 0.0, "latents"]))
    k = mostly(draw_, st.integers(1, R), st.sampled_from([0, R + 1]))
    wrong = [(batch + 1, k, *IMAGE), (batch, *IMAGE), (batch, k, 1, 28, 27), (batch, k, 1, *IMAGE)]
    shape = mostly(draw_, st.just((batch, k, *IMAGE)), st.sampled_from(wrong))
    rng = np.random.default_rng(draw_(st.integers(0, 2**32 - 1)))
    values = rng.standard_normal(shape) * draw_(st.sampled_from([1e-3, 1.0, 10.0, 1e3, 1e6, 1e12, 1e30]))
    if values.size and one_in(draw_, 5):
        values.flat[rng.integers(values.size)] = draw_(st.sampled_from([np.nan, np.inf, -np.inf]))
    dtype = draw_(st.sampled_from(["float32"] * 3 + ["float64", "float16", "int8", "int64", "uint8", "bool"]))
    if np.dtype(dtype).kind in "iu":
        info = np.iinfo(dtype)
        values = np.clip(np.nan_to_num(values), info.min, info.max)
    array = quietly(lambda: values.astype(dtype))
    return mostly(draw_, st.just(array), LAYOUTS.map(lambda layout: laid_out(array, layout)), every=3)


ITERATIONS = usually(
    st.sampled_from([None, 1, 2, 3]), st.sampled_from([0, -1, True, False, 2.0, "2", np.int64(2), MAX_ITERATIONS + 1])
)


@cases(100)
@given(data=st.data(), batch=st.integers(1, 3), iterations=ITERATIONS)
def test_warm_start_arguments_are_used_or_refused(defender, data, batch, iterations):
    initial = data.draw(latents(batch))
    images = SAMPLES[:batch]
    good_latents = initial is None or (
        isinstance(initial, np.ndarray)
        and initial.ndim == 5
        and initial.shape[0] == batch
        and 1 <= initial.shape[1] <= R
        and initial.shape[2:] == IMAGE
        and initial.dtype.kind in "fiu"  # real numbers: not bools, nor complex
        and bool((np.abs(quietly(lambda: initial.astype(np.float32))) <= MAX_LATENT).all())  # NaN fails too
    )
    good_iterations = iterations is None or (type(iterations) is int and 1 <= iterations <= MAX_ITERATIONS)
    call = lambda: defender(images, initial_latents=initial, iterations=iterations)  # noqa: E731
    if isinstance(iterations, np.integer) and good_latents:  # either is fine: numpy's integers are not Python's
        try:
            check_result(defender, images, call())
        except ValueError:
            pass
        return
    if not (good_latents and good_iterations):
        refused(call)
        return
    outcome("valid" if initial is None else "valid, warm")
    check_result(defender, images, call())


@cases(12)
@given(batch=st.integers(1, 3), k=st.integers(1, R), dtype=st.sampled_from([np.float32, np.float64]))
def test_initial_latents_go_to_the_first_candidates(defender, batch, k, dtype):
    """Starting candidates at the latents they would have been drawn at changes nothing, bit for bit; starting them
    elsewhere changes the answer (so the latents are used, and in the right slots)."""
    images = SAMPLES[4 : 4 + batch]
    every = defender.start_latents(images, draw(CHEAP, batch).latents)
    plain = defender(images)
    assert same_bits(plain, defender(images, initial_latents=every[:, :k].astype(dtype)))
    # All candidates moved: moving only the first k may leave the winning candidate, and so the answer, unchanged.
    moved = defender(images, initial_latents=every + 1.0)
    assert moved.reconstructions.tobytes() != plain.reconstructions.tobytes()


def test_a_large_batch_is_answered_in_full(defender):
    images = np.resize(SAMPLES, (128, *IMAGE))
    check_result(defender, images, defender(images))


# --- FramePreprocessor and defend_frames -------------------------------------------------------------------------


@st.composite
def preprocessor_settings(draw_):
    """FramePreprocessor keyword arguments: each one valid 11 times in 12, so that about two sets in three are valid
    throughout."""
    floats = st.floats(allow_nan=True, allow_infinity=True)
    corners = st.tuples(st.integers(0, 12), st.integers(0, 12), st.integers(1, 40), st.integers(1, 40))
    odd_rois = st.sampled_from([(1, 2, 3), (0.5, 0, 4, 4), "0,0,4,4", (True, 0, 4, 4), (-1, 0, 4, 4), (0, 0, 0, 4)])
    ranges = st.sampled_from(
        [None, "auto", (0.0, 1.0), (10.0, 200.0), (0.25, 0.25 + 1e-12), (-1e308, 1e308), (0.0, 1e-300)]
    )
    odd_ranges = st.tuples(floats, floats) | st.sampled_from([(1.0, 1.0), (2.0, 1.0), "ab", (1, 2, 3), "AUTO"])
    sizes = st.just((28, 28)) | st.tuples(st.integers(1, 40), st.integers(1, 40))
    odd_sizes = st.sampled_from([(0, 28), (-1, 5), (2.5, 28), (5000, 28), (28,), "28"])
    rare = lambda usual, odd: mostly(draw_, usual, odd, every=12)  # noqa: E731
    return {
        "roi": rare(st.sampled_from([None, None, np.array([0, 0, 4, 4])]) | corners, odd_rois),
        "channel_order": rare(st.sampled_from(["bgr", "rgb"]), st.sampled_from(["BGR", None])),
        "value_range": rare(ranges, odd_ranges),
        "invert": rare(st.booleans(), st.sampled_from([1, "no"])),
        "size": rare(sizes, odd_sizes),
    }


def valid_settings(kw) -> bool:
    integer = lambda v: isinstance(v, int | np.integer) and not isinstance(v, bool)  # noqa: E731
    roi, value_range, size = kw["roi"], kw["value_range"], kw["size"]
    roi_ok = roi is None or (
        not isinstance(roi, str)
        and len(roi) == 4
        and all(map(integer, roi))
        and min(roi[:2]) >= 0
        and min(roi[2:]) >= 1
    )
    pair = (
        not isinstance(value_range, str)
        and len(value_range) == 2
        and all(isinstance(v, float | int) and math.isfinite(v) for v in value_range)
        and value_range[0] < value_range[1]
        if value_range not in (None, "auto")
        else True
    )
    size_ok = not isinstance(size, str) and len(size) == 2 and all(integer(v) and 1 <= v <= 4096 for v in size)
    return roi_ok and pair and size_ok and kw["channel_order"] in ("bgr", "rgb") and isinstance(kw["invert"], bool)


@st.composite
def frames(draw_, big: bool = True):
    """(frame, constant value or None): frames of every size (now and then 1080 x 1920), channel count, dtype, byte
    order, value range and layout, with NaN and infinities mixed in; constant frames carry their value for the
    oracle. About two in three are valid."""
    if one_in(draw_, 30):
        return draw_(st.sampled_from([None, [[0, 1]], np.zeros(5, np.uint8), np.zeros((2, 4, 4, 3), np.uint8)])), None
    usual = st.sampled_from(["uint8", "uint16", "float32", "float64", ">u2", ">f4"])
    dtype = np.dtype(mostly(draw_, usual, st.sampled_from(["float16", "int32", "bool"]), every=8))
    channels = mostly(draw_, st.sampled_from([None, 1, 3, 4]), st.sampled_from([2, 5]), every=8)
    height, width = mostly(
        draw_, st.tuples(st.integers(1, 64), st.integers(1, 64)), st.sampled_from([(0, 5), (5, 0)]), 8
    )
    if big and one_in(draw_, 40):
        height, width = draw_(st.sampled_from([(480, 640), (1080, 1920), (1, 4000)]))
    shape = (height, width) if channels is None else (height, width, channels)
    rng = np.random.default_rng(draw_(st.integers(0, 2**32 - 1)))
    if dtype.kind in "ui":
        low, high = 0.0, float(np.iinfo(dtype).max)
    else:
        spans = [(0.0, 1.0), (0.0, 1.0), (-10.0, 300.0), (-3e38, 3e38), (0.0, 1e-300), (-1e308, 1e308)]
        low, high = draw_(st.sampled_from(spans))
    constant = draw_(st.booleans())
    if constant:
        top = int(high) + 1 if dtype.kind in "ui" else None
        value = float(rng.integers(0, top)) if top else float(rng.uniform(low / 2, high / 2) * 2)
        values = np.full(shape, value)
    else:
        values = rng.uniform(low / 2, high / 2, shape) * 2  # halves: the width of (-1e308, 1e308) overflows
    if dtype.kind == "f" and values.size and one_in(draw_, 8):
        values.flat[rng.integers(values.size)] = draw_(st.sampled_from([np.nan, np.inf, -np.inf]))
        constant = False
    frame = quietly(lambda: values.astype(dtype))
    value = float(frame.flat[0]) if constant and frame.size and np.isfinite(frame.flat[0]) else None
    return mostly(draw_, st.just(frame), LAYOUTS.map(lambda layout: laid_out(frame, layout)), every=3), value


def valid_frame(frame) -> bool:
    return (
        isinstance(frame, np.ndarray)
        and frame.dtype.newbyteorder("=") in FRAME_DTYPES
        and (frame.ndim == 2 or frame.ndim == 3 and frame.shape[2] in (1, 3, 4))
        and min(frame.shape[:2]) >= 1
        and (frame.dtype.kind != "f" or bool(np.isfinite(frame).all()))
    )


def expected_constant(kw, frame, value: float) -> float | None:
    """What a frame of one value maps to: None where float32 cannot resolve the range against its ends."""
    if kw["value_range"] == "auto":
        mapped = 0.0  # a flat frame
    else:
        low, high = kw["value_range"] or (0.0, FRAME_DTYPES[frame.dtype.newbyteorder("=")])
        if high / 2 - low / 2 < 1e-2 * max(abs(low), abs(high)) / 2:
            return None
        mapped = min(max((value / 2 - low / 2) / (high / 2 - low / 2), 0.0), 1.0)  # halves: no overflow
    return 1.0 - mapped if kw["invert"] else mapped


@cases(500)
@given(kw=preprocessor_settings(), frame_and_value=frames())
def test_the_preprocessor_gives_unit_images_or_refuses(kw, frame_and_value):
    frame, value = frame_and_value
    if not valid_settings(kw):
        refused(lambda: FramePreprocessor(**kw))
        return
    steps = FramePreprocessor(**kw)
    roi = kw["roi"]
    inside = valid_frame(frame) and (
        roi is None or roi[0] + roi[2] <= frame.shape[1] and roi[1] + roi[3] <= frame.shape[0]
    )
    if inside and roi is not None and value is not None:  # the value in the region only: a wrong crop would show
        x, y, w, h = roi
        frame = np.array(frame)
        frame[...] = frame.dtype.type(0 if value else 1)
        frame[y : y + h, x : x + w] = frame.dtype.type(value)
    if not inside:
        refused(lambda: steps(frame))
        return
    image = steps(frame)
    assert image.shape == (1, *kw["size"]) and image.dtype == np.float32
    assert np.isfinite(image).all() and image.min() >= 0 and image.max() <= 1
    expected = expected_constant(kw, frame, value) if value is not None else None
    outcome("valid, constant" if expected is not None else "valid")
    if expected is not None:
        np.testing.assert_allclose(image, expected, atol=1e-3)


@st.composite
def frame_collections(draw_):
    """What defend_frames takes: one frame, a list of frames, a stack (B, H, W[, C]); and things it must refuse."""
    kind = draw_(st.sampled_from(["single", "list", "list", "stack", "empty", "scalar"]))
    if kind == "empty":
        return []
    if kind == "scalar":
        return draw_(st.sampled_from([np.array(3, np.uint8), None, 7]))
    if kind == "single":
        return draw_(frames(big=False))[0]
    if kind == "list":
        return [draw_(frames(big=False))[0] for _ in range(draw_(st.integers(1, 4)))]
    rng = np.random.default_rng(draw_(st.integers(0, 2**32 - 1)))
    shape = (draw_(st.integers(1, 4)), draw_(st.integers(1, 40)), draw_(st.integers(5, 40)))
    return rng.integers(0, 256, shape + draw_(st.sampled_from([(), (3,), (4,)])), dtype=np.uint8)


def as_frames(collection) -> list | None:
    """The frames defend_frames must see, by its documented rule: an array (H, W) or (H, W, C) with C in 1, 3, 4 is
    one frame, any other array of 3 or more dimensions a stack; None where it must refuse the container."""
    if isinstance(collection, np.ndarray):
        if collection.ndim == 2 or collection.ndim == 3 and collection.shape[2] in (1, 3, 4):
            return [collection]
        return list(collection) if collection.ndim >= 3 else None
    return collection if isinstance(collection, list) else None


@cases(60)
@given(collection=frame_collections(), invert=st.booleans())
def test_defend_frames_answers_every_frame_or_refuses(defender, collection, invert):
    steps = FramePreprocessor(invert=invert, value_range="auto")
    listed = as_frames(collection)
    if not (listed and all(valid_frame(f) for f in listed)):
        refused(lambda: defend_frames(defender, collection, steps))
        return
    outcome(f"valid, {len(listed)} frames")
    result = defend_frames(defender, collection, steps)
    check_result(defender, steps.batch(listed), result)
    assert result.timings["total"] >= result.timings["preprocess"] >= 0


# --- read_image_file -----------------------------------------------------------------------------------------------


class PickleBomb:
    """Unpickling this writes a marker file: a loader that unpickled would leave it behind."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "unpickled"))


@st.composite
def stored_arrays(draw_, marker: Path):
    dtype = draw_(
        st.sampled_from(
            ["uint8", "float32", "float64", "float16", "int64", "bool", "complex64", "U3", "object", "struct"]
        )
    )
    n = draw_(st.integers(0, 4))
    shape = draw_(st.sampled_from([(n, 28, 28), (n, 1, 28, 28), (n, 1, 28, 28), (n, 3, 7), (), (n,), (n, 2, 2, 2, 2)]))
    rng = np.random.default_rng(draw_(st.integers(0, 2**32 - 1)))
    if dtype == "object":
        array = np.empty(shape, dtype=object)
        array[...] = PickleBomb(marker)
        return array
    if dtype == "struct":
        return np.zeros(shape, dtype=[("a", "<f4"), ("b", "u1")])
    values = rng.integers(0, 256, shape) if dtype == "uint8" else rng.random(shape)
    return quietly(lambda: values.astype(dtype))


@st.composite
def image_files(draw_, marker: Path):
    """(name, bytes, the array or arrays written, 'picture' or None): random bytes under every suffix, .npy and .npz
    files of every content, truncated .npy files, and pictures (PNG, BMP, JPEG, TIFF; gray, colour, with alpha; 8
    and 16 bits). Not here: empty files and damaged .npz archives (tested below)."""
    import io

    kind = draw_(st.sampled_from(["bytes", "npy", "npz", "truncated", "picture"]))
    name = "in" + draw_(st.sampled_from([".npy", ".npz", ".bin", ""]))
    if kind == "bytes":
        name = "in" + draw_(st.sampled_from([".npy", ".npz", ".bin", "", ".png", ".jpg", ".bmp"]))
        data = draw_(st.binary(min_size=1, max_size=600).filter(lambda b: not b.startswith((b"PK", b"\x93NUMPY"))))
        return name, data, None
    if kind == "picture":  # gray, BGR or BGRA, 8 or 16 bits
        name = "in" + draw_(st.sampled_from([".png", ".bmp", ".jpg", ".tiff"]))
        shape = (draw_(st.integers(1, 60)), draw_(st.integers(1, 60)), *draw_(st.sampled_from([(), (3,), (4,)])))
        dtype = np.uint16 if name in ("in.png", "in.tiff") and draw_(st.booleans()) else np.uint8
        frame = np.random.default_rng(draw_(st.integers(0, 2**32 - 1))).integers(0, np.iinfo(dtype).max, shape)
        return name, cv2.imencode(name[2:], frame.astype(dtype))[1].tobytes(), "picture"
    buffer = io.BytesIO()
    if kind in ("npy", "truncated"):
        array = draw_(stored_arrays(marker))
        np.save(buffer, array, allow_pickle=True)
        data = buffer.getvalue()
        if kind == "truncated":
            return name, data[: draw_(st.integers(1, len(data) - 1))], None
        return name, data, {"images": array}
    members = {
        key: draw_(stored_arrays(marker))
        for key in draw_(st.lists(st.sampled_from(["images", "labels", "attacked", "other"]), max_size=3, unique=True))
    }
    (np.savez_compressed if draw_(st.booleans()) else np.savez)(buffer, allow_pickle=True, **members)
    return name, buffer.getvalue(), members


@cases(200)
@given(data=st.data())
def test_read_image_file_reads_arrays_unchanged_and_never_unpickles(data):
    with TemporaryDirectory() as folder:
        marker = Path(folder) / "unpickled"
        name, content, arrays = data.draw(image_files(marker))
        path = Path(folder) / name
        path.write_bytes(content)
        if arrays == "picture":  # a picture becomes one camera frame, preprocessed
            outcome("picture")
            frame = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            assert read_image_file(path).images.tobytes() == FramePreprocessor()(frame)[None].tobytes()
            return
        images = (arrays or {}).get("images")
        kinds = {"labels": "iu", "attacked": "b"}  # one integer label and one bool per image
        readable = (
            images is not None
            and (images.dtype == np.uint8 or images.dtype.kind == "f")
            and images.shape[1:] in ((28, 28), (1, 28, 28))
            and len(images) > 0
            and all(a.dtype.kind in kinds[k] and a.shape == (len(images),) for k, a in arrays.items() if k in kinds)
        )
        if not readable:
            refused(lambda: read_image_file(path))
        else:
            outcome("read")
            file = read_image_file(path)
            expected = images.astype(np.float32) / 255 if images.dtype == np.uint8 else images.astype(np.float32)
            expected = expected[:, None] if images.ndim == 3 else expected
            assert file.images.dtype == np.float32 and file.images.tobytes() == expected.tobytes()
            assert file.images.shape == expected.shape
        assert not marker.exists(), "the loader unpickled an object array"


def test_the_pickle_bomb_goes_off_when_unpickled(tmp_path):
    """The marker the test above looks for does appear when a loader unpickles."""
    marker = tmp_path / "unpickled"
    np.save(tmp_path / "bomb.npy", np.array([PickleBomb(marker)], dtype=object), allow_pickle=True)
    np.load(tmp_path / "bomb.npy", allow_pickle=True)
    assert marker.read_text() == "unpickled"


@pytest.mark.parametrize("where", [Path("/no/such/file.npz"), Path(__file__).parent])
def test_read_image_file_refuses_a_missing_file_or_a_folder(where):
    refused(lambda: read_image_file(where))


# --- WarmStart -----------------------------------------------------------------------------------------------------

COUNTS = usually(st.integers(1, 4), st.sampled_from([0, -1, True, 2.5, np.int64(2), "1"]), every=8)


@cases(300)
@given(
    carried=COUNTS,
    iterations=st.none() | COUNTS,
    max_error=usually(st.none() | st.floats(0, 1), st.sampled_from([-0.5, np.nan, np.inf, True, np.float32(0.01)])),
    updates=st.lists(
        st.tuples(
            st.integers(1, 3),
            st.floats(0, 0.2) | st.sampled_from([np.nan, np.inf]),
            st.sampled_from(["fine", "fine", "none", "nan"]),
        ),
        max_size=6,
    ),
)
def test_warm_start_carries_the_newest_usable_winner(carried, iterations, max_error, updates):
    integer = lambda v: isinstance(v, int | np.integer) and not isinstance(v, bool) and v >= 1  # noqa: E731
    bound_ok = max_error is None or (not isinstance(max_error, bool) and max_error >= 0)
    if not (integer(carried) and (iterations is None or integer(iterations)) and bound_ok):
        refused(lambda: WarmStart(carried, iterations, max_error))
        return
    warm = WarmStart(carried, iterations, max_error)
    expected = None
    for k, (batch, error, latent_kind) in enumerate(updates):
        latents = None if latent_kind == "none" else np.full((batch, *IMAGE), float(k), np.float32)
        if latent_kind == "nan":
            latents[-1, 0, 0, 0] = np.nan
        warm.update(SimpleNamespace(reconstruction_error=np.full(batch, error), latents=latents))
        usable = latent_kind == "fine" and math.isfinite(error) and (max_error is None or error <= max_error)
        expected = latents[-1:] if usable else None
    arguments = warm.arguments()
    if expected is None:
        assert arguments == {}
        return
    outcome("warm")
    assert arguments["initial_latents"].shape == (1, carried, *IMAGE)
    assert (arguments["initial_latents"] == expected[:, None]).all()
    assert arguments["iterations"] == iterations and type(arguments["iterations"]) in (int, type(None))
    warm.reset()
    assert warm.arguments() == {}


@cases(30)
@given(carried=st.integers(1, R + 1), iterations=st.integers(1, 2), max_error=st.none() | st.floats(0, 0.2))
def test_warm_start_in_a_stream_answers_every_frame_or_refuses_too_many_candidates(
    defender, carried, iterations, max_error
):
    frames_ = [(255 * SAMPLES[k // 2, 0]).astype(np.uint8) for k in range(4)]  # each digit twice
    reader = [(k, frame, time.perf_counter()) for k, frame in enumerate(frames_)]
    if carried > R:  # more carried latents than candidates: the first warm frame is refused
        warm = WarmStart(carried, iterations)
        refused(lambda: list(defend_stream(defender, reader, FramePreprocessor(), warm)))
        return
    warm = WarmStart(carried, iterations, max_error)
    results = list(defend_stream(defender, reader, FramePreprocessor(), warm))
    assert [r.index for r in results] == [0, 1, 2, 3] and not results[0].warm
    for before, after in zip(results, results[1:], strict=False):
        assert after.warm == (max_error is None or before.reconstruction_error <= max_error)
    for r in results:
        assert 0 <= r.label < 10 and 0 <= r.probability <= 1 and math.isfinite(r.reconstruction_error)
        assert r.reconstruction_error >= 0 and 0 <= r.reconstruction.min() and r.reconstruction.max() <= 1


# --- FrameQueue ----------------------------------------------------------------------------------------------------


@cases(100)
@given(
    capacity=usually(st.integers(1, 3), st.sampled_from([0, -1, True, 2.5, np.nan, np.inf, np.int64(2), "2", None]), 3),
    timeout=usually(st.sampled_from([0, 0.0, 0.001]), st.sampled_from([-1, np.nan, np.inf, 1e10, None, True, "0"]), 3),
)
def test_the_queue_refuses_bad_capacities_and_timeouts(capacity, timeout):
    if not (isinstance(capacity, int | np.integer) and not isinstance(capacity, bool) and capacity >= 1):
        refused(lambda: FrameQueue(capacity, drop_oldest=True))
        return
    queue = FrameQueue(capacity, drop_oldest=False)
    if timeout in (0, 0.001) and not isinstance(timeout, bool):
        with pytest.raises(TimeoutError):
            queue.get(timeout)
    else:
        refused(lambda: queue.get(timeout))


class QueueAgainstAModel(RuleBasedStateMachine):
    """Single-threaded puts, gets and closes against a deque; puts that would block are left to the threaded test."""

    @initialize(capacity=st.integers(1, 4), drop_oldest=st.booleans())
    def start(self, capacity, drop_oldest):
        self.queue, self.capacity, self.drop_oldest = FrameQueue(capacity, drop_oldest), capacity, drop_oldest
        self.model, self.dropped, self.closed, self.error, self.next = deque(), 0, False, None, 0

    @precondition(lambda self: self.drop_oldest or self.closed or len(self.model) < self.capacity)
    @rule()
    def put(self):
        assert self.queue.put(self.next) == (not self.closed)
        if not self.closed:
            if len(self.model) == self.capacity:
                self.model.popleft()
                self.dropped += 1
            self.model.append(self.next)
        self.next += 1

    @rule(timeout=st.sampled_from([0.0, 0.001]))
    def get(self, timeout):
        if self.model:
            assert self.queue.get(timeout) == self.model.popleft()
        elif self.closed:
            with pytest.raises(OSError if self.error else QueueClosed):
                self.queue.get(timeout)
        else:
            with pytest.raises(TimeoutError):
                self.queue.get(timeout)

    @rule(fail=st.booleans())
    def close(self, fail):
        self.queue.close(OSError("camera gone") if fail else None)
        self.error = self.error or fail  # the first error given is the one kept
        self.closed = True

    @invariant()
    def agrees(self):
        if hasattr(self, "queue"):
            assert list(self.queue.items) == list(self.model) and self.queue.dropped == self.dropped


QueueAgainstAModel.TestCase.settings = settings(cases(100), stateful_step_count=30)
test_the_queue_agrees_with_a_model = QueueAgainstAModel.TestCase


@cases(60)
@given(
    capacity=st.integers(1, 4),
    drop_oldest=st.booleans(),
    count=st.integers(0, 200),
    pauses=st.lists(st.sampled_from([0.0, 0.0, 0.0, 1e-4, 1e-3]), min_size=1, max_size=8),
)
def test_a_producer_and_a_consumer_thread_lose_nothing_they_should_keep(capacity, drop_oldest, count, pauses):
    queue = FrameQueue(capacity, drop_oldest)

    def produce():
        for k in range(count):
            queue.put(k)
        queue.close()

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    received = []
    while True:
        try:
            received.append(queue.get(5.0))
        except QueueClosed:
            break
        time.sleep(pauses[len(received) % len(pauses)])
    producer.join(5.0)
    assert not producer.is_alive()
    if not drop_oldest:
        assert received == list(range(count)) and queue.dropped == 0
    else:  # in order, the newest always delivered, and every frame either delivered or counted as dropped
        assert received == sorted(set(received)) and len(received) + queue.dropped == count
        assert not count or received[-1] == count - 1


# --- Reported defects (once strict xfails, now fixed) -----------------------------------------------------------


@pytest.mark.parametrize("dtype", [object, "U3"])
def test_reported_non_numeric_initial_latents_are_refused_with_a_value_error(defender, dtype):
    refused(lambda: defender(SAMPLES[:1], initial_latents=np.zeros((1, 1, *IMAGE), dtype=dtype)))


def test_reported_complex_initial_latents_are_refused(defender):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        refused(lambda: defender(SAMPLES[:1], initial_latents=np.full((1, 1, *IMAGE), 1 + 1j)))


@pytest.mark.parametrize(("magnitude", "dtype"), [(1e37, np.float32), (3e38, np.float32), (1e39, np.float64)])
def test_reported_huge_initial_latents_are_refused_or_answered_finitely(defender, magnitude, dtype):
    latents = np.full((1, 1, *IMAGE), magnitude, dtype)
    try:
        result = defender(SAMPLES[:1], initial_latents=latents)
    except ValueError:
        return
    check_result(defender, SAMPLES[:1], result)


def test_reported_absurd_iterations_are_refused_before_drawing_noise_for_them(defender):
    refused(lambda: defender(SAMPLES[:1], iterations=10**9))


def _npz_member(content: bytes) -> bytes:
    import io

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("images.npy", content)
    return buffer.getvalue()


def _huge_header() -> bytes:
    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (100000000000, 28, 28), }"
    header += " " * (118 - len(header)) + "\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + bytes(64)


def _damaged_npz(compressed: bool) -> bytes:
    import io

    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, images=np.zeros((3, 28, 28), np.uint8))
    data = bytearray(buffer.getvalue())
    if compressed:
        data[60] ^= 0xFF  # inside the deflated member
        return bytes(data)
    return bytes(data[: len(data) // 2])  # the central directory gone


@pytest.mark.parametrize(
    "content",
    [
        b"",
        _damaged_npz(False),
        _damaged_npz(True),
        _npz_member(b"not an array"),
        _huge_header(),
        _npz_member(_huge_header()),
    ],
    ids=["empty", "truncated-npz", "bit-flipped-npz", "npz-member-not-npy", "huge-shape-npy", "huge-shape-npz"],
)
def test_reported_damaged_files_are_refused_with_a_value_error(tmp_path, content):
    path = tmp_path / "in.npz"
    path.write_bytes(content)
    assert str(path) in refused(lambda: read_image_file(path))


def test_non_finite_model_outputs_are_refused_not_returned(defender, monkeypatch):
    """The last line of defence: NaN from a model (an overflowing fp16 engine, say) is an error, never an answer."""
    nan_logits = SimpleNamespace(run=lambda images: np.full((len(images), 10), np.nan, np.float32))
    monkeypatch.setattr(defender, "classifier", nan_logits)
    refused(lambda: defender(SAMPLES[:1]))


@pytest.mark.parametrize("threshold", [math.nan, math.inf, -1.0, True, "0.1"])
def test_a_threshold_that_is_not_a_finite_number_at_least_zero_is_refused(threshold):
    refused(lambda: Defender(bundle_dir("mnist"), CHEAP, threshold=threshold))
