"""Tests of mrcnn.modeling.roi_heads.keypoint_head: the head's layers and geometry,
the graph targets and decoding against their NumPy twins, the loss."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mrcnn.modeling.roi_heads import keypoint_head as kh
from mrcnn.structures import keypoints as kp


def head_model(pool, channels, num_keypoints, num_convs, conv_channels, with_rois=False):
    pooled = keras.Input((pool, pool, channels))
    rois = keras.Input((None, 4)) if with_rois else None
    out = kh.build_keypoint_head_graph(pooled, num_keypoints, num_convs, conv_channels, rois)
    return keras.Model([pooled] + ([rois] if with_rois else []), out)


def test_head_layers_and_shapes():
    model = head_model(14, 8, 5, 8, 16)
    names = [layer.name for layer in model.layers]
    assert [n for n in names if n.startswith("mrcnn_kp_conv")] == \
        [f"mrcnn_kp_conv{i}" for i in range(1, 9)]
    assert model.get_layer("mrcnn_kp_conv1").kernel.shape == (3, 3, 8, 16)
    assert model.get_layer("mrcnn_kp_deconv").kernel.shape == (4, 4, 5, 16)
    out = model([np.random.default_rng(0).normal(size=(3, 14, 14, 8)).astype("float32")])
    assert out.shape == (3, 56, 56, 5) and out.dtype == tf.float32
    split = head_model(14, 8, 5, 2, 16, with_rois=True)
    out = split([np.zeros((6, 14, 14, 8), "float32"), np.zeros((2, 3, 4), "float32")])
    assert out.shape == (2, 3, 56, 56, 5)


def test_deconv_and_upsampling_keep_the_cell_geometry():
    """A one-hot coarse cell (row 5, column 9 of 14) comes out centred on that
    cell's centre in the 56 grid: continuous (4 * 9.5, 4 * 5.5) = (38, 22)."""
    model = head_model(14, 1, 1, 0, 1)
    deconv = model.get_layer("mrcnn_kp_deconv")
    deconv.set_weights([np.ones((4, 4, 1, 1), "float32"), np.zeros(1, "float32")])
    x = np.zeros((1, 14, 14, 1), "float32")
    x[0, 5, 9, 0] = 1.0
    out = np.asarray(model([x]))[0, :, :, 0]
    ys, xs = np.mgrid[:56, :56] + 0.5
    assert (xs * out).sum() / out.sum() == pytest.approx(38.0, abs=1e-5)
    assert (ys * out).sum() / out.sum() == pytest.approx(22.0, abs=1e-5)


def random_case(seed, r=30, k=6):
    rng = np.random.default_rng(seed)
    y1, x1 = rng.uniform(0, 50, (2, r))
    h, w = rng.uniform(0, 40, (2, r))
    h[0] = 0.0                                       # a zero-height RoI
    rois = np.stack([y1, x1, y1 + h, x1 + w], 1).astype(np.float32)
    # Mostly inside their RoI, some outside.
    px = x1[:, None] + rng.uniform(-0.2, 1.2, (r, k)) * w[:, None]
    py = y1[:, None] + rng.uniform(-0.2, 1.2, (r, k)) * h[:, None]
    points = np.stack([px, py, rng.integers(0, 3, (r, k))], -1).astype(np.float32)
    points[1, 0, :2] = rois[1, [3, 0]]                 # on the right edge
    points[1, 1, :2] = rois[1, [1, 2]]                 # on the bottom edge
    points[1, 2, :2] = rois[1, [1, 0]]                 # the top-left corner
    points[1, :3, 2] = 2
    return rois, points, rng.integers(-1, 4, r)


@pytest.mark.parametrize("seed", [0, 1])
def test_graph_targets_equal_numpy(seed):
    rois, points, class_ids = random_case(seed)
    table = kp.keypoint_class_table(4, 6, {1: [0, 1, 2], 3: [3, 4]})
    for ids, tab in ((None, None), (class_ids, table)):
        want = kp.keypoint_targets(rois, points, 56, ids, tab)
        got = kh.keypoint_targets_graph(rois, points, 56, ids, tab)
        np.testing.assert_array_equal(np.asarray(got[1]), want[1])
        np.testing.assert_array_equal(np.asarray(got[0]), want[0])
    assert want[1].any() and not want[1].all()
    plain = kp.keypoint_targets(rois, points, 56)[1]
    assert plain[1, :3].tolist() == [False, False, True]


def test_roi_targets_convert_normalised_rois_and_gather_the_gt():
    from mrcnn.structures.coords import norm_boxes
    image_hw = (64, 64)
    gt = np.array([[[10.0, 10.0, 2]], [[40.5, 30.25, 2]]], np.float32)
    rois = np.array([[28, 36, 36, 44], [8, 8, 16, 16]], np.float32)   # pixel boxes
    idx, valid = kh.roi_keypoint_targets_graph(gt, [1, 0], norm_boxes(rois, image_hw),
                                               [1, 1], image_hw, 8)
    assert np.asarray(valid).tolist() == [[True], [True]]
    # (40.5 - 36) / 1 px -> column 4; (30.25 - 28) -> row 2; (10 - 8) -> row 2, column 2.
    assert np.asarray(idx).tolist() == [[2 * 8 + 4], [2 * 8 + 2]]


