"""Property test of the runtime's input check: any array gives checked float32 images or a ValueError, never
anything else, and never a silent pass of values outside [0, 1]."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

from diffdefense.runtime.validation import check_images

DTYPES = st.sampled_from([np.float16, np.float32, np.float64, np.uint8, np.int32, np.bool_])
SHAPES = st.one_of(
    array_shapes(min_dims=0, max_dims=5, max_side=4), st.tuples(st.integers(0, 3), st.just(1), st.just(28), st.just(28))
)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), dtype=DTYPES, shape=SHAPES)
def test_check_images_accepts_only_valid_batches(data, dtype, shape):
    images = data.draw(arrays(dtype, shape))
    try:
        checked = check_images(images)
    except ValueError as err:
        assert str(err).startswith("Expected") and str(err).endswith(".")
        return
    assert checked.dtype == np.float32 and checked.flags.c_contiguous
    assert checked.shape[1:] == (1, 28, 28) and checked.shape[0] >= 1
    assert np.isfinite(checked).all() and checked.min() >= 0 and checked.max() <= 1


@settings(max_examples=50, deadline=None)
@given(batch=st.integers(1, 4), low=st.floats(0, 1), high=st.floats(0, 1))
def test_valid_batches_pass_unchanged(batch, low, high):
    images = np.linspace(min(low, high), max(low, high), batch * 784, dtype=np.float64).reshape(batch, 1, 28, 28)
    np.testing.assert_array_equal(check_images(images), images.astype(np.float32))


def test_non_contiguous_input_is_made_contiguous():
    images = np.zeros((2, 1, 28, 56), np.float32)[..., ::2]
    assert not images.flags.c_contiguous and check_images(images).flags.c_contiguous
