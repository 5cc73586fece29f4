"""Tests for mrcnn.modeling.rpn.targets: build_rpn_targets (anchor labels and deltas)."""

import math

import numpy as np
import pytest

from mrcnn.modeling.rpn.targets import build_rpn_targets
from mrcnn.structures.boxes import box_refinement
from target_fixtures import cfg


GT = np.array([[0, 0, 10, 10]], dtype=np.float64)


def test_rpn_labels_and_deltas_by_hand():
    anchors = np.array([
        [0, 0, 10, 10],      # IoU 1            -> positive
        [0, 0, 10, 12],      # IoU 100/120      -> positive
        [0, 5, 10, 15],      # IoU 50/150 = .33 -> neutral
        [50, 50, 60, 60],    # IoU 0            -> negative
        [0, 0, 10, 30],      # IoU 1/3          -> neutral
        [100, 100, 110, 110],  # IoU 0          -> negative
    ], dtype=np.float64)
    match, bbox = build_rpn_targets(anchors, np.array([1]), GT, cfg(),
                                    rng=np.random.default_rng(0))
    assert match.dtype == np.int32 and bbox.dtype == np.float32
    assert match.tolist() == [1, 1, 0, -1, 0, -1]
    assert bbox.shape == (8, 4)
    # Row 0: anchor equals gt -> zero deltas. Row 1: anchor [0,0,10,12] -> gt:
    # dx = (5 - 6) / 12, dw = log(10 / 12), divided by std (0.1, 0.1, 0.2, 0.2).
    np.testing.assert_allclose(bbox[0], [0, 0, 0, 0], atol=1e-7)
    np.testing.assert_allclose(bbox[1], [0, (-1 / 12) / 0.1, 0, math.log(10 / 12) / 0.2],
                               rtol=1e-6)
    expected = box_refinement(anchors[[0, 1]], GT[[0, 0]]) / np.array([0.1, 0.1, 0.2, 0.2])
    np.testing.assert_allclose(bbox[:2], expected, rtol=1e-6)
    np.testing.assert_array_equal(bbox[2:], 0)


def test_best_anchor_of_each_gt_is_positive_but_not_when_its_iou_is_zero():
    anchors = np.array([
        [0, 0, 10, 25],     # IoU .4, best for gt 0 -> positive despite < .7
        [0, -15, 10, 10],   # IoU .4 too (tie)      -> positive
        [0, 0, 10, 40],     # IoU .25               -> negative
        [30, 30, 40, 40],   # IoU 0                 -> negative
    ], dtype=np.float64)
    gt_boxes = np.array([[0, 0, 10, 10], [200, 200, 210, 210]])  # gt 1 overlaps nothing
    match, bbox = build_rpn_targets(anchors, np.array([1, 2]), gt_boxes, cfg(),
                                    rng=np.random.default_rng(0))
    assert match.tolist() == [1, 1, -1, -1]
    expected = box_refinement(anchors[:2], gt_boxes[[0, 0]]) / np.array([0.1, 0.1, 0.2, 0.2])
    np.testing.assert_allclose(bbox[:2], expected, rtol=1e-6)
    assert np.all(np.isfinite(bbox))


def test_positive_regresses_to_its_highest_iou_gt():
    anchors = np.array([[0, 0, 10, 10], [20, 20, 30, 31]], dtype=np.float64)
    gt_boxes = np.array([[20, 20, 30, 30], [0, 0, 10, 10]])
    match, bbox = build_rpn_targets(anchors, np.array([1, 2]), gt_boxes, cfg(),
                                    rng=np.random.default_rng(0))
    assert match.tolist() == [1, 1]
    np.testing.assert_allclose(bbox[0], 0, atol=1e-7)  # anchor 0 -> gt 1 exactly
    np.testing.assert_allclose(
        bbox[1], box_refinement(anchors[1:], gt_boxes[:1])[0] / [0.1, 0.1, 0.2, 0.2],
        rtol=1e-6)


