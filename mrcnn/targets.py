"""Training targets in NumPy: RPN anchor targets, head (detection) targets, random RoIs.

Conventions: every box here is ``(y1, x1, y2, x2)`` in **pixels** of the
network input image, y2/x2 **exclusive** (``boxes.extract_bboxes``). Anchors
are pixel boxes too (``anchors.generate_pyramid_anchors``; they are floats and
may extend past the image). Ground-truth class ids follow the `Dataset`
convention: positive = an object of that class, negative = a *crowd* region
(COCO ``iscrowd``; never a positive target, and what overlaps it is never a
negative either), 0 = padding (ignored).

Randomness comes only from the ``rng`` argument (a ``numpy.random.Generator``;
``None`` draws a fresh unseeded one), so targets are reproducible given a
seeded generator.
"""

import numpy as np

from mrcnn.boxes import box_refinement, compute_overlaps
from mrcnn.interpolation import roi_align

__all__ = ["build_rpn_targets", "build_detection_targets", "generate_random_rois",
           "crop_and_resize_mask", "RPN_POSITIVE_IOU", "RPN_NEGATIVE_IOU",
           "CROWD_IOU", "ROI_POSITIVE_IOU"]

# IoU thresholds (fixed by the method, not configurable in the old API).
RPN_POSITIVE_IOU = 0.7   # anchor IoU >= this with some gt: positive
RPN_NEGATIVE_IOU = 0.3   # anchor max IoU < this: negative
CROWD_IOU = 0.001        # anchor/RoI with crowd IoU >= this is never a negative
ROI_POSITIVE_IOU = 0.5   # RoI IoU >= this: positive for the heads, else negative


def _rng(rng):
    return np.random.default_rng() if rng is None else rng


def _as_gt(gt_class_ids, gt_boxes, where):
    ids = np.asarray(gt_class_ids).reshape(-1).astype(np.int64)
    boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    if ids.shape[0] != boxes.shape[0]:
        raise ValueError(f"{where}: {ids.shape[0]} gt class ids but {boxes.shape[0]} gt "
                         f"boxes; expected one class id per box")
    return ids, boxes


def _overlaps_by_gt(gt_boxes, boxes):
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


def _not_crowd(boxes, crowd_boxes):
    """bool ``[len(boxes)]``: True where a box's IoU with every crowd box is < CROWD_IOU."""
    if crowd_boxes.shape[0] == 0 or boxes.shape[0] == 0:
        return np.ones(boxes.shape[0], dtype=bool)
    return _overlaps_by_gt(crowd_boxes, boxes).max(axis=0) < CROWD_IOU


def _drop_random(indices, keep, rng):
    """Return the members of ``indices`` beyond a random subset of size ``keep``."""
    if len(indices) <= keep:
        return indices[:0]
    return rng.choice(indices, size=len(indices) - keep, replace=False)


