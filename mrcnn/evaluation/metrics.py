"""Detection evaluation: per-image matching and AP, and COCO-style metrics.

Conventions: boxes are ``(y1, x1, y2, x2)`` in pixels with y2/x2 exclusive;
masks are bool ``[H, W, N]``; class ids are a `Dataset`'s internal ids.

Per-image metrics (`compute_matches`, `compute_ap`, `compute_ap_range`) follow
the Pascal VOC 2010+ definition: predictions ranked by score, each matched to
the best still-unmatched ground truth of its class (mask IoU), and AP is the
area under the precision/recall curve after making precision monotonically
decreasing (all-point interpolation, sentinels recall 0 and 1).

COCO metrics (`evaluate_coco`) run ``pycocotools.cocoeval.COCOeval`` on ground
truth built from any `Dataset` (`build_coco_ground_truth`) and on detections
in the ``detect()`` result format (`detections_to_coco`).

Ids in the COCO objects: when every class and every image of the data set
comes from the source ``"coco"`` (a plain `CocoDataset`), the original COCO
category and image ids are used, so results can be submitted to the COCO
server; otherwise the data set's internal ids are used.
"""

import numpy as np

from mrcnn.structures.boxes import compute_overlaps, compute_overlaps_masks

__all__ = [
    "trim_zeros", "compute_matches", "compute_ap", "compute_ap_range", "compute_recall",
    "mask_area_ratios", "match_detections",
]

# Names of COCOeval.stats entries, in order.


def trim_zeros(x):
    """Drop rows of ``x`` ``[N, ...]`` that are all zero (padding)."""
    x = np.asarray(x)
    if x.ndim < 2 or x.shape[0] == 0:
        return x
    return x[np.any(x.reshape(x.shape[0], -1) != 0, axis=1)]


def _keep_nonzero(boxes, *others, masks=None):
    """Remove all-zero (padding) boxes and the matching entries of ``others``/``masks``."""
    boxes = np.asarray(boxes).reshape(-1, 4)
    keep = np.any(boxes != 0, axis=1)
    others = [np.asarray(o)[keep] for o in others]
    if masks is not None:
        masks = np.asarray(masks)
        if masks.ndim != 3 or masks.shape[-1] != len(keep):
            raise ValueError(f"expected masks [H, W, {len(keep)}] (one per box, padding "
                             f"included), got shape {masks.shape}")
        masks = masks[..., keep]
    return boxes[keep], others, masks


def compute_matches(gt_boxes, gt_class_ids, gt_masks, pred_boxes, pred_class_ids,
                    pred_scores, pred_masks, iou_threshold=0.5, score_threshold=0.0):
    """Match predictions to ground truth instances of one image.

    Args:
        gt_boxes: ``[N, 4]`` pixel boxes (zero rows = padding, removed).
        gt_class_ids: ``[N]`` ints. gt_masks: bool ``[H, W, N]`` or None.
        pred_boxes: ``[M, 4]``; pred_class_ids: ``[M]``; pred_scores: ``[M]``;
        pred_masks: bool ``[H, W, M]`` or None.
            With both mask arrays given the IoU is mask IoU, otherwise box IoU.
        iou_threshold: minimum IoU of a match.
        score_threshold: predictions scoring below it are dropped before
            matching. (The old implementation compared this value with IoUs;
            at its default 0.0 both readings do nothing.)

    Returns:
        gt_match: int ``[N']``: for each gt, the index (in score order) of the
            prediction matched to it, -1 if none.
        pred_match: int ``[M']``: for each prediction **sorted by decreasing
            score**, the index of its gt, -1 if none.
        overlaps: float ``[M', N']`` IoU of sorted predictions vs gts.
    """
    gt_boxes, (gt_class_ids,), gt_masks = _keep_nonzero(gt_boxes, gt_class_ids, masks=gt_masks)
    pred_boxes, (pred_class_ids, pred_scores), pred_masks = _keep_nonzero(
        pred_boxes, pred_class_ids, pred_scores, masks=pred_masks)

    order = np.argsort(-pred_scores, kind="stable")
    order = order[pred_scores[order] >= score_threshold]
    pred_boxes, pred_class_ids = pred_boxes[order], pred_class_ids[order]
    if pred_masks is not None:
        pred_masks = pred_masks[..., order]

    if gt_masks is not None and pred_masks is not None:
        overlaps = compute_overlaps_masks(pred_masks, gt_masks)
    else:
        overlaps = compute_overlaps(pred_boxes, gt_boxes)

    gt_match = -np.ones(gt_boxes.shape[0], dtype=np.int64)
    pred_match = -np.ones(pred_boxes.shape[0], dtype=np.int64)
    for i in range(pred_boxes.shape[0]):
        candidates = np.flatnonzero((gt_match == -1) & (gt_class_ids == pred_class_ids[i])
                                    & (overlaps[i] >= iou_threshold))
        if candidates.size:
            j = candidates[np.argmax(overlaps[i, candidates])]
            gt_match[j] = i
            pred_match[i] = j
    return gt_match, pred_match, overlaps


