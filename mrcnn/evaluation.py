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

import contextlib
import io

import numpy as np

from mrcnn.boxes import compute_overlaps, compute_overlaps_masks, extract_bboxes

__all__ = [
    "trim_zeros", "compute_matches", "compute_ap", "compute_ap_range", "compute_recall",
    "mask_area_ratios", "dsb_precisions", "dsb_score", "DSB_IOU_THRESHOLDS",
    "build_coco_ground_truth", "detections_to_coco", "evaluate_coco", "evaluate_model",
    "COCO_STAT_NAMES",
]

# Names of COCOeval.stats entries, in order.
COCO_STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl",
                   "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


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


def _rle_ious(masks1, masks2):
    """``[N, M]`` mask IoU through pycocotools' run-length encoding: memory and
    time grow with the masks' outlines, not with ``H * W * N * M`` (hundreds of
    full-image nuclei masks would take gigabytes as float matrices)."""
    from pycocotools import mask as mask_utils

    def encode(masks):
        return mask_utils.encode(np.asfortranarray(masks.astype(np.uint8)))

    ious = mask_utils.iou(encode(masks1), encode(masks2), [0] * masks2.shape[-1])
    return np.asarray(ious, dtype=np.float64).reshape(masks1.shape[-1], masks2.shape[-1])


# The 2018 Data Science Bowl's IoU thresholds: 0.50, 0.55, ..., 0.95.
DSB_IOU_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))


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


# ---------------------------------------------------------------------- COCO
def _uses_coco_ids(dataset):
    classes = dataset.class_info[1:]
    return (bool(classes) and all(c["source"] == "coco" for c in classes)
            and all(i["source"] == "coco" for i in dataset.image_info))


class _CocoIds:
    """Maps internal class/image ids to the ids written into COCO dicts."""

    def __init__(self, dataset):
        self.dataset = dataset
        self.original = _uses_coco_ids(dataset)

    def category(self, class_id):
        class_id = int(class_id)
        return int(self.dataset.class_info[class_id]["id"]) if self.original else class_id

    def image(self, image_id):
        return int(self.dataset.image_info[image_id]["id"]) if self.original else int(image_id)


def _encode(mask):
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _xywh(box):
    y1, x1, y2, x2 = (float(v) for v in box)
    return [x1, y1, x2 - x1, y2 - y1]


def build_coco_ground_truth(dataset, image_ids=None):
    """A ``pycocotools.coco.COCO`` object with the ground truth of ``dataset``.

    One annotation per instance of ``dataset.load_mask(image_id)``: RLE
    segmentation, area = mask pixel count, bbox ``[x, y, w, h]`` of the mask,
    ``iscrowd`` 1 for negative class ids (crowd regions) else 0. Instances with
    an empty mask are left out. Categories are all classes but background.
    """
    from mrcnn.loaders.coco import make_coco

    image_ids = dataset.image_ids if image_ids is None else image_ids
    ids = _CocoIds(dataset)
    images, annotations = [], []
    for image_id in image_ids:
        masks, class_ids = dataset.load_mask(image_id)
        masks = np.asarray(masks, dtype=bool)
        height, width = masks.shape[:2]
        if masks.ndim != 3 or height == 0 or width == 0:
            info = dataset.image_info[image_id]
            if info.get("height") and info.get("width"):
                height, width = int(info["height"]), int(info["width"])
            else:
                height, width = dataset.load_image(image_id).shape[:2]
        images.append({"id": ids.image(image_id), "height": int(height),
                       "width": int(width), "file_name": dataset.image_reference(image_id)})
        if masks.ndim != 3 or masks.shape[-1] == 0:
            continue
        boxes = extract_bboxes(masks)
        for k, class_id in enumerate(np.asarray(class_ids).reshape(-1)):
            mask = masks[..., k]
            area = int(mask.sum())
            if area == 0:
                continue
            annotations.append({
                "id": len(annotations) + 1,  # COCOeval needs ids > 0
                "image_id": ids.image(image_id),
                "category_id": ids.category(abs(int(class_id))),
                "segmentation": _encode(mask), "area": area, "bbox": _xywh(boxes[k]),
                "iscrowd": int(class_id < 0)})
    categories = [{"id": ids.category(i), "name": c["name"]}
                  for i, c in enumerate(dataset.class_info) if i > 0]
    return make_coco({"images": images, "annotations": annotations, "categories": categories})


