"""Tests of mrcnn.modeling.roi_heads.sampling: DetectionTargetLayer on hand-made proposals
and ground truth; the NumPy build_detection_targets and generate_random_rois."""

import numpy as np
import pytest

from mrcnn.structures import boxes as npb
from mrcnn.structures.boxes import box_refinement, compute_overlaps
from mrcnn.structures.masks import minimize_mask
from mrcnn.modeling.roi_heads.sampling import (DetectionTargetLayer, build_detection_targets,
                                               generate_random_rois)
from target_fixtures import cfg

STD = np.array([0.1, 0.1, 0.2, 0.2])
GT = np.array([[0.1, 0.1, 0.5, 0.5], [0.6, 0.1, 0.9, 0.4]], "float32")
CROWD = np.array([0.6, 0.6, 0.9, 0.9], "float32")
PROPOSALS = np.array([
    [0.1, 0.1, 0.5, 0.5],      # = gt 0: positive
    [0.12, 0.1, 0.5, 0.52],    # IoU ~0.85 with gt 0: positive
    [0.6, 0.12, 0.88, 0.4],    # IoU ~0.87 with gt 1: positive
    [0.62, 0.1, 0.9, 0.42],    # IoU ~0.87 with gt 1: positive
    [0.65, 0.6, 0.9, 0.9],     # touches the crowd box: neither
    [0.0, 0.0, 0.2, 0.2],      # IoU 0.05 with gt 0: negative
    [0.0, 0.6, 0.3, 0.9],      # IoU 0: negative
    [0.2, 0.2, 0.3, 0.3],      # IoU 0.0625: negative
], "float32")


