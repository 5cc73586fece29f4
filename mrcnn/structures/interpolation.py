"""Linear-interpolation sampling in NumPy: the one implementation the NumPy paths use.

Two sampling rules exist in Mask R-CNN, and each has exactly one NumPy home here
(their TensorFlow twins live in :mod:`mrcnn.structures.interpolation_tf`, the C++/CUDA
kernel implements the second and is tested against :func:`roi_align`):

* **Resize / paste** (:func:`resize_taps`, :func:`paste_masks`): the maths of
  ``skimage.transform.resize(order=1, mode="constant", cval=0,
  anti_aliasing=False, clip=True)``, which the original implementation used to
  resize images and to paste the 28x28 mask-head outputs into their boxes.
  Output pixel ``i`` (centre ``i + 0.5``) samples the source at index position
  ``(i + 0.5) * in / out - 0.5``: cell centres map onto cell centres, so a mask
  pasted into a box covers exactly the box. Taps outside the source count as
  0, and the result is clipped to the source's value range (scikit-image's
  ``clip=True``): where every probability of a mask is above 0.5 its edge pixels
  stay inside the mask.
* **RoIAlign** (:func:`roi_align_taps`, :func:`roi_align`): bilinear samples at
  continuous coordinates with RoIAlign's border rule (a sample more than one
  cell outside contributes 0, otherwise coordinates are clamped into the map),
  averaged over a regular sub-grid of each bin (or, ``aggregation="max"``,
  their maximum). With ``aligned=True`` a box edge
  at pixel coordinate ``y`` is the position ``y - 0.5`` in index units: bins are
  sampled at their centres, the same geometry as the resize rule above.

Coordinates: boxes are ``(y1, x1, y2, x2)`` in continuous pixel coordinates of
the sampled array (pixel ``i`` covers ``[i, i + 1)``; a pixel box with y2/x2
exclusive is such a box).
"""

import math

import numpy as np

__all__ = ["resize_taps", "roi_align_taps", "roi_align_sample_points", "paste_masks",
           "roi_align"]


def resize_taps(coords, size):
    """Taps of 1-D linear interpolation with zeros outside (the resize rule).

    Args:
        coords: float ``[...]`` positions in index units (sample ``j`` of the
            source sits at position ``j``).
        size: the source length.

    Returns:
        ``(low, high, w_low, w_high)``: int64 indices clamped into
        ``[0, size)`` and float64 weights; a tap outside the source gets weight 0.
    """
    coords = np.asarray(coords, dtype=np.float64)
    low = np.floor(coords).astype(np.int64)
    frac = coords - low
    high = low + 1
    w_low = np.where((low >= 0) & (low < size), 1.0 - frac, 0.0)
    w_high = np.where((high >= 0) & (high < size), frac, 0.0)
    last = max(int(size) - 1, 0)
    return np.clip(low, 0, last), np.clip(high, 0, last), w_low, w_high


def roi_align_taps(coords, size):
    """Taps of 1-D linear interpolation with RoIAlign's border rule.

    A position below -1 or above ``size`` gets zero weights; otherwise a
    negative position is clamped to 0 and a position at or past the last index
    uses the last index alone.

    Returns:
        ``(low, high, w_low, w_high)`` int64 indices in ``[0, size)``, float64
        weights.
    """
    coords = np.asarray(coords, dtype=np.float64)
    valid = (coords >= -1.0) & (coords <= size)
    c = np.maximum(coords, 0.0)
    low = np.floor(c).astype(np.int64)
    at_edge = low >= size - 1
    low = np.where(at_edge, size - 1, low)
    high = np.where(at_edge, size - 1, low + 1)
    frac = np.where(at_edge, 0.0, c - low)
    w_low = np.where(valid, 1.0 - frac, 0.0)
    w_high = np.where(valid, frac, 0.0)
    last = max(int(size) - 1, 0)
    return np.clip(low, 0, last), np.clip(high, 0, last), w_low, w_high


def _box_axis_taps(start, end, in_size, lo_clip, hi_clip):
    """Resize taps of the output pixels ``lo_clip..hi_clip`` of a box ``[start, end)``."""
    out = np.arange(lo_clip, hi_clip) - start
    return resize_taps((out + 0.5) * (in_size / (end - start)) - 0.5, in_size)


