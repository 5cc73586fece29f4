"""Tests for mrcnn.data.input_checks: validation and conversion of detect() inputs."""

import re
import sys
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mrcnn.data.input_checks import check_image_for_model, prepare_detect_images


def _rgb(h=4, w=5, value=7):
    return np.full((h, w, 3), value, dtype=np.uint8)


# ---------------------------------------------------------------- the container
def test_single_image_array_is_a_type_error_telling_to_wrap_it():
    for image in (_rgb(), np.zeros((4, 5), np.uint8)):
        with pytest.raises(TypeError, match=r"wrap it in a list: detect\(\[image\]\)"):
            prepare_detect_images(image)


def test_non_sequence_container_is_a_type_error():
    with pytest.raises(TypeError, match="got dict"):
        prepare_detect_images({"a": _rgb()})
    with pytest.raises(TypeError, match=r"shape \(2, 1, 4, 5, 3\)"):
        prepare_detect_images(np.zeros((2, 1, 4, 5, 3), np.uint8))


def test_4d_batch_array_is_a_sequence_of_images():
    batch = np.arange(2 * 3 * 4 * 3, dtype=np.uint8).reshape(2, 3, 4, 3)
    out = prepare_detect_images(batch)
    assert len(out) == 2
    np.testing.assert_array_equal(out[0], batch[0])
    np.testing.assert_array_equal(out[1], batch[1])


def test_tuple_accepted_and_uint8_rgb_returned_unchanged():
    image = _rgb()
    (out,) = prepare_detect_images((image,))
    assert out.dtype == np.uint8 and out.shape == (4, 5, 3)
    assert out is image  # contiguous uint8 RGB: no copy


def test_empty_list_is_a_value_error():
    with pytest.raises(ValueError, match="no images"):
        prepare_detect_images([])


# ---------------------------------------------------------------- elements
def test_non_array_element_names_index_and_type():
    with pytest.raises(ValueError, match=r"image 2: expected a NumPy array \[H, W, 3\].*got NoneType"):
        prepare_detect_images([_rgb(), _rgb(), None])
    with pytest.raises(ValueError, match=r"image 1: .*got str"):
        prepare_detect_images([_rgb(), "photo.jpg"])
    with pytest.raises(ValueError, match=r"image 0: .*got list that cannot be converted"):
        prepare_detect_images([[[1, 2], [3]]])  # ragged


def test_numeric_nested_list_is_converted():
    nested = [[[0.0, 0.5, 1.0], [1.0, 1.0, 1.0]]]  # [1, 2, 3] floats in [0, 1]
    (out,) = prepare_detect_images([nested])
    np.testing.assert_array_equal(out, [[[0, 128, 255], [255, 255, 255]]])


def test_grayscale_2d_and_1_channel_repeat_to_rgb():
    gray = np.array([[0, 10], [200, 255]], dtype=np.uint8)
    out2d, out1 = prepare_detect_images([gray, gray[..., None]])
    for out in (out2d, out1):
        assert out.shape == (2, 2, 3) and out.dtype == np.uint8
        for c in range(3):
            np.testing.assert_array_equal(out[..., c], gray)


def test_rgba_drops_alpha_and_gray_alpha_keeps_gray():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 1, 2, 3, 99
    gray_alpha = np.zeros((2, 2, 2), np.uint8)
    gray_alpha[..., 0], gray_alpha[..., 1] = 50, 99
    out_rgba, out_ga = prepare_detect_images([rgba, gray_alpha])
    np.testing.assert_array_equal(out_rgba[0, 0], [1, 2, 3])
    np.testing.assert_array_equal(out_ga[1, 1], [50, 50, 50])


def test_uint16_and_int_scaled_by_dtype_range_negatives_clipped():
    u16 = np.array([[0, 257, 65535, 32768]], dtype=np.uint16)
    i32 = np.array([[-5, 0, 2147483647, 1073741824]], dtype=np.int32)
    out16, out32 = prepare_detect_images([u16, i32])
    # 257 * 255 / 65535 = 1; 32768 * 255 / 65535 = 127.50 -> 128
    np.testing.assert_array_equal(out16[0, :, 0], [0, 1, 255, 128])
    # 2**30 * 255 / (2**31 - 1) = 127.50000006 -> 128
    np.testing.assert_array_equal(out32[0, :, 2], [0, 0, 255, 128])


