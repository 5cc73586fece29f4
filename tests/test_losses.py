"""Tests of mrcnn.losses on hand-computed values and the nothing-to-average cases."""

import numpy as np
import pytest

from mrcnn import losses


def _ce(logits, label):
    logits = np.asarray(logits, np.float64)
    return np.log(np.exp(logits).sum()) - logits[label]


def _sl1(d):
    d = np.abs(np.asarray(d, np.float64))
    return np.where(d < 1, 0.5 * d ** 2, d - 0.5)


def test_smooth_l1():
    np.testing.assert_allclose(np.asarray(losses.smooth_l1([0.0, 0.0, 0.0], [0.5, -2.0, 1.0])),
                               [0.125, 1.5, 0.5])


def test_rpn_class_loss():
    match = np.array([[[1], [0], [-1]], [[0], [-1], [0]]], "int32")
    logits = np.array([[[0.0, 2.0], [5.0, -5.0], [1.0, 0.0]],
                       [[3.0, 3.0], [0.5, 1.5], [0.0, 0.0]]], "float32")
    expected = np.mean([_ce([0, 2], 1), _ce([1, 0], 0), _ce([0.5, 1.5], 0)])
    assert float(losses.rpn_class_loss(match, logits)) == pytest.approx(expected, rel=1e-5)
    # Rank-2 rpn_match works too; no labelled anchor -> exactly 0.
    assert float(losses.rpn_class_loss(match[..., 0], logits)) == pytest.approx(expected, rel=1e-5)
    assert float(losses.rpn_class_loss(np.zeros((2, 3, 1), "int32"), logits)) == 0.0


def test_rpn_bbox_loss_matches_ith_positive_with_ith_row():
    match = np.array([[[0], [1], [-1], [1]], [[1], [0], [0], [0]]], "int32")
    pred = np.zeros((2, 4, 4), "float32")
    pred[0, 1] = [0.5, 0, 0, 0]
    pred[0, 3] = [0, 3.0, 0, 0]
    pred[1, 0] = [0, 0, 0.2, 0]
    pred[0, 0] = [9, 9, 9, 9]      # neutral anchor: ignored
    target = np.zeros((2, 3, 4), "float32")
    target[0, 0] = [0.5, 0, 0, 0]  # first positive (anchor 1): exact -> 0
    target[0, 1] = [0, 1.0, 0, 0]  # second positive (anchor 3): |d| = 2 -> 1.5
    target[1, 0] = [0, 0, 0, 0]    # image 1, anchor 0: |d| = 0.2 -> 0.02
    target[1, 1] = [7, 7, 7, 7]    # padding row beyond the positives: ignored
    expected = (0.0 + 1.5 + 0.02) / (3 * 4)
    got = float(losses.rpn_bbox_loss(target, match, pred))
    assert got == pytest.approx(expected, rel=1e-5)
    assert float(losses.rpn_bbox_loss(target, -np.abs(match), pred)) == 0.0


def test_mrcnn_class_loss_masks_inactive_logits():
    """Inactive classes leave the softmax; every row still counts, so a RoI whose
    top guess is an inactive class is corrected (the old rule dropped it)."""
    target = np.array([[1, 0, 0]], "int32")
    logits = np.array([[[0.0, 2.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 3.0]]], "float32")
    active = np.array([[1, 1, 0]], "float32")   # class 2 inactive
    expected = np.mean([_ce(logits[0, i, :2], target[0, i]) for i in range(3)])
    got = float(losses.mrcnn_class_loss(target, logits, active))
    assert got == pytest.approx(expected, rel=1e-5)
    # Row 2 predicts the inactive class 2 but is background: its loss is the
    # two-class loss of [0, 0], log 2, not 0.
    row2 = float(losses.mrcnn_class_loss(target[:, 2:], logits[:, 2:], active))
    assert row2 == pytest.approx(np.log(2.0), rel=1e-5)
    # The gradient reaches that row's active logits.
    import tensorflow as tf
    x = tf.Variable(logits[:, 2:])
    with tf.GradientTape() as tape:
        loss = losses.mrcnn_class_loss(target[:, 2:], x, active)
    grad = tape.gradient(loss, x).numpy()[0, 0]
    np.testing.assert_allclose(grad, [-0.5, 0.5, 0.0], atol=1e-6)
    all_active = float(losses.mrcnn_class_loss(target, logits, np.ones((1, 3), "float32")))
    assert all_active == pytest.approx(
        np.mean([_ce(logits[0, i], target[0, i]) for i in range(3)]), rel=1e-5)
    # No active class at all (e.g. an all-zero meta): nothing is masked.
    none = float(losses.mrcnn_class_loss(target, logits, np.zeros((1, 3), "float32")))
    assert none == pytest.approx(all_active, rel=1e-6)


def test_mrcnn_class_loss_keeps_an_inactive_target_and_uses_each_images_ids():
    target = np.array([[1], [1]], "int32")
    logits = np.array([[[0.0, 1.0, 5.0]], [[0.0, 1.0, 5.0]]], "float32")
    active = np.array([[1, 1, 0], [1, 0, 1]], "float32")  # image 1: its target inactive
    got = float(losses.mrcnn_class_loss(target, logits, active))
    assert got == pytest.approx((_ce([0.0, 1.0], 1) + _ce([0.0, 1.0, 5.0], 1)) / 2, rel=1e-5)


