"""The image meta vector: one float row per image that travels with it through
the graph (``input_image_meta``, ``config.IMAGE_META_SIZE`` long).

Its layout is defined once, here (`META_FIELDS`): `compose_image_meta` writes
it, `parse_image_meta` (NumPy) and `parse_image_meta_graph` (TF) read it, and
`meta_size` gives its length.

============================  =====  ==============================================
field                         width  meaning
============================  =====  ==============================================
``image_id``                  1      index of the image in its `Dataset`
``original_image_shape``      3      ``(H, W, C)`` before resizing
``image_shape``               3      ``(H, W, C)`` after resizing and padding
``window``                    4      ``(y1, x1, y2, x2)`` of the image in the padded
                                     image, pixels, y2/x2 exclusive
``scale``                     1      scale applied to the original image
``active_class_ids``          NC     1 for the classes of the image's source, else 0
============================  =====  ==============================================
"""

import numpy as np

__all__ = ["META_FIELDS", "meta_size", "meta_slices", "compose_image_meta",
           "compose_image_meta_graph",
           "parse_image_meta", "parse_image_meta_graph", "image_hw_graph"]

# (name, width); ``None``: the rest of the row (NUM_CLASSES values).
META_FIELDS = (("image_id", 1), ("original_image_shape", 3), ("image_shape", 3),
               ("window", 4), ("scale", 1), ("active_class_ids", None))
_SCALARS = ("image_id", "scale")
_FIXED = sum(width for _, width in META_FIELDS if width is not None)


def meta_size(num_classes):
    """Length of one meta row for ``num_classes`` classes (background included)."""
    return _FIXED + int(num_classes)


def meta_slices():
    """``{field: slice}`` into a meta row (scalars as ``slice(i, i + 1)``)."""
    out, start = {}, 0
    for name, width in META_FIELDS:
        out[name] = slice(start, None if width is None else start + width)
        start += width or 0
    return out


def compose_image_meta(image_id, original_image_shape, image_shape, window, scale,
                       active_class_ids):
    """Pack per-image attributes into one 1-D float64 array (layout above)."""
    values = {"image_id": [image_id], "original_image_shape": list(original_image_shape),
              "image_shape": list(image_shape), "window": list(window), "scale": [scale],
              "active_class_ids": list(active_class_ids)}
    for name, width in META_FIELDS:
        if width is not None and len(values[name]) != width:
            raise ValueError(f"compose_image_meta: {name} must have {width} values, "
                             f"got {values[name]}")
    return np.array([v for name, _ in META_FIELDS for v in values[name]], dtype=np.float64)


def compose_image_meta_graph(image_id, original_image_shape, image_shape, window, scale,
                             active_class_ids):
    """TF twin of `compose_image_meta`: one float32 ``[meta_size]`` row."""
    import tensorflow as tf
    values = {"image_id": image_id, "original_image_shape": original_image_shape,
              "image_shape": image_shape, "window": window, "scale": scale,
              "active_class_ids": active_class_ids}
    return tf.concat([tf.reshape(tf.cast(values[name], tf.float32), [-1])
                      for name, _ in META_FIELDS], axis=0)


def _split(meta, squeeze):
    return {name: (squeeze(meta[:, s]) if name in _SCALARS else meta[:, s])
            for name, s in meta_slices().items()}


def parse_image_meta(meta):
    """Unpack ``compose_image_meta`` arrays.

    Args:
        meta: ``[batch, meta_size]`` (or one ``[meta_size]`` row).

    Returns:
        dict with ``image_id`` int32 ``[batch]``, ``original_image_shape`` int32
        ``[batch, 3]``, ``image_shape`` int32 ``[batch, 3]``, ``window`` int32
        ``[batch, 4]`` (pixels, exclusive end), ``scale`` float32 ``[batch]`` and
        ``active_class_ids`` int32 ``[batch, NUM_CLASSES]``. For a 1-D input the
        leading batch axis is dropped.
    """
    meta = np.asarray(meta)
    single = meta.ndim == 1
    if single:
        meta = meta[None]
    if meta.ndim != 2 or meta.shape[1] < meta_size(1):
        raise ValueError(f"parse_image_meta: expected [batch, {_FIXED} + NUM_CLASSES], got "
                         f"shape {meta.shape}")
    parsed = _split(meta, lambda a: a[:, 0])
    parsed = {k: (v.astype(np.float32) if k == "scale" else np.around(v).astype(np.int32))
              for k, v in parsed.items()}
    if single:
        parsed = {k: v[0] for k, v in parsed.items()}
    return parsed


def parse_image_meta_graph(meta):
    """TF twin of `parse_image_meta`: ``[B, meta_size]`` -> dict of float32 tensors
    (``image_id [B]``, ``original_image_shape [B, 3]``, ``image_shape [B, 3]``,
    ``window [B, 4]`` pixels, ``scale [B]``, ``active_class_ids [B, NUM_CLASSES]``)."""
    import tensorflow as tf
    return _split(tf.cast(meta, tf.float32), lambda a: a[:, 0])


def image_hw_graph(image_meta):
    """``(height, width)`` float32 ``[2]`` of the (molded) input images.

    All images of a batch share one shape; the first image's meta is used.
    """
    return parse_image_meta_graph(image_meta)["image_shape"][0, :2]
