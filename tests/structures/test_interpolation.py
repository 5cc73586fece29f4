"""Tests for mrcnn.structures.interpolation: the NumPy resize/paste rule and NumPy RoIAlign,
and the legacy maths of the original implementation (scikit-image) they reproduce."""

import numpy as np
import pytest
import skimage.transform

from mrcnn.structures.masks import expand_mask, minimize_mask, unmold_mask
from mrcnn.structures.images import resize_image
from mrcnn.structures.interpolation import paste_masks, roi_align
from roi_align_reference import roi_align_reference


def original_unmold_mask(mask, bbox, image_shape):
    """The original implementation's unmold_mask (skimage resize, >= 0.5)."""
    y1, x1, y2, x2 = bbox
    mask = skimage.transform.resize(mask, (y2 - y1, x2 - x1), order=1, mode="constant",
                                    cval=0, clip=True, preserve_range=False,
                                    anti_aliasing=False)
    full = np.zeros(image_shape[:2], dtype=bool)
    full[y1:y2, x1:x2] = mask >= 0.5
    return full


@pytest.mark.parametrize("kind", ["uniform", "above_half", "binary"])
def test_paste_masks_equals_the_originals_unmold_mask(kind):
    rng = np.random.default_rng({"uniform": 0, "above_half": 1, "binary": 2}[kind])
    for _ in range(40):
        if kind == "uniform":
            small = rng.uniform(0, 1, (28, 28))
        elif kind == "above_half":
            small = rng.uniform(0.51, 1, (28, 28))
        else:
            small = (rng.uniform(0, 1, (28, 28)) > 0.5).astype(float)
        small = small.astype(np.float32)
        y1, x1 = rng.integers(0, 40, 2)
        h, w = rng.integers(1, 150, 2)
        box = (y1, x1, y1 + h, x1 + w)
        expected = original_unmold_mask(small, box, (200, 200))
        np.testing.assert_array_equal(paste_masks(small[None], [box], (200, 200))[:, :, 0],
                                      expected)
        np.testing.assert_array_equal(unmold_mask(small, box, (200, 200)), expected)


def test_mask_above_half_everywhere_fills_its_box_edges_included():
    # Zeros outside the mask would pull the edge pixels of a 0.6 mask to
    # 0.6 * 0.64 < 0.5; the original clips to the mask's own range: all True.
    small = np.full((28, 28), 0.6, np.float32)
    full = paste_masks(small[None], [(10, 20, 110, 70)], (128, 128))[:, :, 0]
    assert full.sum() == 100 * 50 and full[10:110, 20:70].all()


def test_minimize_mask_rounds_like_the_original():
    # A 2-pixel wide column resampled to 1 pixel samples exactly half-way: 0.5.
    mask = np.zeros((4, 4, 1), bool)
    mask[:, 1, 0] = True
    mini = minimize_mask(np.array([[0, 0, 4, 4]]), mask, (4, 2))
    original = np.around(skimage.transform.resize(mask[:, :, 0].astype(float), (4, 2),
                                                  order=1, mode="constant",
                                                  anti_aliasing=False)).astype(bool)
    np.testing.assert_array_equal(mini[:, :, 0], original)
    assert not mini.any()   # np.around(0.5) == 0


def test_expand_mask_rounds_like_the_original():
    mini = np.zeros((4, 4, 1), bool)
    mini[:, :2, 0] = True
    # Resampled 4 -> 5 columns: column 2 samples at 1.5, half-way between 1 and 0.
    full = expand_mask(np.array([[0, 0, 4, 5]]), mini, (6, 10))
    resized = skimage.transform.resize(mini[:, :, 0].astype(float), (4, 5), order=1,
                                       mode="constant", anti_aliasing=False)
    expected = np.zeros((6, 10), bool)
    expected[:4, :5] = np.around(resized).astype(bool)
    np.testing.assert_array_equal(full[:, :, 0], expected)
    assert resized[0, 2] == 0.5 and not full[0, 2, 0]


def test_resize_image_truncates_like_the_original():
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (61, 83, 3), dtype=np.uint8)
    out, window, scale, _, _ = resize_image(image, min_dim=100, max_dim=128, mode="square")
    y1, x1, y2, x2 = window
    expected = skimage.transform.resize(image, (y2 - y1, x2 - x1), order=1,
                                        mode="constant", preserve_range=True,
                                        anti_aliasing=False).astype(np.uint8)
    np.testing.assert_array_equal(out[y1:y2, x1:x2], expected)
    rounded = np.around(skimage.transform.resize(
        image, (y2 - y1, x2 - x1), order=1, mode="constant", preserve_range=True,
        anti_aliasing=False)).astype(np.uint8)
    assert (rounded != expected).mean() > 0.2   # rounding would change many pixels


@pytest.mark.parametrize("aggregation", ["avg", "max"])
@pytest.mark.parametrize("ratio, aligned, scale", [(2, True, 1.0), (0, True, 0.25),
                                                  (1, False, 0.5), (3, True, 1 / 8)])
def test_numpy_roi_align_equals_the_scalar_reference(ratio, aligned, scale, aggregation):
    rng = np.random.default_rng(4)
    features = rng.normal(size=(9, 11, 3))
    boxes = np.sort(rng.uniform(-8, 20, (30, 2, 2)), axis=1).transpose(0, 2, 1).reshape(-1, 4)
    boxes = boxes[:, [0, 1, 2, 3]] / scale
    got = roi_align(features, boxes, (4, 3), scale, ratio, aligned, aggregation=aggregation)
    expected = roi_align_reference(features[None], boxes, np.zeros(len(boxes), int), (4, 3),
                                   scale, ratio, aligned, aggregation=aggregation)
    np.testing.assert_allclose(got, expected, atol=1e-9)
    flat = roi_align(features[..., 0], boxes, (4, 3), scale, ratio, aligned,
                     aggregation=aggregation)
    np.testing.assert_allclose(flat, expected[..., 0], atol=1e-9)
    if aggregation == "max" and ratio > 1:  # several samples per bin: not the mean
        mean = roi_align(features, boxes, (4, 3), scale, ratio, aligned)
        assert np.all(got >= mean - 1e-12) and np.abs(got - mean).max() > 0.1