def _batch(num_proposal_rows=12, max_gt=4, mask_size=8):
    props = np.zeros((2, num_proposal_rows, 4), "float32")
    props[0, :len(PROPOSALS)] = PROPOSALS
    props[1, :len(PROPOSALS)] = PROPOSALS
    ids = np.zeros((2, max_gt), "int32")
    boxes = np.zeros((2, max_gt, 4), "float32")
    ids[0, :3] = [3, 5, -1]
    boxes[0, :3] = np.concatenate([GT, CROWD[None]])
    masks = np.zeros((2, mask_size, mask_size, max_gt), bool)
    masks[0, :, :mask_size // 2, 0] = True      # gt 0: left half of its box
    masks[0, :mask_size // 2, :, 1] = True      # gt 1: top half of its box
    return props, ids, boxes, masks            # image 1 has no gt at all


def _classify(rois):
    """Indices into PROPOSALS of the output rows (-1 for padding)."""
    out = []
    for roi in rois:
        hit = np.where(np.all(np.isclose(PROPOSALS, roi), axis=1))[0]
        out.append(int(hit[0]) if len(hit) else (-1 if not roi.any() else -2))
    return out


def test_counts_targets_and_crowd():
    layer = DetectionTargetLayer(8, 0.5, STD, (4, 4), use_mini_mask=True, image_shape=(64, 64))
    rois, class_ids, deltas, masks = [np.asarray(o) for o in layer(list(_batch()))]
    assert rois.shape == (2, 8, 4) and class_ids.shape == (2, 8) and deltas.shape == (2, 8, 4)
    assert masks.shape == (2, 8, 4, 4) and class_ids.dtype == np.int32

    which = _classify(rois[0])
    assert -2 not in which and 4 not in which          # the crowd-touching proposal is unused
    pos = [k for k in range(8) if class_ids[0, k] > 0]
    assert pos == [0, 1, 2, 3]                          # 4 positives (max int(8 * 0.5)), first
    assert sorted(which[:4]) == [0, 1, 2, 3]
    # 4 positives -> int(4 / 0.5) - 4 = 4 negatives wanted, 3 available.
    assert sorted(which[4:7]) == [5, 6, 7] and which[7] == -1
    assert np.all(class_ids[0, 4:] == 0) and np.all(deltas[0, 4:] == 0)
    assert np.all(masks[0, 4:] == 0)

    gt_of = {0: 0, 1: 0, 2: 1, 3: 1}
    for k in range(4):
        p = which[k]
        g = gt_of[p]
        assert class_ids[0, k] == (3, 5)[g]
        expected = npb.box_refinement(PROPOSALS[p:p + 1], GT[g:g + 1])[0] / STD
        np.testing.assert_allclose(deltas[0, k], expected, rtol=1e-4, atol=1e-5)
        if p == 0:  # RoI == gt box: the mini-mask itself, left half set
            np.testing.assert_array_equal(masks[0, k], [[1, 1, 0, 0]] * 4)
        if p == 2:  # top half of gt 1; RoI inside the gt box vertically
            assert masks[0, k, 0].all() and not masks[0, k, -1].any()


def test_image_without_gt_gives_only_negatives_and_no_nan():
    layer = DetectionTargetLayer(8, 0.5, STD, (4, 4), use_mini_mask=True, image_shape=(64, 64))
    rois, class_ids, deltas, masks = [np.asarray(o) for o in layer(list(_batch()))]
    for arr in (rois, deltas, masks):
        assert np.all(np.isfinite(arr))
    assert np.all(class_ids[1] == 0) and np.all(deltas[1] == 0) and np.all(masks[1] == 0)
    # No positive: the negatives of a full quota (int(4 / 0.5) - 4 = 4); all 8 proposals
    # are negatives when there is no gt (no crowd either).
    which = _classify(rois[1])
    assert len([w for w in which if w >= 0]) == 4 and which[4:] == [-1] * 4


def test_positive_sampling_cap_and_ratio():
    layer = DetectionTargetLayer(4, 0.33, STD, (4, 4), use_mini_mask=True, image_shape=(64, 64))
    rois, class_ids, _, _ = [np.asarray(o) for o in layer(list(_batch()))]
    # int(4 * 0.33) = 1 positive, then int(1 / 0.33) - 1 = 2 negatives, then 1 padding row.
    assert (class_ids[0] > 0).sum() == 1 and class_ids[0, 0] > 0
    which = _classify(rois[0])
    assert which[0] in (0, 1, 2, 3) and set(which[1:3]) <= {5, 6, 7} and which[3] == -1


def test_full_size_masks():
    """Without mini-masks the gt mask is image-sized; a RoI equal to a gt box gets its crop."""
    size = 21  # normalised k / 20 <-> pixel index k (legacy normalisation)
    props = np.zeros((1, 3, 4), "float32")
    props[0, 0] = [0.2, 0.2, 0.6, 0.6]
    ids = np.array([[1, 0]], "int32")
    boxes = np.zeros((1, 2, 4), "float32")
    boxes[0, 0] = [0.2, 0.2, 0.6, 0.6]
    masks = np.zeros((1, size, size, 2), bool)
    masks[0, 4:13, 4:9, 0] = True       # pixels 4..12 rows, 4..8 cols: left part of the box
    layer = DetectionTargetLayer(2, 0.5, STD, (9, 9), use_mini_mask=False)
    _, class_ids, deltas, out = [np.asarray(o) for o in layer([props, ids, boxes, masks])]
    assert class_ids[0, 0] == 1
    np.testing.assert_allclose(deltas[0, 0], 0.0, atol=1e-6)
    # The RoI spans pixels 4..12 exactly, sampled at 9 points: the crop itself.
    np.testing.assert_array_equal(out[0, 0], masks[0, 4:13, 4:13, 0].astype("float32"))
    # The original's crop_and_resize targets sample the same 9 pixel centres here.
    legacy = DetectionTargetLayer(2, 0.5, STD, (9, 9), use_mini_mask=False,
                                  pooling="crop_and_resize")
    out = np.asarray(legacy([props, ids, boxes, masks])[3])
    np.testing.assert_array_equal(out[0, 0], masks[0, 4:13, 4:13, 0].astype("float32"))


def _ellipses(rng, count, size):
    """Random filled ellipses [size, size, count] of 64..280 px boxes."""
    yy, xx = np.mgrid[:size, :size] + 0.5
    masks = np.zeros((size, size, count), bool)
    for i in range(count):
        ry, rx = rng.uniform(32, 140, 2)
        cy, cx = rng.uniform(ry, size - ry), rng.uniform(rx, size - rx)
        masks[:, :, i] = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    return masks


def _round_trip(pooling, use_mini_mask, count=24, size=300):
    """gt mask -> 28x28 target of its own box -> pasted back: (IoUs, area ratios)."""
    from mrcnn.structures.boxes import extract_bboxes
    from mrcnn.structures.coords import norm_boxes
    from mrcnn.structures.masks import minimize_mask
    from mrcnn.structures.interpolation import paste_masks
    rng = np.random.default_rng(7)
    gt = _ellipses(rng, count, size)
    px = extract_bboxes(gt)
    norm = norm_boxes(px, (size, size))
    stored = minimize_mask(px, gt, (56, 56)) if use_mini_mask else gt
    ious, ratios = [], []
    for i in range(count):
        layer = DetectionTargetLayer(1, 1.0, STD, (28, 28), use_mini_mask=use_mini_mask,
                                     pooling=pooling, image_shape=(size, size))
        target = np.asarray(layer([norm[None, i:i + 1], np.array([[1]], "int32"),
                                   norm[None, i:i + 1], stored[None, :, :, i:i + 1]])[3])[0, 0]
        back = paste_masks(target[None], px[i:i + 1], (size, size))[:, :, 0]
        inter = (back & gt[:, :, i]).sum()
        ious.append(inter / (back | gt[:, :, i]).sum())
        ratios.append(back.sum() / gt[:, :, i].sum())
    return np.array(ious), np.array(ratios)


@pytest.mark.parametrize("use_mini_mask", [False, True])
def test_mask_target_round_trip_is_pixel_exact_with_roi_align(use_mini_mask):
    """A gt mask, its 28x28 target for a RoI equal to its own box, pasted back:
    IoU >= 0.97 for boxes of 64 px and more, no systematic shrink or growth."""
    ious, ratios = _round_trip("roi_align", use_mini_mask)
    assert ious.min() >= 0.97, ious.min()
    assert abs(ratios.mean() - 1) <= 0.01, ratios.mean()


def test_legacy_mask_targets_shrink_the_masks():
    """The original's crop_and_resize targets sample edge to edge while pasting
    puts cells at bin centres: the pasted mask is systematically smaller (the
    reason the RoIAlign path pools targets with the features' geometry)."""
    _, ratios = _round_trip("crop_and_resize", False)
    assert ratios.mean() < 0.97, ratios.mean()


def test_gt_boxes_join_the_proposals_and_negatives_can_fill_the_rows():
    props, ids, boxes, masks = _batch()
    far = np.zeros_like(props)
    far[:, :3] = PROPOSALS[5:8]                        # negatives only
    plain = DetectionTargetLayer(8, 0.5, STD, (4, 4), image_shape=(64, 64))
    assert not (np.asarray(plain([far, ids, boxes, masks])[1]) > 0).any()
    layer = DetectionTargetLayer(8, 0.5, STD, (4, 4), image_shape=(64, 64),
                                 add_gt_boxes=True)
    rois, class_ids, deltas, _ = [np.asarray(o) for o in layer([far, ids, boxes, masks])]
    # The two non-crowd gt boxes become positives with zero deltas; crowd is not added.
    assert sorted(class_ids[0][class_ids[0] > 0].tolist()) == [3, 5]
    np.testing.assert_allclose(deltas[0, :2], 0, atol=1e-6)
    assert sorted(map(tuple, np.round(rois[0, :2], 5).tolist())) == \
        sorted(map(tuple, np.round(GT, 5).tolist()))
    # 1 positive + ratio 0.5 -> 1 negative; fill_negatives takes all 3 available.
    one = np.zeros_like(props)
    one[:, :4] = PROPOSALS[[0, 5, 6, 7]]
    counts = []
    for fill in (False, True):
        layer = DetectionTargetLayer(8, 0.5, STD, (4, 4), image_shape=(64, 64),
                                     fill_negatives=fill)
        out_rois, out_ids = [np.asarray(o) for o in layer([one, ids, boxes, masks])[:2]]
        real = out_rois[0].any(axis=1)
        counts.append((int((out_ids[0] > 0).sum()), int(real.sum())))
    assert counts == [(1, 2), (1, 4)]


def test_targets_hold_the_proposals_constant():
    """No gradient from the targets (box deltas, sampled RoIs) to the proposals."""
    import tensorflow as tf
    props, ids, boxes, masks = _batch()
    proposals = tf.Variable(props)
    layer = DetectionTargetLayer(8, 0.5, STD, (4, 4), use_mini_mask=True, image_shape=(64, 64))
    with tf.GradientTape() as tape:
        rois, class_ids, deltas, _ = layer([proposals, ids, boxes, masks])
        total = tf.reduce_sum(deltas) + tf.reduce_sum(rois)
    assert (np.asarray(class_ids) > 0).sum() == 4 and np.abs(np.asarray(deltas)).sum() > 0
    assert tape.gradient(total, proposals) is None


def test_config_roundtrip_and_validation():
    layer = DetectionTargetLayer(16, 0.25, STD, (6, 6), False)
    assert layer.name == "proposal_targets"
    clone = DetectionTargetLayer.from_config(layer.get_config())
    assert (clone.train_rois_per_image, clone.roi_positive_ratio, clone.mask_shape,
            clone.use_mini_mask) == (16, 0.25, (6, 6), False)
    layer = DetectionTargetLayer(16, 0.25, STD, (6, 6), True, pooling="crop_and_resize",
                                 image_shape=(64, 64, 3), add_gt_boxes=True,
                                 fill_negatives=True)
    clone = DetectionTargetLayer.from_config(layer.get_config())
    assert (clone.pooling, clone.image_shape, clone.add_gt_boxes, clone.fill_negatives) == \
        ("crop_and_resize", [64, 64], True, True)
    with pytest.raises(ValueError, match="roi_positive_ratio"):
        DetectionTargetLayer(16, 0.0)


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


def test_keypoint_targets_of_the_positives_follow_their_gt_rows():
    # gt rows: zero padding, a crowd box with its own keypoints, the real box:
    # the targets must come from the real box's keypoints (rows kept aligned
    # through the padding and crowd removal).
    from mrcnn.structures.keypoints import keypoint_targets

    image_hw, m = (64, 64), 8
    real = np.array([8.0, 8.0, 40.0, 40.0])
    ids = np.array([[0, -1, 1]], "int32")
    gt_px = np.array([[0, 0, 0, 0], [44, 44, 60, 60], real])
    boxes = npb.norm_boxes(gt_px, image_hw).astype("float32")[None]
    boxes[0, 0] = 0.0
    keypoints = np.zeros((1, 3, 4, 3), "float32")
    keypoints[0, 1] = [[50, 50, 2]] * 4                              # crowd: ignored
    keypoints[0, 2] = [[10.0, 12.0, 2], [39.9, 9.0, 1],              # inside (v = 1 counts)
                       [50.0, 50.0, 2], [20.0, 20.0, 0]]             # outside; unlabelled
    proposals = np.zeros((1, 4, 4), "float32")
    proposals[0, 0] = boxes[0, 2]                                    # the real box: positive
    proposals[0, 1] = npb.norm_boxes(np.array([0.0, 44, 6, 60]), image_hw)  # negative
    masks = np.ones((1, 8, 8, 3), bool)
    table = np.array([[False] * 4, [True, True, True, False]])       # class 1 lacks keypoint 3
    layer = DetectionTargetLayer(4, 0.5, STD, (8, 8), True, image_shape=image_hw,
                                 num_keypoints=4, keypoint_heatmap_size=m,
                                 keypoint_class_table=table)
    rois, class_ids, _, _, indices, valid = (np.asarray(t) for t in layer(
        [proposals, ids, boxes, masks, keypoints]))
    assert class_ids[0].tolist() == [1, 0, 0, 0]
    assert indices.dtype == np.int32 and valid.dtype == bool and valid.shape == (1, 4, 4)
    # (10, 12) in the 32 px box: column floor(2 / 4) = 0, row floor(4 / 4) = 1 -> 8;
    # (39.9, 9): column 7, row 0 -> 7.
    assert valid[0, 0].tolist() == [True, True, False, False]
    assert indices[0, 0].tolist() == [8, 7, 0, 0]
    assert not valid[0, 1:].any() and not indices[0, 1:].any()      # negatives, padding
    # The NumPy targets of the sampled RoI (in pixels) agree.
    roi_px = npb.denorm_boxes(rois[0, :1], image_hw)
    np_indices, np_valid = keypoint_targets(roi_px, keypoints[0, 2:], m, [1], table)
    assert np_indices.tolist() == indices[0, :1].tolist()
    assert np_valid.tolist() == valid[0, :1].tolist()
    # Without keypoints the layer keeps its four outputs and its config.
    plain = DetectionTargetLayer(4, 0.5, STD, (8, 8), True, image_shape=image_hw)
    assert len(plain([proposals, ids, boxes, masks])) == 4
    assert "num_keypoints" not in plain.get_config()
    assert layer.get_config()["num_keypoints"] == 4