def paste_masks(masks, boxes, image_hw, threshold=0.5, inclusive=True):
    """Full-size binary masks from small masks and their boxes (the resize rule).

    Each ``[mh, mw]`` mask is resized into its box exactly as
    ``skimage.transform.resize`` would (see the module docstring: half-pixel
    centres, zeros outside, clipped to the mask's own value range), thresholded
    and placed in the image; outside its box a mask is False.

    Args:
        masks: float ``[N, mh, mw]`` (probabilities, or 0/1 mini-masks).
        boxes: ``[N, 4]`` ``(y1, x1, y2, x2)`` pixels, y2/x2 exclusive (rounded
            to integers).
        image_hw: ``(H, W)``.
        threshold: the cut.
        inclusive: ``True`` keeps values ``>= threshold`` (the original's
            ``unmold_mask``); ``False`` keeps ``> threshold`` (its
            ``np.around`` in ``expand_mask``: exactly 0.5 goes to 0).

    Returns:
        bool ``[H, W, N]`` (a transposed view of an ``[N, H, W]`` array, so
        ``masks[:, :, i]`` is contiguous). Empty boxes give empty masks; parts
        of boxes outside the image are dropped.
    """
    height, width = int(image_hw[0]), int(image_hw[1])
    masks = np.asarray(masks)
    boxes = np.asarray(boxes).reshape(-1, 4)
    full = np.zeros((len(boxes), height, width), dtype=bool)
    for i, (y1, x1, y2, x2) in enumerate(np.round(boxes).astype(np.int64)):
        cy1, cx1, cy2, cx2 = max(y1, 0), max(x1, 0), min(y2, height), min(x2, width)
        if y2 <= y1 or x2 <= x1 or cy2 <= cy1 or cx2 <= cx1 or masks[i].size == 0:
            continue
        # float32 like scikit-image computes a float32 input.
        small = masks[i].astype(np.float32).astype(np.float64)
        y_lo, y_hi, wy_lo, wy_hi = _box_axis_taps(y1, y2, small.shape[0], cy1, cy2)
        x_lo, x_hi, wx_lo, wx_hi = _box_axis_taps(x1, x2, small.shape[1], cx1, cx2)
        rows = small[y_lo] * wy_lo[:, None] + small[y_hi] * wy_hi[:, None]
        region = rows[:, x_lo] * wx_lo + rows[:, x_hi] * wx_hi
        region = np.clip(region.astype(np.float32), small.min(), small.max())
        full[i, cy1:cy2, cx1:cx2] = (region >= threshold) if inclusive else (region > threshold)
    return full.transpose(1, 2, 0)


def roi_align_sample_points(box, output_size, spatial_scale, sampling_ratio, aligned):
    """The sample coordinates of one RoI (float64, the feature map's pixels).

    Args:
        box: ``(y1, x1, y2, x2)`` in image pixels.
        output_size: ``(ph, pw)``.
        spatial_scale, sampling_ratio, aligned: as in `roi_align`.

    Returns:
        ``None`` for a RoI without samples (adaptive grid of size 0), else
        ``(ys [ph * grid_h], xs [pw * grid_w], grid_h, grid_w)``: bin ``i``'s
        samples are ``ys[i * grid_h:(i + 1) * grid_h]`` (likewise for x).
    """
    ph, pw = (int(s) for s in output_size)
    y1, x1, y2, x2 = np.asarray(box, np.float64) * spatial_scale - (0.5 if aligned else 0.0)
    roi_h, roi_w = y2 - y1, x2 - x1
    if not aligned:
        roi_h, roi_w = max(roi_h, 1.0), max(roi_w, 1.0)
    grid_h = sampling_ratio if sampling_ratio > 0 else max(math.ceil(roi_h / ph), 0)
    grid_w = sampling_ratio if sampling_ratio > 0 else max(math.ceil(roi_w / pw), 0)
    if grid_h == 0 or grid_w == 0:
        return None
    ys = y1 + (np.arange(ph * grid_h) + 0.5) * (roi_h / ph / grid_h)
    xs = x1 + (np.arange(pw * grid_w) + 0.5) * (roi_w / pw / grid_w)
    return ys, xs, grid_h, grid_w


def roi_align(features, boxes, output_size, spatial_scale=1.0, sampling_ratio=2,
              aligned=True, aggregation="avg"):
    """RoIAlign of one feature map (NumPy; the maths of `mrcnn.ops.roi_align`).

    Args:
        features: ``[H, W, C]`` or ``[H, W]`` array.
        boxes: ``[K, 4]`` ``(y1, x1, y2, x2)`` continuous pixel coordinates,
            multiplied by ``spatial_scale``.
        output_size: ``(ph, pw)``.
        sampling_ratio: samples per bin per axis; ``<= 0``: adaptive,
            ``ceil(roi_size / pooled_size)`` per axis and RoI.
        aligned: half-pixel shift (bins sampled at their centres).
        aggregation: ``"avg"`` (mean of each bin's samples) or ``"max"``
            (their maximum per channel; a sample outside the map is 0, a bin
            without samples gives 0).

    Returns:
        float64 ``[K, ph, pw, C]`` (``[K, ph, pw]`` for a 2-D input).
    """
    if aggregation not in ("avg", "max"):
        raise ValueError(f"roi_align: aggregation must be 'avg' or 'max', got {aggregation!r}")
    features = np.asarray(features, dtype=np.float64)
    flat = features.ndim == 2
    if flat:
        features = features[..., None]
    height, width = features.shape[:2]
    ph, pw = (int(s) for s in output_size)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    out = np.zeros((len(boxes), ph, pw, features.shape[2]))
    for k, box in enumerate(boxes):
        points = roi_align_sample_points(box, (ph, pw), spatial_scale, sampling_ratio, aligned)
        if points is None:
            continue
        ys, xs, grid_h, grid_w = points
        y_lo, y_hi, wy_lo, wy_hi = roi_align_taps(ys, height)
        x_lo, x_hi, wx_lo, wx_hi = roi_align_taps(xs, width)
        rows = (features[y_lo] * wy_lo[:, None, None]
                + features[y_hi] * wy_hi[:, None, None])                   # [Sy, W, C]
        samples = (rows[:, x_lo] * wx_lo[None, :, None]
                   + rows[:, x_hi] * wx_hi[None, :, None])                 # [Sy, Sx, C]
        samples = samples.reshape(ph, grid_h, pw, grid_w, -1)
        out[k] = samples.max(axis=(1, 3)) if aggregation == "max" else samples.mean(axis=(1, 3))
    return out[..., 0] if flat else out
