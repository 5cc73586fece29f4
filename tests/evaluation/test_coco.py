"""Tests for mrcnn.evaluation.coco: COCO ground truth / detection dicts and metrics vs pycocotools,
evaluate_model."""

import contextlib
import io
import json

import numpy as np
import pytest
import skimage.io
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from evaluation_fixtures import H, W
from evaluation_fixtures import box_array as _boxes
from evaluation_fixtures import box_masks as _mask
from mrcnn.data.dataset import Dataset
from mrcnn.evaluation.coco import (build_coco_ground_truth, detections_to_coco, evaluate_coco, evaluate_model)
from mrcnn.data.loaders import CocoDataset

# pycocotools' decode trips a NumPy 2 deprecation warning; not ours to fix.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")


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
