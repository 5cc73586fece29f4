"""Tests for mrcnn.targets: RPN targets, detection targets, random RoIs."""

import math

import numpy as np
import pytest

from mrcnn.boxes import box_refinement, compute_overlaps
from mrcnn.config import Config
from mrcnn.images import minimize_mask
from mrcnn.targets import (build_detection_targets, build_rpn_targets, crop_and_resize_mask,
                           generate_random_rois)


class TinyConfig(Config):
    NAME = "tiny"
    NUM_CLASSES = 3
    RPN_TRAIN_ANCHORS_PER_IMAGE = 8
    TRAIN_ROIS_PER_IMAGE = 6
    ROI_POSITIVE_RATIO = 0.5
    MASK_POOL_SIZE = 14
    MASK_SHAPE = [28, 28]
    USE_MINI_MASK = False


def cfg(**overrides):
    return type("C", (TinyConfig,), overrides)()


GT = np.array([[0, 0, 10, 10]], dtype=np.float64)


# ----------------------------------------------------------------------- RPN targets
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


# ----------------------------------------------------------------------- masks
def test_crop_and_resize_mask_identity_and_half():
    mask = np.zeros((20, 20), bool)
    mask[:, :10] = True
    np.testing.assert_array_equal(crop_and_resize_mask(mask, (0, 0, 20, 20), (20, 20)), mask)
    out = crop_and_resize_mask(mask, (0, 0, 20, 20), (28, 28))
    # Output column c samples x = (c + .5) * 20/28: columns 0..13 lie left of 10.
    expected = np.zeros((28, 28), np.float32)
    expected[:, :14] = 1
    np.testing.assert_array_equal(out, expected)
    # A box over the right half only sees zeros; a box outside the mask too.
    assert crop_and_resize_mask(mask, (0, 10, 20, 20), (7, 7)).sum() == 0
    assert crop_and_resize_mask(mask, (30, 30, 40, 40), (7, 7)).sum() == 0


# ----------------------------------------------------------------------- detection targets
def _detection_case():
    image_mask = np.zeros((32, 32, 1), bool)
    image_mask[0:20, 0:10, 0] = True       # the object fills the left half of its box
    gt_boxes = np.array([[0, 0, 20, 20]])  # box given explicitly
    rois = np.array([
        [0, 0, 20, 20],     # IoU 1   -> positive
        [0, 0, 20, 10],     # IoU .5  -> positive
        [20, 20, 30, 30],   # IoU 0   -> negative
        [5, 5, 5, 9],       # zero area -> ignored
    ], dtype=np.float64)
    return image_mask, gt_boxes, rois


def test_build_detection_targets_by_hand():
    image_mask, gt_boxes, rois = _detection_case()
    config = cfg()
    t_rois, t_ids, t_bbox, t_mask = build_detection_targets(
        rois, np.array([2]), gt_boxes, image_mask, config, rng=np.random.default_rng(0))
    assert t_rois.shape == (6, 4) and t_ids.shape == (6,)
    assert t_bbox.shape == (6, 3, 4) and t_mask.shape == (6, 28, 28, 3)
    assert t_ids.tolist() == [2, 2, 0, 0, 0, 0]
    assert {tuple(r) for r in t_rois[:2].tolist()} == {(0, 0, 20, 20), (0, 0, 20, 10)}
    np.testing.assert_array_equal(t_rois[2], [20, 20, 30, 30])
    np.testing.assert_array_equal(t_rois[3:], 0)
    for i in range(2):
        expected = box_refinement(t_rois[i:i + 1], gt_boxes)[0] / [0.1, 0.1, 0.2, 0.2]
        np.testing.assert_allclose(t_bbox[i, 2], expected, rtol=1e-6, atol=1e-7)
        assert np.all(t_bbox[i, :2] == 0) and np.all(t_mask[i, :, :, :2] == 0)
    full = [i for i in range(2) if t_rois[i, 3] == 20][0]
    half = 1 - full
    left = np.zeros((28, 28), np.float32)
    left[:, :14] = 1
    np.testing.assert_array_equal(t_mask[full, :, :, 2], left)
    np.testing.assert_array_equal(t_mask[half, :, :, 2], 1)  # RoI = the object itself
    assert np.all(t_bbox[2:] == 0) and np.all(t_mask[2:] == 0)


def test_build_detection_targets_mini_masks_match_full_masks():
    image_mask, gt_boxes, rois = _detection_case()
    mini = minimize_mask(gt_boxes.astype(np.int32), image_mask, (20, 20))
    rng = np.random.default_rng(5)
    full_out = build_detection_targets(rois, [2], gt_boxes, image_mask, cfg(), rng=rng)
    rng = np.random.default_rng(5)
    mini_out = build_detection_targets(rois, [2], gt_boxes, mini, cfg(USE_MINI_MASK=True),
                                       rng=rng)
    for a, b in zip(full_out, mini_out):
        np.testing.assert_array_equal(a, b)


