"""Tests for mrcnn.evaluation: matching, AP (hand-computed), COCO metrics vs pycocotools."""

import contextlib
import io
import json

import numpy as np
import pytest
import skimage.io
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from mrcnn.boxes import extract_bboxes
from mrcnn.dataset import Dataset
from mrcnn.evaluation import (
    build_coco_ground_truth, compute_ap, compute_ap_range, compute_matches, compute_recall,
    detections_to_coco, evaluate_coco, evaluate_model,
)
from mrcnn.loaders import CocoDataset

# pycocotools' decode trips a NumPy 2 deprecation warning; not ours to fix.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")

H, W = 32, 48


def _mask(*boxes, shape=(H, W)):
    """bool [H, W, N] with one filled box (y1, x1, y2, x2; exclusive end) per instance."""
    m = np.zeros(shape + (len(boxes),), dtype=bool)
    for k, (y1, x1, y2, x2) in enumerate(boxes):
        m[y1:y2, x1:x2, k] = True
    return m


def _boxes(*boxes):
    return np.array(boxes, dtype=np.int32).reshape(-1, 4)


# ------------------------------------------------------------- matching and AP
def test_ap_hand_checked_tp_fp_tp():
    gt = [(0, 0, 10, 10), (20, 20, 30, 30)]
    preds = [(0, 0, 10, 10), (0, 30, 10, 40), (20, 20, 30, 30)]  # TP, FP, TP by rank
    scores = np.array([0.9, 0.8, 0.7])
    ap, precisions, recalls, overlaps = compute_ap(
        _boxes(*gt), np.array([1, 1]), _mask(*gt),
        _boxes(*preds), np.array([1, 1, 1]), scores, _mask(*preds))
    assert ap == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    np.testing.assert_allclose(recalls, [0, 0.5, 0.5, 1, 1])
    np.testing.assert_allclose(precisions, [1, 1, 2 / 3, 2 / 3, 0])
    np.testing.assert_allclose(overlaps, [[1, 0], [0, 0], [0, 1]])


def test_ap_uses_monotone_precision():
    # Ranks TP, FP, TP, TP with 3 gts: raw precision at recall 2/3 is 2/3, but the
    # interpolated one is max(2/3, 3/4) = 3/4 -> AP = 1/3 * (1 + 3/4 + 3/4).
    gt = [(0, 0, 5, 5), (10, 10, 15, 15), (20, 20, 25, 25)]
    preds = [(0, 0, 5, 5), (0, 30, 5, 35), (10, 10, 15, 15), (20, 20, 25, 25)]
    ap = compute_ap(_boxes(*gt), [1, 1, 1], _mask(*gt), _boxes(*preds), [1, 1, 1, 1],
                    [0.9, 0.8, 0.7, 0.6], _mask(*preds))[0]
    assert ap == pytest.approx((1 + 0.75 + 0.75) / 3)


def test_mask_count_must_match_boxes():
    with pytest.raises(ValueError, match=r"\[H, W, 2\]"):
        compute_matches(_boxes((0, 0, 5, 5), (1, 1, 4, 4)), [1, 1], _mask((0, 0, 5, 5)),
                        _boxes((0, 0, 5, 5)), [1], [0.9], _mask((0, 0, 5, 5)))


def test_matches_sort_by_score_respect_class_and_trim_padding():
    gt = [(0, 0, 10, 10), (0, 0, 10, 8)]
    gt_boxes = np.concatenate([_boxes(*gt), np.zeros((2, 4), np.int32)])  # zero padding
    gt_masks = np.concatenate([_mask(*gt), np.zeros((H, W, 2), bool)], axis=-1)
    gt_ids = np.array([1, 2, 0, 0])
    # Pred 0 (low score) overlaps gt 0 perfectly; pred 1 (high score) is of class 2
    # and overlaps gt 0 more (IoU 1 vs 0.8 for gt 1) but must take the class-2 gt.
    preds = [(0, 0, 10, 10), (0, 0, 10, 10), (0, 20, 5, 25)]
    gt_match, pred_match, overlaps = compute_matches(
        gt_boxes, gt_ids, gt_masks, _boxes(*preds), np.array([1, 2, 1]),
        np.array([0.3, 0.9, 0.5]), _mask(*preds))
    # Sorted predictions: [pred 1 (0.9), pred 2 (0.5), pred 0 (0.3)].
    np.testing.assert_array_equal(pred_match, [1, -1, 0])
    np.testing.assert_array_equal(gt_match, [2, 0])
    np.testing.assert_allclose(overlaps, [[1, 0.8], [0, 0], [1, 0.8]])

    # IoU 0.8 is below a 0.85 threshold: the class-2 prediction stays unmatched.
    gt_match, pred_match, _ = compute_matches(
        gt_boxes, gt_ids, gt_masks, _boxes(*preds), np.array([1, 2, 1]),
        np.array([0.3, 0.9, 0.5]), _mask(*preds), iou_threshold=0.85)
    np.testing.assert_array_equal(pred_match, [-1, -1, 0])

    # score_threshold drops low-scoring predictions before matching.
    gt_match, pred_match, overlaps = compute_matches(
        gt_boxes, gt_ids, gt_masks, _boxes(*preds), np.array([1, 2, 1]),
        np.array([0.3, 0.9, 0.5]), _mask(*preds), score_threshold=0.4)
    assert overlaps.shape == (2, 2)
    np.testing.assert_array_equal(gt_match, [-1, 0])


