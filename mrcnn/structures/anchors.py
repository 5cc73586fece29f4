"""Anchor boxes for the Region Proposal Network (NumPy).

Anchor ordering (the RPN head's outputs are laid out the same way, so this is a
contract):

* Pyramid level by level, in the order of ``feature_shapes`` / strides
  (P2, P3, ..., P6).
* Within a level, over feature-map cells in **row-major** order (row ``y``
  outer, column ``x`` inner), stepping by ``anchor_stride`` cells.
* Within a cell, over ``ratios`` (outer) then ``scales`` (inner).

So for one scale per level and ``anchor_stride == 1``, the anchor of level
``l``, cell ``(y, x)`` and ratio index ``r`` has index
``offset_l + (y * W_l + x) * len(ratios) + r`` with
``offset_l = sum(H_k * W_k for k < l) * len(ratios)``. This matches the RPN
head, whose ``[batch, H, W, A * k]`` conv output is reshaped to
``[batch, H * W * A, k]``.

Anchor boxes are ``(y1, x1, y2, x2)`` in **pixels** of the network input,
centred on ``(y * feature_stride, x * feature_stride)``; they are centre-
symmetric floats (``y2 - y1`` is the anchor height) and may extend outside the
image. ``get_anchors_for_config`` returns them normalised with
``boxes.norm_boxes``.
"""

import inspect
import math
import threading

import numpy as np

from mrcnn.structures.boxes import norm_boxes

__all__ = ["generate_anchors", "generate_pyramid_anchors", "compute_backbone_shapes",
           "anchor_scales_per_level", "anchors_per_location", "pixel_anchors_for_config",
           "get_anchors_for_config", "clear_anchor_cache"]


def generate_anchors(scales, ratios, shape, feature_stride, anchor_stride):
    """Anchors of one feature map.

    Args:
        scales: anchor side lengths in pixels (scalar or 1-D); an anchor of
            scale ``s`` and ratio ``r`` has height ``s / sqrt(r)`` and width
            ``s * sqrt(r)`` (so ``r = width / height`` and its area is ``s**2``).
        ratios: width / height ratios (scalar or 1-D).
        shape: ``(H, W)`` of the feature map in cells.
        feature_stride: pixels of the input image per feature-map cell.
        anchor_stride: put anchors on every ``anchor_stride``-th cell.

    Returns:
        float64 ``[N, 4]`` pixel boxes ``(y1, x1, y2, x2)``, with
        ``N = ceil(H / anchor_stride) * ceil(W / anchor_stride) * len(ratios) * len(scales)``,
        ordered cells (row-major), then ratios, then scales.
    """
    scales = np.atleast_1d(np.asarray(scales, dtype=np.float64)).reshape(-1)
    ratios = np.atleast_1d(np.asarray(ratios, dtype=np.float64)).reshape(-1)
    if np.any(ratios <= 0) or np.any(scales <= 0):
        raise ValueError(f"generate_anchors: scales and ratios must be positive, got "
                         f"scales={scales.tolist()} ratios={ratios.tolist()}")
    if anchor_stride < 1:
        raise ValueError(f"generate_anchors: anchor_stride must be >= 1, got {anchor_stride}")
    # Per-cell sizes, ratio-major then scale: shape [R * S].
    heights = (scales[None, :] / np.sqrt(ratios[:, None])).reshape(-1)
    widths = (scales[None, :] * np.sqrt(ratios[:, None])).reshape(-1)
    centres_y = np.arange(0, shape[0], anchor_stride, dtype=np.float64) * feature_stride
    centres_x = np.arange(0, shape[1], anchor_stride, dtype=np.float64) * feature_stride
    cy, cx = np.meshgrid(centres_y, centres_x, indexing="ij")  # [Hc, Wc]
    cy = cy.reshape(-1, 1)  # cells row-major
    cx = cx.reshape(-1, 1)
    boxes = np.stack([cy - 0.5 * heights, cx - 0.5 * widths,
                      cy + 0.5 * heights, cx + 0.5 * widths], axis=-1)  # [cells, A, 4]
    return boxes.reshape(-1, 4)


def generate_pyramid_anchors(scales, ratios, feature_shapes, feature_strides,
                             anchor_stride):
    """Anchors of every pyramid level, concatenated level by level.

    Args:
        scales: the anchor scales (pixels) of each level: one per level, e.g.
            ``(32, 64, 128, 256, 512)`` for P2..P6, or a sequence per level
            (C4: ``[(32, 64, 128, 256, 512)]`` on its one level).
        ratios: width / height ratios used at every level.
        feature_shapes: ``[levels, 2]`` feature-map ``(H, W)`` per level.
        feature_strides: pixel stride of each level, e.g. ``[4, 8, 16, 32, 64]``.
        anchor_stride: cell step, see ``generate_anchors``.

    Returns:
        float64 ``[N, 4]`` pixel anchors ``(y1, x1, y2, x2)`` in the order
        described in the module docstring.
    """
    if not (len(scales) == len(feature_shapes) == len(feature_strides)):
        raise ValueError(f"generate_pyramid_anchors: need one scale, shape and stride per "
                         f"level, got {len(scales)} scales, {len(feature_shapes)} shapes, "
                         f"{len(feature_strides)} strides")
    levels = [generate_anchors(scales[i], ratios, feature_shapes[i], feature_strides[i],
                               anchor_stride) for i in range(len(scales))]
    return np.concatenate(levels, axis=0)


