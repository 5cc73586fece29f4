"""Tests for mrcnn.structures.keypoints: transforms against the image resize, flips,
targets on hand cases, decoding and OKS."""

import numpy as np
import pytest

from mrcnn.structures import keypoints as kp
from mrcnn.structures.images import resize_image


def blob_image(h, w, x0, y0, sigma=2.0):
    """A float Gaussian blob centred at the continuous position (x0, y0)."""
    xs = np.arange(w) + 0.5
    ys = np.arange(h) + 0.5
    return np.exp(-((xs[None, :] - x0) ** 2 + (ys[:, None] - y0) ** 2) / (2 * sigma ** 2))


def centroid(image):
    """Intensity centroid (x, y) in continuous pixels (pixel centres at i + 0.5)."""
    image = np.asarray(image, dtype=np.float64)
    ys, xs = np.mgrid[:image.shape[0], :image.shape[1]] + 0.5
    return (xs * image).sum() / image.sum(), (ys * image).sum() / image.sum()


@pytest.mark.parametrize("mode, kwargs", [
    ("square", {"min_dim": 50, "max_dim": 64}),      # scale 64/37, padded left and right
    ("pad64", {"min_dim": 40}),                        # scale up, padded to multiples of 64
    ("crop", {"min_dim": 64}),                         # scale up, random crop
])
def test_resize_keypoints_follows_the_image(mode, kwargs):
    h, w, x0, y0 = 37, 29, 13.3, 20.7
    image = (blob_image(h, w, x0, y0) * 10000)[..., None]
    resized, window, scale, padding, crop = resize_image(
        image, mode=mode, rng=np.random.default_rng(3), **kwargs)
    points = np.array([[[x0, y0, 2], [5.0, 5.0, 1], [0, 0, 0]]], np.float32)
    moved = kp.resize_keypoints(points, image.shape, scale, padding, crop)
    cx, cy = centroid(resized[..., 0])
    assert moved[0, 0, :2] == pytest.approx((cx, cy), abs=0.03)
    assert moved[0, 0, 2] == 2
    fx, fy = round(w * scale) / w, round(h * scale) / h
    if crop is None:
        assert moved[0, 1, :2] == pytest.approx((5 * fx + padding[1][0], 5 * fy + padding[0][0]))
        assert moved[0, 1, 2] == 1
    assert (moved[0, 2] == 0).all()                   # unlabelled stays zeros


def test_crop_drops_keypoints_outside_it():
    image = np.zeros((100, 100, 1), np.float32)
    _, _, scale, padding, crop = resize_image(image, min_dim=64, mode="crop",
                                              rng=np.random.default_rng(0))
    y, x = crop[:2]
    points = np.array([[[x + 1.0, y + 2.0, 2], [x - 0.5, y + 3.0, 2], [x + 64.0, y, 1],
                        [x + 63.9, y + 63.9, 1]]], np.float32)
    moved = kp.resize_keypoints(points, image.shape, scale, padding, crop)
    assert scale == 1 and moved[0, 0] == pytest.approx((1.0, 2.0, 2))
    assert (moved[0, 1] == 0).all() and (moved[0, 2] == 0).all()  # left of / on the right edge
    assert moved[0, 3] == pytest.approx((63.9, 63.9, 1))


def test_unmold_keypoints_inverts_the_square_resize():
    image = np.zeros((30, 48, 3), np.uint8)
    _, window, scale, padding, crop = resize_image(image, min_dim=64, max_dim=64)
    points = np.array([[[10.25, 3.5, 2], [47.0, 29.0, 2]]], np.float32)
    moved = kp.resize_keypoints(points, image.shape, scale, padding, crop)
    back = kp.unmold_keypoints(moved, image.shape, window)
    assert back[..., :2] == pytest.approx(points[..., :2], abs=1e-4)


