"""Tests of mrcnn.evaluation.keypoints: COCO keypoint AP by OKS with pycocotools."""

import numpy as np
import pytest

from mrcnn.data.dataset import Dataset
from mrcnn.evaluation.keypoints import (evaluate_keypoints, keypoint_detections_to_coco,
                                        keypoint_pixel_errors)
from mrcnn.structures import keypoints as kp
from mrcnn.structures.boxes import extract_bboxes

SIGMAS = np.array([0.05, 0.08, 0.1])


class Boxes(Dataset):
    """One or two 40x40 squares per 128x128 image, three keypoints each."""

    def __init__(self):
        super().__init__()
        self.add_class("toy", 1, "square")
        self.keypoint_names = ("a", "b", "c")
        for i, corners in enumerate([[(10, 10)], [(20, 30), (70, 60)], [(50, 50)]]):
            points = [[[x + 5.5, y + 5.5, 2], [x + 30.0, y + 10.0, 1], [x + 20.0, y + 35.0, 2]]
                      for y, x in corners]
            self.add_image("toy", i, None, corners=corners, keypoints=points)
        self.prepare()

    def load_mask(self, image_id):
        corners = self.image_info[image_id]["corners"]
        masks = np.zeros((128, 128, len(corners)), bool)
        for k, (y, x) in enumerate(corners):
            masks[y:y + 40, x:x + 40, k] = True
        return masks, np.ones(len(corners), np.int32)


def perfect_results(ds, shift=0.0):
    results = []
    for image_id in ds.image_ids:
        masks, class_ids = ds.load_mask(image_id)
        points = ds.load_keypoints(image_id).copy()
        points[..., 0] += shift
        points[..., 2] = 0.9
        results.append({"rois": extract_bboxes(masks), "class_ids": class_ids,
                        "scores": np.ones(len(class_ids)), "keypoints": points})
    return results


def test_ground_truth_against_itself_gives_ap_1():
    ds = Boxes()
    stats = evaluate_keypoints(ds, perfect_results(ds), sigmas=SIGMAS, verbose=False)
    assert stats["AP"] == pytest.approx(1.0) and stats["AR"] == pytest.approx(1.0)


def test_shifted_prediction_gives_the_ap_the_oks_predicts():
    ds = Boxes()
    shift = 5.0                                  # OKS 0.672
    gt = ds.load_keypoints(0)[0]
    value = kp.oks(gt, gt + [shift, 0, 0], 40 * 40, SIGMAS)
    thresholds = np.linspace(0.5, 0.95, 10)
    # Every instance has the same area, so the same OKS: matched at the thresholds <= it.
    expected = np.mean(thresholds <= value)
    assert 0.2 < expected < 0.8 and np.min(np.abs(thresholds - value)) > 0.01
    stats = evaluate_keypoints(ds, perfect_results(ds, shift), sigmas=SIGMAS, verbose=False)
    assert stats["AP"] == pytest.approx(expected)
    assert stats["AP50"] == pytest.approx(1.0)


def test_default_sigmas_need_17_keypoints_and_results_are_checked():
    ds = Boxes()
    with pytest.raises(ValueError, match="KEYPOINT_OKS_SIGMAS: needed for 3 keypoints"):
        evaluate_keypoints(ds, perfect_results(ds), verbose=False)
    with pytest.raises(ValueError, match=r"image 0: keypoints must be \[1, K, 3\]"):
        keypoint_detections_to_coco(ds, 0, [[0, 0, 4, 4]], [1], [0.5], np.zeros((2, 3, 3)))


def test_pixel_errors_of_the_visible_keypoints_of_matched_instances():
    ds = Boxes()
    results = perfect_results(ds, shift=3.0)
    for r, image_id in zip(results, ds.image_ids):
        r["masks"] = ds.load_mask(image_id)[0]
    # Image 1's second square is not detected.
    results[1] = {k: v[:1] if k != "masks" else v[..., :1] for k, v in results[1].items()}
    out = keypoint_pixel_errors(ds, results)
    assert out["instances"] == 4 and out["matched"] == 3
    # Two visible keypoints (v = 2) per matched instance, each 3 px off.
    np.testing.assert_allclose(out["errors"], [3.0] * 6)
    labelled = keypoint_pixel_errors(ds, results, visible_only=False)
    assert labelled["errors"].size == 9