def _average_precision(pred_match, num_gt):
    """All-point interpolated AP from ranked matches. Returns (ap, precisions, recalls)."""
    hits = np.cumsum(pred_match > -1)
    precisions = hits / np.arange(1, len(pred_match) + 1)
    recalls = hits / num_gt if num_gt else np.zeros(len(pred_match))
    precisions = np.concatenate([[0.0], precisions, [0.0]])
    recalls = np.concatenate([[0.0], recalls, [1.0]])
    precisions = np.maximum.accumulate(precisions[::-1])[::-1]
    steps = np.flatnonzero(recalls[1:] != recalls[:-1]) + 1
    ap = float(np.sum((recalls[steps] - recalls[steps - 1]) * precisions[steps]))
    return ap, precisions, recalls


def compute_ap(gt_boxes, gt_class_ids, gt_masks, pred_boxes, pred_class_ids, pred_scores,
               pred_masks, iou_threshold=0.5):
    """Average precision of one image at one IoU threshold.

    Args: as `compute_matches`.

    Returns:
        mAP: float. With no ground truth it is 1.0 if there is no prediction
            either, else 0.0.
        precisions, recalls: the interpolated PR curve with sentinels
            (``[M' + 2]``; recalls start at 0 and end at 1).
        overlaps: ``[M', N']`` IoU, predictions in score order.
    """
    gt_match, pred_match, overlaps = compute_matches(
        gt_boxes, gt_class_ids, gt_masks, pred_boxes, pred_class_ids, pred_scores,
        pred_masks, iou_threshold)
    ap, precisions, recalls = _average_precision(pred_match, len(gt_match))
    if len(gt_match) == 0:
        ap = 1.0 if len(pred_match) == 0 else 0.0
    return ap, precisions, recalls, overlaps


def compute_ap_range(gt_box, gt_class_id, gt_mask, pred_box, pred_class_id, pred_score,
                     pred_mask, iou_thresholds=None, verbose=1):
    """Mean of `compute_ap` over IoU thresholds (default 0.50:0.95 in steps of 0.05)."""
    if iou_thresholds is None:
        iou_thresholds = np.arange(0.5, 1.0, 0.05)
    aps = []
    for t in iou_thresholds:
        ap = compute_ap(gt_box, gt_class_id, gt_mask, pred_box, pred_class_id, pred_score,
                        pred_mask, iou_threshold=t)[0]
        aps.append(ap)
        if verbose:
            print(f"AP @{t:.2f}:\t {ap:.3f}")
    mean = float(np.mean(aps)) if len(aps) else 0.0
    if verbose:
        print(f"AP @{iou_thresholds[0]:.2f}-{iou_thresholds[-1]:.2f}:\t {mean:.3f}")
    return mean


def mask_area_ratios(gt_boxes, gt_class_ids, gt_masks, pred_boxes, pred_class_ids,
                     pred_scores, pred_masks, iou_threshold=0.5):
    """Predicted / true mask area of each matched instance of one image.

    A systematic shrink or growth of predicted masks (e.g. from misaligned mask
    targets) shows as a median away from 1 even when AP50 is high.

    Args: as `compute_matches` (matching by mask IoU, ``iou_threshold``).

    Returns:
        float64 ``[K]``, one ratio per matched ground-truth instance
        (``pred_area / gt_area``), in gt order.
    """
    gt_match, _, _ = compute_matches(gt_boxes, gt_class_ids, gt_masks, pred_boxes,
                                     pred_class_ids, pred_scores, pred_masks, iou_threshold)
    _, _, gt_masks = _keep_nonzero(gt_boxes, masks=gt_masks)
    pred_boxes, (pred_scores,), pred_masks = _keep_nonzero(pred_boxes, pred_scores,
                                                           masks=pred_masks)
    sorted_masks = pred_masks[..., np.argsort(-pred_scores, kind="stable")]
    matched = np.flatnonzero(gt_match >= 0)
    gt_area = gt_masks[..., matched].sum(axis=(0, 1)).astype(np.float64)
    pred_area = sorted_masks[..., gt_match[matched]].sum(axis=(0, 1)).astype(np.float64)
    return pred_area / np.maximum(gt_area, 1)


