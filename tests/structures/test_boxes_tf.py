"""Tests of mrcnn.structures.boxes_tf against the NumPy functions of mrcnn.structures.boxes."""

import numpy as np
import tensorflow as tf

from mrcnn.structures import boxes as npb
from mrcnn.structures.boxes_tf import (apply_box_deltas_graph, box_refinement_graph, clip_boxes_graph, denorm_boxes_graph, norm_boxes_graph, overlaps_graph, pad_to_graph, scale_boxes_graph, trim_zeros_graph)


def _random_boxes(rng, n, scale=100.0):
    yx = rng.uniform(0, scale, (n, 2))
    hw = rng.uniform(1, scale / 2, (n, 2))
    return np.concatenate([yx, yx + hw], axis=1).astype("float32")


def test_refinement_and_deltas_match_numpy_and_invert():
    rng = np.random.default_rng(0)
    a, b = _random_boxes(rng, 20), _random_boxes(rng, 20)
    deltas = np.asarray(box_refinement_graph(a, b))
    np.testing.assert_allclose(deltas, npb.box_refinement(a, b), rtol=1e-5, atol=1e-5)
    refined = np.asarray(apply_box_deltas_graph(a, deltas))
    np.testing.assert_allclose(refined, npb.apply_box_deltas(a, deltas), rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(refined, b, rtol=1e-4, atol=1e-3)
    # Leading batch dimensions are supported.
    batched = np.asarray(apply_box_deltas_graph(a.reshape(4, 5, 4), deltas.reshape(4, 5, 4)))
    np.testing.assert_allclose(batched.reshape(20, 4), refined, rtol=1e-6)


def test_large_predicted_size_deltas_give_finite_boxes():
    """A log-size delta above 88 overflows exp() in float32; unclamped, the
    corners are y1 = -inf and y1 + h = -inf + inf = NaN (this made training on
    diverging random weights produce NaN proposals and NaN gradients)."""
    boxes = np.array([[10, 20, 30, 60], [0, 0, 8, 8]], "float32")
    deltas = np.array([[0.1, -0.2, 100.0, 3.0], [0.0, 0.0, 1.0, 500.0]], "float32")
    unclamped = np.asarray(apply_box_deltas_graph(boxes, deltas, max_log_scale=None))
    assert np.isnan(unclamped).any()
    clamped = np.asarray(apply_box_deltas_graph(boxes, deltas))
    assert np.isfinite(clamped).all()
    # Sizes grow by at most 1000/16 = 62.5 times; small deltas are untouched.
    np.testing.assert_allclose(clamped[:, 2:] - clamped[:, :2],
                               [[20 * 62.5, 40 * np.exp(3.0)], [8 * np.e, 8 * 62.5]], rtol=1e-5)
    np.testing.assert_allclose(
        clamped, npb.apply_box_deltas(boxes, deltas, max_log_scale=npb.MAX_LOG_SCALE_DELTA),
        rtol=1e-5, atol=1e-3)
    # Clipped to the window, they are ordinary boxes.
    clipped = np.asarray(clip_boxes_graph(apply_box_deltas_graph(boxes / 100, deltas),
                                          [0.0, 0.0, 1.0, 1.0]))
    assert np.isfinite(clipped).all() and clipped.min() >= 0 and clipped.max() <= 1


def test_overlaps_match_numpy_including_degenerate():
    rng = np.random.default_rng(1)
    a, b = _random_boxes(rng, 7), _random_boxes(rng, 5)
    b[0] = 0.0  # zero-area box: IoU 0, not NaN
    got = np.asarray(overlaps_graph(a, b))
    np.testing.assert_allclose(got, npb.compute_overlaps(a, b), rtol=1e-5, atol=1e-6)
    assert got.shape == (7, 5) and np.all(got[:, 0] == 0.0)
    assert np.asarray(overlaps_graph(a, np.zeros((0, 4), "float32"))).shape == (7, 0)


def test_clip_boxes():
    boxes = np.array([[-0.2, 0.1, 0.5, 1.4], [0.2, 0.3, 0.4, 0.5]], "float32")
    got = np.asarray(clip_boxes_graph(boxes, np.array([0.0, 0.0, 0.3, 1.0], "float32")))
    np.testing.assert_allclose(got, [[0.0, 0.1, 0.3, 1.0], [0.2, 0.3, 0.3, 0.5]])
    # Per-image windows broadcast against [B, N, 4].
    windows = np.array([[[0, 0, 1, 1]], [[0, 0, 0.25, 0.25]]], "float32")
    got = np.asarray(clip_boxes_graph(np.stack([boxes, boxes]), windows))
    np.testing.assert_allclose(got[1, 1], [0.2, 0.25, 0.25, 0.25])


def test_norm_denorm_match_numpy():
    pixel = np.array([[0, 0, 64, 128], [10, 20, 30, 40]], "float32")
    shape = np.array([64, 128], "float32")
    got = np.asarray(norm_boxes_graph(pixel, shape))
    np.testing.assert_allclose(got, npb.norm_boxes(pixel, (64, 128)), rtol=1e-6)
    np.testing.assert_allclose(got[0], [0, 0, 1, 1], atol=1e-7)
    back = np.asarray(denorm_boxes_graph(got, shape))
    np.testing.assert_array_equal(back, pixel.astype(int))
    assert back.dtype == np.int32


def test_trim_zeros_and_pad_to():
    boxes = np.array([[0, 0, 0, 0], [1, 2, 3, 4], [0, 0, 0, 0], [0, 0, 0, 5]], "float32")
    kept, mask = trim_zeros_graph(tf.constant(boxes))
    np.testing.assert_array_equal(np.asarray(kept), boxes[[1, 3]])
    np.testing.assert_array_equal(np.asarray(mask), [False, True, False, True])
    padded = pad_to_graph(tf.constant(boxes[1:3]), 5)
    assert padded.shape == (5, 4)
    np.testing.assert_array_equal(np.asarray(padded)[:2], boxes[1:3])
    np.testing.assert_array_equal(np.asarray(padded)[2:], 0)
    np.testing.assert_array_equal(np.asarray(pad_to_graph(tf.constant(boxes), 2)), boxes[:2])


def test_scale_boxes_graph_equals_numpy():
    rng = np.random.default_rng(3)
    boxes = _random_boxes(rng, 12).reshape(3, 4, 4)
    for factor in (1.0, 1.25, 2.0):
        np.testing.assert_allclose(np.asarray(scale_boxes_graph(boxes, factor)),
                                   npb.scale_boxes(boxes, factor), rtol=1e-6, atol=1e-5)
