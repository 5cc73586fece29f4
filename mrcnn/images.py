"""Image and mask resizing, mini-masks, image normalisation and image meta.

NumPy / scikit-image only (no TensorFlow). Conventions:

* Images are ``[H, W, C]`` (``[H, W]`` is accepted where noted).
* Instance masks are bool ``[H, W, N]``, one channel per instance.
* Boxes are ``(y1, x1, y2, x2)`` in **pixels** with y2/x2 **exclusive** (one
  past the last pixel), as produced by ``boxes.extract_bboxes``.
* A resize is described by ``(window, scale, padding, crop)`` as returned by
  ``resize_image``; ``resize_mask`` replays it on masks.
"""

import numpy as np
import skimage.transform

from mrcnn.interpolation import paste_masks

__all__ = [
    "resize", "resize_image", "resize_mask", "minimize_mask", "expand_mask",
    "unmold_mask", "mold_image", "unmold_image", "compose_image_meta",
    "parse_image_meta", "IMAGE_RESIZE_MODES",
]

IMAGE_RESIZE_MODES = ("none", "square", "pad64", "crop")


def resize(image, output_shape, order=1, mode="constant", cval=0, clip=True,
           preserve_range=False, anti_aliasing=False, anti_aliasing_sigma=None):
    """Thin wrapper over ``skimage.transform.resize`` with this package's defaults.

    Bilinear (``order=1``), constant padding and **no** anti-aliasing by
    default: the released weights were trained with images resized this way.
    """
    return skimage.transform.resize(
        image, output_shape, order=order, mode=mode, cval=cval, clip=clip,
        preserve_range=preserve_range, anti_aliasing=anti_aliasing,
        anti_aliasing_sigma=anti_aliasing_sigma)


def _cast_like(array, dtype):
    """Cast a resized float array back to ``dtype`` as the original implementation
    did (``astype``: integers are truncated, not rounded). The resize keeps the
    input's value range (``clip=True``), so nothing overflows."""
    return array.astype(dtype)


def resize_image(image, min_dim=None, max_dim=None, min_scale=None, mode="square",
                 rng=None):
    """Resize (and pad or crop) an image for the network, keeping its aspect ratio.

    Modes:

    * ``"none"``: unchanged; window is the full image and scale 1.
    * ``"square"``: scale up so the short side is at least ``min_dim`` (never
      down for that rule), at least by ``min_scale``, but then down so the long
      side is at most ``max_dim``; pad with zeros, centred, to
      ``[max_dim, max_dim]``.
    * ``"pad64"``: scale by the ``min_dim`` / ``min_scale`` rules, then pad with
      zeros (centred) so height and width are multiples of 64. ``max_dim`` is
      not used.
    * ``"crop"``: scale by the ``min_dim`` / ``min_scale`` rules, then take a
      random ``[min_dim, min_dim]`` crop (from ``rng``).

    Args:
        image: ``[H, W, C]`` (or ``[H, W]``) array of any dtype.
        min_dim, max_dim: side lengths in pixels (see modes).
        min_scale: minimum scale factor (``None`` or 0: no minimum).
        mode: one of ``IMAGE_RESIZE_MODES``.
        rng: optional ``numpy.random.Generator`` or ``RandomState`` for the
            ``"crop"`` mode (default: the global ``np.random``).

    Returns:
        ``(image, window, scale, padding, crop)``:

        * ``image``: the resized image, same dtype as the input (integers are
          truncated, as in the original implementation, whose weights and
          detections this reproduces).
        * ``window``: ``(y1, x1, y2, x2)`` of the (scaled) image inside the
          result, pixels, y2/x2 exclusive. Padding lies outside it.
        * ``scale``: the scale factor applied (float).
        * ``padding``: ``[(top, bottom), (left, right), (0, 0)]`` pixels.
        * ``crop``: ``(y, x, h, w)`` of the crop in the scaled image for
          ``"crop"``, else ``None``.
    """
    if mode not in IMAGE_RESIZE_MODES:
        raise ValueError(f"resize_image: unknown mode {mode!r}; expected one of "
                         f"{IMAGE_RESIZE_MODES}")
    image = np.asarray(image)
    if image.ndim not in (2, 3) or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"resize_image: expected an image [H, W, C] or [H, W] with "
                         f"H, W >= 1, got shape {image.shape}")
    if mode == "square" and not max_dim:
        raise ValueError("resize_image: mode 'square' needs max_dim (IMAGE_MAX_DIM)")
    if mode == "crop" and not min_dim:
        raise ValueError("resize_image: mode 'crop' needs min_dim (IMAGE_MIN_DIM)")

    dtype = image.dtype
    h, w = image.shape[:2]
    window = (0, 0, h, w)
    scale = 1.0
    padding = [(0, 0), (0, 0), (0, 0)]
    crop = None
    if mode == "none":
        return image, window, scale, padding, crop

    if min_dim:
        scale = max(1.0, min_dim / min(h, w))
    if min_scale and scale < min_scale:
        scale = float(min_scale)
    if mode == "square":
        long_side = max(h, w)
        if round(long_side * scale) > max_dim:
            scale = max_dim / long_side

    if scale != 1:
        new_shape = (round(h * scale), round(w * scale))
        image = _cast_like(resize(image, new_shape, preserve_range=True), dtype)
    h, w = image.shape[:2]

    if mode in ("square", "pad64"):
        if mode == "square":
            pad_h, pad_w = max_dim - h, max_dim - w
        else:
            pad_h, pad_w = (-h) % 64, (-w) % 64
        top, left = pad_h // 2, pad_w // 2
        padding = [(top, pad_h - top), (left, pad_w - left), (0, 0)]
        image = np.pad(image, padding[:image.ndim], mode="constant", constant_values=0)
        window = (top, left, top + h, left + w)
    else:  # crop
        rng = np.random if rng is None else rng
        randint = rng.integers if hasattr(rng, "integers") else rng.randint
        y = int(randint(0, h - min_dim + 1))
        x = int(randint(0, w - min_dim + 1))
        crop = (y, x, min_dim, min_dim)
        image = image[y:y + min_dim, x:x + min_dim]
        window = (0, 0, min_dim, min_dim)
    return image, window, scale, padding, crop