def test_build_detection_targets_positive_cap_and_crowd():
    gt_boxes = np.array([[0, 0, 20, 20], [40, 40, 60, 60]])
    masks = np.ones((64, 64, 2), bool)
    positives = [[0, 0, 20, 20 + 0.1 * k] for k in range(5)]
    crowd_touching = [[40, 40, 50, 50]]
    negatives = [[100, 100, 110, 110 + k] for k in range(5)]
    rois = np.array(positives + crowd_touching + negatives, float)
    _, t_ids, _, _ = build_detection_targets(rois, [1, -1], gt_boxes, masks, cfg(),
                                             rng=np.random.default_rng(0))
    out_rois = build_detection_targets(rois, [1, -1], gt_boxes, masks, cfg(),
                                       rng=np.random.default_rng(0))[0]
    assert t_ids.tolist() == [1, 1, 1, 0, 0, 0]    # int(6 * .5) = 3 positives
    assert [40, 40, 50, 50] not in out_rois.tolist()


# ----------------------------------------------------------------------- random RoIs
def test_generate_random_rois_bounds_overlap_and_determinism():
    gt_boxes = np.array([[10, 20, 40, 60]])
    rois = generate_random_rois((64, 96, 3), 200, np.array([1]), gt_boxes,
                                rng=np.random.default_rng(0))
    assert rois.shape == (200, 4) and rois.dtype == np.float32
    assert np.all(rois[:, 0] >= 0) and np.all(rois[:, 2] <= 64)
    assert np.all(rois[:, 1] >= 0) and np.all(rois[:, 3] <= 96)
    assert np.all(rois[:, 2] - rois[:, 0] >= 1 - 1e-6)
    assert np.all(rois[:, 3] - rois[:, 1] >= 1 - 1e-6)
    iou = compute_overlaps(rois, gt_boxes)[:, 0]
    assert np.mean(iou >= 0.5) > 0.6   # most jittered copies overlap the gt well
    again = generate_random_rois((64, 96, 3), 200, [1], gt_boxes,
                                 rng=np.random.default_rng(0))
    np.testing.assert_array_equal(rois, again)
    no_gt = generate_random_rois((64, 96), 10, np.zeros(0), np.zeros((0, 4)),
                                 rng=np.random.default_rng(0))
    assert no_gt.shape == (10, 4) and np.all(no_gt[:, 2] > no_gt[:, 0])


def _jittered_case(seed, size=512, count=40):
    """One ~300 px gt ellipse, ``count`` RoIs jittered around its box (IoU >= 0.5)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] + 0.5
    mask = ((yy - 250.3) / 150.2) ** 2 + ((xx - 260.7) / 140.9) ** 2 <= 1
    from mrcnn.boxes import compute_overlaps, extract_bboxes
    gt_box = extract_bboxes(mask[:, :, None]).astype(np.float64)
    rois = []
    while len(rois) < count:
        jitter = rng.normal(0, 12, 4)
        roi = np.clip(gt_box[0] + jitter, 0, size)
        if compute_overlaps(roi[None], gt_box)[0, 0] >= 0.6:
            rois.append(roi)
    return mask, gt_box, np.array(rois)


@pytest.mark.parametrize("use_mini_mask", [False, True])
def test_graph_and_numpy_mask_targets_agree(use_mini_mask):
    """The graph's RoIAlign targets (DetectionTargetLayer) and the NumPy twin
    (build_detection_targets' crop_and_resize_mask) on 40 jittered ~300 px RoIs."""
    from mrcnn.coords import norm_boxes, norm_to_pixels
    from mrcnn.images import minimize_mask
    from mrcnn.layers import DetectionTargetLayer

    size = 512
    mask, gt_box, rois = _jittered_case(3, size)
    stored = minimize_mask(gt_box.astype(int), mask[:, :, None], (56, 56)) if use_mini_mask \
        else mask[:, :, None]
    norm_rois = norm_boxes(rois, (size, size))
    layer = DetectionTargetLayer(len(rois), 1.0, (0.1, 0.1, 0.2, 0.2), (28, 28),
                                 use_mini_mask=use_mini_mask, image_shape=(size, size))
    out_rois, ids, _, targets = [np.asarray(o)[0] for o in layer(
        [norm_rois[None], np.array([[1]], "int32"), norm_boxes(gt_box, (size, size))[None],
         stored[None]])]
    assert (ids == 1).all()
    differing, worst = 0, 0
    for roi_norm, target in zip(out_rois, targets):
        roi = norm_to_pixels(roi_norm, (size, size))   # the pixel box the graph used
        if use_mini_mask:
            gy1, gx1, gy2, gx2 = gt_box[0]
            sy, sx = 56 / (gy2 - gy1), 56 / (gx2 - gx1)
            roi = ((roi[0] - gy1) * sy, (roi[1] - gx1) * sx, (roi[2] - gy1) * sy,
                   (roi[3] - gx1) * sx)
        expected = crop_and_resize_mask(stored[:, :, 0], roi, (28, 28))
        diff = (expected != target).sum()
        differing += diff > 0
        worst = max(worst, diff)
    # Identical here (compiled op and pure-TF path alike); the legacy graph targets
    # (crop_and_resize, rounded) differ from these on all 40 RoIs (median 31 of
    # 784 pixels: about a row and a column).
    assert worst == 0 and differing == 0, (worst, differing)
