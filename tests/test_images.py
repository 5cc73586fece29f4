"""Tests for mrcnn.images: resizing, mini-masks, image meta."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mrcnn import images as I
from mrcnn.boxes import extract_bboxes
from mrcnn.config import Config


class TinyConfig(Config):
    NAME = "tiny"
    NUM_CLASSES = 4
    IMAGE_MIN_DIM = 64
    IMAGE_MAX_DIM = 128


def ramp_image(h, w, dtype=np.uint8):
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([y % 256, x % 256, (y + x) % 256], axis=-1)
    return img.astype(dtype)


# ---------------------------------------------------------------- resize_image
def test_square_no_scaling_centres_image():
    img = ramp_image(50, 100)
    out, window, scale, padding, crop = I.resize_image(img, max_dim=128, mode="square")
    assert out.shape == (128, 128, 3) and out.dtype == np.uint8
    assert window == (39, 14, 89, 114)
    assert scale == 1
    assert padding == [(39, 39), (14, 14), (0, 0)]
    assert crop is None
    np.testing.assert_array_equal(out[39:89, 14:114], img)
    assert out[:39].max() == 0 and out[89:].max() == 0 and out[:, :14].max() == 0


def test_square_scales_up_to_min_dim_but_not_past_max_dim():
    img = np.full((50, 100, 3), 77, np.uint8)
    out, window, scale, padding, _ = I.resize_image(img, min_dim=64, max_dim=128)
    assert scale == pytest.approx(1.28)          # 64 / 50; long side 128 <= 128
    assert window == (32, 0, 96, 128)
    assert padding == [(32, 32), (0, 0), (0, 0)]
    assert np.all(out[32:96] == 77) and out[:32].max() == 0
    # min_dim 100 would need scale 2 -> long side 200 > 128, so max_dim wins
    _, window, scale, _, _ = I.resize_image(img, min_dim=100, max_dim=128)
    assert scale == pytest.approx(1.28) and window == (32, 0, 96, 128)


def test_square_scales_down_large_image():
    img = np.zeros((200, 400), np.float32)      # a 2-D image is accepted
    out, window, scale, padding, _ = I.resize_image(img, min_dim=64, max_dim=128)
    assert out.shape == (128, 128) and out.dtype == np.float32
    assert scale == pytest.approx(0.32) and window == (32, 0, 96, 128)


def test_min_scale_applies():
    img = np.zeros((50, 40, 3), np.uint8)
    out, window, scale, _, _ = I.resize_image(img, min_scale=2, max_dim=128)
    assert scale == 2 and window == (14, 24, 114, 104)


def test_none_mode_is_identity():
    img = ramp_image(30, 45)
    out, window, scale, padding, crop = I.resize_image(img, 64, 128, mode="none")
    assert out is img or np.array_equal(out, img)
    assert window == (0, 0, 30, 45) and scale == 1 and crop is None
    assert padding == [(0, 0), (0, 0), (0, 0)]


def test_pad64_pads_each_side_to_multiple_of_64():
    img = ramp_image(70, 100)
    out, window, scale, padding, _ = I.resize_image(img, mode="pad64")
    assert out.shape == (128, 128, 3) and scale == 1
    assert padding == [(29, 29), (14, 14), (0, 0)]
    assert window == (29, 14, 99, 114)
    np.testing.assert_array_equal(out[29:99, 14:114], img)
    # scaled by min_dim first: 50x90 -> x1.28 -> 64x115 -> pad to 64x128
    out, window, scale, padding, _ = I.resize_image(ramp_image(50, 90), min_dim=64,
                                                    mode="pad64")
    assert out.shape == (64, 128, 3) and window == (0, 6, 64, 121)
    assert padding == [(0, 0), (6, 7), (0, 0)]


def test_crop_mode_takes_random_window_of_scaled_image():
    img = ramp_image(80, 100)
    mask = np.zeros((80, 100, 1), bool)
    mask[10:50, 20:90, 0] = True
    out, window, scale, padding, crop = I.resize_image(
        img, min_dim=64, mode="crop", rng=np.random.default_rng(3))
    y, x, h, w = crop
    assert (h, w) == (64, 64) and 0 <= y <= 16 and 0 <= x <= 36
    assert scale == 1 and window == (0, 0, 64, 64)
    np.testing.assert_array_equal(out, img[y:y + 64, x:x + 64])
    np.testing.assert_array_equal(I.resize_mask(mask, scale, padding, crop),
                                  mask[y:y + 64, x:x + 64])


def test_unknown_mode_and_missing_dims_are_errors():
    img = np.zeros((10, 10, 3), np.uint8)
    with pytest.raises(ValueError, match="'squares'"):
        I.resize_image(img, 64, 128, mode="squares")
    with pytest.raises(ValueError, match="max_dim"):
        I.resize_image(img, min_dim=64, mode="square")
    with pytest.raises(ValueError, match="min_dim"):
        I.resize_image(img, max_dim=64, mode="crop")


def test_uint8_values_survive_upscaling():
    img = np.full((20, 30, 3), 200, np.uint8)
    out = I.resize_image(img, min_dim=64, max_dim=128)[0]
    window_region = out[out.sum(axis=-1) > 0]
    assert out.dtype == np.uint8 and np.all(window_region == 200)


@settings(max_examples=40, deadline=None)
@given(st.integers(8, 150), st.integers(8, 150), st.sampled_from(["square", "pad64", "crop"]),
       st.data())
def test_resize_mask_round_trips_rectangle(h, w, mode, data):
    y1 = data.draw(st.integers(0, h - 4))
    x1 = data.draw(st.integers(0, w - 4))
    y2 = data.draw(st.integers(y1 + 4, h))
    x2 = data.draw(st.integers(x1 + 4, w))
    mask = np.zeros((h, w, 1), bool)
    mask[y1:y2, x1:x2, 0] = True
    image = np.zeros((h, w, 3), np.uint8)
    rimg, window, scale, padding, crop = I.resize_image(
        image, min_dim=64, max_dim=128, mode=mode, rng=np.random.default_rng(0))
    rmask = I.resize_mask(mask, scale, padding, crop)
    assert rmask.shape[:2] == rimg.shape[:2] and rmask.dtype == bool
    if mode == "crop":
        # A crop loses part of the mask, so no round trip: the result must be
        # exactly the matching sub-window of the scaled, uncropped mask.
        cy, cx, ch, cw = crop
        full = I.resize_mask(mask, scale, [(0, 0)] * 3)
        np.testing.assert_array_equal(rmask, full[cy:cy + ch, cx:cx + cw])
        return
    wy1, wx1, wy2, wx2 = window
    back = I.resize(rmask[wy1:wy2, wx1:wx2].astype(np.uint8), (h, w), order=0,
                    preserve_range=True) > 0.5
    # Nearest-neighbour resampling moves each edge by at most ~1/scale pixels.
    tol = math.ceil(1 / scale) + 1
    got = extract_bboxes(back)[0]
    assert np.all(np.abs(got - [y1, x1, y2, x2]) <= tol)
    mismatch = np.count_nonzero(back != mask)
    assert mismatch <= tol * 2 * ((y2 - y1) + (x2 - x1))


# ---------------------------------------------------------------- mini masks
def test_minimize_mask_hand_example():
    mask = np.zeros((10, 12, 1), bool)
    mask[2:6, 2:6, 0] = True          # left half of the box [2, 2, 6, 10]
    bbox = np.array([[2, 2, 6, 10]])
    mini = I.minimize_mask(bbox, mask, (4, 4))
    assert mini.dtype == bool and mini.shape == (4, 4, 1)
    np.testing.assert_array_equal(mini[..., 0], np.tile([True, True, False, False], (4, 1)))
    np.testing.assert_array_equal(I.expand_mask(bbox, mini, (10, 12, 3)), mask)


def test_zero_size_boxes_do_not_crash():
    mask = np.zeros((10, 12, 2), bool)
    mask[1:3, 1:4, 1] = True
    bbox = extract_bboxes(mask)        # first instance empty -> [0, 0, 0, 0]
    mini = I.minimize_mask(bbox, mask, (8, 8))
    assert not mini[..., 0].any() and mini[..., 1].all()
    full = I.expand_mask(bbox, mini, (10, 12))
    np.testing.assert_array_equal(full, mask)
    assert not I.unmold_mask(np.ones((28, 28)), (5, 5, 5, 9), (10, 12, 3)).any()


@settings(max_examples=40, deadline=None)
@given(st.integers(10, 80), st.integers(10, 80), st.data())
def test_minimize_expand_round_trips_rectangles(h, w, data):
    n = data.draw(st.integers(1, 4))
    mask = np.zeros((h, w, n), bool)
    for i in range(n):
        y1 = data.draw(st.integers(0, h - 1))
        x1 = data.draw(st.integers(0, w - 1))
        y2 = data.draw(st.integers(y1 + 1, h))
        x2 = data.draw(st.integers(x1 + 1, w))
        mask[y1:y2, x1:x2, i] = True
    bbox = extract_bboxes(mask)
    mini = I.minimize_mask(bbox, mask, (14, 14))
    np.testing.assert_array_equal(I.expand_mask(bbox, mini, mask.shape), mask)


def test_unmold_mask_places_thresholded_mask_in_box():
    probs = np.full((28, 28), 0.1, np.float32)
    probs[:, :14] = 0.9                # left half above threshold
    full = I.unmold_mask(probs, (10, 20, 30, 60), (50, 80, 3))
    expected = np.zeros((50, 80), bool)
    expected[10:30, 20:40] = True
    assert full.dtype == bool and full.shape == (50, 80)
    np.testing.assert_array_equal(full, expected)
    # a box hanging over the image edge is clipped, not an error
    full = I.unmold_mask(np.full((28, 28), 0.8), (40, 70, 60, 90), (50, 80))
    assert full[40:, 70:].all() and full.sum() == 10 * 10


# ---------------------------------------------------------------- mold / meta
def test_mold_unmold_image_round_trip():
    config = TinyConfig()
    img = ramp_image(16, 16)
    molded = I.mold_image(img, config)
    assert molded.dtype == np.float32
    np.testing.assert_allclose(molded[0, 0], -config.MEAN_PIXEL, rtol=1e-6)
    back = I.unmold_image(molded, config)
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, img)


def test_compose_and_parse_image_meta():
    config = TinyConfig()
    meta = I.compose_image_meta(7, (50, 100, 3), (128, 128, 3), (32, 0, 96, 128), 1.28,
                                np.array([1, 1, 0, 1]))
    assert meta.shape == (config.IMAGE_META_SIZE,) == (12 + 4,)
    np.testing.assert_allclose(meta, [7, 50, 100, 3, 128, 128, 3, 32, 0, 96, 128, 1.28,
                                      1, 1, 0, 1])
    parsed = I.parse_image_meta(np.stack([meta, meta]))
    assert parsed["image_id"].dtype == np.int32
    np.testing.assert_array_equal(parsed["image_id"], [7, 7])
    np.testing.assert_array_equal(parsed["original_image_shape"][1], [50, 100, 3])
    np.testing.assert_array_equal(parsed["image_shape"][0], [128, 128, 3])
    np.testing.assert_array_equal(parsed["window"][0], [32, 0, 96, 128])
    assert parsed["window"].dtype == np.int32
    np.testing.assert_allclose(parsed["scale"], [1.28, 1.28], rtol=1e-6)
    np.testing.assert_array_equal(parsed["active_class_ids"][0], [1, 1, 0, 1])
    single = I.parse_image_meta(meta)
    assert single["image_id"] == 7 and single["window"].shape == (4,)
    with pytest.raises(ValueError, match="window"):
        I.compose_image_meta(7, (50, 100, 3), (128, 128, 3), (32, 0, 96), 1.0, [1, 1])