def test_subsampling_limits_and_determinism():
    # 20 near-copies of the gt (all positive) and 30 far anchors (all negative).
    shifts = np.arange(20) * 0.1
    positives = np.stack([np.zeros(20), shifts, np.full(20, 10.0), 10 + shifts], axis=1)
    far = np.array([[100 + 20 * i, 100, 110 + 20 * i, 110] for i in range(30)], float)
    anchors = np.concatenate([positives, far])
    config = cfg()

    def run(seed):
        return build_rpn_targets(anchors, np.array([1]), GT, config,
                                 rng=np.random.default_rng(seed))

    match, bbox = run(0)
    assert np.sum(match == 1) == 4        # half of RPN_TRAIN_ANCHORS_PER_IMAGE
    assert np.sum(match == -1) == 4       # fills up to 8
    assert np.all(match[:20] >= 0) and np.all(match[20:] <= 0)
    kept = np.flatnonzero(match == 1)
    expected = box_refinement(anchors[kept], GT[[0, 0, 0, 0]]) / [0.1, 0.1, 0.2, 0.2]
    np.testing.assert_allclose(bbox[:4], expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(bbox[4:], 0)

    again_match, again_bbox = run(0)
    np.testing.assert_array_equal(match, again_match)
    np.testing.assert_array_equal(bbox, again_bbox)
    other_match, _ = run(1)
    assert not np.array_equal(match, other_match)


def test_crowd_boxes_are_not_targets_and_block_negatives():
    anchors = np.array([
        [0, 0, 10, 10],         # equals the crowd box: neither positive nor negative
        [0, 9, 10, 19],         # crowd IoU 10/190 >= .001: not negative -> neutral
        [9.99, 9.99, 20, 20],   # crowd IoU ~5e-7 < .001: negative
        [50, 50, 60, 60],       # equals the real gt -> positive
    ], dtype=np.float64)
    gt_boxes = np.array([[0, 0, 10, 10], [50, 50, 60, 60]])
    match, bbox = build_rpn_targets(anchors, np.array([-1, 2]), gt_boxes, cfg(),
                                    rng=np.random.default_rng(0))
    assert match.tolist() == [0, 0, -1, 1]
    np.testing.assert_allclose(bbox[0], 0, atol=1e-7)


def test_crowd_only_image():
    anchors = np.array([[0, 0, 10, 10], [50, 50, 60, 60]], dtype=np.float64)
    match, bbox = build_rpn_targets(anchors, np.array([-2]), GT, cfg(),
                                    rng=np.random.default_rng(0))
    assert match.tolist() == [0, -1]
    np.testing.assert_array_equal(bbox, 0)


@pytest.mark.parametrize("ids, boxes", [
    (np.zeros((0,), np.int32), np.zeros((0, 4), np.float32)),
    (np.array([0, 0]), np.array([[0, 0, 10, 10], [5, 5, 9, 9]])),  # padding only
])
def test_zero_gt_gives_only_sampled_negatives(ids, boxes):
    anchors = np.array([[i, i, i + 10, i + 10] for i in range(50)], dtype=np.float64)
    match, bbox = build_rpn_targets(anchors, ids, boxes, cfg(),
                                    rng=np.random.default_rng(0))
    assert np.sum(match == -1) == 8 and np.sum(match == 1) == 0
    assert np.sum(match == 0) == 42
    assert bbox.shape == (8, 4) and np.all(bbox == 0) and np.all(np.isfinite(bbox))


def test_rpn_targets_accept_the_old_argument_order():
    anchors = np.array([[0, 0, 10, 10], [50, 50, 60, 60]], dtype=np.float64)
    match, bbox = build_rpn_targets((64, 64, 3), anchors, np.array([1]), GT, cfg())
    assert match.tolist() == [1, -1] and bbox.shape == (8, 4)


def test_rpn_targets_reject_mismatched_gt():
    with pytest.raises(ValueError, match="class ids"):
        build_rpn_targets(np.zeros((3, 4)), np.array([1, 2]), GT, cfg())