def resize_mask(mask, scale, padding, crop=None):
    """Apply a ``resize_image`` transform to instance masks.

    Args:
        mask: ``[H, W, N]`` bool masks of the original image.
        scale, padding, crop: as returned by ``resize_image`` for that image.

    Returns:
        bool ``[H', W', N]`` masks aligned with the resized image
        (nearest-neighbour resampling).
    """
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise ValueError(f"resize_mask: expected masks [H, W, N], got shape {mask.shape}")
    mask = mask.astype(bool)
    h, w = mask.shape[:2]
    if scale != 1 and mask.shape[-1] > 0:
        new_shape = (round(h * scale), round(w * scale))
        mask = resize(mask.astype(np.uint8), new_shape, order=0,
                      preserve_range=True) > 0.5
    elif scale != 1:
        mask = np.zeros((round(h * scale), round(w * scale), 0), dtype=bool)
    if crop is not None:
        y, x, ch, cw = crop
        mask = mask[y:y + ch, x:x + cw]
    else:
        mask = np.pad(mask, [tuple(p) for p in padding[:2]] + [(0, 0)],
                      mode="constant", constant_values=False)
    return mask


def _box_ints(box):
    y1, x1, y2, x2 = (int(round(float(v))) for v in box[:4])
    return y1, x1, y2, x2


def minimize_mask(bbox, mask, mini_shape):
    """Crop each instance mask to its box and resize it to ``mini_shape``.

    Saves memory during training; ``expand_mask`` undoes it. Bilinear resize
    (`resize`), then the original's ``np.around``: a value of exactly 0.5 is
    False.

    Args:
        bbox: ``[N, 4]`` int pixel boxes ``(y1, x1, y2, x2)``, y2/x2 exclusive
            (usually ``extract_bboxes(mask)``).
        mask: ``[H, W, N]`` bool masks.
        mini_shape: ``(mh, mw)``.

    Returns:
        bool ``[mh, mw, N]``. An instance with an empty (zero-size) box gets an
        all-False mini mask.
    """
    mask = np.asarray(mask)
    bbox = np.asarray(bbox)
    if mask.ndim != 3 or bbox.shape != (mask.shape[-1], 4):
        raise ValueError(f"minimize_mask: expected mask [H, W, N] and bbox [N, 4], got "
                         f"{mask.shape} and {bbox.shape}")
    mh, mw = mini_shape
    mini = np.zeros((mh, mw, mask.shape[-1]), dtype=bool)
    for i in range(mask.shape[-1]):
        y1, x1, y2, x2 = _box_ints(bbox[i])
        m = mask[max(y1, 0):y2, max(x1, 0):x2, i]
        if m.size == 0:
            continue
        mini[:, :, i] = resize(m.astype(np.float64), (mh, mw)) > 0.5
    return mini


