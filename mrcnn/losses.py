"""Mask R-CNN losses as plain TensorFlow functions (scalar float32 each).

Every loss returns exactly 0 (never NaN) when there is nothing to average
(no labelled anchors, no positive RoIs, ...). All inputs are cast to float32,
so the losses are safe under mixed precision.

Smooth L1 (``delta = 1``): ``0.5 * d**2`` where ``|d| < 1``, else ``|d| - 0.5``;
box losses average it over every coordinate of the selected rows
(``mean over rows x 4``), as the released weights were trained with.
"""

import tensorflow as tf

__all__ = ["smooth_l1", "real_rows", "rpn_class_loss", "rpn_bbox_loss", "mrcnn_class_loss",
           "mrcnn_bbox_loss", "mrcnn_mask_loss",
           # Legacy names (old modellib): thin aliases.
           "smooth_l1_loss", "rpn_class_loss_graph", "rpn_bbox_loss_graph",
           "mrcnn_class_loss_graph", "mrcnn_bbox_loss_graph", "mrcnn_mask_loss_graph"]

_EPSILON = 1e-7


def _mean_or_zero(values):
    values = tf.reshape(values, [-1])
    return tf.math.divide_no_nan(tf.reduce_sum(values),
                                 tf.cast(tf.size(values), tf.float32))


def smooth_l1(y_true, y_pred):
    """Element-wise smooth L1 of ``y_true - y_pred`` (float32, same shape)."""
    diff = tf.abs(tf.cast(y_true, tf.float32) - tf.cast(y_pred, tf.float32))
    return tf.where(diff < 1.0, 0.5 * tf.square(diff), diff - 0.5)


def _squeeze_match(rpn_match):
    rpn_match = tf.cast(rpn_match, tf.int32)
    if len(rpn_match.shape) == 3:
        rpn_match = tf.squeeze(rpn_match, -1)
    return rpn_match


def rpn_class_loss(rpn_match, rpn_class_logits):
    """RPN anchor classification loss.

    Args:
        rpn_match: ``[B, A, 1]`` (or ``[B, A]``) int: 1 positive, -1 negative,
            0 neutral (ignored).
        rpn_class_logits: ``[B, A, 2]`` logits (index 1 = foreground).

    Returns:
        mean sparse softmax cross-entropy over anchors with ``rpn_match != 0``
        (label 1 for positives, 0 for negatives); 0 if there are none.
    """
    match = _squeeze_match(rpn_match)
    used = tf.not_equal(match, 0)
    labels = tf.cast(tf.equal(tf.boolean_mask(match, used), 1), tf.int32)
    logits = tf.boolean_mask(tf.cast(rpn_class_logits, tf.float32), used)
    loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    return _mean_or_zero(loss)


def rpn_bbox_loss(target_bbox, rpn_match, rpn_bbox):
    """RPN box regression loss over positive anchors.

    The ``i``-th positive anchor of an image (in anchor order) is matched with
    row ``i`` of that image's ``target_bbox`` (positives beyond the rows of
    ``target_bbox`` are ignored).

    Args:
        target_bbox: ``[B, N, 4]`` target deltas / RPN_BBOX_STD_DEV, zero-padded.
        rpn_match: ``[B, A, 1]`` (or ``[B, A]``) int.
        rpn_bbox: ``[B, A, 4]`` predicted deltas.

    Returns:
        smooth L1 averaged over the positives' coordinates; 0 if no positive.
    """
    match = _squeeze_match(rpn_match)
    target_bbox = tf.cast(target_bbox, tf.float32)
    rows = tf.shape(target_bbox)[1]
    positive = tf.equal(match, 1)
    rank = tf.cumsum(tf.cast(positive, tf.int32), axis=1)      # 1-based rank among positives
    positive = positive & (rank <= rows)
    pred = tf.boolean_mask(tf.cast(rpn_bbox, tf.float32), positive)             # [P, 4]
    counts = tf.reduce_sum(tf.cast(positive, tf.int32), axis=1)                   # [B]
    target = tf.boolean_mask(target_bbox, tf.sequence_mask(counts, rows))       # [P, 4]
    return _mean_or_zero(smooth_l1(target, pred))


def real_rows(rois):
    """bool ``[B, R]``: the RoI rows that are not zero padding (``rois [B, R, 4]``)."""
    return tf.reduce_any(tf.not_equal(tf.cast(rois, tf.float32), 0.0), axis=-1)


def mrcnn_class_loss(target_class_ids, pred_class_logits, active_class_ids, rois=None):
    """Head classification loss.

    Classes that are not active for the image's source dataset
    (``active_class_ids[b, c] == 0``) are masked out of the softmax (their
    logits are set to -1e9), so a RoI whose top guess is an inactive class is
    still corrected towards the active ones. The target class always stays in;
    an image with no active class at all (e.g. all-zero meta) masks nothing.
    Rows that are zero padding (``rois`` all zero) are left out of the average.

    Args:
        target_class_ids: ``[B, R]`` int.
        pred_class_logits: ``[B, R, NC]``.
        active_class_ids: ``[B, NC]`` 1/0 (from image meta).
        rois: optional ``[B, R, 4]`` sampled RoIs (``output_rois``); None: every
            row counts.

    Returns:
        mean softmax cross-entropy over the real rows; 0 if there are none.
    """
    target = tf.cast(target_class_ids, tf.int32)
    logits = tf.cast(pred_class_logits, tf.float32)
    num_classes = tf.shape(logits)[-1]
    active = tf.cast(active_class_ids, tf.float32) > 0                          # [B, NC]
    active = active | ~tf.reduce_any(active, axis=-1, keepdims=True)
    keep = active[:, None, :] | tf.one_hot(target, num_classes, on_value=True,
                                           off_value=False)                     # [B, R, NC]
    logits = tf.where(keep, logits, tf.fill(tf.shape(logits), -1e9))
    loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=target, logits=logits)
    if rois is None:
        return _mean_or_zero(loss)
    weight = tf.cast(real_rows(rois), tf.float32)
    return tf.math.divide_no_nan(tf.reduce_sum(loss * weight), tf.reduce_sum(weight))


