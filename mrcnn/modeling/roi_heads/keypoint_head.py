"""The keypoint branch (Keypoint R-CNN, the paper's Section 5): the head, its
targets and decoding in the graph (twins of `mrcnn.structures.keypoints`), and
its loss.

The head takes RoI features already pooled (``PyramidROIAlign`` with
``KEYPOINT_POOL_SIZE``, 14) and merged into the batch axis (`MergeRoiAxis`),
and predicts one ``m x m`` heatmap of logits per keypoint (``m`` =
``KEYPOINT_HEATMAP_SIZE`` = 4 x the pool size, 56). Heatmap cell ``(i, j)`` of
a RoI covers ``[x1 + j w/m, x1 + (j+1) w/m) x [y1 + i h/m, ...)`` (pixel boxes,
see `mrcnn.structures.keypoints`): the pooled bins' geometry refined 4x. The
head keeps that geometry: the 4x4 stride-2 deconvolution with "same" padding
is centred (coarse cell ``i`` spreads over fine cells ``2i - 1 .. 2i + 2``,
centred at the coarse centre) and the bilinear upsampling uses half-pixel
centres (tested).

Per-class keypoint sets: `config_class_table` (the rule of
`mrcnn.structures.keypoints.keypoint_class_table`) gives the bool ``[NUM_CLASSES,
K]`` table both target builders take: a RoI's keypoints its class does not have
are invalid targets, so they cost no loss.
"""

import numpy as np
import tensorflow as tf
from keras import layers

from mrcnn.modeling.layers import SplitRoiAxis, roi_wise
from mrcnn.structures.boxes_tf import scale_boxes_graph
from mrcnn.structures.coords import norm_to_pixels_graph
from mrcnn.structures.keypoints import keypoint_class_table

__all__ = ["build_keypoint_head_graph", "config_class_table", "keypoint_targets_graph",
           "roi_keypoint_targets_graph", "mrcnn_keypoint_loss", "decode_heatmaps_graph",
           "detection_keypoints_graph"]


def build_keypoint_head_graph(pooled, num_keypoints, num_convs=8, channels=512, rois=None):
    """The keypoint head: ``num_convs`` 3x3 convolutions of ``channels`` with ReLU
    (``mrcnn_kp_conv1`` ..), a 4x4 stride-2 deconvolution to ``K`` channels
    (``mrcnn_kp_deconv``) and a 2x bilinear upsampling (``mrcnn_kp_upsample``,
    float32): ``p -> 2p -> 4p`` (14 -> 28 -> 56). No activation: logits.

    Args:
        pooled: ``[B * R, p, p, C]`` pooled RoI features, RoIs merged into the
            batch axis (`MergeRoiAxis`).
        num_keypoints: ``K`` (``NUM_KEYPOINTS``).
        num_convs, channels: ``KEYPOINT_HEAD_CONV``, ``KEYPOINT_HEAD_CHANNELS``.
        rois: optional ``[B, R, 4]`` reference: the output is then split back
            to ``[B, R, 4p, 4p, K]`` (layer ``mrcnn_keypoints_per_roi``).

    Returns:
        float32 logits ``[B * R, 4p, 4p, K]`` (or ``[B, R, 4p, 4p, K]``).
    """
    x = pooled
    for i in range(1, int(num_convs) + 1):
        x = roi_wise(layers.Conv2D(channels, 3, padding="same", activation="relu",
                                   kernel_initializer="he_normal", name=f"mrcnn_kp_conv{i}"))(x)
    x = roi_wise(layers.Conv2DTranspose(int(num_keypoints), 4, strides=2, padding="same",
                                        kernel_initializer="he_normal",
                                        name="mrcnn_kp_deconv"))(x)
    x = roi_wise(layers.UpSampling2D(2, interpolation="bilinear", dtype="float32",
                                     name="mrcnn_kp_upsample"))(x)
    if rois is None:
        return x
    return SplitRoiAxis(dtype="float32", name="mrcnn_keypoints_per_roi")([x, rois])


def config_class_table(config):
    """bool ``[NUM_CLASSES, NUM_KEYPOINTS]``: the keypoints each class has
    (``KEYPOINT_CLASSES``; None: every class but the background has all)."""
    return keypoint_class_table(config.NUM_CLASSES, config.NUM_KEYPOINTS,
                                config.KEYPOINT_CLASSES, config.KEYPOINT_NAMES)


