"""Tests for mrcnn.evaluation.metrics: matching, AP (hand-computed), recall, mask area ratios."""

import numpy as np
import pytest

from evaluation_fixtures import H, W
from evaluation_fixtures import box_array as _boxes
from evaluation_fixtures import box_masks as _mask
from mrcnn.structures.boxes import extract_bboxes
from mrcnn.evaluation.metrics import (compute_ap, compute_ap_range, compute_matches, compute_recall)


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


def test_mask_area_ratios_of_matched_instances():
    from mrcnn.evaluation.metrics import mask_area_ratios
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


def _result(boxes, class_ids, scores):
    return {"rois": _boxes(*boxes), "class_ids": np.array(class_ids, np.int32),
            "scores": np.array(scores, np.float32), "masks": _mask(*boxes)}


def test_match_detections_pairs_same_class_boxes_above_the_threshold():
    from mrcnn.evaluation.metrics import match_detections
    reference = _result([(0, 0, 10, 10), (20, 20, 30, 30), (0, 20, 10, 30), (0, 0, 0, 0)],
                        [1, 2, 1, 0], [0.9, 0.8, 0.6, 0.0])     # the last row: padding
    other = _result([(20, 20, 30, 31), (0, 0, 10, 10), (0, 20, 10, 30), (0, 0, 10, 8)],
                    [2, 1, 2, 1], [0.82, 0.88, 0.7, 0.95])
    pairs = match_detections(reference, other, iou_threshold=0.9)
    np.testing.assert_array_equal(pairs["reference_index"], [0, 1])
    np.testing.assert_array_equal(pairs["other_index"], [1, 0])   # (0, 20, ...): other class
    np.testing.assert_allclose(pairs["box_iou"], [1.0, 100 / 110])
    np.testing.assert_allclose(pairs["mask_iou"], [1.0, 100 / 110])
    np.testing.assert_allclose(pairs["score_difference"], [-0.02, 0.02], atol=1e-6)
    # At 0.5 the best-scoring other detection (IoU 0.8) takes reference 0 first.
    loose = match_detections(reference, other, iou_threshold=0.5)
    np.testing.assert_array_equal(loose["other_index"], [3, 0])
    np.testing.assert_allclose(loose["box_iou"], [0.8, 100 / 110])
    # No masks: NaN mask IoU; no detections on one side: no pairs.
    no_masks = match_detections({k: v for k, v in reference.items() if k != "masks"}, other)
    assert np.isnan(no_masks["mask_iou"]).all() and len(no_masks["mask_iou"]) == 2
    empty = match_detections(reference, _result([], [], []))
    assert all(len(v) == 0 for v in empty.values())