def test_ap_edge_cases_and_box_iou():
    gt = _boxes((0, 0, 10, 10))
    none = np.zeros((0, 4), np.int32)
    assert compute_ap(gt, [1], None, none, np.zeros(0, int), np.zeros(0), None)[0] == 0.0
    assert compute_ap(none, np.zeros(0, int), None, gt, [1], [0.5], None)[0] == 0.0
    assert compute_ap(none, np.zeros(0, int), None, none, np.zeros(0, int),
                      np.zeros(0), None)[0] == 1.0
    # Box IoU when masks are None: (0,0,10,10) vs (0,0,10,5) -> 0.5.
    ap, _, _, overlaps = compute_ap(gt, [1], None, _boxes((0, 0, 10, 5)), [1], [0.9], None)
    assert overlaps[0, 0] == pytest.approx(0.5) and ap == 1.0


def test_ap_range_averages_thresholds(capsys):
    gt = [(0, 0, 10, 25)]
    pred = [(0, 0, 10, 18)]  # mask IoU 18/25 = 0.72: AP 1 for thresholds 0.50..0.70
    mean = compute_ap_range(_boxes(*gt), [1], _mask(*gt), _boxes(*pred), [1], [0.9],
                            _mask(*pred), verbose=1)
    assert mean == pytest.approx(0.5)
    assert "0.50-0.95" in capsys.readouterr().out
    assert compute_ap_range(_boxes(*gt), [1], _mask(*gt), _boxes(*pred), [1], [0.9],
                            _mask(*pred), iou_thresholds=[0.5, 0.8], verbose=0) == 0.5


def test_compute_recall():
    gt = _boxes((0, 0, 10, 10), (20, 20, 30, 30), (0, 30, 10, 40))
    pred = _boxes((0, 0, 10, 10), (0, 0, 10, 9), (20, 20, 30, 24), (20, 20, 30, 30))
    recall, positive_ids = compute_recall(pred, gt, 0.5)
    assert recall == pytest.approx(2 / 3)
    np.testing.assert_array_equal(positive_ids, [0, 1, 3])


# ------------------------------------------------------------- COCO metrics
def _rle(mask2d):
    rle = mask_utils.encode(np.asfortranarray(mask2d.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode()
    return rle


# Ground truth per image: (category, box, iscrowd). Image 7 has none.
GT = {
    3: [(1, (2, 2, 12, 14), 0), (2, (0, 8, 32, 48), 0), (1, (20, 0, 30, 6), 1)],
    5: [(1, (5, 5, 9, 9), 0), (1, (15, 20, 25, 40), 0)],
    7: [],
}
CATEGORY_IDS = {1: 17, 2: 4}  # internal class -> COCO category id (out of order on purpose)

# Detections per image: (class, box of the roi, box of the mask, score).
DETECTIONS = {
    3: [(1, (2, 2, 12, 13), (2, 2, 12, 13), 0.95), (2, (0, 10, 30, 48), (1, 9, 32, 46), 0.8),
        (1, (22, 0, 28, 5), (22, 0, 28, 5), 0.6), (2, (2, 2, 12, 14), (2, 2, 12, 14), 0.3)],
    5: [(1, (15, 22, 25, 40), (15, 21, 24, 40), 0.7), (1, (0, 40, 4, 44), (0, 40, 4, 44), 0.9)],
    7: [],
}


@pytest.fixture
def coco_case(tmp_path):
    """A COCO gt JSON (written directly with pycocotools) and its CocoDataset."""
    images, annotations = [], []
    for image_id, objects in GT.items():
        skimage.io.imsave(tmp_path / f"{image_id}.png", np.zeros((H, W, 3), np.uint8),
                          check_contrast=False)
        images.append({"id": image_id, "file_name": f"{image_id}.png", "height": H, "width": W})
        for cls, box, crowd in objects:
            rle = _rle(_mask(box)[..., 0])
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id,
                "category_id": CATEGORY_IDS[cls], "iscrowd": crowd, "segmentation": rle,
                "area": float(mask_utils.area(rle)), "bbox": mask_utils.toBbox(rle).tolist()})
    gt_json = tmp_path / "gt.json"
    gt_json.write_text(json.dumps({
        "images": images, "annotations": annotations,
        "categories": [{"id": 4, "name": "b"}, {"id": 17, "name": "a"}]}))
    dataset = CocoDataset()
    dataset.load_coco(gt_json, tmp_path)
    dataset.prepare()
    return gt_json, dataset