def test_wide_integer_image_with_8bit_values_warns():
    looks_8bit = np.array([[0, 128, 255]], dtype=np.int64)
    with pytest.warns(UserWarning, match=r"image 0: dtype int64 .*astype\(np.uint8\)"):
        (out,) = prepare_detect_images([looks_8bit])
    np.testing.assert_array_equal(out[0, :, 0], [0, 0, 0])  # the documented rule still applies
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prepare_detect_images([np.array([[0, 65535]], dtype=np.uint16)])  # genuine 16-bit


def test_bool_to_0_255():
    (out,) = prepare_detect_images([np.array([[True, False]])])
    np.testing.assert_array_equal(out[0, :, 1], [255, 0])


def test_float_unit_range_scaled_and_other_floats_clipped():
    unit = np.array([[0.0, 0.25, 1.0]], dtype=np.float32)
    wide = np.array([[-3.0, 100.4, 300.0]], dtype=np.float64)
    out_unit, out_wide = prepare_detect_images([unit, wide])
    np.testing.assert_array_equal(out_unit[0, :, 0], [0, 64, 255])  # 63.75 -> 64
    np.testing.assert_array_equal(out_wide[0, :, 0], [0, 100, 255])


def test_nan_and_inf_rejected_with_index_and_pixel_count():
    image = np.zeros((3, 3, 3), np.float32)
    image[0, 0, 0] = np.nan
    image[0, 0, 1] = np.inf  # same pixel: 1 pixel, 2 values
    image[2, 1, 2] = -np.inf
    with pytest.raises(ValueError, match=r"image 1: 2 pixel\(s\) of 9 contain NaN or inf "
                                         r"\(3 value\(s\)\)"):
        prepare_detect_images([_rgb(), image])
    with pytest.raises(ValueError, match=r"image 0: 1 pixel\(s\) of 4 contain NaN"):
        prepare_detect_images([np.array([[0.1, np.nan], [0.2, 0.3]])])


def test_empty_image_rejected():
    for shape in [(0, 5, 3), (5, 0), (0, 0, 1)]:
        with pytest.raises(ValueError, match=re.escape(f"image 1: is empty: shape {shape}")):
            prepare_detect_images([_rgb(), np.zeros(shape, np.uint8)])


@pytest.mark.parametrize("shape", [(5,), (), (2, 1, 4, 5, 3)])
def test_wrong_rank_names_index_shape_and_expected(shape):
    with pytest.raises(ValueError, match=re.escape(f"image 0: expected [H, W] (gray) or "
                                                   f"[H, W, 1|2|3|4]") + ".*" +
                       re.escape(f"got shape {shape}")):
        prepare_detect_images([np.zeros(shape, np.uint8)])


def test_4d_element_single_frame_accepted_multi_frame_rejected():
    frame = np.arange(12, dtype=np.uint8).reshape(1, 2, 2, 3)
    (out,) = prepare_detect_images([frame])
    np.testing.assert_array_equal(out, frame[0])
    with pytest.raises(ValueError, match=r"image 0: .*stack of 2 images.*list\(batch\)"):
        prepare_detect_images([np.zeros((2, 4, 4, 3), np.uint8)])


def test_bad_channel_count_rejected_with_channels_first_hint():
    with pytest.raises(ValueError, match=r"image 0: .*got shape \(4, 4, 5\)"):
        prepare_detect_images([np.zeros((4, 4, 5), np.uint8)])
    with pytest.raises(ValueError, match=r"got shape \(3, 8, 8\); channels-first"):
        prepare_detect_images([np.zeros((3, 8, 8), np.uint8)])


def test_complex_and_object_dtypes_rejected():
    with pytest.raises(ValueError, match="image 0: unsupported dtype complex128"):
        prepare_detect_images([np.zeros((2, 2, 3), complex)])
    with pytest.raises(ValueError, match="image 0: unsupported dtype object"):
        prepare_detect_images([np.zeros((2, 2, 3), object)])


# ---------------------------------------------------------------- channel_count != 3
def test_other_channel_count_passes_matching_images_unchanged():
    four = np.random.default_rng(0).random((3, 4, 4)).astype(np.float32)
    (out,) = prepare_detect_images([four], channel_count=4)
    assert out is four  # no RGB conversion, no copy, same dtype and values
    (gray,) = prepare_detect_images([np.ones((3, 4), np.uint16)], channel_count=1)
    assert gray.shape == (3, 4, 1) and gray.dtype == np.uint16


