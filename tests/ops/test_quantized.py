"""Tests of mrcnn.ops.quantized: RoIPool and RoIWarp (the paper's Table 2c
baselines), hand-computed on a 4x4 map and against the scalar NumPy reference."""

import numpy as np
import pytest
import tensorflow as tf

import mrcnn.ops as ops
from mrcnn.ops.quantized import quantize_boxes_graph
from roi_align_reference import linear_map, random_case, roi_align_reference, roi_pool_reference


def pool(features, boxes, output_size, spatial_scale=1.0, box_indices=None):
    box_indices = [0] * len(boxes) if box_indices is None else box_indices
    return ops.roi_pool(tf.constant(features), tf.constant(boxes, tf.float32),
                        tf.constant(box_indices, tf.int32), output_size,
                        spatial_scale=spatial_scale).numpy()


def test_quantize_boxes_rounds_edges_half_up_and_keeps_one_cell():
    boxes = [[0.4, 0.6, 3.4, 2.6], [-2.2, 2.6, 1.4, 6.0], [1.2, 1.2, 1.3, 1.3],
             [0.5, 1.5, 2.5, 3.49], [4, 4, 12, 12]]
    np.testing.assert_array_equal(quantize_boxes_graph(boxes).numpy(),
                                  [[0, 1, 3, 3], [-2, 3, 1, 6], [1, 1, 2, 2], [1, 2, 3, 3],
                                   [4, 4, 12, 12]])
    np.testing.assert_array_equal(quantize_boxes_graph(boxes[4:], 0.25).numpy(), [[1, 1, 3, 3]])


# --- RoIPool by hand (features 10 y + x on a 4x4 map) -------------------------------

ROI_POOL_CASES = [
    # (box, output_size, spatial_scale, expected, why)
    ((0.4, 0.6, 3.4, 2.6), (2, 2), 1.0, [[11, 12], [21, 22]],
     "cells rows 0-2, cols 1-2; row bins [0, 2) and [1, 3) overlap (floor/ceil)"),
    ((4, 4, 12, 12), (1, 1), 0.25, [[22]], "scale 1/4: cells (1, 1)..(2, 2), max 22"),
    ((1.2, 1.2, 1.3, 1.3), (2, 2), 1.0, [[11, 11], [11, 11]],
     "a tiny box keeps one cell; every bin pools it"),
    ((-2.2, 2.6, 1.4, 6.0), (3, 3), 1.0, [[0, 0, 0], [0, 0, 0], [3, 0, 0]],
     "cells rows -2..0, cols 3..5: bins outside the map are empty (0)"),
    ((0, 0, 4, 4), (3, 3), 1.0, [[11, 12, 13], [21, 22, 23], [31, 32, 33]],
     "4 cells in 3 bins: [0, 2), [1, 3), [2, 4)"),
]


@pytest.mark.parametrize("box,output_size,scale,expected,why", ROI_POOL_CASES,
                         ids=[case[-1][:30] for case in ROI_POOL_CASES])
def test_roi_pool_hand_computed(box, output_size, scale, expected, why):
    out = pool(linear_map(4, 4), [box], output_size, scale)
    assert out.shape == (1,) + output_size + (1,)
    np.testing.assert_array_equal(out[0, :, :, 0], np.array(expected, np.float32), err_msg=why)
    np.testing.assert_array_equal(
        roi_pool_reference(linear_map(4, 4), [box], [0], output_size, scale)[0, :, :, 0],
        expected, err_msg=why)


def test_roi_pool_matches_reference_on_random_inputs():
    for output_size, scale in (((3, 4), 0.5), ((2, 2), 0.25), ((5, 3), 1.0)):
        features, boxes, box_indices = random_case(seed=12, n=2, height=9, width=11,
                                                   channels=3, k=30,
                                                   spread=(-3 / scale, 12 / scale))
        out = pool(features, boxes, output_size, scale, box_indices)
        expected = roi_pool_reference(features, boxes, box_indices, output_size, scale)
        np.testing.assert_array_equal(out, expected.astype(np.float32))
        assert (out != 0).mean() > 0.5


def test_roi_pool_gradient_goes_to_the_first_maximal_cell():
    # Channel 0 constant (all cells tie: the first, (0, 1), wins); channel 1 the
    # linear map (the bin's last cell wins).
    base = linear_map(4, 4)[..., 0]
    features = tf.constant(np.stack([np.full_like(base, 2.0), base], -1))
    with tf.GradientTape() as tape:
        tape.watch(features)
        out = ops.roi_pool(features, [[0.4, 0.6, 3.4, 2.6]], [0], (1, 1))
        loss = tf.reduce_sum(out)
    grad = tape.gradient(loss, features).numpy()[0]
    np.testing.assert_array_equal(out.numpy()[0, 0, 0], [2.0, 22.0])
    expected = np.zeros((4, 4, 2), np.float32)
    expected[0, 1, 0] = 1.0
    expected[2, 2, 1] = 1.0
    np.testing.assert_array_equal(grad, expected)