def build_rpn_targets(anchors, gt_class_ids, gt_boxes, config, rng=None):
    """Label anchors for the RPN and compute the box deltas of the positives.

    Rules (IoU as ``boxes.compute_overlaps``, computed in float32):

    * Crowd boxes (negative class ids) and padding (class 0) are not targets.
      An anchor whose IoU with any crowd box is >= ``CROWD_IOU`` (0.001) is
      never labelled negative.
    * Positive (1): IoU >= 0.7 with some gt box, or the anchor is (one of,
      ties included) the best-overlapping anchors of some gt box whose best
      IoU is > 0 (so every gt gets an anchor even if its best IoU is < 0.7).
    * Negative (-1): max IoU < 0.3 with every gt box (and not crowd).
    * Otherwise neutral (0).
    * Subsampling: at most ``RPN_TRAIN_ANCHORS_PER_IMAGE // 2`` positives
      (a random subset stays positive, the rest become neutral); negatives are
      randomly reduced to ``RPN_TRAIN_ANCHORS_PER_IMAGE - positives``.

    Each positive anchor regresses to its highest-IoU gt box.

    The old argument order ``(image_shape, anchors, gt_class_ids, gt_boxes,
    config)`` is also accepted (``image_shape`` is not needed and ignored).

    Args:
        anchors: ``[A, 4]`` anchors, pixels.
        gt_class_ids: int ``[G]`` class ids (negative: crowd).
        gt_boxes: ``[G, 4]`` gt boxes, pixels, y2/x2 exclusive.
        config: uses ``RPN_TRAIN_ANCHORS_PER_IMAGE`` and ``RPN_BBOX_STD_DEV``.
        rng: ``numpy.random.Generator`` for the subsampling (None: unseeded).

    Returns:
        rpn_match: int32 ``[A]``: 1 positive, -1 negative, 0 neutral.
        rpn_bbox: float32 ``[RPN_TRAIN_ANCHORS_PER_IMAGE, 4]``: row ``i`` holds
        ``box_refinement(anchor, gt) / RPN_BBOX_STD_DEV`` of the ``i``-th
        positive anchor in anchor order; the remaining rows are zero.
    """
    if np.ndim(anchors) == 1 and hasattr(rng, "RPN_TRAIN_ANCHORS_PER_IMAGE"):
        # Old order: (image_shape, anchors, gt_class_ids, gt_boxes, config).
        anchors, gt_class_ids, gt_boxes, config, rng = (gt_class_ids, gt_boxes, config,
                                                        rng, None)
    rng = _rng(rng)
    anchors = np.asarray(anchors, dtype=np.float64).reshape(-1, 4)
    ids, boxes = _as_gt(gt_class_ids, gt_boxes, "build_rpn_targets")
    train_anchors = int(config.RPN_TRAIN_ANCHORS_PER_IMAGE)
    num_anchors = anchors.shape[0]

    rpn_match = np.zeros(num_anchors, dtype=np.int32)
    rpn_bbox = np.zeros((train_anchors, 4), dtype=np.float32)
    not_crowd = _not_crowd(anchors, boxes[ids < 0])
    boxes = boxes[ids > 0]

    if boxes.shape[0] == 0:
        rpn_match[not_crowd] = -1
        best_gt = None
    else:
        overlaps = _overlaps_by_gt(boxes, anchors)               # [G, A]
        # Running max over the (few) gt rows: faster than argmax over axis 0.
        best_iou = overlaps[0].copy()                            # [A]
        best_gt = np.zeros(num_anchors, dtype=np.int64)          # [A]
        for g in range(1, overlaps.shape[0]):
            better = overlaps[g] > best_iou
            best_iou[better] = overlaps[g][better]
            best_gt[better] = g
        rpn_match[(best_iou < RPN_NEGATIVE_IOU) & not_crowd] = -1
        # Each gt's best anchors (ties included) are positive if that IoU > 0.
        is_gt_best = np.zeros(num_anchors, dtype=bool)
        for row, top in zip(overlaps, overlaps.max(axis=1)):
            if top > 0:
                is_gt_best |= row == top
        rpn_match[is_gt_best] = 1
        rpn_match[best_iou >= RPN_POSITIVE_IOU] = 1

    positives = np.flatnonzero(rpn_match == 1)
    rpn_match[_drop_random(positives, train_anchors // 2, rng)] = 0
    positives = np.flatnonzero(rpn_match == 1)
    negatives = np.flatnonzero(rpn_match == -1)
    rpn_match[_drop_random(negatives, train_anchors - positives.size, rng)] = 0

    if positives.size:
        deltas = box_refinement(anchors[positives], boxes[best_gt[positives]])
        std = np.asarray(config.RPN_BBOX_STD_DEV, dtype=np.float64)
        rpn_bbox[:positives.size] = (deltas / std).astype(np.float32)
    return rpn_match, rpn_bbox


def crop_and_resize_mask(mask, box, output_shape, threshold=0.5):
    """The mask target of one RoI: RoIAlign of a 2-D mask, thresholded (NumPy).

    The graph's geometry (`mrcnn.layers.detection_target`, ``"roi_align"``):
    the box's bins are sampled at their centres (aligned RoIAlign, adaptive
    sampling: an average over each bin, `mrcnn.interpolation.roi_align`).

    Args:
        mask: ``[H, W]`` bool or float mask; pixel ``(i, j)`` covers
            ``[i, i + 1) x [j, j + 1)``.
        box: ``(y1, x1, y2, x2)`` in the mask's pixel coordinates (floats
            allowed, may extend outside), y2/x2 exclusive.
        output_shape: ``(oh, ow)``.
        threshold: values ``>= threshold`` are 1; ``None`` returns the raw
            pooled values.

    Returns:
        float32 ``[oh, ow]``: 0/1 values (or raw values for ``threshold=None``).
    """
    values = roi_align(np.asarray(mask, dtype=np.float32), np.reshape(box, (1, 4)),
                       output_shape, spatial_scale=1.0, sampling_ratio=0, aligned=True)[0]
    if threshold is None:
        return values.astype(np.float32)
    return (values >= threshold).astype(np.float32)


def build_detection_targets(rpn_rois, gt_class_ids, gt_boxes, gt_masks, config, rng=None):
    """Sample RoIs and build the classifier, box and mask targets (NumPy, per image).

    The NumPy counterpart of the in-graph ``DetectionTargetLayer``, for
    inspection and debugging. A RoI is positive when its IoU with some
    non-crowd gt box is >= 0.5, negative when below 0.5 and its IoU with every
    crowd box is < 0.001. At most ``int(TRAIN_ROIS_PER_IMAGE *
    ROI_POSITIVE_RATIO)`` positives are kept (a random subset); negatives fill
    the rest up to ``TRAIN_ROIS_PER_IMAGE``; if there are too few RoIs the tail
    is zero (class 0, zero box, zero targets).

    Args:
        rpn_rois: ``[R, 4]`` RoIs, pixels (rows with zero area are ignored).
        gt_class_ids: int ``[G]`` (negative: crowd; 0: padding, ignored).
        gt_boxes: ``[G, 4]`` pixels, y2/x2 exclusive.
        gt_masks: bool ``[mh, mw, G]`` mini masks (``config.USE_MINI_MASK``,
            each relative to its gt box) or ``[H, W, G]`` full-image masks.
        config: uses TRAIN_ROIS_PER_IMAGE, ROI_POSITIVE_RATIO, NUM_CLASSES,
            BBOX_STD_DEV, MASK_SHAPE, USE_MINI_MASK.
        rng: ``numpy.random.Generator`` (None: unseeded).

    Returns:
        rois: float32 ``[T, 4]`` pixels (positives first, then negatives).
        roi_gt_class_ids: int32 ``[T]`` (0 for negatives and padding).
        bboxes: float32 ``[T, NUM_CLASSES, 4]``: for a positive, the deltas
            ``box_refinement(roi, gt) / BBOX_STD_DEV`` in its class's slot.
        masks: float32 ``[T, MASK_SHAPE[0], MASK_SHAPE[1], NUM_CLASSES]``: for a
            positive, its gt mask RoIAligned to the RoI and binarised (>= 0.5,
            `crop_and_resize_mask`: the graph's ``"roi_align"`` targets), in its
            class's slot.
    """
    rng = _rng(rng)
    ids, boxes = _as_gt(gt_class_ids, gt_boxes, "build_detection_targets")
    gt_masks = np.asarray(gt_masks)
    if gt_masks.ndim != 3 or gt_masks.shape[-1] != ids.shape[0]:
        raise ValueError(f"build_detection_targets: gt_masks must be [h, w, G] with "
                         f"G = {ids.shape[0]} instances, got shape {gt_masks.shape}")
    rois = np.asarray(rpn_rois, dtype=np.float64).reshape(-1, 4)
    rois = rois[(rois[:, 2] > rois[:, 0]) & (rois[:, 3] > rois[:, 1])]
    total = int(config.TRAIN_ROIS_PER_IMAGE)
    num_classes = int(config.NUM_CLASSES)
    mh, mw = (int(v) for v in config.MASK_SHAPE)

    out_rois = np.zeros((total, 4), dtype=np.float32)
    out_ids = np.zeros(total, dtype=np.int32)
    out_bbox = np.zeros((total, num_classes, 4), dtype=np.float32)
    out_masks = np.zeros((total, mh, mw, num_classes), dtype=np.float32)

    not_crowd = _not_crowd(rois, boxes[ids < 0])
    objects = np.flatnonzero(ids > 0)
    if objects.size and rois.shape[0]:
        overlaps = compute_overlaps(rois, boxes[objects])
        best = np.argmax(overlaps, axis=1)
        best_iou = overlaps[np.arange(rois.shape[0]), best]
    else:
        best = np.zeros(rois.shape[0], dtype=np.int64)
        best_iou = np.zeros(rois.shape[0])
    positives = np.flatnonzero(best_iou >= ROI_POSITIVE_IOU)
    negatives = np.flatnonzero((best_iou < ROI_POSITIVE_IOU) & not_crowd)
    positives = rng.permutation(positives)[:int(total * config.ROI_POSITIVE_RATIO)]
    negatives = rng.permutation(negatives)[:total - positives.size]

    n_pos, n_neg = positives.size, negatives.size
    out_rois[:n_pos] = rois[positives]
    out_rois[n_pos:n_pos + n_neg] = rois[negatives]
    if n_pos:
        gt_index = objects[best[positives]]
        class_ids = ids[gt_index].astype(np.int32)
        out_ids[:n_pos] = class_ids
        deltas = box_refinement(rois[positives], boxes[gt_index])
        deltas = deltas / np.asarray(config.BBOX_STD_DEV, dtype=np.float64)
        out_bbox[np.arange(n_pos), class_ids] = deltas.astype(np.float32)
        for i in range(n_pos):
            g = gt_index[i]
            roi = rois[positives[i]]
            if config.USE_MINI_MASK:
                gy1, gx1, gy2, gx2 = boxes[g]
                sy = gt_masks.shape[0] / max(gy2 - gy1, 1e-6)
                sx = gt_masks.shape[1] / max(gx2 - gx1, 1e-6)
                box = ((roi[0] - gy1) * sy, (roi[1] - gx1) * sx,
                       (roi[2] - gy1) * sy, (roi[3] - gx1) * sx)
            else:
                box = roi
            out_masks[i, :, :, class_ids[i]] = crop_and_resize_mask(
                gt_masks[:, :, g], box, (mh, mw))
    return out_rois, out_ids, out_bbox, out_masks


def generate_random_rois(image_shape, count, gt_class_ids, gt_boxes, rng=None):
    """Random RoIs for training the heads without the RPN (``USE_RPN_ROIS=False``).

    About 90% of the RoIs are jittered copies of the (non-crowd) gt boxes
    (centre shifted by a Gaussian of 1/10 of the box size, height and width
    scaled by ``exp(N(0, 0.2))``), so most overlap a gt box; the rest are
    uniform random boxes in the image. With no gt boxes all are uniform.

    Args:
        image_shape: ``(H, W[, C])`` of the network input.
        count: number of RoIs.
        gt_class_ids: int ``[G]`` (negative: crowd, not used for jitter).
        gt_boxes: ``[G, 4]`` pixels, y2/x2 exclusive.
        rng: ``numpy.random.Generator`` (None: unseeded).

    Returns:
        float32 ``[count, 4]`` RoIs ``(y1, x1, y2, x2)``, pixels, y2/x2
        exclusive, inside ``[0, H] x [0, W]``, each at least 1 pixel high and
        wide.
    """
    rng = _rng(rng)
    height, width = float(image_shape[0]), float(image_shape[1])
    ids, boxes = _as_gt(gt_class_ids, gt_boxes, "generate_random_rois")
    boxes = boxes[(ids > 0) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])]
    count = int(count)
    per_box = int(0.9 * count / boxes.shape[0]) if boxes.shape[0] else 0

    parts = []
    if per_box:
        h = np.repeat(boxes[:, 2] - boxes[:, 0], per_box)
        w = np.repeat(boxes[:, 3] - boxes[:, 1], per_box)
        cy = np.repeat(boxes[:, 0], per_box) + h / 2 + rng.normal(0, 0.1, h.size) * h
        cx = np.repeat(boxes[:, 1], per_box) + w / 2 + rng.normal(0, 0.1, w.size) * w
        h = h * np.exp(rng.normal(0, 0.2, h.size))
        w = w * np.exp(rng.normal(0, 0.2, w.size))
        parts.append(np.stack([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2], axis=1))
    rest = count - per_box * boxes.shape[0]
    ys = np.sort(rng.uniform(0, height, (rest, 2)), axis=1)
    xs = np.sort(rng.uniform(0, width, (rest, 2)), axis=1)
    parts.append(np.stack([ys[:, 0], xs[:, 0], ys[:, 1], xs[:, 1]], axis=1))
    rois = np.concatenate(parts, axis=0)

    # Clip into the image and enforce at least one pixel per side.
    rois[:, [0, 2]] = np.clip(rois[:, [0, 2]], 0, height)
    rois[:, [1, 3]] = np.clip(rois[:, [1, 3]], 0, width)
    rois[:, 0] = np.minimum(rois[:, 0], height - 1)
    rois[:, 1] = np.minimum(rois[:, 1], width - 1)
    rois[:, 2] = np.clip(np.maximum(rois[:, 2], rois[:, 0] + 1), 0, height)
    rois[:, 3] = np.clip(np.maximum(rois[:, 3], rois[:, 1] + 1), 0, width)
    return rois.astype(np.float32)
