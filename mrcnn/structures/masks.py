"""Instance masks in NumPy: resize with the image, mini-masks (crop to the box and
back) and pasting one mask-head output into the image.

Masks are bool ``[H, W, N]`` (one channel per instance) unless stated; boxes
are ``(y1, x1, y2, x2)`` pixels, y2/x2 exclusive. Linear sampling comes from
`mrcnn.structures.interpolation`.
"""

import numpy as np

from mrcnn.structures.images import resize
from mrcnn.structures.interpolation import paste_masks

__all__ = ["resize_mask", "minimize_mask", "expand_mask", "unmold_mask"]


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
        ``>= 0.5`` (`mrcnn.structures.interpolation.paste_masks`, the original's maths). A
        zero-size box gives an all-False mask; the part of a box outside the
        image is dropped.
    """
    mask = np.asarray(mask, dtype=np.float32)
    if mask.ndim != 2:
        raise ValueError(f"unmold_mask: expected a [mh, mw] mask, got shape {mask.shape}")
    box = np.asarray(bbox, dtype=np.float64).reshape(-1)[:4]
    return paste_masks(mask[None], box[None], image_shape[:2], 0.5)[:, :, 0]