def test_other_channel_count_rejects_mismatched_images():
    with pytest.raises(ValueError, match=r"image 1: expected \[H, W, 4\] "
                                         r"\(config.IMAGE_CHANNEL_COUNT=4\), got shape \(3, 4, 3\)"):
        prepare_detect_images([np.zeros((3, 4, 4)), np.zeros((3, 4, 3))], channel_count=4)
    with pytest.raises(ValueError, match="image 0: 1 pixel"):
        prepare_detect_images([np.full((2, 2, 4), np.nan, np.float32)[:1, :1]], channel_count=4)
    with pytest.raises(ValueError, match="channel_count"):
        prepare_detect_images([_rgb()], channel_count=0)


def test_check_image_for_model_min_side():
    assert check_image_for_model(_rgb(4, 5), 3, min_side=4).shape == (4, 5, 3)
    with pytest.raises(ValueError, match=r"image 3: is too small: shape \(4, 5, 3\).*at least 5"):
        check_image_for_model(_rgb(4, 5), 3, min_side=5)


def test_module_does_not_import_tensorflow():
    import subprocess
    code = ("import sys, mrcnn.data.input_checks; "
            "sys.exit(1 if 'tensorflow' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# ---------------------------------------------------------------- fuzzing
_DTYPES = [np.uint8, np.uint16, np.int32, np.float32, np.float64, bool, np.complex64, object]
_OBJECTS = st.one_of(st.none(), st.integers(-300, 300), st.floats(), st.text(max_size=2))


@st.composite
def _shapes(draw):
    if draw(st.booleans()):  # plausible images, so that conversions get exercised too
        side = st.integers(0, 40)
        return draw(st.tuples(side, side)) + draw(st.sampled_from([(), (1,), (3,), (4,), (2,)]))
    rank = draw(st.integers(0, 5))
    shape = tuple(draw(st.one_of(st.integers(0, 5), st.integers(0, 40))) for _ in range(rank))
    assume(int(np.prod(shape)) <= 20_000)
    return shape


@st.composite
def _elements(draw):
    shape = draw(_shapes())
    dtype = np.dtype(draw(st.sampled_from(_DTYPES)))
    if dtype == object:
        array = draw(hnp.arrays(dtype, shape, elements=_OBJECTS))
    else:
        # default element strategies include NaN, inf and extreme values for floats
        array = draw(hnp.arrays(dtype, shape))
    form = draw(st.sampled_from(["array", "array", "array", "list", "scalar", "none"]))
    if form == "list":
        return array.tolist()
    if form == "scalar":
        return draw(st.one_of(st.floats(), st.text(max_size=3)))
    if form == "none":
        return None
    return array


def _expected_hw(element):
    shape = np.shape(element)
    return shape[1:3] if len(shape) == 4 else shape[:2]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.filter_too_much])
@given(st.lists(_elements(), min_size=0, max_size=3), st.sampled_from(["list", "tuple", "bare"]))
def test_fuzz_result_is_rgb_uint8_or_clear_error(elements, container):
    if container == "bare":  # one array passed directly (not in a list)
        first = elements[0] if elements else None
        images = first if isinstance(first, np.ndarray) else np.zeros((0, 2, 2, 3))
    else:
        images = tuple(elements) if container == "tuple" else elements
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        try:
            out = prepare_detect_images(images)
        except (ValueError, TypeError) as exc:
            message = str(exc)
            event(type(exc).__name__)
            assert "image" in message
            if container != "bare" and elements:
                match = re.search(r"image (\d+):", message)
                assert match, message
                index = int(match.group(1))
                assert index < len(elements)
                # the named image alone fails; the ones before it are fine
                with pytest.raises((ValueError, TypeError)):
                    prepare_detect_images([elements[index]])
                if index:
                    prepare_detect_images(list(elements[:index]))
            return
    event("converted")
    sources = list(images) if isinstance(images, np.ndarray) else list(elements)
    assert isinstance(out, list) and len(out) == len(sources) > 0
    for element, result in zip(sources, out):
        assert isinstance(result, np.ndarray) and result.dtype == np.uint8
        assert result.ndim == 3 and result.shape[2] == 3
        assert result.shape[:2] == _expected_hw(element)
