"""Linear-interpolation taps in TensorFlow: the one TF implementation of each rule.

The TF twins of :mod:`mrcnn.structures.interpolation` (which documents both rules):

* `resize_taps_graph`: zeros outside the source (scikit-image's
  ``mode="constant"`` resize; image resizing and mask pasting in the exported
  graph, `mrcnn.inference.export`).
* `roi_align_taps_graph`: RoIAlign's border rule (`mrcnn.ops.roi_align_tf`,
  and through it the graph's mask targets); the C++/CUDA kernel implements
  the same rule and is tested against it.
"""

import tensorflow as tf

__all__ = ["resize_taps_graph", "roi_align_taps_graph"]


def resize_taps_graph(coords, size):
    """Indices and weights of 1-D linear interpolation with zeros outside.

    Args:
        coords: float ``[...]`` sample positions in index units (sample ``i`` of
            the source sits at position ``i``).
        size: scalar int32, the source length.

    Returns:
        ``(low, high, w_low, w_high)``: int32 indices clamped into ``[0, size)``
        and float weights (``coords.dtype``); a tap that falls outside the
        source gets weight 0 (the source is extended with zeros, as
        scikit-image's ``mode="constant"`` resize does).
    """
    low_f = tf.floor(coords)
    frac = coords - low_f
    low = tf.cast(low_f, tf.int32)
    high = low + 1
    zero = tf.zeros_like(frac)
    w_low = tf.where((low >= 0) & (low < size), 1.0 - frac, zero)
    w_high = tf.where((high >= 0) & (high < size), frac, zero)
    last = tf.maximum(size - 1, 0)
    return (tf.clip_by_value(low, 0, last), tf.clip_by_value(high, 0, last), w_low, w_high)


def roi_align_taps_graph(coords, exists, size):
    """Neighbouring indices and weights for 1-D linear interpolation.

    Args:
      coords: ``[K, S]`` float32 sample positions along an axis of length ``size``.
      exists: ``[K, S]`` bool, samples to keep (others get zero weight).
      size: scalar int32, the axis length (H or W).

    Returns:
      ``low, high`` int32 ``[K, S]`` indices in ``[0, size - 1]`` and
      ``w_low, w_high`` float32 ``[K, S]`` weights; both weights are zero for a
      sample outside ``[-1, size]`` or one that does not exist.
    """
    size_f = tf.cast(size, tf.float32)
    valid = exists & (coords >= -1.0) & (coords <= size_f)
    c = tf.maximum(coords, 0.0)
    low = tf.cast(tf.floor(c), tf.int32)
    at_edge = low >= size - 1
    low = tf.where(at_edge, size - 1, low)
    high = tf.where(at_edge, size - 1, low + 1)
    frac = tf.where(at_edge, tf.zeros_like(c), c - tf.cast(low, tf.float32))
    zero = tf.zeros_like(c)
    w_low = tf.where(valid, 1.0 - frac, zero)
    w_high = tf.where(valid, frac, zero)
    # Indices of dropped samples may be anything; keep them in range for gather.
    low = tf.clip_by_value(low, 0, tf.maximum(size - 1, 0))
    high = tf.clip_by_value(high, 0, tf.maximum(size - 1, 0))
    return low, high, w_low, w_high
