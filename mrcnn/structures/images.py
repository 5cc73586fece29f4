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

from mrcnn.constants import RESIZE_MODES


__all__ = [
    "resize", "resize_image", "mold_image", "unmold_image", "IMAGE_RESIZE_MODES",
]

IMAGE_RESIZE_MODES = RESIZE_MODES


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


def mold_image(images, config):
    """Subtract ``config.MEAN_PIXEL``: uint8 RGB image(s) -> float32 network input."""
    return np.asarray(images).astype(np.float32) - np.asarray(config.MEAN_PIXEL,
                                                              dtype=np.float32)


def unmold_image(normalized_images, config):
    """Inverse of ``mold_image``: add ``config.MEAN_PIXEL`` back, round, clip, uint8."""
    images = np.asarray(normalized_images, dtype=np.float32) + np.asarray(
        config.MEAN_PIXEL, dtype=np.float32)
    return np.clip(np.around(images), 0, 255).astype(np.uint8)