def keypoint_targets_graph(rois, keypoints, heatmap_size, class_ids=None, class_table=None):
    """Graph twin of `mrcnn.structures.keypoints.keypoint_targets` (same float32
    maths, same results).

    Args:
        rois: ``[R, 4]`` pixel boxes ``(y1, x1, y2, x2)``, y2/x2 exclusive.
        keypoints: ``[R, K, 3]`` matched gt keypoints ``(x, y, v)``.
        heatmap_size: ``m`` (int).
        class_ids: int ``[R]``; with ``class_table`` (bool ``[NUM_CLASSES, K]``,
            a NumPy array) keypoints the RoI's class lacks are invalid.

    Returns:
        ``indices`` int32 ``[R, K]`` (``row * m + col``, 0 where invalid),
        ``valid`` bool ``[R, K]``.
    """
    m = int(heatmap_size)
    rois = tf.cast(rois, tf.float32)
    keypoints = tf.cast(keypoints, tf.float32)
    y1, x1, y2, x2 = (rois[:, i:i + 1] for i in range(4))
    x, y, v = keypoints[..., 0], keypoints[..., 1], keypoints[..., 2]
    valid = (v > 0) & (x >= x1) & (x < x2) & (y >= y1) & (y < y2)
    col = tf.floor((x - x1) * (float(m) / (x2 - x1)))
    row = tf.floor((y - y1) * (float(m) / (y2 - y1)))
    zero = tf.zeros_like(col)
    col = tf.cast(tf.clip_by_value(tf.where(valid, col, zero), 0, m - 1), tf.int32)
    row = tf.cast(tf.clip_by_value(tf.where(valid, row, zero), 0, m - 1), tf.int32)
    if class_table is not None:
        if class_ids is None:
            raise ValueError("keypoint_targets_graph: class_table needs the RoIs' class_ids")
        ids = tf.cast(tf.reshape(class_ids, [-1]), tf.int32)
        table = tf.constant(np.asarray(class_table, dtype=bool))
        has = tf.gather(table, tf.maximum(ids, 0)) & (ids > 0)[:, None]
        valid = valid & has
    return tf.where(valid, row * m + col, tf.zeros_like(row)), valid


def roi_keypoint_targets_graph(gt_keypoints, assignment, pos_rois, roi_class_ids, image_hw,
                               heatmap_size, class_table=None, roi_expand=1.0):
    """Targets of one image's positive RoIs, as `DetectionTargetLayer` holds them.

    Args:
        gt_keypoints: ``[G, K, 3]`` the image's gt keypoints (input-image pixels),
            rows aligned with the (trimmed, non-crowd) gt boxes.
        assignment: int ``[P]`` the gt row of each positive RoI.
        pos_rois: ``[P, 4]`` legacy-normalised RoIs (`mrcnn.structures.coords`).
        roi_class_ids: int ``[P]``; image_hw: ``(H, W)`` of the input image.
        roi_expand: ``KEYPOINT_ROI_EXPAND``: the heatmaps cover each RoI scaled
            by it about its centre, so the targets do too.

    Returns:
        ``indices`` int32 ``[P, K]``, ``valid`` bool ``[P, K]``.
    """
    rois_px = scale_boxes_graph(norm_to_pixels_graph(pos_rois, image_hw), roi_expand)
    matched = tf.gather(tf.cast(gt_keypoints, tf.float32), assignment)
    return keypoint_targets_graph(tf.stop_gradient(rois_px), matched, heatmap_size,
                                  roi_class_ids, class_table)