def test_flip_swaps_left_and_right_and_mirrors_x():
    names = ("nose", "left_eye", "right_eye")
    perm = kp.flip_permutation((("left_eye", "right_eye"),), 3, names)
    assert perm.tolist() == [0, 2, 1]
    assert kp.flip_permutation(((1, 2),), 3).tolist() == [0, 2, 1]
    points = np.array([[[10.5, 4.0, 2], [3.0, 2.0, 2], [17.0, 2.0, 1]],
                       [[0, 0, 0], [1.0, 1.0, 2], [0, 0, 0]]], np.float32)
    flipped = kp.flip_keypoints_horizontal(points, 20, perm)
    # x -> 20 - x; the flipped left eye is the original right eye.
    assert flipped[0].tolist() == [[9.5, 4.0, 2], [3.0, 2.0, 1], [17.0, 2.0, 2]]
    assert flipped[1].tolist() == [[0, 0, 0], [0, 0, 0], [19.0, 1.0, 2]]
    # A pixel's centre goes to the mirrored pixel's centre (image[:, ::-1]).
    image = np.zeros((5, 20), bool)
    image[2, 6] = True
    centre = np.array([[[6.5, 2.5, 2]]], np.float32)
    x = kp.flip_keypoints_horizontal(centre, 20, [0])[0, 0, 0]
    assert image[:, ::-1][2, int(np.floor(x))]
    # Twice is the identity.
    assert np.array_equal(kp.flip_keypoints_horizontal(flipped, 20, perm), points)
    with pytest.raises(ValueError, match="two pairs"):
        kp.flip_permutation(((0, 1), (1, 2)), 3)
    with pytest.raises(ValueError, match="unknown keypoint name 'ear'"):
        kp.flip_permutation((("ear", "nose"),), 3, names)


def test_targets_on_hand_cases():
    # RoI x in [10, 18), y in [20, 28): m = 4 cells of 2 px.
    rois = np.array([[20, 10, 28, 18]], np.float32)
    points = np.array([[
        [10.0, 20.0, 2],    # top-left corner: cell (0, 0)
        [13.99, 25.0, 2],   # just left of the x edge 14: column 1; y 25 -> row 2
        [14.0, 26.0, 1],    # on a bin edge: the right cell (column 2), row 3; v=1 counts
        [18.0, 21.0, 2],    # on the right edge: outside
        [11.0, 28.0, 2],    # on the bottom edge: outside
        [9.99, 21.0, 2],    # left of the RoI
        [12.0, 22.0, 0],    # inside but not labelled
        [17.999, 27.999, 2],  # last cell
    ]], np.float32)
    index, valid = kp.keypoint_targets(rois, points, 4)
    assert valid.tolist() == [[True, True, True, False, False, False, False, True]]
    assert index.tolist() == [[0, 2 * 4 + 1, 3 * 4 + 2, 0, 0, 0, 0, 15]]
    # A zero-width RoI has no valid keypoint (and no division warning).
    index, valid = kp.keypoint_targets([[0, 5, 10, 5]], [[[5.0, 2.0, 2]]], 4)
    assert not valid.any() and index.tolist() == [[0]]


def test_class_table_and_targets_of_classes_without_keypoints():
    table = kp.keypoint_class_table(4, 3, {1: ("a", "b"), 3: [2]}, ("a", "b", "c"))
    assert table.tolist() == [[False] * 3, [True, True, False], [False] * 3,
                              [False, False, True]]
    shared = kp.keypoint_class_table(3, 2)
    assert shared.tolist() == [[False, False], [True, True], [True, True]]
    rois = np.array([[0, 0, 8, 8]] * 4, np.float32)
    points = np.tile(np.array([[[1.0, 1.0, 2], [2.0, 2.0, 2], [3.0, 3.0, 2]]], np.float32),
                     (4, 1, 1))
    _, valid = kp.keypoint_targets(rois, points, 4, class_ids=[1, 2, 3, -1],
                                   class_table=table)
    assert valid.tolist() == [[True, True, False], [False] * 3, [False, False, True],
                              [False] * 3]
    with pytest.raises(ValueError, match=r"class ids must be integers in \[1, 4\)"):
        kp.keypoint_class_table(4, 3, {4: [0]})
    with pytest.raises(ValueError, match=r"KEYPOINT_CLASSES\[1\]: unknown keypoint name"):
        kp.keypoint_class_table(4, 3, {1: ["z"]}, ("a", "b", "c"))


