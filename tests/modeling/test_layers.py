"""The graphs' weightless layers: RoI axis merge / split, row selection, padding."""

import keras
import numpy as np

from mrcnn.modeling.layers import (LeadingRows, MergeRoiAxis, PadRows, PositiveRows,
                                   RealDetectionBoxes, SplitRoiAxis, is_roi_wise, roi_wise)


def test_merged_rois_give_each_roi_its_own_result():
    rng = np.random.default_rng(0)
    rois = rng.normal(size=(2, 5, 4)).astype("float32")
    features = rng.normal(size=(2, 5, 6, 6, 3)).astype("float32")
    conv = keras.layers.Conv2D(2, 3)
    flat = MergeRoiAxis()(features)
    assert tuple(flat.shape) == (10, 6, 6, 3)
    out = np.asarray(SplitRoiAxis()([conv(flat), rois]))
    assert out.shape == (2, 5, 4, 4, 2)
    # The same convolution applied to each RoI alone.
    for b in range(2):
        for r in range(5):
            alone = np.asarray(conv(features[b, r][None]))[0]
            np.testing.assert_allclose(out[b, r], alone, rtol=1e-5, atol=1e-5)


def test_merge_split_symbolic_shapes_keep_static_dims():
    rois = keras.Input((7, 4))
    feats = keras.Input((7, 5, 5, 8))
    flat = MergeRoiAxis()(feats)
    dense = roi_wise(keras.layers.Dense(3))
    out = SplitRoiAxis()([dense(keras.layers.Flatten()(flat)), rois])
    assert tuple(out.shape) == (None, 7, 3)
    assert is_roi_wise(dense) and not is_roi_wise(keras.layers.Dense(3))
    model = keras.Model([feats, rois], out)
    x = np.arange(2 * 7 * 5 * 5 * 8, dtype="float32").reshape(2, 7, 5, 5, 8) / 1e3
    kernel, bias = [np.asarray(w) for w in dense.weights]
    expected = x.reshape(2, 7, -1) @ kernel + bias
    np.testing.assert_allclose(np.asarray(model([x, np.zeros((2, 7, 4), "float32")])),
                               expected, rtol=1e-5, atol=1e-5)


def test_leading_rows_real_detections_and_padding():
    x = np.arange(2 * 4 * 2, dtype="float32").reshape(2, 4, 2)
    np.testing.assert_array_equal(np.asarray(LeadingRows(3)(x)), x[:, :3])
    detections = np.zeros((2, 5, 6), "float32")
    detections[0, :2] = [[1, 2, 3, 4, 1, 0.9], [5, 6, 7, 8, 2, 0.8]]
    detections[1, :1] = [[9, 9, 9, 9, 1, 0.7]]
    boxes = np.asarray(RealDetectionBoxes()(detections))
    np.testing.assert_array_equal(boxes, detections[:, :2, :4])
    padded = np.asarray(PadRows(5)(boxes))
    assert padded.shape == (2, 5, 4)
    np.testing.assert_array_equal(padded[:, :2], boxes)
    assert not padded[:, 2:].any()
    # No real detection at all: still one row, so the mask head never sees an empty batch.
    assert np.asarray(RealDetectionBoxes()(np.zeros((1, 5, 6), "float32"))).shape == (1, 1, 4)


def test_positive_rows_keep_the_batch_s_largest_positive_count_within_the_cap():
    x = np.arange(2 * 6 * 3, dtype="float32").reshape(2, 6, 3)
    ids = np.array([[3, 1, 0, 0, 0, 0], [2, 0, 0, 0, 0, 0]], "int32")
    np.testing.assert_array_equal(np.asarray(PositiveRows(4)([x, ids])), x[:, :2])
    # The cap: the sampler never puts positives past it (rows past it are not looked at).
    many = np.array([[1, 1, 1, 1, 1, 1], [0] * 6], "int32")
    np.testing.assert_array_equal(np.asarray(PositiveRows(4)([x, many])), x[:, :4])
    # No positive in the batch: one row, so the head never sees an empty batch.
    np.testing.assert_array_equal(np.asarray(PositiveRows(4)([x, 0 * ids])), x[:, :1])
    rows = PositiveRows(4)([keras.Input((6, 3)), keras.Input((6,), dtype="int32")])
    assert tuple(rows.shape) == (None, None, 3)
