"""RPN anchor targets (NumPy, built by the input pipeline).

Anchors and gt boxes are ``(y1, x1, y2, x2)`` pixels of the network input,
y2/x2 exclusive (anchors are floats and may extend past the image).
"""

import numpy as np

from mrcnn.modeling.matching import as_gt, drop_random, outside_crowd, overlaps_by_gt, rng_of
from mrcnn.structures.boxes import box_refinement


# IoU thresholds (fixed by the method, not configurable in the old API).
RPN_POSITIVE_IOU = 0.7   # anchor IoU >= this with some gt: positive


RPN_NEGATIVE_IOU = 0.3   # anchor max IoU < this: negative


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
    rng = rng_of(rng)
    anchors = np.asarray(anchors, dtype=np.float64).reshape(-1, 4)
    ids, boxes = as_gt(gt_class_ids, gt_boxes, "build_rpn_targets")
    train_anchors = int(config.RPN_TRAIN_ANCHORS_PER_IMAGE)
    num_anchors = anchors.shape[0]

    rpn_match = np.zeros(num_anchors, dtype=np.int32)
    rpn_bbox = np.zeros((train_anchors, 4), dtype=np.float32)
    not_crowd = outside_crowd(anchors, boxes[ids < 0])
    boxes = boxes[ids > 0]

    if boxes.shape[0] == 0:
        rpn_match[not_crowd] = -1
        best_gt = None
    else:
        overlaps = overlaps_by_gt(boxes, anchors)               # [G, A]
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
    rpn_match[drop_random(positives, train_anchors // 2, rng)] = 0
    positives = np.flatnonzero(rpn_match == 1)
    negatives = np.flatnonzero(rpn_match == -1)
    rpn_match[drop_random(negatives, train_anchors - positives.size, rng)] = 0

    if positives.size:
        deltas = box_refinement(anchors[positives], boxes[best_gt[positives]])
        std = np.asarray(config.RPN_BBOX_STD_DEV, dtype=np.float64)
        rpn_bbox[:positives.size] = (deltas / std).astype(np.float32)
    return rpn_match, rpn_bbox