def _config_function(config, name):
    """A one-argument function stored on a config, as the user meant it.

    ``COMPUTE_BACKBONE_SHAPE = my_function`` in a class body would otherwise be
    bound as a method and receive the config as its first argument.
    """
    raw = inspect.getattr_static(config, name, None)
    if raw is None:
        return None
    if isinstance(raw, staticmethod):
        return raw.__func__
    if inspect.isfunction(raw) and name not in vars(config):
        required = [p for p in inspect.signature(raw).parameters.values()
                    if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY,
                                                           p.POSITIONAL_OR_KEYWORD)]
        if len(required) == 1:
            return raw
    return getattr(config, name)


def compute_backbone_shapes(config, image_shape):
    """Feature-map ``(H, W)`` of each pyramid level for an input of ``image_shape``.

    ``ceil(image_size / stride)`` per ``config.BACKBONE_STRIDES``; a callable
    ``config.BACKBONE`` defers to ``config.COMPUTE_BACKBONE_SHAPE(image_shape)``.

    Returns:
        int ``[levels, 2]`` array.
    """
    if callable(config.BACKBONE):
        fn = _config_function(config, "COMPUTE_BACKBONE_SHAPE")
        if fn is None:
            raise ValueError("compute_backbone_shapes: a callable BACKBONE needs "
                             "config.COMPUTE_BACKBONE_SHAPE(image_shape)")
        return np.asarray(fn(image_shape), dtype=np.int64)
    return np.array([[int(math.ceil(image_shape[0] / s)), int(math.ceil(image_shape[1] / s))]
                     for s in config.BACKBONE_STRIDES], dtype=np.int64)


_ANCHOR_CACHE = {}
_ANCHOR_CACHE_SIZE = 16
_ANCHOR_LOCK = threading.Lock()


def clear_anchor_cache():
    """Empty the cache used by ``pixel_anchors_for_config`` / ``get_anchors_for_config``."""
    with _ANCHOR_LOCK:
        _ANCHOR_CACHE.clear()


def anchor_scales_per_level(config):
    """The anchor scales of each RPN level: ``[scales of level 0, ...]``.

    FPN (``HEAD_ARCHITECTURE = "fpn"``): one scale per level, the i-th of
    ``RPN_ANCHOR_SCALES`` on the i-th of ``BACKBONE_STRIDES`` (P2..P6). C4: the
    one stride-16 level carries every scale (the paper's 5 scales x 3 ratios).
    """
    if getattr(config, "HEAD_ARCHITECTURE", "fpn") == "c4":
        return [tuple(float(s) for s in config.RPN_ANCHOR_SCALES)]
    return [float(s) for s in config.RPN_ANCHOR_SCALES]


def anchors_per_location(config):
    """Anchors per feature-map cell: ratios x scales of one level (the RPN head's ``A``)."""
    scales = np.atleast_1d(anchor_scales_per_level(config)[0])
    return len(config.RPN_ANCHOR_RATIOS) * len(scales)


def _cached(key, make):
    with _ANCHOR_LOCK:
        value = _ANCHOR_CACHE.get(key)
    if value is None:
        value = make()
        value.setflags(write=False)
        with _ANCHOR_LOCK:
            if len(_ANCHOR_CACHE) >= _ANCHOR_CACHE_SIZE:
                _ANCHOR_CACHE.pop(next(iter(_ANCHOR_CACHE)))
            _ANCHOR_CACHE[key] = value
    return value


def _anchor_key(config, image_shape):
    shapes = compute_backbone_shapes(config, image_shape)
    scales = tuple(tuple(np.atleast_1d(s).tolist()) for s in anchor_scales_per_level(config))
    return ((int(image_shape[0]), int(image_shape[1])), scales,
            tuple(float(r) for r in config.RPN_ANCHOR_RATIOS),
            tuple(int(s) for s in config.BACKBONE_STRIDES),
            int(config.RPN_ANCHOR_STRIDE), tuple(map(tuple, shapes.tolist()))), shapes


def pixel_anchors_for_config(config, image_shape):
    """Anchors of ``config`` for an input of ``image_shape``, in **pixels**.

    Cached (a small thread-safe dict) keyed by the image ``(H, W)`` and the
    settings the anchors depend on; the returned array is shared and
    read-only: copy it before modifying.

    Returns:
        float64 ``[N, 4]`` pixel boxes ``(y1, x1, y2, x2)`` in the order of the
        module docstring (levels from `anchor_scales_per_level`).
    """
    key, shapes = _anchor_key(config, image_shape)
    return _cached(("pixels",) + key, lambda: generate_pyramid_anchors(
        anchor_scales_per_level(config), config.RPN_ANCHOR_RATIOS, shapes,
        config.BACKBONE_STRIDES, config.RPN_ANCHOR_STRIDE))


def get_anchors_for_config(config, image_shape):
    """Normalised anchors for ``config`` and an input of ``image_shape``.

    The boxes of `pixel_anchors_for_config` normalised with
    ``boxes.norm_boxes`` (legacy convention) for the image size; cached and
    read-only in the same way.

    Returns:
        float32 ``[N, 4]`` anchors ``(y1, x1, y2, x2)``.
    """
    key, _ = _anchor_key(config, image_shape)
    return _cached(("normalised",) + key, lambda: norm_boxes(
        pixel_anchors_for_config(config, image_shape), key[0]))