def test_mrcnn_class_loss_leaves_padding_rows_out():
    target = np.array([[2, 0, 0, 0]], "int32")
    logits = np.array([[[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.3, 0.1, 0.2], [0.3, 0.1, 0.2]]],
                      "float32")
    rois = np.zeros((1, 4, 4), "float32")
    rois[0, :2] = [[0.1, 0.1, 0.5, 0.5], [0.2, 0.2, 0.3, 0.4]]   # rows 2, 3: padding
    got = float(losses.mrcnn_class_loss(target, logits, np.ones((1, 3)), rois=rois))
    assert got == pytest.approx((_ce(logits[0, 0], 2) + _ce(logits[0, 1], 0)) / 2, rel=1e-5)
    assert float(losses.mrcnn_class_loss(target, logits, np.ones((1, 3)),
                                         rois=np.zeros_like(rois))) == 0.0


def test_mrcnn_bbox_loss_uses_gt_class_deltas_of_positives():
    target_ids = np.array([[2, 0], [0, 1]], "int32")
    target = np.array([[[1.0, 0, 0, 0], [5, 5, 5, 5]], [[5, 5, 5, 5], [0, 0, 0, 0.5]]], "float32")
    pred = np.zeros((2, 2, 3, 4), "float32")
    pred[0, 0, 1] = [9, 9, 9, 9]       # wrong class: ignored
    pred[0, 0, 2] = [3.0, 0, 0, 0]     # |d| = 2 -> 1.5
    pred[1, 1, 1] = [0, 0, 0, 0.1]     # |d| = 0.4 -> 0.08
    expected = (1.5 + 0.08) / 8
    assert float(losses.mrcnn_bbox_loss(target, target_ids, pred)) == pytest.approx(expected,
                                                                                     rel=1e-5)
    assert float(losses.mrcnn_bbox_loss(target, np.zeros_like(target_ids), pred)) == 0.0


def test_mrcnn_mask_loss_bce_on_gt_class_channel():
    target_ids = np.array([[1, 0]], "int32")
    target = np.zeros((1, 2, 2, 2), "float32")
    target[0, 0] = [[1, 0], [1, 1]]
    pred = np.full((1, 2, 2, 2, 3), 0.5, "float32")
    pred[0, 0, :, :, 1] = [[0.9, 0.2], [0.6, 1.0]]   # p = 1 is clipped to 1 - 1e-7
    pred[0, 0, :, :, 2] = 0.01                        # other class: ignored
    p = np.array([0.9, 0.2, 0.6, 1 - 1e-7])
    y = np.array([1, 0, 1, 1])
    expected = np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p)))
    got = float(losses.mrcnn_mask_loss(target, target_ids, pred))
    assert got == pytest.approx(expected, rel=1e-4)
    zero = losses.mrcnn_mask_loss(target, np.zeros_like(target_ids), pred)
    assert float(zero) == 0.0 and not np.isnan(float(zero))


def test_mrcnn_mask_loss_from_logits_keeps_learning_when_confidently_wrong():
    target_ids = np.array([[1]], "int32")
    target = np.ones((1, 1, 2, 2), "float32")
    logits = np.zeros((1, 1, 2, 2, 2), "float32")
    logits[0, 0, :, :, 1] = [[2.0, -1.0], [-30.0, 0.0]]   # -30: confidently wrong
    z = np.array([2.0, -1.0, -30.0, 0.0])
    expected = np.mean(np.log1p(np.exp(-z)))
    got = float(losses.mrcnn_mask_loss(target, target_ids, logits, from_logits=True))
    assert got == pytest.approx(expected, rel=1e-5)
    import tensorflow as tf
    x = tf.Variable(logits)
    with tf.GradientTape() as tape:
        loss = losses.mrcnn_mask_loss(target, target_ids, x, from_logits=True)
    assert tape.gradient(loss, x).numpy()[0, 0, 1, 0, 1] == pytest.approx(-0.25, rel=1e-5)
    # From clipped probabilities the same pixel gets no gradient at all.
    p = tf.Variable(tf.sigmoid(logits))
    with tf.GradientTape() as tape:
        loss = losses.mrcnn_mask_loss(target, target_ids, p)
    assert tape.gradient(loss, p).numpy()[0, 0, 1, 0, 1] == 0.0


def test_losses_are_float32_scalars_under_float16_inputs():
    logits = np.zeros((1, 2, 3), "float16")
    out = losses.mrcnn_class_loss(np.array([[1, 0]]), logits, np.ones((1, 3), "float16"))
    assert out.dtype.name == "float32" and out.shape == ()
    assert float(out) == pytest.approx(np.log(3.0), rel=1e-5)


def test_legacy_loss_names_are_the_same_maths():
    match = np.array([[[1], [-1]]], "int32")
    logits = np.array([[[0.0, 1.0], [2.0, 0.0]]], "float32")
    assert float(losses.rpn_class_loss_graph(match, logits)) == pytest.approx(
        np.mean([_ce([0, 1], 1), _ce([2, 0], 0)]), rel=1e-5)
    pred = np.array([[[0.0, 0, 0, 2.0], [0, 0, 0, 0]]], "float32")
    target = np.zeros((1, 1, 4), "float32")
    assert float(losses.rpn_bbox_loss_graph(None, target, match, pred)) == pytest.approx(1.5 / 4)
    np.testing.assert_allclose(np.asarray(losses.smooth_l1_loss([0.0], [0.5])), [0.125])
