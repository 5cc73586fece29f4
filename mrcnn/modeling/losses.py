"""Mask R-CNN losses as plain TensorFlow functions (scalar float32 each).

Every loss returns exactly 0 (never NaN) when there is nothing to average
(no labelled anchors, no positive RoIs, ...). All inputs are cast to float32,
so the losses are safe under mixed precision.

Smooth L1 (``delta = 1``): ``0.5 * d**2`` where ``|d| < 1``, else ``|d| - 0.5``;
box losses average it over every coordinate of the selected rows
(``mean over rows x 4``), as the released weights were trained with.
"""

import tensorflow as tf

__all__ = ["smooth_l1", "mean_or_zero", "EPSILON"]

EPSILON = 1e-7


def mean_or_zero(values):
    values = tf.reshape(values, [-1])
    return tf.math.divide_no_nan(tf.reduce_sum(values),
                                 tf.cast(tf.size(values), tf.float32))


def smooth_l1(y_true, y_pred):
    """Element-wise smooth L1 of ``y_true - y_pred`` (float32, same shape)."""
    diff = tf.abs(tf.cast(y_true, tf.float32) - tf.cast(y_pred, tf.float32))
    return tf.where(diff < 1.0, 0.5 * tf.square(diff), diff - 0.5)


# ---- Legacy names of the old modellib (same maths as above) ----


