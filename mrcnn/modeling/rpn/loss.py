"""RPN losses (TF, scalar float32, exactly 0 when nothing is labelled).
"""

import tensorflow as tf

from mrcnn.modeling.losses import mean_or_zero, smooth_l1


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
    return mean_or_zero(loss)


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
    return mean_or_zero(smooth_l1(target, pred))