def test_decode_one_hot_heatmap_gives_the_cell_centre():
    m = 8
    heat = np.full((1, m, m, 2), -5.0, np.float32)
    heat[0, 3, 6, 0] = 5.0     # cell row 3, column 6
    heat[0, 0, 0, 1] = 5.0     # a corner cell
    rois = np.array([[100, 40, 116, 56]], np.float32)   # 16 px: cells of 2 px
    out = kp.decode_heatmaps(heat, rois)
    assert out[0, 0, :2] == pytest.approx((40 + 6.5 * 2, 100 + 3.5 * 2))
    assert out[0, 1, :2] == pytest.approx((41.0, 101.0))
    p = np.exp(10.0) / (np.exp(10.0) + m * m - 1)        # softmax of one 10-higher logit
    assert out[0, :, 2] == pytest.approx((p, p), rel=1e-5)


def test_decode_targets_round_trip_and_sub_cell_refinement():
    m = 16
    rois = np.array([[3.0, 7.0, 35.0, 39.0]], np.float32)   # 32 px: 2 px per cell
    x0, y0 = 20.8, 11.3
    # Logits of a Gaussian centred at (x0, y0): a parabola, so the fit is exact.
    centres = 7.0 + (np.arange(m) + 0.5) * 2.0
    rows = 3.0 + (np.arange(m) + 0.5) * 2.0
    logits = -((centres[None, :] - x0) ** 2 + (rows[:, None] - y0) ** 2) / (2 * 3.0 ** 2)
    out = kp.decode_heatmaps(logits[None, :, :, None], rois)
    assert out[0, 0, :2] == pytest.approx((x0, y0), abs=1e-4)
    decoded = np.concatenate([out[:, :, :2], [[[2.0]]]], axis=-1)
    index, valid = kp.keypoint_targets(rois, decoded, m)
    assert valid.all() and index[0, 0] == int((y0 - 3) // 2) * m + int((x0 - 7) // 2)
    assert kp.refine_peak_offsets(1.0, 1.0, 1.0) == 0.0          # flat: no shift
    assert kp.refine_peak_offsets(0.0, 1.0, 0.5) == pytest.approx(1 / 6)


def test_oks_matches_the_formula():
    gt = np.array([[10.0, 10.0, 2], [20.0, 10.0, 1], [0, 0, 0]])
    sigmas = np.array([0.1, 0.2, 0.3])
    pred = gt.copy()
    pred[:, 0] += 3.0
    area = 400.0
    expected = np.mean([np.exp(-9 / (2 * area * (2 * s) ** 2)) for s in sigmas[:2]])
    assert kp.oks(gt, pred, area, sigmas) == pytest.approx(expected)
    assert kp.oks(gt, np.stack([gt, pred]), area, sigmas) == pytest.approx([1.0, expected])
    assert kp.oks_sigmas(17)[0] == pytest.approx(0.026)
    with pytest.raises(ValueError, match="KEYPOINT_OKS_SIGMAS: needed for 3 keypoints"):
        kp.oks_sigmas(3)


def test_check_keypoints_names_what_is_wrong():
    assert kp.check_keypoints([[[1, 2, 2]]]).dtype == np.float32
    with pytest.raises(ValueError, match=r"img 3: expected keypoints \[N, K, 3\]"):
        kp.check_keypoints(np.zeros((2, 3)), where="img 3")
    with pytest.raises(ValueError, match="2 keypoint rows for 3 instances"):
        kp.check_keypoints(np.zeros((2, 1, 3)), num_instances=3)
    with pytest.raises(ValueError, match=r"must be 0, 1 or 2, got \[3.0\]"):
        kp.check_keypoints([[[1, 2, 3]]])
