"""The Data Science Bowl 2018 score: mean over IoU thresholds of TP / (TP + FP + FN).
"""

import numpy as np

__all__ = ["dsb_precisions", "dsb_score", "DSB_IOU_THRESHOLDS"]


# The 2018 Data Science Bowl's IoU thresholds: 0.50, 0.55, ..., 0.95.
DSB_IOU_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))


def _rle_ious(masks1, masks2):
    """``[N, M]`` mask IoU through pycocotools' run-length encoding: memory and
    time grow with the masks' outlines, not with ``H * W * N * M`` (hundreds of
    full-image nuclei masks would take gigabytes as float matrices)."""
    from pycocotools import mask as mask_utils

    def encode(masks):
        return mask_utils.encode(np.asfortranarray(masks.astype(np.uint8)))

    ious = mask_utils.iou(encode(masks1), encode(masks2), [0] * masks2.shape[-1])
    return np.asarray(ious, dtype=np.float64).reshape(masks1.shape[-1], masks2.shape[-1])


def dsb_precisions(gt_masks, pred_masks, iou_thresholds=DSB_IOU_THRESHOLDS):
    """Per-threshold ``TP / (TP + FP + FN)`` of one image (the Data Science Bowl 2018 metric).

    A predicted object is a true positive at threshold ``t`` when its mask IoU
    with a ground-truth object is **greater** than ``t``; above 0.5 each object
    can match at most one other (two masks with IoU > 0.5 to one object would
    overlap each other), so no assignment is needed. Unmatched predictions are
    false positives, unmatched ground truth false negatives. Scores play no
    part: pass the predictions you would submit.

    Args:
        gt_masks: bool ``[H, W, N]``. pred_masks: bool ``[H, W, M]``. Empty
            masks (no pixel set) are left out of both.
        iou_thresholds: thresholds (default `DSB_IOU_THRESHOLDS`; all > 0.5
            for the one-to-one rule above to hold).

    Returns:
        float64 ``[len(iou_thresholds)]``. With neither ground truth nor
        predictions every value is 1.0; with only one of them, 0.0.
    """
    gt_masks, pred_masks = np.asarray(gt_masks, bool), np.asarray(pred_masks, bool)
    if gt_masks.ndim != 3 or pred_masks.ndim != 3 or gt_masks.shape[:2] != pred_masks.shape[:2]:
        raise ValueError(f"dsb_precisions: expected masks [H, W, N] and [H, W, M] of one "
                         f"image size, got {gt_masks.shape} and {pred_masks.shape}")
    thresholds = np.asarray(iou_thresholds, dtype=np.float64).reshape(-1)
    if thresholds.size and thresholds.min() < 0.5:
        raise ValueError(f"dsb_precisions: thresholds must be >= 0.5, got {thresholds}")
    gt_masks = gt_masks[..., gt_masks.any(axis=(0, 1))]
    pred_masks = pred_masks[..., pred_masks.any(axis=(0, 1))]
    n_gt, n_pred = gt_masks.shape[-1], pred_masks.shape[-1]
    if n_gt == 0 or n_pred == 0:
        return np.full(thresholds.shape, 1.0 if n_gt == n_pred else 0.0)
    ious = _rle_ious(pred_masks, gt_masks)  # [M, N]
    out = np.empty(thresholds.shape)
    for k, t in enumerate(thresholds):
        hits = ious > t
        tp = int(np.count_nonzero(hits.any(axis=1)))
        fp, fn = n_pred - tp, n_gt - int(np.count_nonzero(hits.any(axis=0)))
        out[k] = tp / (tp + fp + fn)
    return out


def dsb_score(gt_masks, pred_masks, iou_thresholds=DSB_IOU_THRESHOLDS):
    """The Data Science Bowl 2018 score of one image: the mean over IoU
    thresholds 0.50, 0.55, ..., 0.95 of ``TP / (TP + FP + FN)`` (see
    `dsb_precisions`). The competition's score of a set is the mean of this
    over its images."""
    return float(np.mean(dsb_precisions(gt_masks, pred_masks, iou_thresholds)))