def test_roi_targets_with_expanded_rois_reach_keypoints_past_the_box():
    # KEYPOINT_ROI_EXPAND: the targets cover the RoI scaled about its centre, the
    # cells of `keypoint_targets` on the scaled pixel box.
    from mrcnn.structures.boxes import scale_boxes
    from mrcnn.structures.coords import norm_boxes
    image_hw = (64, 64)
    rois = np.array([[20, 20, 36, 36]], np.float32)               # 16 x 16 px
    gt = np.array([[[19.5, 20.5, 2], [36.5, 35.0, 2], [44.5, 28.0, 2]]], np.float32)
    args = (gt, [0], norm_boxes(rois, image_hw), [1], image_hw, 8)
    _, plain = kh.roi_keypoint_targets_graph(*args)
    assert np.asarray(plain).tolist() == [[False, False, False]]      # all outside the RoI
    idx, valid = kh.roi_keypoint_targets_graph(*args, roi_expand=1.5)  # [16, 16, 40, 40)
    assert np.asarray(valid).tolist() == [[True, True, False]]
    # (19.5 - 16) / 3 px -> column 1, (20.5 - 16) / 3 -> row 1; (36.5 - 16) / 3 -> 6, row 6.
    assert np.asarray(idx).tolist() == [[1 * 8 + 1, 6 * 8 + 6, 0]]
    want = kp.keypoint_targets(scale_boxes(rois, 1.5), gt, 8)
    np.testing.assert_array_equal(np.asarray(idx), want[0])


def test_loss_hand_value_and_normaliser():
    logits = np.zeros((1, 2, 2, 2, 2), np.float32)          # [B=1, R=2, m=2, m=2, K=2]
    logits[0, 0, :, :, 0] = [[1.0, 2.0], [3.0, 4.0]]
    logits[0, 1, :, :, 1] = [[0.0, 0.0], [0.0, 5.0]]
    indices = np.array([[[2, 3], [1, 3]]])
    valid = np.array([[[True, False], [False, True]]])
    e = np.exp([1.0, 2.0, 3.0, 4.0])
    first = -np.log(e[2] / e.sum())
    second = -np.log(np.exp(5.0) / (3 + np.exp(5.0)))
    loss = kh.mrcnn_keypoint_loss(indices, valid, logits)
    assert float(loss) == pytest.approx((first + second) / 2, rel=1e-6)
    fixed = kh.mrcnn_keypoint_loss(indices, valid, logits, normalizer=8)
    assert float(fixed) == pytest.approx((first + second) / 8, rel=1e-6)


def test_loss_without_valid_keypoints_is_zero_with_finite_gradient():
    logits = tf.Variable(np.random.default_rng(0).normal(size=(2, 3, 4, 4, 2)) * 50,
                         dtype=tf.float32)
    indices = np.full((2, 3, 2), -7)                        # garbage where invalid
    with tf.GradientTape() as tape:
        loss = kh.mrcnn_keypoint_loss(indices, np.zeros((2, 3, 2), bool), logits)
    grad = tape.gradient(loss, logits)
    assert float(loss) == 0.0
    assert np.isfinite(np.asarray(grad)).all() and not np.asarray(grad).any()


def test_loss_gradient_pulls_the_target_cell_up():
    logits = tf.Variable(np.zeros((1, 4, 4, 1), np.float32))
    with tf.GradientTape() as tape:
        loss = kh.mrcnn_keypoint_loss([[5]], [[True]], logits)
    grad = np.asarray(tape.gradient(loss, logits))[0, :, :, 0]
    assert float(loss) == pytest.approx(np.log(16.0))
    assert grad[1, 1] == pytest.approx(1 / 16 - 1) and grad[0, 0] == pytest.approx(1 / 16)


def test_graph_decode_equals_numpy():
    rng = np.random.default_rng(4)
    heat = rng.normal(size=(5, 12, 12, 3)).astype(np.float32) * 3
    heat[0, 0, 0, 0] = 40.0                   # a corner peak
    heat[1, 11, 6, 1] = 40.0                  # bottom-edge peak
    rois = np.array([[0, 0, 12, 12], [10, 20, 34, 30], [3, 3, 4, 4], [5, 1, 50, 60],
                     [0.5, 0.25, 7.5, 9.75]], np.float32)
    want = kp.decode_heatmaps(heat, rois)
    got = np.asarray(kh.decode_heatmaps_graph(heat, rois))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert want[0, 0, :2] == pytest.approx((0.5, 0.5))
    assert want[1, 1, 1] == pytest.approx(10 + 11.5 * 2)


def test_detection_keypoints_are_in_input_image_pixels():
    from mrcnn.structures.coords import norm_boxes
    heat = np.full((1, 4, 4, 1), -9.0, np.float32)
    heat[0, 1, 2, 0] = 9.0
    box = np.array([[16, 8, 32, 24]], np.float32)         # 4 px cells
    out = np.asarray(kh.detection_keypoints_graph(heat, norm_boxes(box, (64, 64)), (64, 64)))
    assert out[0, 0, :2] == pytest.approx((8 + 2.5 * 4, 16 + 1.5 * 4), abs=1e-4)
