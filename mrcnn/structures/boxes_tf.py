"""Box maths and helpers as TensorFlow ops, used inside the Keras graph.

Conventions:

* Boxes are ``(y1, x1, y2, x2)``; in the graph they are NORMALISED with the
  legacy convention of :mod:`mrcnn.structures.coords` (which owns every conversion),
  except where a docstring says pixels.
* Deltas are ``(dy, dx, log(dh), log(dw))`` as in :func:`mrcnn.structures.boxes.box_refinement`.
* All maths is done in float32 (inputs are cast), so the functions are safe
  under mixed precision.

Each function mirrors a NumPy function of :mod:`mrcnn.structures.boxes` / :mod:`mrcnn.structures.images`
and is tested against it.
"""

import tensorflow as tf

from mrcnn.structures.boxes import MAX_LOG_SCALE_DELTA
# Conversions between box conventions have one owner (re-exported here).
from mrcnn.structures.coords import denorm_boxes_graph, norm_boxes_graph

__all__ = ["apply_box_deltas_graph", "clip_boxes_graph", "overlaps_graph",
           "box_refinement_graph", "scale_boxes_graph", "norm_boxes_graph", "denorm_boxes_graph",
           "trim_zeros_graph",
           "pad_to_graph", "log2_graph"]


def _f32(x):
    x = tf.convert_to_tensor(x)
    return x if x.dtype == tf.float32 else tf.cast(x, tf.float32)


def apply_box_deltas_graph(boxes, deltas, max_log_scale=MAX_LOG_SCALE_DELTA):
    """Apply predicted deltas to boxes (inverse of :func:`box_refinement_graph`).

    Args:
        boxes: ``[..., 4]`` boxes, any units.
        deltas: ``[..., 4]`` ``(dy, dx, log(dh), log(dw))``, same leading shape.
        max_log_scale: ``log(dh)`` and ``log(dw)`` are clamped to at most this
            (default ``mrcnn.structures.boxes.MAX_LOG_SCALE_DELTA``: a box grows at most
            62.5 times), so that large predicted deltas give large finite boxes
            instead of ``inf - inf = NaN`` corners; None: no clamp.

    Returns:
        float32 ``[..., 4]`` refined boxes: centre moved by ``(dy * h, dx * w)``,
        size scaled by ``(exp(dh), exp(dw))``. No clipping to a window.
    """
    boxes, deltas = _f32(boxes), _f32(deltas)
    log_h, log_w = deltas[..., 2], deltas[..., 3]
    if max_log_scale is not None:
        log_h = tf.minimum(log_h, max_log_scale)
        log_w = tf.minimum(log_w, max_log_scale)
    h = boxes[..., 2] - boxes[..., 0]
    w = boxes[..., 3] - boxes[..., 1]
    cy = boxes[..., 0] + 0.5 * h + deltas[..., 0] * h
    cx = boxes[..., 1] + 0.5 * w + deltas[..., 1] * w
    h = h * tf.exp(log_h)
    w = w * tf.exp(log_w)
    y1 = cy - 0.5 * h
    x1 = cx - 0.5 * w
    return tf.stack([y1, x1, y1 + h, x1 + w], axis=-1)


def clip_boxes_graph(boxes, window):
    """Clip boxes to a window.

    Args:
        boxes: ``[..., 4]`` boxes.
        window: ``[4]`` ``(wy1, wx1, wy2, wx2)`` in the units of ``boxes``, or
            ``[..., 4]`` broadcastable against ``boxes`` (e.g. ``[B, 1, 4]``).

    Returns:
        float32 ``[..., 4]``: every coordinate clamped into the window (a box
        entirely outside collapses to zero size on the window edge).
    """
    boxes, window = _f32(boxes), _f32(window)
    lo = tf.stack([window[..., 0], window[..., 1], window[..., 0], window[..., 1]], -1)
    hi = tf.stack([window[..., 2], window[..., 3], window[..., 2], window[..., 3]], -1)
    return tf.minimum(tf.maximum(boxes, lo), hi)


