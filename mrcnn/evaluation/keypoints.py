"""COCO keypoint AP by OKS (object keypoint similarity) through pycocotools.

Ground truth: `mrcnn.evaluation.coco.build_coco_ground_truth` (masks, boxes,
areas) with each annotation's ``keypoints`` from ``dataset.load_keypoints``.
Detections: `mrcnn.evaluation.coco.detections_to_coco` plus ``keypoints``
``(x, y, score)`` per keypoint. Both stay in the package's continuous pixel
frame (`mrcnn.structures.keypoints`), so no shift is applied here (COCO files
store pixel indices: subtract `mrcnn.data.loaders.coco.COCO_KEYPOINT_SHIFT` to
submit results).

OKS of a detection with a gt instance: ``mean over the gt's labelled keypoints
of exp(-d^2 / (2 area (2 sigma)^2))`` (`mrcnn.structures.keypoints.oks`, the
formula of pycocotools' ``computeOks``), ``area`` the gt mask's pixel count;
AP averages over the OKS thresholds 0.50 : 0.05 : 0.95. The sigmas default to
COCO's person sigmas (17 keypoints); give one per keypoint for other skeletons
(``Config.KEYPOINT_OKS_SIGMAS``).

`keypoint_pixel_errors`: the distance in pixels of each visible gt keypoint
to its prediction, for the gt instances a detection matches (mask IoU >= 0.5,
`mrcnn.evaluation.metrics.compute_matches`), a plain reading of how precise
the keypoints are.
"""

import contextlib
import io

import numpy as np

from mrcnn.evaluation.coco import (CocoIds, _load_results, build_coco_ground_truth,
                                   detections_to_coco, make_coco)
from mrcnn.structures.keypoints import check_keypoints, oks_sigmas

__all__ = ["KEYPOINT_STAT_NAMES", "build_keypoint_ground_truth", "keypoint_detections_to_coco",
           "evaluate_keypoints", "keypoint_pixel_errors"]

# pycocotools' summary of a "keypoints" evaluation (no small objects there).
KEYPOINT_STAT_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")


def build_keypoint_ground_truth(dataset, image_ids=None, num_keypoints=None, keypoint_names=None):
    """A ``pycocotools.coco.COCO`` ground truth with keypoints.

    The annotations of `build_coco_ground_truth` (one per non-empty mask, in
    ``load_mask`` order) get ``keypoints`` (flat ``[x1, y1, v1, ...]``) and
    ``num_keypoints`` (count of ``v > 0``; pycocotools ignores instances with
    none) from ``dataset.load_keypoints(image_id, num_keypoints)``; categories
    get ``keypoints`` names (``keypoint_names``, default
    ``dataset.keypoint_names`` or ``"0", "1", ...``).
    """
    image_ids = list(dataset.image_ids if image_ids is None else image_ids)
    gt = build_coco_ground_truth(dataset, image_ids)
    data = gt.dataset
    ids = CocoIds(dataset)
    by_image = {}
    for ann in data["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    k = None
    for image_id in image_ids:
        masks, _ = dataset.load_mask(image_id)
        masks = np.asarray(masks, dtype=bool)
        n = masks.shape[-1] if masks.ndim == 3 else 0
        keypoints = dataset.load_keypoints(image_id, num_keypoints)
        keypoints = check_keypoints(keypoints, num_instances=n,
                                    where=f"build_keypoint_ground_truth: image {image_id}")
        k = keypoints.shape[1]
        kept = [i for i in range(n) if masks[..., i].any()]
        anns = by_image.get(ids.image(image_id), [])
        for ann, i in zip(anns, kept):
            ann["keypoints"] = [float(v) for v in keypoints[i].reshape(-1)]
            ann["num_keypoints"] = int((keypoints[i, :, 2] > 0).sum())
    k = int(num_keypoints if num_keypoints is not None else (k or 0))
    names = keypoint_names or dataset.keypoint_names or tuple(str(i) for i in range(k))
    for category in data["categories"]:
        category["keypoints"] = list(names)
    return make_coco(data)


def keypoint_detections_to_coco(dataset, image_id, rois, class_ids, scores, keypoints,
                                _ids=None):
    """COCO keypoint result dicts of one image's detections.

    Args: as `detections_to_coco`, and ``keypoints`` ``[N, K, 3]`` ``(x, y,
        score)`` in image pixels (``detect()``'s ``"keypoints"``).

    Returns:
        list of ``{"image_id", "category_id", "bbox", "score", "keypoints":
        [x1, y1, s1, ...]}`` (pycocotools reads only x and y of predictions).
    """
    results = detections_to_coco(dataset, image_id, rois, class_ids, scores, None, _ids=_ids)
    keypoints = np.asarray(keypoints, dtype=np.float32)
    if keypoints.ndim != 3 or keypoints.shape[0] != len(results) or keypoints.shape[2] != 3:
        raise ValueError(f"keypoint_detections_to_coco: image {image_id}: keypoints must be "
                         f"[{len(results)}, K, 3], got {keypoints.shape}")
    for result, points in zip(results, keypoints):
        result["keypoints"] = [float(v) for v in points.reshape(-1)]
    return results


def evaluate_keypoints(dataset, results, image_ids=None, sigmas=None, num_keypoints=None,
                       verbose=True):
    """COCO keypoint AP / AR (OKS) of detections on ``dataset``.

    Args:
        dataset: a prepared `Dataset` with ``load_mask`` and ``load_keypoints``.
        results: ``detect()``-style dicts aligned with ``image_ids``: ``rois``,
            ``class_ids``, ``scores``, ``keypoints`` ``[N, K, 3]``.
        image_ids: internal image ids (default: all).
        sigmas: ``[K]`` OKS sigmas (None: COCO's person sigmas, K must be 17).
        num_keypoints: ``K`` for ``load_keypoints`` (default: the data set's).
        verbose: print pycocotools' table.

    Returns:
        ``{"AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm",
        "ARl"}`` (-1 where undefined), over the categories with labelled
        keypoints, at pycocotools' 20 detections per image.
    """
    from pycocotools.cocoeval import COCOeval

    image_ids = list(dataset.image_ids if image_ids is None else image_ids)
    if len(results) != len(image_ids):
        raise ValueError(f"evaluate_keypoints: {len(results)} results for {len(image_ids)} "
                         f"images")
    gt = build_keypoint_ground_truth(dataset, image_ids, num_keypoints)
    k = len(gt.dataset["categories"][0]["keypoints"]) if gt.dataset["categories"] else 0
    sigmas = oks_sigmas(k, sigmas)
    ids = CocoIds(dataset)
    detections = []
    for image_id, r in zip(image_ids, results):
        detections.extend(keypoint_detections_to_coco(dataset, image_id, r["rois"],
                                                      r["class_ids"], r["scores"],
                                                      r["keypoints"], _ids=ids))
    evaluator = COCOeval(gt, _load_results(gt, detections, "bbox"), "keypoints")
    evaluator.params.imgIds = [ids.image(i) for i in image_ids]
    evaluator.params.kpt_oks_sigmas = sigmas
    with_keypoints = sorted({a["category_id"] for a in gt.dataset["annotations"]
                             if a.get("num_keypoints", 0) > 0})
    if with_keypoints:
        evaluator.params.catIds = with_keypoints
    sink = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with sink:
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(v) for name, v in zip(KEYPOINT_STAT_NAMES, evaluator.stats)}