def expand_mask(bbox, mini_mask, image_shape):
    """Inverse of ``minimize_mask``: paste mini masks back at full size.

    Args:
        bbox: ``[N, 4]`` int pixel boxes ``(y1, x1, y2, x2)``, y2/x2 exclusive.
        mini_mask: ``[mh, mw, N]`` bool masks.
        image_shape: ``(H, W[, C])`` of the full image.

    Returns:
        bool ``[H, W, N]``. Zero-size boxes give empty masks; parts of a box
        outside the image are dropped.
    """
    mini_mask = np.asarray(mini_mask)
    bbox = np.asarray(bbox)
    if mini_mask.ndim != 3 or bbox.shape != (mini_mask.shape[-1], 4):
        raise ValueError(f"expand_mask: expected mini_mask [mh, mw, N] and bbox [N, 4], "
                         f"got {mini_mask.shape} and {bbox.shape}")
    masks = np.moveaxis(mini_mask, -1, 0).astype(np.float32)
    full = paste_masks(masks, bbox, image_shape[:2], 0.5, inclusive=False)
    return np.ascontiguousarray(full)


def unmold_mask(mask, bbox, image_shape):
    """Turn one mask-head output into a full-size binary mask.

    Args:
        mask: float ``[mh, mw]`` sigmoid probabilities for one detection.
        bbox: ``(y1, x1, y2, x2)`` pixel box of the detection in the image of
            ``image_shape``, y2/x2 exclusive (rounded to integers).
        image_shape: ``(H, W[, C])``.

    Returns:
        bool ``[H, W]``: the mask resized (bilinear) into the box, kept where
        ``>= 0.5`` (`mrcnn.interpolation.paste_masks`, the original's maths). A
        zero-size box gives an all-False mask; the part of a box outside the
        image is dropped.
    """
    mask = np.asarray(mask, dtype=np.float32)
    if mask.ndim != 2:
        raise ValueError(f"unmold_mask: expected a [mh, mw] mask, got shape {mask.shape}")
    box = np.asarray(bbox, dtype=np.float64).reshape(-1)[:4]
    return paste_masks(mask[None], box[None], image_shape[:2], 0.5)[:, :, 0]


def mold_image(images, config):
    """Subtract ``config.MEAN_PIXEL``: uint8 RGB image(s) -> float32 network input."""
    return np.asarray(images).astype(np.float32) - np.asarray(config.MEAN_PIXEL,
                                                              dtype=np.float32)


def unmold_image(normalized_images, config):
    """Inverse of ``mold_image``: add ``config.MEAN_PIXEL`` back, round, clip, uint8."""
    images = np.asarray(normalized_images, dtype=np.float32) + np.asarray(
        config.MEAN_PIXEL, dtype=np.float32)
    return np.clip(np.around(images), 0, 255).astype(np.uint8)


def compose_image_meta(image_id, original_image_shape, image_shape, window, scale,
                       active_class_ids):
    """Pack per-image attributes into one 1-D float array.

    Layout (length ``12 + NUM_CLASSES``, ``config.IMAGE_META_SIZE``):

    ========  ======================================================
    0         image_id (int, index in the Dataset)
    1:4       original_image_shape (H, W, C) before resizing
    4:7       image_shape (H, W, C) after resizing and padding
    7:11      window (y1, x1, y2, x2) of the image in the padded
              image, pixels, y2/x2 exclusive
    11        scale applied to the original image
    12:       active_class_ids, ``[NUM_CLASSES]`` 1 for classes of
              the image's source dataset, else 0
    ========  ======================================================
    """
    parts = {"original_image_shape": (original_image_shape, 3),
             "image_shape": (image_shape, 3), "window": (window, 4)}
    for name, (value, length) in parts.items():
        if len(value) != length:
            raise ValueError(f"compose_image_meta: {name} must have {length} values, "
                             f"got {list(value)}")
    meta = np.array([image_id] + list(original_image_shape) + list(image_shape)
                    + list(window) + [scale] + list(active_class_ids), dtype=np.float64)
    return meta


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
    if meta.ndim != 2 or meta.shape[1] < 13:
        raise ValueError(f"parse_image_meta: expected [batch, 12 + NUM_CLASSES], got "
                         f"shape {meta.shape}")
    as_int = lambda a: np.around(a).astype(np.int32)  # noqa: E731
    parsed = {
        "image_id": as_int(meta[:, 0]),
        "original_image_shape": as_int(meta[:, 1:4]),
        "image_shape": as_int(meta[:, 4:7]),
        "window": as_int(meta[:, 7:11]),
        "scale": meta[:, 11].astype(np.float32),
        "active_class_ids": as_int(meta[:, 12:]),
    }
    if single:
        parsed = {k: v[0] for k, v in parsed.items()}
    return parsed