def overlaps_graph(boxes1, boxes2):
    """Pairwise IoU.

    Args:
        boxes1: ``[N, 4]``, boxes2: ``[M, 4]`` in the same units.

    Returns:
        float32 ``[N, M]`` IoU; 0 where the union is empty (degenerate boxes).
    """
    b1, b2 = _f32(boxes1), _f32(boxes2)
    b1 = b1[:, None, :]
    b2 = b2[None, :, :]
    inter_h = tf.maximum(
        tf.minimum(b1[..., 2], b2[..., 2]) - tf.maximum(b1[..., 0], b2[..., 0]), 0.)
    inter_w = tf.maximum(
        tf.minimum(b1[..., 3], b2[..., 3]) - tf.maximum(b1[..., 1], b2[..., 1]), 0.)
    inter = inter_h * inter_w
    area1 = (b1[..., 2] - b1[..., 0]) * (b1[..., 3] - b1[..., 1])
    area2 = (b2[..., 2] - b2[..., 0]) * (b2[..., 3] - b2[..., 1])
    union = area1 + area2 - inter
    return tf.math.divide_no_nan(inter, union)


def box_refinement_graph(box, gt_box):
    """Deltas ``(dy, dx, log(dh), log(dw))`` turning ``box`` into ``gt_box``.

    Args:
        box, gt_box: ``[..., 4]`` boxes in the same units, positive sizes.

    Returns:
        float32 ``[..., 4]`` deltas (see :func:`mrcnn.structures.boxes.box_refinement`).
    """
    box, gt_box = _f32(box), _f32(gt_box)
    h = box[..., 2] - box[..., 0]
    w = box[..., 3] - box[..., 1]
    cy = box[..., 0] + 0.5 * h
    cx = box[..., 1] + 0.5 * w
    gh = gt_box[..., 2] - gt_box[..., 0]
    gw = gt_box[..., 3] - gt_box[..., 1]
    gcy = gt_box[..., 0] + 0.5 * gh
    gcx = gt_box[..., 1] + 0.5 * gw
    return tf.stack([(gcy - cy) / h, (gcx - cx) / w,
                     tf.math.log(gh / h), tf.math.log(gw / w)], axis=-1)


def trim_zeros_graph(boxes, name="trim_zeros"):
    """Drop all-zero rows (padding) of ``[N, 4]`` boxes.

    Returns:
        ``(boxes [N', 4], non_zeros [N] bool)`` -- the kept rows and the mask.
    """
    non_zeros = tf.cast(tf.reduce_sum(tf.abs(boxes), axis=1), tf.bool)
    return tf.boolean_mask(boxes, non_zeros, name=name), non_zeros


def log2_graph(x):
    """Base-2 logarithm (float32)."""
    return tf.math.log(_f32(x)) / tf.math.log(2.0)


def pad_to_graph(x, size):
    """Zero-pad (or truncate) the first axis of ``x`` to exactly ``size`` rows.

    The static first dimension of the result is ``size``.
    """
    x = x[:size]
    pad = tf.maximum(size - tf.shape(x)[0], 0)
    rank = len(x.shape)
    paddings = tf.concat([[[0, pad]], tf.zeros([rank - 1, 2], tf.int32)], axis=0)
    out = tf.pad(x, paddings)
    return tf.ensure_shape(out, [size] + list(x.shape[1:]))


def scale_boxes_graph(boxes, factor):
    """Graph twin of `mrcnn.structures.boxes.scale_boxes`: pixel boxes ``[..., 4]``
    scaled about their centres by ``factor`` (a Python number; 1 returns
    ``boxes`` as float32, no op added). Legacy-normalised boxes: convert to
    pixels first (`scale_norm_boxes_graph` of `mrcnn.structures.coords`)."""
    boxes = _f32(boxes)
    if float(factor) == 1.0:
        return boxes
    centre = (boxes[..., :2] + boxes[..., 2:]) * 0.5
    half = (boxes[..., 2:] - boxes[..., :2]) * (0.5 * float(factor))
    return tf.concat([centre - half, centre + half], axis=-1)
