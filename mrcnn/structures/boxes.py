"""Bounding-box maths in NumPy.

Conventions (used by every function here unless its docstring says otherwise):

* A box is ``(y1, x1, y2, x2)`` in **pixels**; ``(y1, x1)`` is the first pixel
  inside the box and ``(y2, x2)`` is **one past** the last pixel (exclusive end),
  so a box's height is ``y2 - y1`` and its area ``(y2 - y1) * (x2 - x1)``.
* Instance masks are ``[H, W, N]`` arrays, one channel per instance.
* Normalised boxes (``norm_boxes`` / ``denorm_boxes``, defined in
  `mrcnn.structures.coords`, which owns every conversion) follow the legacy convention
  that the released COCO weights were trained with.
"""

import math

import numpy as np

# Normalised boxes have one owner: mrcnn.structures.coords (re-exported here, the old home).
from mrcnn.structures.coords import denorm_boxes, norm_boxes

__all__ = [
    "extract_bboxes", "compute_iou", "compute_overlaps", "compute_overlaps_masks",
    "non_max_suppression", "box_refinement", "apply_box_deltas", "scale_boxes",
    "norm_boxes", "denorm_boxes", "MAX_LOG_SCALE_DELTA",
]

# Largest log-size delta applied to a predicted box: one refinement may grow a
# box at most 1000/16 = 62.5 times. Larger predicted deltas (random or
# diverging weights) would overflow exp() to inf and give NaN box corners.
MAX_LOG_SCALE_DELTA = math.log(1000.0 / 16.0)


def _as_boxes(boxes, name):
    """Return ``boxes`` as a float64 ``[N, 4]`` array or raise ValueError."""
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.ndim == 1 and arr.shape[0] == 4:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"{name}: expected boxes of shape [N, 4] as "
                         f"(y1, x1, y2, x2), got shape {np.shape(boxes)}")
    return arr


def extract_bboxes(mask):
    """Tight bounding boxes of instance masks.

    Args:
        mask: bool (or 0/1) array ``[H, W, N]``, one channel per instance.

    Returns:
        int32 ``[N, 4]`` boxes ``(y1, x1, y2, x2)`` in pixels, y2/x2 exclusive.
        An instance whose mask is empty gets ``[0, 0, 0, 0]``.
    """
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise ValueError(f"extract_bboxes: mask must be [H, W, N], got shape {mask.shape}")
    mask = mask.astype(bool)
    n = mask.shape[-1]
    boxes = np.zeros((n, 4), dtype=np.int32)
    rows_any = mask.any(axis=1)  # [H, N]: row y has a pixel of instance n
    cols_any = mask.any(axis=0)  # [W, N]
    for i in range(n):
        ys = np.flatnonzero(rows_any[:, i])
        xs = np.flatnonzero(cols_any[:, i])
        if ys.size and xs.size:
            boxes[i] = (ys[0], xs[0], ys[-1] + 1, xs[-1] + 1)
    return boxes


