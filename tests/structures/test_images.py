"""Tests for mrcnn.structures.images: resize_image, mold_image / unmold_image."""

import numpy as np
import pytest

from image_fixtures import TinyConfig
from mrcnn.structures import images as I
from mrcnn.structures import masks as K


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
    np.testing.assert_array_equal(K.resize_mask(mask, scale, padding, crop),
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


# ---------------------------------------------------------------- mold
def test_mold_unmold_image_round_trip():
    config = TinyConfig()
    img = ramp_image(16, 16)
    molded = I.mold_image(img, config)
    assert molded.dtype == np.float32
    np.testing.assert_allclose(molded[0, 0], -config.MEAN_PIXEL, rtol=1e-6)
    back = I.unmold_image(molded, config)
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, img)
