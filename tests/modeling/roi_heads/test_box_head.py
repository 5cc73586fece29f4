"""Tests of the losses of mrcnn.modeling.roi_heads.box_head on hand-computed values and the
nothing-to-average cases."""

import numpy as np
import pytest

from loss_reference import cross_entropy as _ce
from mrcnn.modeling.roi_heads import box_head


def test_mrcnn_class_loss_masks_inactive_logits():
    """Inactive classes leave the softmax; every row still counts, so a RoI whose
    top guess is an inactive class is corrected (the old rule dropped it)."""
    target = np.array([[1, 0, 0]], "int32")
    logits = np.array([[[0.0, 2.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 3.0]]], "float32")
    active = np.array([[1, 1, 0]], "float32")   # class 2 inactive
    expected = np.mean([_ce(logits[0, i, :2], target[0, i]) for i in range(3)])
    got = float(box_head.mrcnn_class_loss(target, logits, active))
    assert got == pytest.approx(expected, rel=1e-5)
    # Row 2 predicts the inactive class 2 but is background: its loss is the
    # two-class loss of [0, 0], log 2, not 0.
    row2 = float(box_head.mrcnn_class_loss(target[:, 2:], logits[:, 2:], active))
    assert row2 == pytest.approx(np.log(2.0), rel=1e-5)
    # The gradient reaches that row's active logits.
    import tensorflow as tf
    x = tf.Variable(logits[:, 2:])
    with tf.GradientTape() as tape:
        loss = box_head.mrcnn_class_loss(target[:, 2:], x, active)
    grad = tape.gradient(loss, x).numpy()[0, 0]
    np.testing.assert_allclose(grad, [-0.5, 0.5, 0.0], atol=1e-6)
    all_active = float(box_head.mrcnn_class_loss(target, logits, np.ones((1, 3), "float32")))
    assert all_active == pytest.approx(
        np.mean([_ce(logits[0, i], target[0, i]) for i in range(3)]), rel=1e-5)
    # No active class at all (e.g. an all-zero meta): nothing is masked.
    none = float(box_head.mrcnn_class_loss(target, logits, np.zeros((1, 3), "float32")))
    assert none == pytest.approx(all_active, rel=1e-6)


def test_mrcnn_class_loss_keeps_an_inactive_target_and_uses_each_images_ids():
    target = np.array([[1], [1]], "int32")
    logits = np.array([[[0.0, 1.0, 5.0]], [[0.0, 1.0, 5.0]]], "float32")
    active = np.array([[1, 1, 0], [1, 0, 1]], "float32")  # image 1: its target inactive
    got = float(box_head.mrcnn_class_loss(target, logits, active))
    assert got == pytest.approx((_ce([0.0, 1.0], 1) + _ce([0.0, 1.0, 5.0], 1)) / 2, rel=1e-5)


def test_mrcnn_class_loss_leaves_padding_rows_out():
    target = np.array([[2, 0, 0, 0]], "int32")
    logits = np.array([[[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.3, 0.1, 0.2], [0.3, 0.1, 0.2]]],
                      "float32")
    rois = np.zeros((1, 4, 4), "float32")
    rois[0, :2] = [[0.1, 0.1, 0.5, 0.5], [0.2, 0.2, 0.3, 0.4]]   # rows 2, 3: padding
    got = float(box_head.mrcnn_class_loss(target, logits, np.ones((1, 3)), rois=rois))
    assert got == pytest.approx((_ce(logits[0, 0], 2) + _ce(logits[0, 1], 0)) / 2, rel=1e-5)
    assert float(box_head.mrcnn_class_loss(target, logits, np.ones((1, 3)),
                                         rois=np.zeros_like(rois))) == 0.0


def test_mrcnn_bbox_loss_uses_gt_class_deltas_of_positives():
    target_ids = np.array([[2, 0], [0, 1]], "int32")
    target = np.array([[[1.0, 0, 0, 0], [5, 5, 5, 5]], [[5, 5, 5, 5], [0, 0, 0, 0.5]]], "float32")
    pred = np.zeros((2, 2, 3, 4), "float32")
    pred[0, 0, 1] = [9, 9, 9, 9]       # wrong class: ignored
    pred[0, 0, 2] = [3.0, 0, 0, 0]     # |d| = 2 -> 1.5
    pred[1, 1, 1] = [0, 0, 0, 0.1]     # |d| = 0.4 -> 0.08
    expected = (1.5 + 0.08) / 8
    assert float(box_head.mrcnn_bbox_loss(target, target_ids, pred)) == pytest.approx(expected,
                                                                                     rel=1e-5)
    assert float(box_head.mrcnn_bbox_loss(target, np.zeros_like(target_ids), pred)) == 0.0


def test_losses_are_float32_scalars_under_float16_inputs():
    logits = np.zeros((1, 2, 3), "float16")
    out = box_head.mrcnn_class_loss(np.array([[1, 0]]), logits, np.ones((1, 3), "float16"))
    assert out.dtype.name == "float32" and out.shape == ()
    assert float(out) == pytest.approx(np.log(3.0), rel=1e-5)