def match_detections(reference, other, iou_threshold=0.9):
    """Pair the detections of two runs on the same image (e.g. a float32 model and a
    bfloat16 one with the same weights).

    The ``reference`` detections play the ground truth of `compute_matches`: the
    ``other`` detections, in decreasing score order, each take the still-unpaired
    reference detection of the same class with the highest box IoU, when that IoU
    is at least ``iou_threshold``.

    Args:
        reference, other: ``detect()`` results: ``"rois"`` ``[N, 4]`` pixel boxes
            ``(y1, x1, y2, x2)`` (y2/x2 exclusive; all-zero rows are padding and
            never paired), ``"class_ids"`` ``[N]``, ``"scores"`` ``[N]`` and, optionally,
            ``"masks"`` bool ``[H, W, N]`` (both or neither for ``mask_iou``).
        iou_threshold: minimum box IoU of a pair.

    Returns:
        dict of arrays, one entry per pair, in the reference's order:
        ``reference_index``, ``other_index`` (int64 indices into the given rows),
        ``box_iou``, ``mask_iou`` (NaN without masks) and ``score_difference``
        (other minus reference), float64.
    """
    def rows(result):
        boxes = np.asarray(result["rois"]).reshape(-1, 4)
        class_ids = np.asarray(result["class_ids"]).reshape(-1)
        scores = np.asarray(result["scores"], dtype=np.float64).reshape(-1)
        if not len(boxes) == len(class_ids) == len(scores):
            raise ValueError(f"match_detections: expected as many rois, class_ids and scores, "
                             f"got {len(boxes)}, {len(class_ids)} and {len(scores)}")
        return boxes, class_ids, scores, np.flatnonzero(np.any(boxes != 0, axis=1))

    ref_boxes, ref_ids, ref_scores, ref_kept = rows(reference)
    oth_boxes, oth_ids, oth_scores, oth_kept = rows(other)
    # compute_matches drops the padding rows and sorts the other run by score.
    ref_match, _, _ = compute_matches(ref_boxes, ref_ids, None, oth_boxes, oth_ids,
                                      oth_scores, None, iou_threshold=iou_threshold)
    by_score = oth_kept[np.argsort(-oth_scores[oth_kept], kind="stable")]
    paired = np.flatnonzero(ref_match >= 0)
    ref_index = ref_kept[paired].astype(np.int64)
    oth_index = by_score[ref_match[paired]].astype(np.int64)
    box_iou = np.array([compute_overlaps(ref_boxes[[i]], oth_boxes[[j]])[0, 0]
                        for i, j in zip(ref_index, oth_index)], dtype=np.float64)
    mask_iou = np.full(len(ref_index), np.nan)
    if reference.get("masks") is not None and other.get("masks") is not None:
        ref_masks, oth_masks = np.asarray(reference["masks"]), np.asarray(other["masks"])
        for k, (i, j) in enumerate(zip(ref_index, oth_index)):  # pair by pair: little memory
            a, b = ref_masks[..., i].astype(bool), oth_masks[..., j].astype(bool)
            union = np.logical_or(a, b).sum()
            mask_iou[k] = np.logical_and(a, b).sum() / union if union else 0.0
    return {"reference_index": ref_index, "other_index": oth_index, "box_iou": box_iou,
            "mask_iou": mask_iou,
            "score_difference": oth_scores[oth_index] - ref_scores[ref_index]}


def compute_recall(pred_boxes, gt_boxes, iou):
    """Fraction of gt boxes that some predicted box overlaps with IoU >= ``iou``.

    Returns:
        recall: float (0.0 when there is no gt box).
        positive_ids: indices of the predicted boxes with IoU >= ``iou`` to some gt.
    """
    gt_boxes = np.asarray(gt_boxes).reshape(-1, 4)
    pred_boxes = np.asarray(pred_boxes).reshape(-1, 4)
    if gt_boxes.shape[0] == 0 or pred_boxes.shape[0] == 0:
        return 0.0, np.zeros((0,), dtype=np.int64)
    overlaps = compute_overlaps(pred_boxes, gt_boxes)
    best = overlaps.max(axis=1)
    best_gt = overlaps.argmax(axis=1)
    positive_ids = np.flatnonzero(best >= iou)
    recall = len(set(best_gt[positive_ids].tolist())) / gt_boxes.shape[0]
    return recall, positive_ids


