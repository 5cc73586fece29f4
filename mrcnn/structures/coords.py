"""Box coordinate conventions: the one module that converts between them.

Three conventions meet in Mask R-CNN; nothing else in the package knows how they
relate (no other module writes ``h - 1`` or ``[0, 0, 1, 1]``):

* **Pixel boxes** ``(y1, x1, y2, x2)``: pixel ``i`` covers ``[i, i + 1)``; y2/x2
  are **exclusive** (one past the last pixel), so a box's height is ``y2 - y1``.
  Ground truth (`mrcnn.structures.boxes.extract_bboxes`), anchors, results of ``detect()``.
  Read as continuous coordinates, a pixel box is the region it covers: its
  edges are positions, not pixel indices.
* **Legacy-normalised boxes**, the convention the released COCO weights were
  trained with and the graph carries between layers:
  ``norm = (pixels - [0, 0, 1, 1]) / [h - 1, w - 1, h - 1, w - 1]``. The
  exclusive end becomes the inclusive last pixel and pixel *indices* are
  divided by ``h - 1``, so pixel 0 maps to 0.0 and the last row to 1.0; the
  whole image is the window ``[0, 0, 1, 1]`` (`NORM_IMAGE_WINDOW`).
  ``tf.image.crop_and_resize`` reads such a box as index positions
  ``norm * (size - 1)``: the legacy pooling path keeps that.
* **RoIAlign op input** (`mrcnn.ops.roi_align`): continuous pixel coordinates,
  i.e. the pixel box itself (edges as positions), multiplied by the level's
  ``spatial_scale``; ``aligned=True`` then samples bin centres. Convert a
  legacy-normalised box with `roi_align_boxes_graph` (no rounding).

NumPy functions first, then their TensorFlow twins (``*_graph``; float32
maths, TensorFlow imported when first used).
"""

import numpy as np

__all__ = ["NORM_IMAGE_WINDOW", "norm_boxes", "denorm_boxes", "norm_to_pixels",
           "norm_boxes_graph", "denorm_boxes_graph", "norm_to_pixels_graph",
           "roi_align_boxes_graph", "box_sizes_px_graph", "rebase_boxes_graph"]

# The whole image as a legacy-normalised window (y1, x1, y2, x2).
NORM_IMAGE_WINDOW = (0.0, 0.0, 1.0, 1.0)

# pixels = norm * [h - 1, w - 1, h - 1, w - 1] + _SHIFT
_SHIFT = (0.0, 0.0, 1.0, 1.0)


def _scale_np(shape):
    h, w = float(shape[0]), float(shape[1])
    return np.array([h - 1, w - 1, h - 1, w - 1], dtype=np.float64)


def norm_boxes(boxes, shape):
    """Pixel boxes (y2/x2 exclusive) -> legacy-normalised boxes.

    Args:
        boxes: ``[..., 4]`` pixel boxes ``(y1, x1, y2, x2)``.
        shape: ``(height, width[, ...])`` of the image the boxes live in.

    Returns:
        float32 ``[..., 4]`` ``(boxes - [0, 0, 1, 1]) / [h-1, w-1, h-1, w-1]``
        (computed in float64, bit-for-bit the original's).
    """
    shift = np.asarray(_SHIFT, dtype=np.float64)
    return ((np.asarray(boxes, dtype=np.float64) - shift) / _scale_np(shape)).astype(np.float32)


def norm_to_pixels(boxes, shape):
    """Legacy-normalised boxes -> continuous pixel boxes (float64, not rounded).

    The exact inverse of `norm_boxes`: ``norm * [h-1, w-1, h-1, w-1] + [0, 0, 1, 1]``.
    """
    shift = np.asarray(_SHIFT, dtype=np.float64)
    return np.asarray(boxes, dtype=np.float64) * _scale_np(shape) + shift


def denorm_boxes(boxes, shape):
    """Legacy-normalised boxes -> int32 pixel boxes (y2/x2 exclusive), rounded.

    ``round(norm_to_pixels(boxes, shape))``, as the original rounds.
    """
    return np.around(norm_to_pixels(boxes, shape)).astype(np.int32)


# --------------------------------------------------------------------------- TensorFlow
def _tf():
    import tensorflow as tf
    return tf


def _boxes_and_scale_shift(boxes, shape):
    """``(boxes, scale, shift)`` as float64 tensors for float64 boxes, else float32."""
    tf = _tf()
    boxes = tf.convert_to_tensor(boxes)
    dtype = tf.float64 if boxes.dtype == tf.float64 else tf.float32
    shape = tf.cast(tf.convert_to_tensor(shape)[..., :2], dtype)
    h, w = shape[..., 0], shape[..., 1]
    scale = tf.stack([h - 1., w - 1., h - 1., w - 1.], axis=-1)
    return tf.cast(boxes, dtype), scale, tf.constant(_SHIFT, dtype)