def _positive_rows(target_class_ids):
    ids = tf.reshape(tf.cast(target_class_ids, tf.int32), [-1])
    ix = tf.where(ids > 0)[:, 0]
    return ix, tf.gather(ids, ix)


def mrcnn_bbox_loss(target_bbox, target_class_ids, pred_bbox):
    """Head box loss: smooth L1 of the gt class's deltas over positive RoIs.

    Args:
        target_bbox: ``[B, R, 4]``; target_class_ids: ``[B, R]`` int;
        pred_bbox: ``[B, R, NC, 4]``.

    Returns:
        smooth L1 averaged over the positives' coordinates; 0 if no positive.
    """
    ix, class_ids = _positive_rows(target_class_ids)
    target = tf.gather(tf.reshape(tf.cast(target_bbox, tf.float32), [-1, 4]), ix)
    pred = tf.cast(pred_bbox, tf.float32)
    pred = tf.reshape(pred, tf.concat([[-1], tf.shape(pred)[2:]], 0))            # [B*R, NC, 4]
    pred = tf.gather(tf.gather(pred, ix), class_ids, batch_dims=1)              # [P, 4]
    return _mean_or_zero(smooth_l1(target, pred))


def mrcnn_mask_loss(target_masks, target_class_ids, pred_masks, from_logits=False):
    """Mask loss: binary cross-entropy on the gt class's channel, positive RoIs.

    Args:
        target_masks: ``[B, R, h, w]`` 0/1.
        target_class_ids: ``[B, R]`` int.
        pred_masks: ``[B, R, h, w, NC]`` sigmoid probabilities, or logits with
            ``from_logits=True`` (what training uses: exact gradients at any
            confidence; from probabilities, which are clipped to
            ``[1e-7, 1 - 1e-7]`` as in the original, a pixel whose |logit| is
            past about 16 gets no gradient, however wrong it is).

    Returns:
        mean BCE over the positives' pixels; 0 if no positive.
    """
    ix, class_ids = _positive_rows(target_class_ids)
    target = tf.cast(target_masks, tf.float32)
    target = tf.gather(tf.reshape(target, tf.concat([[-1], tf.shape(target)[2:]], 0)), ix)
    pred = tf.cast(pred_masks, tf.float32)
    pred = tf.reshape(pred, tf.concat([[-1], tf.shape(pred)[2:]], 0))            # [B*R, h, w, NC]
    pred = tf.transpose(tf.gather(pred, ix), [0, 3, 1, 2])                      # [P, NC, h, w]
    pred = tf.gather(pred, class_ids, batch_dims=1)                             # [P, h, w]
    if from_logits:
        return _mean_or_zero(tf.nn.sigmoid_cross_entropy_with_logits(labels=target,
                                                                     logits=pred))
    pred = tf.clip_by_value(pred, _EPSILON, 1.0 - _EPSILON)
    bce = -(target * tf.math.log(pred) + (1.0 - target) * tf.math.log(1.0 - pred))
    return _mean_or_zero(bce)


# ---- Legacy names of the old modellib (same maths as above) ----

def smooth_l1_loss(y_true, y_pred):
    """Legacy name of :func:`smooth_l1`."""
    return smooth_l1(y_true, y_pred)


def rpn_class_loss_graph(rpn_match, rpn_class_logits):
    """Legacy name of :func:`rpn_class_loss`."""
    return rpn_class_loss(rpn_match, rpn_class_logits)


def rpn_bbox_loss_graph(config, target_bbox, rpn_match, rpn_bbox):
    """Legacy signature of :func:`rpn_bbox_loss` (``config`` is not needed)."""
    del config
    return rpn_bbox_loss(target_bbox, rpn_match, rpn_bbox)


def mrcnn_class_loss_graph(target_class_ids, pred_class_logits, active_class_ids):
    """Legacy name of :func:`mrcnn_class_loss`."""
    return mrcnn_class_loss(target_class_ids, pred_class_logits, active_class_ids)


def mrcnn_bbox_loss_graph(target_bbox, target_class_ids, pred_bbox):
    """Legacy name of :func:`mrcnn_bbox_loss`."""
    return mrcnn_bbox_loss(target_bbox, target_class_ids, pred_bbox)


def mrcnn_mask_loss_graph(target_masks, target_class_ids, pred_masks):
    """Legacy name of :func:`mrcnn_mask_loss`."""
    return mrcnn_mask_loss(target_masks, target_class_ids, pred_masks)