def _internal_class(dataset, cls):
    return dataset.map_source_class_id(f"coco.{CATEGORY_IDS[cls]}")


def _detect_results(dataset):
    """detect()-style results aligned with dataset.image_ids."""
    results = []
    for image_id in dataset.image_ids:
        dets = DETECTIONS[dataset.image_info[image_id]["id"]]
        results.append({
            "rois": _boxes(*[d[1] for d in dets]),
            "class_ids": np.array([_internal_class(dataset, d[0]) for d in dets], np.int32),
            "scores": np.array([d[3] for d in dets], np.float32),
            "masks": _mask(*[d[2] for d in dets])})
    return results


def _pycocotools_stats(gt_json, results_json, eval_type):
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_json))
        dt = gt.loadRes(str(results_json))
        evaluator = COCOeval(gt, dt, eval_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats


def test_evaluate_coco_equals_pycocotools_on_json_files(coco_case, tmp_path, capsys):
    gt_json, dataset = coco_case
    # Results files written independently: bbox from the rois, segm from the masks.
    bbox_results, segm_results = [], []
    for image_id, dets in DETECTIONS.items():
        for cls, (y1, x1, y2, x2), mask_box, score in dets:
            bbox_results.append({"image_id": image_id, "category_id": CATEGORY_IDS[cls],
                                 "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score})
            segm_results.append({"image_id": image_id, "category_id": CATEGORY_IDS[cls],
                                 "segmentation": _rle(_mask(mask_box)[..., 0]), "score": score})
    (tmp_path / "bbox.json").write_text(json.dumps(bbox_results))
    (tmp_path / "segm.json").write_text(json.dumps(segm_results))
    expected_bbox = _pycocotools_stats(gt_json, tmp_path / "bbox.json", "bbox")
    expected_segm = _pycocotools_stats(gt_json, tmp_path / "segm.json", "segm")

    metrics = evaluate_coco(dataset, _detect_results(dataset), verbose=True)
    assert "Average Precision" in capsys.readouterr().out
    names = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm",
             "ARl"]
    np.testing.assert_allclose([metrics["bbox"][n] for n in names], expected_bbox, atol=1e-9)
    np.testing.assert_allclose([metrics["segm"][n] for n in names], expected_segm, atol=1e-9)
    # The case is not trivial: some but not all detections are right.
    assert 0 < metrics["segm"]["AP"] < 1 and 0 < metrics["bbox"]["AP50"] < 1
    assert metrics["bbox"]["AP"] != metrics["segm"]["AP"]


def test_ground_truth_and_detection_dicts(coco_case):
    _, dataset = coco_case
    gt = build_coco_ground_truth(dataset)
    assert sorted(gt.imgs) == [3, 5, 7]
    assert sorted(gt.cats) == [4, 17]
    crowd = [a for a in gt.anns.values() if a["iscrowd"]]
    assert len(crowd) == 1 and crowd[0]["category_id"] == 17 and crowd[0]["image_id"] == 3
    big = [a for a in gt.anns.values() if a["category_id"] == 4][0]
    assert big["bbox"] == [8.0, 0.0, 40.0, 32.0] and big["area"] == 32 * 40

    image_id = dataset.image_from_source_map["coco.3"]
    r = _detect_results(dataset)[image_id]
    dets = detections_to_coco(dataset, image_id, r["rois"], r["class_ids"], r["scores"],
                              r["masks"])
    assert dets[1]["bbox"] == [10.0, 0.0, 38.0, 30.0] and dets[1]["category_id"] == 4
    assert dets[1]["image_id"] == 3 and isinstance(dets[1]["segmentation"]["counts"], str)
    assert dets[1]["score"] == pytest.approx(0.8)
    with pytest.raises(ValueError, match="differ"):
        detections_to_coco(dataset, image_id, r["rois"], r["class_ids"][:1], r["scores"], None)


def test_evaluate_coco_without_any_detection(coco_case):
    _, dataset = coco_case
    empty = [{"rois": np.zeros((0, 4), np.int32), "class_ids": np.zeros(0, np.int32),
              "scores": np.zeros(0), "masks": np.zeros((H, W, 0), bool)}] * dataset.num_images
    metrics = evaluate_coco(dataset, empty, verbose=False)
    assert metrics["bbox"]["AP"] == 0.0 and metrics["segm"]["AR100"] == 0.0
    with pytest.raises(ValueError, match="2 results for 3 images"):
        evaluate_coco(dataset, empty[:2], verbose=False)


class _ShapesDataset(Dataset):
    """Synthetic non-COCO data set: internal ids are used in COCO dicts."""

    BOXES = [[(2, 2, 12, 14)], [(5, 5, 20, 30), (22, 30, 30, 46)], []]

    def __init__(self):
        super().__init__()
        self.add_class("shapes", 1, "square")
        for i in range(len(self.BOXES)):
            self.add_image("shapes", image_id=i, path=None, height=H, width=W)
        self.prepare()

    def load_image(self, image_id):
        return np.full((H, W, 3), image_id, np.uint8)

    def load_mask(self, image_id):
        boxes = self.BOXES[image_id]
        return _mask(*boxes), np.ones(len(boxes), np.int32)


class _PerfectModel:
    """Duck-typed model: detect() returns the ground truth (identified by pixel value)."""

    class config:
        BATCH_SIZE = 2

    def __init__(self, dataset):
        self.dataset = dataset
        self.batch_sizes = []

    def detect(self, images, verbose=0):
        self.batch_sizes.append(len(images))
        out = []
        for image in images:
            image_id = int(image[0, 0, 0])
            masks, class_ids = self.dataset.load_mask(image_id)
            boxes = _boxes(*self.dataset.BOXES[image_id])
            out.append({"rois": boxes, "class_ids": class_ids, "masks": masks,
                        "scores": np.linspace(0.9, 0.8, len(class_ids))})
        return out


def test_evaluate_model_with_a_perfect_model():
    dataset = _ShapesDataset()
    model = _PerfectModel(dataset)
    report = evaluate_model(model, dataset, verbose=False)
    assert model.batch_sizes == [2, 2]  # 3 images, last batch padded
    assert report["per_image_AP"] == [1.0, 1.0, 1.0]
    assert report["mAP"] == 1.0 and report["mAP50"] == 1.0
    assert report["coco"]["segm"]["AP"] == pytest.approx(1.0)
    assert report["coco"]["bbox"]["AP"] == pytest.approx(1.0)
    gt = build_coco_ground_truth(dataset)
    assert sorted(gt.cats) == [1] and sorted(gt.imgs) == [0, 1, 2]

    limited = evaluate_model(model, dataset, limit=1, eval_types=("segm",), verbose=False)
    assert limited["image_ids"] == [0] and list(limited["coco"]) == ["segm"]


def test_mask_area_ratios_of_matched_instances():
    from mrcnn.evaluation import mask_area_ratios
    gt = np.zeros((20, 20, 2), bool)
    gt[0:10, 0:10, 0] = True                 # 100 px
    gt[12:20, 12:20, 1] = True               # 64 px
    pred = np.zeros((20, 20, 3), bool)
    pred[0:10, 0:9, 0] = True                # 90 px: matches gt 0 (IoU 0.9)
    pred[12:20, 12:20, 1] = True             # exact, but the wrong class: no match
    pred[13:20, 12:20, 2] = True             # 56 px: matches gt 1 (IoU 0.875)
    ratios = mask_area_ratios(extract_bboxes(gt), np.array([1, 2]), gt,
                              extract_bboxes(pred), np.array([1, 1, 2]),
                              np.array([0.9, 0.95, 0.5]), pred)
    np.testing.assert_allclose(ratios, [0.9, 56 / 64])


# ----------------------------------------------------------------------------- DSB metric
def test_dsb_score_hand_computed():
    from mrcnn.evaluation import DSB_IOU_THRESHOLDS, dsb_precisions, dsb_score
    shape = (40, 40)
    gt = _mask((0, 0, 10, 10), (20, 0, 30, 10), (0, 25, 10, 35), shape=shape)
    pred = np.zeros(shape + (4,), bool)
    pred[0:10, 1:11, 0] = True    # gt 0 shifted by a pixel: IoU 90 / 110 = 0.818
    pred[21:29, 1:9, 1] = True    # 8x8 inside gt 1: IoU 64 / 100 = 0.64
    pred[30:40, 30:40, 2] = True  # on nothing: a false positive at every threshold
    # channel 3 stays empty: left out.  gt 2 is never found: a false negative.
    # t = .50 .55 .60: TP 2, FP 1, FN 1 -> 2/4;  t = .65 .. .80: TP 1, FP 2, FN 2 -> 1/5;
    # t = .85 .90 .95: TP 0 -> 0.
    expected = [0.5] * 3 + [0.2] * 4 + [0.0] * 3
    assert DSB_IOU_THRESHOLDS == (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
    np.testing.assert_allclose(dsb_precisions(gt, pred), expected)
    assert dsb_score(gt, pred) == pytest.approx(0.23)
    # A hit needs IoU strictly above the threshold: IoU 0.64 counts at 0.6, not at 0.65.
    np.testing.assert_allclose(dsb_precisions(gt[..., 1:2], pred[..., 1:2], (0.6, 0.64, 0.65)),
                               [1.0, 0.0, 0.0])
    assert dsb_score(gt, gt) == 1.0


def test_dsb_score_edge_cases():
    from mrcnn.evaluation import dsb_score
    none = np.zeros((8, 8, 0), bool)
    one = _mask((1, 1, 4, 4), shape=(8, 8))
    assert dsb_score(none, none) == 1.0
    assert dsb_score(none, one) == 0.0 and dsb_score(one, none) == 0.0
    assert dsb_score(one, np.zeros((8, 8, 2), bool)) == 0.0  # empty predictions: none
    with pytest.raises(ValueError, match="image size"):
        dsb_score(one, np.zeros((9, 8, 1), bool))


# ----------------------------------------------------------------------------- max_dets
class _CrowdedDataset(Dataset):
    """One 64x64 image holding 150 separate 3x3 squares."""

    BOXES = [(4 * (k // 15), 4 * (k % 15), 4 * (k // 15) + 3, 4 * (k % 15) + 3)
             for k in range(150)]

    def __init__(self):
        super().__init__()
        self.add_class("crowd", 1, "dot")
        self.add_image("crowd", image_id=0, path=None, height=64, width=64)
        self.prepare()

    def load_mask(self, image_id):
        return _mask(*self.BOXES, shape=(64, 64)), np.ones(len(self.BOXES), np.int32)


def test_evaluate_coco_max_dets_lifts_the_100_detection_cap():
    dataset = _CrowdedDataset()
    masks, class_ids = dataset.load_mask(0)
    perfect = [{"rois": _boxes(*dataset.BOXES), "class_ids": class_ids, "masks": masks,
                "scores": np.linspace(0.99, 0.5, len(class_ids))}]
    capped = evaluate_coco(dataset, perfect, verbose=False)
    # pycocotools keeps the 100 best detections: recall stops at 100 / 150.
    assert capped["segm"]["AP"] == pytest.approx(100 / 150, abs=0.02)
    full = evaluate_coco(dataset, perfect, verbose=False, max_dets=(1, 10, 200))
    for kind in ("bbox", "segm"):
        stats = full[kind]
        assert stats["AP"] == pytest.approx(1.0) and stats["AP50"] == pytest.approx(1.0)
        assert stats["AP75"] == pytest.approx(1.0) and stats["APs"] == pytest.approx(1.0)
        assert stats["APm"] == -1 and stats["APl"] == -1  # no medium or large objects
        assert stats["AR1"] == pytest.approx(1 / 150) and stats["AR10"] == pytest.approx(10 / 150)
        assert stats["AR200"] == pytest.approx(1.0) and "AR100" not in stats
    with pytest.raises(ValueError, match="increasing"):
        evaluate_coco(dataset, perfect, verbose=False, max_dets=(10, 1))


def test_evaluate_coco_max_dets_default_counts_match_pycocotools_summary(coco_case):
    _gt_json, dataset = coco_case
    results = _detect_results(dataset)
    plain = evaluate_coco(dataset, results, verbose=False)
    explicit = evaluate_coco(dataset, results, verbose=False, max_dets=(1, 10, 100))
    for kind in plain:
        for name in plain[kind]:
            assert explicit[kind][name] == pytest.approx(plain[kind][name]), (kind, name)