def mrcnn_keypoint_loss(target_indices, target_valid, pred_logits, normalizer=None):
    """Softmax cross-entropy over the ``m * m`` cells of each valid keypoint.

    Each valid keypoint (labelled, inside its positive RoI, of the RoI's
    class) is an ``m * m``-way classification whose label is its target cell.

    Normalisation (``normalizer=None``, the default): the mean over the valid
    keypoints of the batch, detectron2's default
    (``NORMALIZE_BY_VISIBLE_KEYPOINTS = True``, with loss weight 1). Chosen
    because the package's other losses are means over what they label (mask
    pixels of positives, sampled RoIs), so ``KEYPOINT_LOSS_WEIGHT = 1`` weighs
    it like them whatever the keypoint count per instance, the per-class sets
    or the fraction labelled; the fixed normaliser needs its weight retuned
    per data set (detectron2 recommends 4 for COCO). Its cost: a batch with
    few valid keypoints weighs each of them more (one keypoint steers a whole
    step), which detectron2's fixed normaliser avoids. That one is available:
    ``normalizer`` = a number divides the sum instead, e.g.
    ``images * TRAIN_ROIS_PER_IMAGE * ROI_POSITIVE_RATIO * K`` (every keypoint
    of a full quota of positives; detectron2's value when that flag is off).

    Args:
        target_indices: int ``[..., K]`` (e.g. ``[B, R, K]``).
        target_valid: bool ``[..., K]``.
        pred_logits: ``[..., m, m, K]`` the head's logits, same leading axes.
        normalizer: None or a positive number (see above).

    Returns:
        scalar float32; exactly 0 (finite gradients) without a valid keypoint.
    """
    logits = tf.cast(pred_logits, tf.float32)
    shape = tf.shape(logits)
    m2 = shape[-3] * shape[-2]
    k = shape[-1]
    logits = tf.reshape(logits, tf.stack([-1, m2, k]))
    logits = tf.transpose(logits, [0, 2, 1])                                  # [N, K, m*m]
    valid = tf.reshape(tf.cast(target_valid, tf.bool), tf.stack([-1, k]))
    labels = tf.reshape(tf.cast(target_indices, tf.int32), tf.stack([-1, k]))
    labels = tf.where(valid, labels, tf.zeros_like(labels))
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    total = tf.reduce_sum(tf.where(valid, ce, tf.zeros_like(ce)))
    if normalizer is None:
        return tf.math.divide_no_nan(total, tf.reduce_sum(tf.cast(valid, tf.float32)))
    return total / float(normalizer)


def decode_heatmaps_graph(heatmaps, rois):
    """Graph twin of `mrcnn.structures.keypoints.decode_heatmaps`.

    Args:
        heatmaps: ``[R, m, m, K]`` logits (``m`` static); rois: ``[R, 4]`` pixel boxes.

    Returns:
        float32 ``[R, K, 3]`` ``(x, y, score)``: arg-max cell, parabolic
        sub-cell refinement on the logits, cell centres in the RoI, softmax
        probability of the arg-max cell.
    """
    maps = tf.cast(heatmaps, tf.float32)
    mh, mw = int(maps.shape[1]), int(maps.shape[2])
    r, k = tf.shape(maps)[0], tf.shape(maps)[3]
    flat = tf.reshape(tf.transpose(maps, [0, 3, 1, 2]), tf.stack([r, k, mh * mw]))
    best = tf.argmax(flat, axis=-1, output_type=tf.int32)
    row, col = best // mw, best % mw
    peak = tf.reduce_max(flat, axis=-1)
    score = 1.0 / tf.reduce_sum(tf.exp(flat - peak[..., None]), axis=-1)

    def reflect(index, size):
        index = tf.where(index < 0, -index, index)
        index = tf.where(index > size - 1, 2 * (size - 1) - index, index)
        return tf.clip_by_value(index, 0, size - 1)

    def at(rr, cc):
        return tf.gather(flat, reflect(rr, mh) * mw + reflect(cc, mw), batch_dims=2)

    def offset(left, right):
        curvature = left - 2.0 * peak + right
        safe = tf.where(curvature < 0, curvature, -tf.ones_like(curvature))
        shift = tf.where(curvature < 0, (left - right) / (2.0 * safe), tf.zeros_like(safe))
        return tf.clip_by_value(shift, -0.5, 0.5)

    dx = offset(at(row, col - 1), at(row, col + 1))
    dy = offset(at(row - 1, col), at(row + 1, col))
    rois = tf.cast(rois, tf.float32)
    y1, x1, y2, x2 = (rois[:, i:i + 1] for i in range(4))
    x = x1 + (tf.cast(col, tf.float32) + 0.5 + dx) * (x2 - x1) / mw
    y = y1 + (tf.cast(row, tf.float32) + 0.5 + dy) * (y2 - y1) / mh
    return tf.stack([x, y, score], axis=-1)


def detection_keypoints_graph(heatmaps, boxes, image_hw, roi_expand=1.0):
    """Keypoints of detections in input-image pixels: `decode_heatmaps_graph` of
    the heatmaps ``[D, m, m, K]`` with the legacy-normalised detection boxes
    ``[D, 4]``, scaled by ``roi_expand`` about their centres (the boxes the
    heatmaps cover, ``KEYPOINT_ROI_EXPAND``), converted to pixel boxes. Map them
    to the original image with `mrcnn.structures.keypoints.unmold_keypoints`
    (the window of the resize)."""
    return decode_heatmaps_graph(
        heatmaps, scale_boxes_graph(norm_to_pixels_graph(boxes, image_hw), roi_expand))
