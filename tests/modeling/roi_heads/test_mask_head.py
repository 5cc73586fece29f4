"""Tests of mrcnn.modeling.roi_heads.mask_head: crop_and_resize_mask, the graph mask targets
against it, and mrcnn_mask_loss."""

import numpy as np
import pytest

from mrcnn.modeling.roi_heads import mask_head
from mrcnn.modeling.roi_heads.mask_head import crop_and_resize_mask


# ----------------------------------------------------------------------- crop_and_resize_mask
def test_crop_and_resize_mask_identity_and_half():
    mask = np.zeros((20, 20), bool)
    mask[:, :10] = True
    np.testing.assert_array_equal(crop_and_resize_mask(mask, (0, 0, 20, 20), (20, 20)), mask)
    out = crop_and_resize_mask(mask, (0, 0, 20, 20), (28, 28))
    # Output column c samples x = (c + .5) * 20/28: columns 0..13 lie left of 10.
    expected = np.zeros((28, 28), np.float32)
    expected[:, :14] = 1
    np.testing.assert_array_equal(out, expected)
    # A box over the right half only sees zeros; a box outside the mask too.
    assert crop_and_resize_mask(mask, (0, 10, 20, 20), (7, 7)).sum() == 0
    assert crop_and_resize_mask(mask, (30, 30, 40, 40), (7, 7)).sum() == 0


def _jittered_case(seed, size=512, count=40):
    """One ~300 px gt ellipse, ``count`` RoIs jittered around its box (IoU >= 0.5)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] + 0.5
    mask = ((yy - 250.3) / 150.2) ** 2 + ((xx - 260.7) / 140.9) ** 2 <= 1
    from mrcnn.structures.boxes import compute_overlaps, extract_bboxes
    gt_box = extract_bboxes(mask[:, :, None]).astype(np.float64)
    rois = []
    while len(rois) < count:
        jitter = rng.normal(0, 12, 4)
        roi = np.clip(gt_box[0] + jitter, 0, size)
        if compute_overlaps(roi[None], gt_box)[0, 0] >= 0.6:
            rois.append(roi)
    return mask, gt_box, np.array(rois)


@pytest.mark.parametrize("use_mini_mask", [False, True])
def test_graph_and_numpy_mask_targets_agree(use_mini_mask):
    """The graph's RoIAlign targets (DetectionTargetLayer) and the NumPy twin
    (build_detection_targets' crop_and_resize_mask) on 40 jittered ~300 px RoIs."""
    from mrcnn.structures.coords import norm_boxes, norm_to_pixels
    from mrcnn.structures.masks import minimize_mask
    from mrcnn.modeling.roi_heads.sampling import DetectionTargetLayer

    size = 512
    mask, gt_box, rois = _jittered_case(3, size)
    stored = minimize_mask(gt_box.astype(int), mask[:, :, None], (56, 56)) if use_mini_mask \
        else mask[:, :, None]
    norm_rois = norm_boxes(rois, (size, size))
    layer = DetectionTargetLayer(len(rois), 1.0, (0.1, 0.1, 0.2, 0.2), (28, 28),
                                 use_mini_mask=use_mini_mask, image_shape=(size, size))
    out_rois, ids, _, targets = [np.asarray(o)[0] for o in layer(
        [norm_rois[None], np.array([[1]], "int32"), norm_boxes(gt_box, (size, size))[None],
         stored[None]])]
    assert (ids == 1).all()
    differing, worst = 0, 0
    for roi_norm, target in zip(out_rois, targets):
        roi = norm_to_pixels(roi_norm, (size, size))   # the pixel box the graph used
        if use_mini_mask:
            gy1, gx1, gy2, gx2 = gt_box[0]
            sy, sx = 56 / (gy2 - gy1), 56 / (gx2 - gx1)
            roi = ((roi[0] - gy1) * sy, (roi[1] - gx1) * sx, (roi[2] - gy1) * sy,
                   (roi[3] - gx1) * sx)
        expected = crop_and_resize_mask(stored[:, :, 0], roi, (28, 28))
        diff = (expected != target).sum()
        differing += diff > 0
        worst = max(worst, diff)
    # Identical here (compiled op and pure-TF path alike); the legacy graph targets
    # (crop_and_resize, rounded) differ from these on all 40 RoIs (median 31 of
    # 784 pixels: about a row and a column).
    assert worst == 0 and differing == 0, (worst, differing)


# ----------------------------------------------------------------------- mrcnn_mask_loss
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
    got = float(mask_head.mrcnn_mask_loss(target, target_ids, pred))
    assert got == pytest.approx(expected, rel=1e-4)
    zero = mask_head.mrcnn_mask_loss(target, np.zeros_like(target_ids), pred)
    assert float(zero) == 0.0 and not np.isnan(float(zero))


def test_mrcnn_mask_loss_from_logits_keeps_learning_when_confidently_wrong():
    target_ids = np.array([[1]], "int32")
    target = np.ones((1, 1, 2, 2), "float32")
    logits = np.zeros((1, 1, 2, 2, 2), "float32")
    logits[0, 0, :, :, 1] = [[2.0, -1.0], [-30.0, 0.0]]   # -30: confidently wrong
    z = np.array([2.0, -1.0, -30.0, 0.0])
    expected = np.mean(np.log1p(np.exp(-z)))
    got = float(mask_head.mrcnn_mask_loss(target, target_ids, logits, from_logits=True))
    assert got == pytest.approx(expected, rel=1e-5)
    import tensorflow as tf
    x = tf.Variable(logits)
    with tf.GradientTape() as tape:
        loss = mask_head.mrcnn_mask_loss(target, target_ids, x, from_logits=True)
    assert tape.gradient(loss, x).numpy()[0, 0, 1, 0, 1] == pytest.approx(-0.25, rel=1e-5)
    # From clipped probabilities the same pixel gets no gradient at all.
    p = tf.Variable(tf.sigmoid(logits))
    with tf.GradientTape() as tape:
        loss = mask_head.mrcnn_mask_loss(target, target_ids, p)
    assert tape.gradient(loss, p).numpy()[0, 0, 1, 0, 1] == 0.0