def compute_iou(box, boxes, box_area, boxes_area):
    """IoU of one box with each of ``boxes``.

    Args:
        box: ``(y1, x1, y2, x2)``, pixels, exclusive end.
        boxes: ``[N, 4]`` boxes in the same convention.
        box_area: area of ``box`` (a float).
        boxes_area: ``[N]`` areas of ``boxes``.

    Returns:
        float ``[N]`` IoU values; 0 where the union is empty.
    """
    box = np.asarray(box, dtype=np.float64)
    boxes = _as_boxes(boxes, "compute_iou")
    y1 = np.maximum(box[0], boxes[:, 0])
    x1 = np.maximum(box[1], boxes[:, 1])
    y2 = np.minimum(box[2], boxes[:, 2])
    x2 = np.minimum(box[3], boxes[:, 3])
    inter = np.maximum(y2 - y1, 0) * np.maximum(x2 - x1, 0)
    union = box_area + np.asarray(boxes_area, dtype=np.float64) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def compute_overlaps(boxes1, boxes2):
    """Pairwise IoU.

    Args:
        boxes1: ``[N, 4]`` boxes ``(y1, x1, y2, x2)``; boxes2: ``[M, 4]``.
            Any consistent units (pixels or normalised), exclusive end.

    Returns:
        float ``[N, M]`` IoU; 0 for pairs whose union is empty (degenerate boxes).
    """
    b1 = _as_boxes(boxes1, "compute_overlaps: boxes1")
    b2 = _as_boxes(boxes2, "compute_overlaps: boxes2")
    area1 = (b1[:, 2] - b1[:, 0]) * (b1[:, 3] - b1[:, 1])
    area2 = (b2[:, 2] - b2[:, 0]) * (b2[:, 3] - b2[:, 1])
    y1 = np.maximum(b1[:, None, 0], b2[None, :, 0])
    x1 = np.maximum(b1[:, None, 1], b2[None, :, 1])
    y2 = np.minimum(b1[:, None, 2], b2[None, :, 2])
    x2 = np.minimum(b1[:, None, 3], b2[None, :, 3])
    inter = np.maximum(y2 - y1, 0) * np.maximum(x2 - x1, 0)
    union = area1[:, None] + area2[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def compute_overlaps_masks(masks1, masks2):
    """Pairwise IoU of instance masks.

    Args:
        masks1: ``[H, W, N]`` bool masks; masks2: ``[H, W, M]`` (same H, W).

    Returns:
        float ``[N, M]`` mask IoU. If either set is empty (N or M is 0) the
        result is a ``[N, M]`` array of zeros; pairs of empty masks give 0.
    """
    masks1 = np.asarray(masks1)
    masks2 = np.asarray(masks2)
    if masks1.ndim != 3 or masks2.ndim != 3 or masks1.shape[:2] != masks2.shape[:2]:
        raise ValueError("compute_overlaps_masks: expected masks1 [H, W, N] and masks2 "
                         f"[H, W, M] of the same H, W, got {masks1.shape} and {masks2.shape}")
    n, m = masks1.shape[-1], masks2.shape[-1]
    if n == 0 or m == 0:
        return np.zeros((n, m), dtype=np.float64)
    flat1 = masks1.reshape(-1, n).astype(bool).astype(np.float64)
    flat2 = masks2.reshape(-1, m).astype(bool).astype(np.float64)
    area1 = flat1.sum(axis=0)
    area2 = flat2.sum(axis=0)
    inter = flat1.T @ flat2
    union = area1[:, None] + area2[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def non_max_suppression(boxes, scores, threshold):
    """Greedy non-maximum suppression.

    Args:
        boxes: ``[N, 4]`` boxes ``(y1, x1, y2, x2)``, exclusive end.
        scores: ``[N]`` scores.
        threshold: a box is dropped when its IoU with an already kept,
            higher-scoring box is strictly greater than ``threshold``.

    Returns:
        int32 indices of the kept boxes, in descending score order (ties keep
        the original order).
    """
    boxes = _as_boxes(boxes, "non_max_suppression")
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if scores.shape[0] != boxes.shape[0]:
        raise ValueError(f"non_max_suppression: {boxes.shape[0]} boxes but "
                         f"{scores.shape[0]} scores")
    if boxes.shape[0] == 0:
        return np.zeros((0,), dtype=np.int32)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        iou = compute_iou(boxes[i], boxes[rest], areas[i], areas[rest])
        order = rest[iou <= threshold]
    return np.asarray(keep, dtype=np.int32)


def box_refinement(box, gt_box):
    """Deltas that transform ``box`` into ``gt_box``.

    Args:
        box, gt_box: ``[N, 4]`` boxes ``(y1, x1, y2, x2)`` (pixels or
            normalised, exclusive end; both in the same units). Heights and
            widths are ``y2 - y1`` and ``x2 - x1`` and must be positive.

    Returns:
        float32 ``[N, 4]`` of ``(dy, dx, log(dh), log(dw))`` where
        ``dy = (gt_cy - cy) / h``, ``dx = (gt_cx - cx) / w``,
        ``dh = gt_h / h``, ``dw = gt_w / w`` (centres ``cy = y1 + h / 2``).
    """
    box = _as_boxes(box, "box_refinement: box")
    gt_box = _as_boxes(gt_box, "box_refinement: gt_box")
    h = box[:, 2] - box[:, 0]
    w = box[:, 3] - box[:, 1]
    cy = box[:, 0] + 0.5 * h
    cx = box[:, 1] + 0.5 * w
    gt_h = gt_box[:, 2] - gt_box[:, 0]
    gt_w = gt_box[:, 3] - gt_box[:, 1]
    gt_cy = gt_box[:, 0] + 0.5 * gt_h
    gt_cx = gt_box[:, 1] + 0.5 * gt_w
    deltas = np.stack([(gt_cy - cy) / h, (gt_cx - cx) / w,
                       np.log(gt_h / h), np.log(gt_w / w)], axis=1)
    return deltas.astype(np.float32)


def apply_box_deltas(boxes, deltas, max_log_scale=None):
    """Apply ``(dy, dx, log(dh), log(dw))`` deltas to boxes.

    With ``max_log_scale=None`` (the default) the exact inverse of
    ``box_refinement``: no rounding, no clipping.

    Args:
        boxes: ``[N, 4]`` boxes ``(y1, x1, y2, x2)``, exclusive end.
        deltas: ``[N, 4]`` as produced by ``box_refinement``.
        max_log_scale: if not None, ``log(dh)`` and ``log(dw)`` are first
            clamped to at most this (e.g. ``MAX_LOG_SCALE_DELTA``, what the
            graph applies to predicted deltas).

    Returns:
        float64 ``[N, 4]`` refined boxes in the units of ``boxes``.
    """
    boxes = _as_boxes(boxes, "apply_box_deltas: boxes")
    deltas = _as_boxes(deltas, "apply_box_deltas: deltas")
    if max_log_scale is not None:
        deltas = np.concatenate([deltas[:, :2], np.minimum(deltas[:, 2:], max_log_scale)],
                                axis=1)
    h = boxes[:, 2] - boxes[:, 0]
    w = boxes[:, 3] - boxes[:, 1]
    cy = boxes[:, 0] + 0.5 * h + deltas[:, 0] * h
    cx = boxes[:, 1] + 0.5 * w + deltas[:, 1] * w
    h = h * np.exp(deltas[:, 2])
    w = w * np.exp(deltas[:, 3])
    y1 = cy - 0.5 * h
    x1 = cx - 0.5 * w
    return np.stack([y1, x1, y1 + h, x1 + w], axis=1)


def scale_boxes(boxes, factor):
    """Boxes scaled about their centres: height and width times ``factor``.

    Pixel boxes (exclusive end: the size is ``y2 - y1``). Not for
    legacy-normalised boxes: their two ends are shifted differently
    (`mrcnn.structures.coords`), so scaling them would scale ``size - 1``;
    convert them to pixels first. An all-zero box stays all zeros.

    Args:
        boxes: ``[..., 4]`` ``(y1, x1, y2, x2)`` pixels.
        factor: a positive number (1: the boxes unchanged).

    Returns:
        float32 ``[..., 4]``: ``centre -/+ factor * size / 2`` per axis.
    """
    boxes = np.asarray(boxes, dtype=np.float32)
    factor = np.float32(factor)
    centre = (boxes[..., :2] + boxes[..., 2:]) * np.float32(0.5)
    half = (boxes[..., 2:] - boxes[..., :2]) * (np.float32(0.5) * factor)
    return np.concatenate([centre - half, centre + half], axis=-1).astype(np.float32)