def detections_to_coco(dataset, image_id, rois, class_ids, scores, masks, _ids=None):
    """COCO result dicts for one image's detections (``detect()`` format).

    Args:
        dataset: the `Dataset` the image belongs to. image_id: internal id.
        rois: ``[N, (y1, x1, y2, x2)]`` pixel boxes, exclusive end.
        class_ids: ``[N]`` internal class ids. scores: ``[N]``.
        masks: bool ``[H, W, N]`` or None (then no ``segmentation``).

    Returns:
        list of ``{"image_id", "category_id", "bbox": [x, y, w, h], "score",
        "segmentation": RLE with str counts}``. ``category_id`` is the COCO
        category id for a pure ``"coco"``-source data set, else the internal id.
    """
    rois = np.asarray(rois).reshape(-1, 4)
    class_ids = np.asarray(class_ids).reshape(-1)
    scores = np.asarray(scores).reshape(-1)
    if not (len(rois) == len(class_ids) == len(scores)):
        raise ValueError(f"detections_to_coco: image {image_id}: rois ({len(rois)}), "
                         f"class_ids ({len(class_ids)}) and scores ({len(scores)}) differ in "
                         f"length")
    if masks is not None:
        masks = np.asarray(masks)
        if masks.ndim != 3 or masks.shape[-1] != len(rois):
            raise ValueError(f"detections_to_coco: image {image_id}: masks must be [H, W, "
                             f"{len(rois)}], got {masks.shape}")
    ids = _ids if _ids is not None else _CocoIds(dataset)
    results = []
    for k in range(len(rois)):
        result = {"image_id": ids.image(image_id),
                  "category_id": ids.category(class_ids[k]),
                  "bbox": _xywh(rois[k]), "score": float(scores[k])}
        if masks is not None:
            result["segmentation"] = _encode(masks[..., k].astype(bool))
        results.append(result)
    return results


def _load_results(coco_gt, detections, eval_type):
    """COCO results object of one evaluation type (empty detections allowed)."""
    from mrcnn.loaders.coco import make_coco

    if eval_type == "bbox":
        dets = [{k: v for k, v in d.items() if k != "segmentation"} for d in detections]
    else:
        # Without "bbox", pycocotools takes the area from the mask rather than
        # from the box, so small/medium/large follow the mask area.
        dets = [{k: v for k, v in d.items() if k != "bbox"} for d in detections]
        if any("segmentation" not in d for d in dets):
            raise ValueError("evaluate_coco: 'segm' evaluation needs masks in every result")
    if dets:
        with contextlib.redirect_stdout(io.StringIO()):
            return coco_gt.loadRes(dets)
    return make_coco({"images": list(coco_gt.dataset["images"]), "annotations": [],
                      "categories": list(coco_gt.dataset["categories"])})


def evaluate_coco(dataset, results, image_ids=None, eval_types=("bbox", "segm"), verbose=True,
                  max_dets=None):
    """COCO metrics of detections on ``dataset``.

    Args:
        dataset: a prepared `Dataset` (ground truth from ``load_mask``).
        results: list of ``detect()``-style dicts aligned with ``image_ids``:
            ``rois`` ``[N, (y1, x1, y2, x2)]`` pixels (exclusive end),
            ``class_ids`` ``[N]``, ``scores`` ``[N]``, ``masks`` bool ``[H, W, N]``.
        image_ids: internal image ids (default: all).
        eval_types: any of ``"bbox"``, ``"segm"``.
        verbose: print pycocotools' standard table.
        max_dets: None (pycocotools' default, ``[1, 10, 100]``) or increasing
            detection counts per image, e.g. ``(1, 10, 400)`` for images with
            more than 100 instances: pycocotools keeps only the best-scoring
            ``maxDets`` detections of an image, so with the default the AP of an
            image holding 300 objects is capped by the count. See
            `_summarize_stats`.

    Returns:
        ``{eval_type: {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10",
        "AR100", "ARs", "ARm", "ARl"}}``; a value is -1 where pycocotools finds
        it undefined (e.g. no ground truth in that area range). With
        ``max_dets`` the AP and the area-range entries are computed at
        ``max_dets[-1]`` detections per image and the recall entries are named
        by the counts given (``"AR1", "AR10", "AR400"`` for ``(1, 10, 400)``).
    """
    from pycocotools.cocoeval import COCOeval

    image_ids = list(dataset.image_ids if image_ids is None else image_ids)
    if len(results) != len(image_ids):
        raise ValueError(f"evaluate_coco: {len(results)} results for {len(image_ids)} images")
    for t in eval_types:
        if t not in ("bbox", "segm"):
            raise ValueError(f"evaluate_coco: unknown eval type {t!r} (use 'bbox' or 'segm')")
    if max_dets is not None:
        max_dets = [int(m) for m in max_dets]
        if not max_dets or min(max_dets) < 1 or sorted(set(max_dets)) != max_dets:
            raise ValueError(f"evaluate_coco: max_dets must be increasing positive counts, "
                             f"e.g. (1, 10, 400); got {max_dets}")
    coco_gt = build_coco_ground_truth(dataset, image_ids)
    ids = _CocoIds(dataset)
    detections = []
    for image_id, r in zip(image_ids, results):
        detections.extend(detections_to_coco(dataset, image_id, r["rois"], r["class_ids"],
                                             r["scores"], r.get("masks"), _ids=ids))
    metrics = {}
    for eval_type in eval_types:
        coco_dt = _load_results(coco_gt, detections, eval_type)
        evaluator = COCOeval(coco_gt, coco_dt, eval_type)
        evaluator.params.imgIds = [ids.image(i) for i in image_ids]
        if max_dets is not None:
            evaluator.params.maxDets = list(max_dets)
        sink = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
        with sink:
            if verbose:
                print(f"COCO evaluation: {eval_type}")
            evaluator.evaluate()
            evaluator.accumulate()
            if max_dets is None:
                evaluator.summarize()
        if max_dets is None:
            metrics[eval_type] = {name: float(v)
                                  for name, v in zip(COCO_STAT_NAMES, evaluator.stats)}
        else:
            metrics[eval_type] = _summarize_stats(evaluator, verbose=verbose)
    return metrics