def test_roi_pool_gradient_float64_numeric():
    features, boxes, box_indices = random_case(seed=2, n=2, height=5, width=6, channels=2, k=6,
                                               spread=(-2, 8))
    boxes, box_indices = tf.constant(boxes), tf.constant(box_indices)
    theoretical, numerical = tf.test.compute_gradient(
        lambda x: ops.roi_pool(x, boxes, box_indices, (2, 2)),
        [tf.constant(features.astype(np.float64))], delta=1e-6)
    np.testing.assert_allclose(theoretical[0], numerical[0], atol=1e-6)
    assert np.abs(theoretical[0]).sum() > 0


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16])
def test_roi_pool_16_bit(dtype):
    features, boxes, box_indices = random_case(seed=4, k=8)
    x = tf.cast(tf.constant(features), dtype)
    out = ops.roi_pool(x, boxes, box_indices, (2, 2), spatial_scale=0.5)
    assert out.dtype == dtype
    expected = roi_pool_reference(tf.cast(x, tf.float32).numpy(), boxes, box_indices, (2, 2), 0.5)
    np.testing.assert_array_equal(tf.cast(out, tf.float32).numpy(), expected)


def test_roi_pool_of_no_boxes():
    out = ops.roi_pool(tf.ones([1, 4, 4, 3]), tf.zeros([0, 4]), tf.zeros([0], tf.int32), (7, 7))
    assert out.shape == (0, 7, 7, 3)


# --- RoIWarp --------------------------------------------------------------------

def test_roi_warp_hand_computed(impl):
    # Box (0.4, 0.6, 3.4, 2.6) -> cells rows 0-2, cols 1-2; one aligned sample
    # per bin lands on each cell's centre: the cells' values exactly.
    features = linear_map(4, 4)
    box = [[0.4, 0.6, 3.4, 2.6]]
    out = ops.roi_warp(features, box, [0], (3, 2), sampling_ratio=1).numpy()
    np.testing.assert_allclose(out[0, :, :, 0], [[1, 2], [11, 12], [21, 22]], atol=1e-5)
    # RoIAlign of the same box unquantised samples its bins' centres, at
    # (0.4 + i, 0.6 + j): 10 y + x = 4.6, 5.6, ...
    aligned = ops.roi_align(features, box, [0], (3, 2), sampling_ratio=1).numpy()
    np.testing.assert_allclose(aligned[0, :, :, 0], [[4.6, 5.6], [14.6, 15.6], [24.6, 25.6]],
                               atol=1e-5)
    # Max aggregation of 2x2 samples per bin of the quantised box: each bin's
    # bottom-right sample, at (i + 0.25, j + 1.25) (row 0's clamps at y >= 0).
    peaks = ops.roi_warp(features, box, [0], (3, 2), sampling_ratio=2,
                         aggregation="max").numpy()
    np.testing.assert_allclose(peaks[0, :, :, 0], [[3.75, 4.75], [13.75, 14.75],
                                                   [23.75, 24.75]], atol=1e-5)


@pytest.mark.parametrize("aggregation", ["avg", "max"])
def test_roi_warp_is_roi_align_of_the_quantised_box(impl, aggregation):
    features, boxes, box_indices = random_case(seed=6, k=20, spread=(-16, 48))
    x = tf.constant(features)
    weights = tf.constant(np.random.default_rng(0).normal(size=(20, 3, 3, 3)), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = ops.roi_warp(x, boxes, box_indices, (3, 3), spatial_scale=0.5, sampling_ratio=2,
                           aggregation=aggregation)
        loss = tf.reduce_sum(out * weights)
    cells = quantize_boxes_graph(boxes, 0.5).numpy().astype(np.float64)
    expected = roi_align_reference(features, cells, box_indices, (3, 3), 1.0, 2, True,
                                   aggregation=aggregation)
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-5)
    unquantised = roi_align_reference(features, boxes, box_indices, (3, 3), 0.5, 2, True,
                                      aggregation=aggregation)
    assert np.abs(expected - unquantised).max() > 0.1
    grad = tape.gradient(loss, x).numpy()
    assert grad.shape == features.shape and np.abs(grad).sum() > 1.0