def norm_boxes_graph(boxes, shape):
    """Pixel boxes (y2/x2 exclusive) -> legacy-normalised boxes (float32; float64
    boxes are computed and returned in float64).

    Args:
        boxes: ``[..., 4]`` pixel boxes.
        shape: ``[2]`` (or more) ``(height, width, ...)``; only the first two
            values are used. A batched ``[B, 2]`` shape needs boxes ``[B, 4]``
            or a broadcastable expansion by the caller.
    """
    boxes, scale, shift = _boxes_and_scale_shift(boxes, shape)
    return (boxes - shift) / scale


def norm_to_pixels_graph(boxes, shape):
    """Legacy-normalised boxes -> continuous float32 pixel boxes (not rounded).

    Args:
        boxes: ``[..., 4]`` legacy-normalised boxes.
        shape: ``(height, width)`` of the image (``[2]``; ``[B, 2]`` with
            boxes ``[B, 4]``).
    """
    boxes, scale, shift = _boxes_and_scale_shift(boxes, shape)
    return boxes * scale + shift


def scale_norm_boxes_graph(boxes, factor, shape):
    """Legacy-normalised boxes ``[..., 4]`` scaled about their centres by
    ``factor`` in pixels (`mrcnn.structures.boxes_tf.scale_boxes_graph` of the
    pixel boxes, normalised back); all-zero (padding) rows stay zeros. float32.
    ``shape``: ``(height, width)`` of the image."""
    tf = _tf()
    from mrcnn.structures.boxes_tf import scale_boxes_graph

    boxes = tf.cast(boxes, tf.float32)
    if float(factor) == 1.0:
        return boxes
    scaled = norm_boxes_graph(scale_boxes_graph(norm_to_pixels_graph(boxes, shape), factor),
                              shape)
    real = tf.reduce_any(tf.not_equal(boxes, 0.0), axis=-1, keepdims=True)
    return tf.where(real, scaled, tf.zeros_like(scaled))


def denorm_boxes_graph(boxes, shape):
    """Legacy-normalised boxes -> int32 pixel boxes (y2/x2 exclusive), rounded."""
    tf = _tf()
    return tf.cast(tf.round(norm_to_pixels_graph(boxes, shape)), tf.int32)


def rebase_boxes_graph(boxes, window):
    """Express boxes relative to a window of the same image (e.g. the real image
    inside the padded one): ``(boxes - [wy1, wx1, wy1, wx1]) / [wh, ww, wh, ww]``
    (a zero-size window counts as 1). Any units; float64 stays float64."""
    tf = _tf()
    boxes = tf.convert_to_tensor(boxes)
    window = tf.cast(window, boxes.dtype)
    wy1, wx1, wy2, wx2 = tf.unstack(window, num=4, axis=-1)
    span = tf.stack([wy2 - wy1, wx2 - wx1] * 2, axis=-1)
    span = tf.where(span <= 0, tf.ones_like(span), span)
    return (boxes - tf.stack([wy1, wx1] * 2, axis=-1)) / span


def roi_align_boxes_graph(boxes, image_hw):
    """Legacy-normalised RoIs -> the RoIAlign op's input coordinates.

    The op takes continuous pixel coordinates (box edges as positions), so this
    is `norm_to_pixels_graph`: a pixel box ``[100, 100, 324, 324)`` normalised
    and converted back reaches the op as exactly ``[100, 100, 324, 324]``.

    Args:
        boxes: ``[..., 4]`` legacy-normalised boxes.
        image_hw: ``[2]`` ``(H, W)`` of the network input image.

    Returns:
        float32 ``[..., 4]`` pixel coordinates (multiply by a level's
        ``spatial_scale`` = 1 / stride, which the op does).
    """
    return norm_to_pixels_graph(boxes, image_hw)


def box_sizes_px_graph(boxes, image_hw):
    """Heights and widths in input-image pixels of legacy-normalised boxes.

    Returns:
        ``(h, w)`` float32 ``[...]``: ``(y2 - y1) * (H - 1) + 1`` and the same
        for x; the pixel box's ``y2 - y1`` (a zero-size normalised box, e.g.
        padding, is one pixel).
    """
    pixels = norm_to_pixels_graph(boxes, image_hw)
    return pixels[..., 2] - pixels[..., 0], pixels[..., 3] - pixels[..., 1]