def _summarize_stats(evaluator, verbose=False):
    """COCOeval's summary with the evaluator's own ``params.maxDets``.

    ``COCOeval.summarize()`` reads the headline AP at a hard-coded 100
    detections (``_summarize(1)``'s default ``maxDets=100``), so with
    ``maxDets`` not containing 100 it reports -1, and with ``[1, 10, 100]``
    only the AP50..APl entries follow ``maxDets[2]``. Here every AP entry uses
    the largest count, and recall is reported at each count.

    Returns:
        ``{"AP", "AP50", "AP75", "APs", "APm", "APl"`` (at ``maxDets[-1]``),
        ``"AR<m>"`` for each ``m`` in ``maxDets``, ``"ARs", "ARm", "ARl"`` (at
        ``maxDets[-1]``)``}``; -1 where undefined.
    """
    params = evaluator.params
    max_dets = list(params.maxDets)
    top = len(max_dets) - 1

    def mean_of(values):
        values = values[values > -1]
        return float(np.mean(values)) if values.size else -1.0

    def stat(kind, iou=None, area="all", m=top):
        a = params.areaRngLbl.index(area)
        values = evaluator.eval["precision" if kind == "AP" else "recall"]
        if iou is not None:
            values = values[np.flatnonzero(np.isclose(params.iouThrs, iou))]
        values = values[:, :, :, a, m] if kind == "AP" else values[:, :, a, m]
        return mean_of(values)

    stats = {"AP": stat("AP"), "AP50": stat("AP", iou=0.5), "AP75": stat("AP", iou=0.75),
             "APs": stat("AP", area="small"), "APm": stat("AP", area="medium"),
             "APl": stat("AP", area="large")}
    for m, count in enumerate(max_dets):
        stats[f"AR{count}"] = stat("AR", m=m)
    stats.update(ARs=stat("AR", area="small"), ARm=stat("AR", area="medium"),
                 ARl=stat("AR", area="large"))
    if verbose:
        for name, value in stats.items():
            count = name[2:] if name[2:].isdigit() else max_dets[top]
            print(f" {name:>6} (maxDets {count}) = {value:0.3f}")
    return stats


def evaluate_model(model, dataset, image_ids=None, iou_threshold=0.5, limit=None,
                   eval_types=("bbox", "segm"), verbose=True):
    """Run ``model.detect`` on a data set and score it.

    ``model`` only needs ``detect(images, verbose=0) -> list of result dicts``;
    images are passed in batches of ``model.config.BATCH_SIZE`` (1 if absent),
    the last batch padded by repeating its last image.

    Returns:
        ``{"mAP": mean per-image compute_ap at iou_threshold, "mAP50": the same
        at IoU 0.5, "per_image_AP": list, "image_ids": list,
        "coco": evaluate_coco(...)}``. Crowd ground truth (negative class ids)
        is left out of the per-image AP.
    """
    image_ids = list(dataset.image_ids if image_ids is None else image_ids)
    if limit is not None:
        image_ids = image_ids[:limit]
    batch_size = int(getattr(getattr(model, "config", None), "BATCH_SIZE", 1) or 1)
    results, aps, aps50 = [], [], []
    for start in range(0, len(image_ids), batch_size):
        batch_ids = image_ids[start:start + batch_size]
        images = [dataset.load_image(i) for i in batch_ids]
        padded = images + [images[-1]] * (batch_size - len(images))
        outputs = model.detect(padded, verbose=0)[:len(images)]
        for image_id, image, r in zip(batch_ids, images, outputs):
            gt_masks, gt_class_ids = dataset.load_mask(image_id)
            gt_masks = np.asarray(gt_masks, dtype=bool)
            if gt_masks.ndim != 3 or gt_masks.shape[0] == 0:
                h, w = image.shape[:2]
                gt_masks = np.zeros((h, w, 0), dtype=bool)
            keep = np.asarray(gt_class_ids).reshape(-1) > 0
            gt_masks, gt_class_ids = gt_masks[..., keep], np.asarray(gt_class_ids)[keep]
            gt_boxes = extract_bboxes(gt_masks)
            args = (gt_boxes, gt_class_ids, gt_masks, r["rois"], r["class_ids"], r["scores"],
                    r["masks"])
            aps.append(compute_ap(*args, iou_threshold=iou_threshold)[0])
            aps50.append(aps[-1] if iou_threshold == 0.5 else compute_ap(*args, 0.5)[0])
            results.append(r)
    coco = evaluate_coco(dataset, results, image_ids, eval_types=eval_types, verbose=verbose)
    return {"mAP": float(np.mean(aps)) if aps else 0.0,
            "mAP50": float(np.mean(aps50)) if aps50 else 0.0,
            "per_image_AP": aps, "image_ids": image_ids, "coco": coco}
