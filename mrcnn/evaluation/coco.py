"""COCO-style evaluation through pycocotools: ground truth from a `Dataset`,
detections as COCO results (RLE), box and mask AP.
"""

import contextlib
import io

import numpy as np

from mrcnn.evaluation.metrics import compute_ap
from mrcnn.structures.boxes import extract_bboxes

__all__ = ["make_coco", "CocoIds", "build_coco_ground_truth", "detections_to_coco",
           "evaluate_coco", "evaluate_model",
           "COCO_STAT_NAMES"]

COCO_STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl",
                   "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def make_coco(data):
    """A ``pycocotools.coco.COCO`` object built from a dict, without its console output."""
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


# ---------------------------------------------------------------------- COCO
def _uses_coco_ids(dataset):
    classes = dataset.class_info[1:]
    return (bool(classes) and all(c["source"] == "coco" for c in classes)
            and all(i["source"] == "coco" for i in dataset.image_info))


class CocoIds:
    """Maps a `Dataset`'s internal class / image ids to the ids written into COCO
    dicts: the original COCO ids for a pure ``"coco"``-source data set (so results
    can be submitted), else the internal ids."""

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

    image_ids = dataset.image_ids if image_ids is None else image_ids
    ids = CocoIds(dataset)
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
    ids = _ids if _ids is not None else CocoIds(dataset)
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
    ids = CocoIds(dataset)
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
        "coco": evaluate_coco(...), "results": the detect() dicts, aligned
        with image_ids}``. Crowd ground truth (negative class ids)
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
            "per_image_AP": aps, "image_ids": image_ids, "coco": coco, "results": results}
