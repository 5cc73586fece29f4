"""Tests for mrcnn.structures.boxes: hand-computed values and hypothesis properties."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mrcnn.structures import boxes as B


# ---------------------------------------------------------------- strategies
@st.composite
def pixel_box(draw, max_coord=200, min_size=1):
    y1 = draw(st.integers(0, max_coord))
    x1 = draw(st.integers(0, max_coord))
    h = draw(st.integers(min_size, 100))
    w = draw(st.integers(min_size, 100))
    return [y1, x1, y1 + h, x1 + w]


box_lists = st.lists(pixel_box(), min_size=1, max_size=6)


# ---------------------------------------------------------------- extract_bboxes
def test_extract_bboxes_rectangle_and_empty():
    mask = np.zeros((10, 12, 3), dtype=bool)
    mask[2:5, 3:7, 0] = True          # rows 2..4, cols 3..6
    mask[0, 11, 2] = True             # a single pixel in the corner
    mask[9, 0, 2] = True
    boxes = B.extract_bboxes(mask)
    assert boxes.dtype == np.int32
    np.testing.assert_array_equal(boxes, [[2, 3, 5, 7], [0, 0, 0, 0], [0, 0, 10, 12]])


def test_extract_bboxes_rejects_2d():
    with pytest.raises(ValueError, match=r"\[H, W, N\]"):
        B.extract_bboxes(np.zeros((4, 4), bool))


# ---------------------------------------------------------------- IoU
def test_compute_overlaps_hand_values():
    a = [[0, 0, 10, 10]]
    b = [[0, 0, 10, 10], [5, 5, 15, 15], [20, 20, 30, 30], [0, 0, 5, 10]]
    iou = B.compute_overlaps(a, b)
    # [5,5,15,15]: intersection 5*5=25, union 100+100-25=175
    np.testing.assert_allclose(iou, [[1.0, 25 / 175, 0.0, 0.5]])
    assert iou.shape == (1, 4)


def test_compute_iou_matches_overlaps():
    box = np.array([0, 0, 10, 10])
    boxes = np.array([[5, 5, 15, 15], [0, 5, 10, 20]])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    iou = B.compute_iou(box, boxes, 100, areas)
    # second: intersection 10*5=50, union 100+150-50=200
    np.testing.assert_allclose(iou, [25 / 175, 0.25])


def test_compute_overlaps_degenerate_boxes_give_zero():
    iou = B.compute_overlaps([[3, 3, 3, 3]], [[3, 3, 3, 3], [0, 0, 5, 5]])
    np.testing.assert_array_equal(iou, [[0.0, 0.0]])
    assert B.compute_overlaps(np.zeros((0, 4)), [[0, 0, 1, 1]]).shape == (0, 1)


@settings(max_examples=40, deadline=None)
@given(box_lists, box_lists)
def test_compute_overlaps_symmetric_and_bounded(b1, b2):
    iou = B.compute_overlaps(b1, b2)
    assert iou.shape == (len(b1), len(b2))
    np.testing.assert_allclose(iou, B.compute_overlaps(b2, b1).T)
    assert np.all(iou >= 0) and np.all(iou <= 1)
    np.testing.assert_allclose(np.diag(B.compute_overlaps(b1, b1)), 1.0)


@settings(max_examples=40, deadline=None)
@given(box_lists, box_lists)
def test_box_iou_equals_mask_iou_for_rectangles(b1, b2):
    shape = (310, 310)

    def draw(bs):
        m = np.zeros(shape + (len(bs),), bool)
        for i, (y1, x1, y2, x2) in enumerate(bs):
            m[y1:y2, x1:x2, i] = True
        return m
    np.testing.assert_allclose(B.compute_overlaps_masks(draw(b1), draw(b2)),
                               B.compute_overlaps(b1, b2), atol=1e-12)


def test_compute_overlaps_masks_hand_values_and_empty():
    m1 = np.zeros((4, 4, 2), bool)
    m1[0:2, 0:2, 0] = True            # 4 px
    m2 = np.zeros((4, 4, 2), bool)
    m2[0:2, 0:4, 0] = True            # 8 px, contains m1[..., 0]
    m2[3, 3, 1] = True                # disjoint single pixel
    iou = B.compute_overlaps_masks(m1, m2)
    # m1[...,1] is empty: IoU 0 everywhere (and no NaN)
    np.testing.assert_allclose(iou, [[0.5, 0.0], [0.0, 0.0]])
    assert B.compute_overlaps_masks(m1, np.zeros((4, 4, 0), bool)).shape == (2, 0)
    assert B.compute_overlaps_masks(np.zeros((4, 4, 0), bool), m2).shape == (0, 2)
    with pytest.raises(ValueError):
        B.compute_overlaps_masks(m1, np.zeros((5, 4, 1), bool))


# ---------------------------------------------------------------- NMS
def test_non_max_suppression_hand_example():
    boxes = np.array([[0, 0, 10, 10],     # score .9 kept
                      [1, 1, 11, 11],     # IoU 81/119=.68 with 0 -> dropped at .5
                      [20, 20, 30, 30],   # disjoint, kept
                      [0, 0, 10, 9]])     # IoU .9 with 0 -> dropped
    scores = np.array([0.9, 0.8, 0.3, 0.95])
    keep = B.non_max_suppression(boxes, scores, 0.5)
    assert keep.dtype == np.int32
    # box 3 has the top score: it suppresses 0 (IoU 90/100=.9) and 1 (IoU 72/118=.61)
    np.testing.assert_array_equal(keep, [3, 2])
    # at 0.7 box 1 survives (IoU .61 with 3; box 0, IoU .68, was already dropped)
    np.testing.assert_array_equal(B.non_max_suppression(boxes, scores, 0.7), [3, 1, 2])
    assert B.non_max_suppression(np.zeros((0, 4)), np.zeros(0), 0.5).shape == (0,)


@settings(max_examples=40, deadline=None)
@given(box_lists, st.floats(0.05, 0.95))
def test_nms_properties(bs, thr):
    bs = np.array(bs, float)
    scores = np.linspace(1, 0, len(bs))[np.random.default_rng(0).permutation(len(bs))]
    keep = B.non_max_suppression(bs, scores, thr)
    assert np.all(np.diff(scores[keep]) <= 0)             # descending score order
    assert keep[0] == np.argmax(scores)
    iou = B.compute_overlaps(bs[keep], bs[keep])
    np.fill_diagonal(iou, 0)
    assert np.all(iou <= thr)                             # kept boxes do not overlap
    dropped = np.setdiff1d(np.arange(len(bs)), keep)
    if dropped.size:                                     # every drop has a cause
        assert np.all(B.compute_overlaps(bs[dropped], bs[keep]).max(axis=1) > thr)


# ---------------------------------------------------------------- deltas
def test_box_refinement_hand_values():
    box = np.array([[0, 0, 10, 20]])      # h 10, w 20, centre (5, 10)
    gt = np.array([[5, 0, 25, 10]])       # h 20, w 10, centre (15, 5)
    d = B.box_refinement(box, gt)
    assert d.dtype == np.float32
    np.testing.assert_allclose(d, [[1.0, -0.25, np.log(2), np.log(0.5)]], rtol=1e-6)
    np.testing.assert_allclose(B.apply_box_deltas(box, d), gt, atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(pixel_box(), pixel_box()), min_size=1, max_size=5))
def test_apply_box_deltas_inverts_box_refinement(pairs):
    a = np.array([p[0] for p in pairs], float)
    b = np.array([p[1] for p in pairs], float)
    # float32 deltas: relative precision ~1e-7 of box sizes up to a few hundred px
    np.testing.assert_allclose(B.apply_box_deltas(a, B.box_refinement(a, b)), b, atol=1e-3)


# ---------------------------------------------------------------- norm / denorm
def test_norm_boxes_legacy_convention():
    shape = (101, 201, 3)                 # scale [100, 200, 100, 200]
    n = B.norm_boxes(np.array([[0, 0, 101, 201], [10, 20, 51, 101]]), shape)
    np.testing.assert_allclose(n, [[0, 0, 1, 1], [0.1, 0.1, 0.5, 0.5]], rtol=1e-6)
    np.testing.assert_array_equal(B.denorm_boxes(n, shape), [[0, 0, 101, 201],
                                                             [10, 20, 51, 101]])
    assert B.denorm_boxes(n, shape).dtype == np.int32


@settings(max_examples=40, deadline=None)
@given(st.lists(pixel_box(max_coord=300), min_size=1, max_size=5),
       st.integers(2, 1500), st.integers(2, 1500))
def test_norm_denorm_round_trip(bs, h, w):
    bs = np.array(bs)
    np.testing.assert_array_equal(B.denorm_boxes(B.norm_boxes(bs, (h, w)), (h, w)), bs)


def test_scale_boxes_about_the_centre_and_of_normalised_boxes_in_pixels():
    from mrcnn.structures.boxes import scale_boxes
    from mrcnn.structures.coords import norm_boxes, norm_to_pixels, scale_norm_boxes_graph
    boxes = np.array([[10, 20, 30, 60], [0, 0, 0, 0]], np.float32)
    out = scale_boxes(boxes, 1.5)
    # centre (20, 40), size 20 x 40 -> 30 x 60.
    np.testing.assert_allclose(out, [[5, 10, 35, 70], [0, 0, 0, 0]])
    assert out.dtype == np.float32
    np.testing.assert_array_equal(scale_boxes(boxes, 1.0), boxes)
    # Legacy-normalised boxes are scaled in pixels (their ends shift differently, so
    # scaling the normalised numbers would scale size - 1); padding stays zeros.
    shape = (64, 96)
    normed = norm_boxes(boxes, shape).astype(np.float32)
    normed[1] = 0.0
    got = np.asarray(scale_norm_boxes_graph(normed, 1.5, shape))
    np.testing.assert_allclose(norm_to_pixels(got[:1], shape), out[:1], atol=1e-4)
    assert not got[1].any()
    naive = norm_to_pixels(scale_boxes(normed[:1], 1.5), shape)
    assert np.abs(naive - out[:1]).max() > 0.2
