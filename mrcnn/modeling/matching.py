"""Matching and sampling helpers shared by the RPN and RoI targets (NumPy).

Boxes are ``(y1, x1, y2, x2)`` pixels, y2/x2 exclusive. Ground-truth class ids:
positive = an object, negative = a crowd region, 0 = padding. Randomness comes
only from an explicit ``numpy.random.Generator``.
"""

import numpy as np



def rng_of(rng):
    return np.random.default_rng() if rng is None else rng


def as_gt(gt_class_ids, gt_boxes, where):
    ids = np.asarray(gt_class_ids).reshape(-1).astype(np.int64)
    boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    if ids.shape[0] != boxes.shape[0]:
        raise ValueError(f"{where}: {ids.shape[0]} gt class ids but {boxes.shape[0]} gt "
                         f"boxes; expected one class id per box")
    return ids, boxes


def overlaps_by_gt(gt_boxes, boxes):
    """IoU ``[G, N]`` (float32) of a few gt boxes (rows) with many boxes (e.g. 260k anchors).

    Same values as ``boxes.compute_overlaps(boxes, gt_boxes).T`` up to float32
    rounding, but much faster at that size: one vectorised pass per gt box
    over contiguous float32 columns, with in-place operations.
    """
    cols = np.ascontiguousarray(np.asarray(boxes, dtype=np.float32).T)   # [4, N]
    y1, x1, y2, x2 = cols
    area = (y2 - y1) * (x2 - x1)
    gt = np.asarray(gt_boxes, dtype=np.float32).reshape(-1, 4)
    out = np.empty((gt.shape[0], cols.shape[1]), dtype=np.float32)
    tmp = np.empty(cols.shape[1], dtype=np.float32)
    for row, (gy1, gx1, gy2, gx2) in zip(out, gt):
        np.minimum(y2, gy2, out=row)
        row -= np.maximum(y1, gy1, out=tmp)
        np.maximum(row, 0, out=row)                 # intersection height
        np.minimum(x2, gx2, out=tmp)
        tmp -= np.maximum(x1, gx1)
        np.maximum(tmp, 0, out=tmp)                 # intersection width
        row *= tmp                                  # intersection area
        np.add(area, (gy2 - gy1) * (gx2 - gx1), out=tmp)
        tmp -= row                                  # union
        np.divide(row, tmp, out=row, where=tmp > 0)  # union 0 => intersection 0
    return out


def outside_crowd(boxes, crowd_boxes):
    """bool ``[len(boxes)]``: True where a box's IoU with every crowd box is < CROWD_IOU."""
    if crowd_boxes.shape[0] == 0 or boxes.shape[0] == 0:
        return np.ones(boxes.shape[0], dtype=bool)
    return overlaps_by_gt(crowd_boxes, boxes).max(axis=0) < CROWD_IOU


def drop_random(indices, keep, rng):
    """Return the members of ``indices`` beyond a random subset of size ``keep``."""
    if len(indices) <= keep:
        return indices[:0]
    return rng.choice(indices, size=len(indices) - keep, replace=False)


CROWD_IOU = 0.001        # anchor/RoI with crowd IoU >= this is never a negative
