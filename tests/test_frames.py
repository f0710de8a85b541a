"""Camera frames to model inputs: preprocessing, the frame checks, and defending frames."""

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2", reason="OpenCV (the [video] extra) is not installed")

from diffdefense.runtime.defender import Defender  # noqa: E402
from diffdefense.runtime.stream.frames import FramePreprocessor, defend_frames  # noqa: E402
from diffdefense.settings import PRESETS  # noqa: E402
from diffdefense.shipped import SAMPLES_DIR, bundle_dir  # noqa: E402

FAST = PRESETS["default"].with_(num_candidates=2, iterations=2)


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    return np.load(SAMPLES_DIR / "mnist.npz")["images"][:4, 0]


def printed(digit: np.ndarray, scale: int = 3, paper: float = 200.0, pad: int = 10) -> np.ndarray:
    """A BGR uint8 frame: the digit as dark ink on paper, upscaled, with a margin around it."""
    ink = np.kron(digit, np.ones((scale, scale)))
    gray = paper * (1 - 0.8 * np.pad(ink, pad))
    return np.repeat(gray.astype(np.uint8)[..., None], 3, axis=2)


def test_a_printed_digit_comes_back_as_the_model_input(digits):
    side = 28 * 3
    frame = printed(digits[0])
    roi = (10, 10, side, side)
    recovered = FramePreprocessor(roi=roi, invert=True, value_range=(40.0, 200.0))(frame)
    assert recovered.shape == (1, 28, 28) and recovered.dtype == np.float32
    # uint8 rounding of the printed frame is the only loss: area interpolation averages each 3 x 3 block back
    np.testing.assert_allclose(recovered[0], digits[0], atol=2 / 160)


@pytest.mark.parametrize("channels", [None, 1, 3, 4])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
def test_every_frame_kind_gives_a_unit_image(channels, dtype):
    rng = np.random.default_rng(0)
    shape = (37, 53) if channels is None else (37, 53, channels)
    top = {np.uint8: 255, np.uint16: 65535}.get(dtype, 1.0)
    frame = (rng.random(shape) * top).astype(dtype)
    image = FramePreprocessor()(frame)
    assert image.shape == (1, 28, 28) and image.min() >= 0.0 and image.max() <= 1.0
    # the dtype's range: a mid-grey frame is mid-grey whatever its dtype
    mid = np.full(shape, top / 2, dtype=dtype)
    np.testing.assert_allclose(FramePreprocessor()(mid), 0.5, atol=1e-2)


def test_auto_range_undoes_lighting(digits):
    dim, bright = printed(digits[1], paper=90.0), printed(digits[1], paper=250.0)
    steps = FramePreprocessor(roi=(10, 10, 84, 84), invert=True, value_range="auto")
    np.testing.assert_allclose(steps(dim), steps(bright), atol=0.03)


def test_rgb_and_bgr_orders_weigh_the_channels_differently():
    frame = np.zeros((28, 28, 3), np.uint8)
    frame[..., 0] = 255  # blue in BGR, red in RGB
    assert FramePreprocessor(channel_order="bgr")(frame).mean() < FramePreprocessor(channel_order="rgb")(frame).mean()


@pytest.mark.parametrize(
    "frame, message",
    [
        ([[0, 1]], "numpy array"),
        (np.zeros((8, 8), np.int32), "dtype uint8, uint16"),
        (np.zeros((8, 8, 2), np.uint8), "C in 1, 3 or 4"),
        (np.zeros((2, 8, 8, 3), np.uint8), "C in 1, 3 or 4"),
        (np.zeros((0, 8), np.uint8), "with pixels"),
        (np.full((8, 8), np.nan, np.float32), "NaN or infinity"),
    ],
)
def test_a_frame_of_the_wrong_kind_is_refused(frame, message):
    with pytest.raises(ValueError, match=message):
        FramePreprocessor()(frame)


def test_a_region_outside_the_frame_and_bad_settings_are_refused():
    with pytest.raises(ValueError, match="inside the frame"):
        FramePreprocessor(roi=(20, 0, 30, 10))(np.zeros((40, 40), np.uint8))
    with pytest.raises(ValueError, match="roi"):
        FramePreprocessor(roi=(0, 0, 0, 5))
    with pytest.raises(ValueError, match="value_range"):
        FramePreprocessor(value_range=(1.0, 1.0))
    with pytest.raises(ValueError, match="empty"):
        FramePreprocessor().batch([])


def test_defend_frames_takes_one_frame_or_a_batch_and_times_the_preprocessing(digits):
    defender = Defender(bundle_dir("mnist"), FAST)
    frames = [printed(d) for d in digits]
    steps = FramePreprocessor(roi=(10, 10, 84, 84), invert=True, value_range=(40.0, 200.0))
    batch = defend_frames(defender, frames, steps)
    one = defend_frames(defender, frames[0], steps)
    assert batch.labels.shape == (4,) and one.labels.shape == (1,)
    assert set(batch.timings) >= {"preprocess", "defense", "classify", "total"}
    assert batch.timings["total"] >= batch.timings["preprocess"] + batch.timings["defense"]
    # the same pipeline as defending the preprocessed images directly
    direct = defender(steps.batch(frames))
    np.testing.assert_array_equal(batch.reconstructions, direct.reconstructions)
