"""Tests for mrcnn.structures.masks: resize_mask, mini-masks, unmold_mask."""

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mrcnn.structures import images as I
from mrcnn.structures import masks as K
from mrcnn.structures.boxes import extract_bboxes


# ---------------------------------------------------------------- resize_mask
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
    rmask = K.resize_mask(mask, scale, padding, crop)
    assert rmask.shape[:2] == rimg.shape[:2] and rmask.dtype == bool
    if mode == "crop":
        # A crop loses part of the mask, so no round trip: the result must be
        # exactly the matching sub-window of the scaled, uncropped mask.
        cy, cx, ch, cw = crop
        full = K.resize_mask(mask, scale, [(0, 0)] * 3)
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
    mini = K.minimize_mask(bbox, mask, (4, 4))
    assert mini.dtype == bool and mini.shape == (4, 4, 1)
    np.testing.assert_array_equal(mini[..., 0], np.tile([True, True, False, False], (4, 1)))
    np.testing.assert_array_equal(K.expand_mask(bbox, mini, (10, 12, 3)), mask)


def test_zero_size_boxes_do_not_crash():
    mask = np.zeros((10, 12, 2), bool)
    mask[1:3, 1:4, 1] = True
    bbox = extract_bboxes(mask)        # first instance empty -> [0, 0, 0, 0]
    mini = K.minimize_mask(bbox, mask, (8, 8))
    assert not mini[..., 0].any() and mini[..., 1].all()
    full = K.expand_mask(bbox, mini, (10, 12))
    np.testing.assert_array_equal(full, mask)
    assert not K.unmold_mask(np.ones((28, 28)), (5, 5, 5, 9), (10, 12, 3)).any()


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
    mini = K.minimize_mask(bbox, mask, (14, 14))
    np.testing.assert_array_equal(K.expand_mask(bbox, mini, mask.shape), mask)


def test_unmold_mask_places_thresholded_mask_in_box():
    probs = np.full((28, 28), 0.1, np.float32)
    probs[:, :14] = 0.9                # left half above threshold
    full = K.unmold_mask(probs, (10, 20, 30, 60), (50, 80, 3))
    expected = np.zeros((50, 80), bool)
    expected[10:30, 20:40] = True
    assert full.dtype == bool and full.shape == (50, 80)
    np.testing.assert_array_equal(full, expected)
    # a box hanging over the image edge is clipped, not an error
    full = K.unmold_mask(np.full((28, 28), 0.8), (40, 70, 60, 90), (50, 80))
    assert full[40:, 70:].all() and full.sum() == 10 * 10