def keypoint_pixel_errors(dataset, results, image_ids=None, iou_threshold=0.5, visible_only=True):
    """Pixel distances of gt keypoints to the matched detections' keypoints.

    Each gt instance (``load_mask``) is matched to at most one detection of its
    class (mask IoU >= ``iou_threshold``, highest score first:
    `mrcnn.evaluation.metrics.compute_matches`); every visible (``v == 2``;
    with ``visible_only=False`` every labelled) keypoint of a matched instance
    gives the distance ``|predicted (x, y) - gt (x, y)|``.

    Args:
        dataset: a prepared `Dataset` with ``load_mask`` and ``load_keypoints``.
        results: ``detect()`` dicts aligned with ``image_ids`` (``rois``,
            ``class_ids``, ``scores``, ``masks``, ``keypoints``).

    Returns:
        dict: ``errors`` float64 ``[E]`` pixels, ``matched`` (gt instances
        matched), ``instances`` (gt instances with such keypoints).
    """
    from mrcnn.evaluation.metrics import compute_matches
    from mrcnn.structures.boxes import extract_bboxes

    image_ids = list(dataset.image_ids if image_ids is None else image_ids)
    if len(results) != len(image_ids):
        raise ValueError(f"keypoint_pixel_errors: {len(results)} results for {len(image_ids)} "
                         f"images")
    errors, matched, instances = [], 0, 0
    for image_id, r in zip(image_ids, results):
        masks, class_ids = dataset.load_mask(image_id)
        gt = check_keypoints(dataset.load_keypoints(image_id), num_instances=masks.shape[-1],
                             where=f"keypoint_pixel_errors: image {image_id}")
        counted = (gt[..., 2] == 2) if visible_only else (gt[..., 2] > 0)
        instances += int(counted.any(axis=1).sum())
        scores = np.asarray(r["scores"])
        if not len(scores) or not masks.shape[-1]:
            continue
        gt_match, _, _ = compute_matches(extract_bboxes(masks), class_ids, masks, r["rois"],
                                         r["class_ids"], scores, r["masks"],
                                         iou_threshold=iou_threshold)
        order = np.argsort(-scores, kind="stable")
        predicted = np.asarray(r["keypoints"], dtype=np.float64)
        for i, j in enumerate(np.asarray(gt_match, dtype=np.int64)):
            if j < 0 or not counted[i].any():
                continue
            matched += 1
            d = predicted[order[j], :, :2] - gt[i, :, :2]
            errors.extend(np.hypot(d[:, 0], d[:, 1])[counted[i]].tolist())
    return {"errors": np.asarray(errors, dtype=np.float64), "matched": matched,
            "instances": instances}
