"""Tests of PyramidROIAlign: level assignment in pixels, routing, order, pooling maths
(RoIAlign avg / max, crop_and_resize, RoIPool, RoIWarp), the mask targets each
method trains with, and a training step of a tiny model with each."""

import numpy as np
import pytest
import tensorflow as tf

from model_fixtures import RectanglesDataset, TinyConfig
from mrcnn.constants import POOLING_METHODS
from mrcnn.structures.coords import norm_boxes
from mrcnn.structures.image_meta import compose_image_meta
from mrcnn.modeling.roi_heads.poolers import PyramidROIAlign
from mrcnn.modeling.roi_heads.poolers import permute_rows, roi_levels_graph
from mrcnn.ops import roi_align, roi_pool, roi_warp

SIZE = 512


def _norm(pixel_boxes, size=SIZE):
    """Pixel boxes normalised as the graph does it (NormalizeBoxes, the legacy rule)."""
    return norm_boxes(np.asarray(pixel_boxes, "float32"), (size, size))


def _meta(batch, size=SIZE):
    return np.stack([compose_image_meta(i, (size, size, 3), (size, size, 3),
                                        (0, 0, size, size), 1.0, [1, 1]) for i in range(batch)])


def test_level_assignment_uses_pixels():
    boxes = _norm([[0, 0, 224, 224], [100, 100, 212, 212], [10, 10, 20, 20],
                   [0, 0, 500, 500], [0, 0, 0, 0], [0, 0, 316, 318], [0, 0, 320, 320]])
    levels = np.asarray(roi_levels_graph(boxes, [SIZE, SIZE]))
    # 224 -> P4, 112 -> P3, tiny -> P2, huge -> P5, empty -> P2, 317 and 320
    # (< 224*sqrt2 = 316.8 * ... floor) -> P4.
    np.testing.assert_array_equal(levels, [4, 3, 2, 5, 2, 4, 4])
    # The rule measures pixels: the same 112 px box in a twice larger image stays
    # on P3, a box twice its size goes one level up.
    big = _norm([[100, 100, 212, 212], [100, 100, 324, 324]], 2 * SIZE)
    np.testing.assert_array_equal(
        np.asarray(roi_levels_graph(big, [2 * SIZE, 2 * SIZE])), [3, 4])
    # The legacy rule rounds the normalised size times the image size: the
    # 320 px box measures 319 * 512 / 511 = 319.6 -> log2(319.6 / 224) = 0.51 -> P5.
    assert int(np.asarray(roi_levels_graph(boxes[6:7], [SIZE, SIZE], "round"))[0]) == 5


def test_roi_align_receives_the_exact_pixel_box():
    """At 1024 px the box [100, 100, 324, 324) must reach the op as exactly that
    (the old conversion, norm * size, gave [100.10, 100.10, 323.32, 323.32])."""
    from mrcnn.structures.coords import box_sizes_px_graph, roi_align_boxes_graph
    norm = _norm([[100, 100, 324, 324]], 1024)
    np.testing.assert_allclose(np.asarray(roi_align_boxes_graph(norm, [1024., 1024.])),
                               [[100, 100, 324, 324]], atol=2e-4)
    h, w = box_sizes_px_graph(norm, [1024., 1024.])
    np.testing.assert_allclose([float(h[0]), float(w[0])], [224, 224], atol=2e-4)
    # And the pooled features are those of that box on P4 (stride 16).
    rng = np.random.default_rng(5)
    fmaps = [rng.normal(size=(1, 1024 // s, 1024 // s, 2)).astype("float32")
             for s in (4, 8, 16, 32)]
    layer = PyramidROIAlign((7, 7), method="roi_align", sampling_ratio=2, aligned=True)
    out = np.asarray(layer([norm[None], _meta(1, 1024)] + fmaps))[0]
    expected = roi_align(fmaps[2], np.array([[100, 100, 324, 324]], "float32"),
                         np.array([0], "int32"), (7, 7), spatial_scale=1 / 16)
    np.testing.assert_allclose(out, np.asarray(expected), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", POOLING_METHODS)
def test_routing_and_order_preserved(method):
    """Level l's map is filled with l; each RoI must pool its own level's value."""
    fmaps = [np.full((2, SIZE // s, SIZE // s, 3), float(level), "float32")
             for level, s in zip((2, 3, 4, 5), (4, 8, 16, 32))]
    rois = np.stack([_norm([[0, 0, 224, 224], [10, 10, 20, 20], [0, 0, 500, 500],
                            [100, 100, 212, 212]]),
                     _norm([[0, 0, 500, 500], [100, 100, 212, 212], [0, 0, 224, 224],
                            [10, 10, 20, 20]])])
    layer = PyramidROIAlign((3, 3), method=method, name="roi_align_test")
    out = np.asarray(layer([rois, _meta(2)] + fmaps))
    assert out.shape == (2, 4, 3, 3, 3)
    np.testing.assert_allclose(out[..., 0].mean(axis=(2, 3)), [[4, 2, 5, 3], [5, 3, 4, 2]],
                               rtol=1e-6)


def test_roi_align_values_and_batch_index():
    rng = np.random.default_rng(0)
    fmaps = [rng.normal(size=(2, SIZE // s, SIZE // s, 4)).astype("float32")
             for s in (4, 8, 16, 32)]
    px = np.array([[40, 60, 152, 172]], "float32")          # 112 px -> P3 (stride 8)
    rois = np.stack([_norm(px), _norm(px)])
    layer = PyramidROIAlign((5, 5), method="roi_align", sampling_ratio=2, aligned=True)
    out = np.asarray(layer([rois, _meta(2)] + fmaps))
    for b in range(2):
        expected = roi_align(fmaps[1], px, np.array([b], "int32"), (5, 5),
                             spatial_scale=1 / 8, sampling_ratio=2, aligned=True)
        np.testing.assert_allclose(out[b, 0], np.asarray(expected)[0], rtol=1e-5, atol=1e-6)
    assert not np.allclose(out[0], out[1])


def test_crop_and_resize_matches_tf_op():
    rng = np.random.default_rng(1)
    fmaps = [rng.normal(size=(1, SIZE // s, SIZE // s, 2)).astype("float32")
             for s in (4, 8, 16, 32)]
    roi = _norm([[0, 0, 224, 224]])                        # P4
    layer = PyramidROIAlign((4, 4), method="crop_and_resize")
    out = np.asarray(layer([roi[None], _meta(1)] + fmaps))
    expected = tf.image.crop_and_resize(fmaps[2], roi, [0], (4, 4))
    np.testing.assert_allclose(out[0], np.asarray(expected), rtol=1e-5)


def test_quantised_methods_use_the_pixel_level_rule():
    """A 317 px box is P4 by the FPN rule (floor), P5 by the legacy one (round):
    only crop_and_resize takes the legacy rule."""
    fmaps = [np.full((1, SIZE // s, SIZE // s, 1), float(level), "float32")
             for level, s in zip((2, 3, 4, 5), (4, 8, 16, 32))]
    rois = _norm([[0, 0, 320, 320]])[None]
    for method in POOLING_METHODS:
        out = np.asarray(PyramidROIAlign((2, 2), method=method)([rois, _meta(1)] + fmaps))
        np.testing.assert_allclose(out, 5.0 if method == "crop_and_resize" else 4.0,
                                   err_msg=method)


@pytest.mark.parametrize("method,aggregation", [("roi_align", "max"), ("roi_warp", "avg"),
                                                ("roi_warp", "max"), ("roi_pool", "avg")])
def test_layer_pools_with_the_ops_on_exact_pixel_boxes(method, aggregation):
    rng = np.random.default_rng(2)
    fmaps = [rng.normal(size=(2, SIZE // s, SIZE // s, 3)).astype("float32")
             for s in (4, 8, 16, 32)]
    px = np.array([[41, 58, 150, 171]], "float32")         # ~110 px -> P2 (stride 4)
    rois = np.stack([_norm(px), _norm(px)])
    layer = PyramidROIAlign((5, 5), method=method, sampling_ratio=2, aligned=True,
                            aggregation=aggregation)
    out = np.asarray(layer([rois, _meta(2)] + fmaps))
    kwargs = dict(spatial_scale=1 / 4)
    if method == "roi_pool":
        function = roi_pool
    else:
        function = roi_align if method == "roi_align" else roi_warp
        kwargs.update(sampling_ratio=2, aligned=True, aggregation=aggregation)
    for b in range(2):
        expected = np.asarray(function(fmaps[0], px, np.array([b], "int32"), (5, 5), **kwargs))
        np.testing.assert_allclose(out[b, 0], expected[0], rtol=1e-5, atol=1e-5)
    # Each differs from plain RoIAlign (avg) of the same box.
    plain = np.asarray(roi_align(fmaps[0], px, np.array([0], "int32"), (5, 5),
                                 spatial_scale=1 / 4))
    assert np.abs(out[0, 0] - plain[0]).max() > 0.05


def test_config_and_validation():
    layer = PyramidROIAlign((7, 7), method="crop_and_resize", sampling_ratio=0, aligned=False,
                            name="roi_align_classifier")
    clone = PyramidROIAlign.from_config(layer.get_config())
    assert (clone.pool_shape, clone.method, clone.sampling_ratio, clone.aligned,
            clone.aggregation) == ((7, 7), "crop_and_resize", 0, False, "avg")
    layer = PyramidROIAlign((7, 7), method="roi_warp", aggregation="max")
    clone = PyramidROIAlign.from_config(layer.get_config())
    assert (clone.method, clone.aggregation) == ("roi_warp", "max")
    # A config written before the aggregation setting existed.
    old = {k: v for k, v in layer.get_config().items() if k != "aggregation"}
    assert PyramidROIAlign.from_config(old).aggregation == "avg"
    with pytest.raises(ValueError, match="method"):
        PyramidROIAlign((7, 7), method="max_pool")
    with pytest.raises(ValueError, match="aggregation.*'sum'"):
        PyramidROIAlign((7, 7), aggregation="sum")


def test_permute_rows_forward_and_dense_gradient():
    values = tf.constant(np.arange(24, dtype=np.float32).reshape(4, 3, 2))
    order = tf.constant([2, 0, 3, 1])          # row i of `values` belongs at order[i]
    permutation = tf.argsort(order)
    weights = tf.constant(np.random.default_rng(0).normal(size=(4, 3, 2)), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(values)
        out = permute_rows(values, permutation, order)
        loss = tf.reduce_sum(out * weights)
    grad = tape.gradient(loss, values)
    np.testing.assert_array_equal(out.numpy(), tf.gather(values, permutation).numpy())
    assert isinstance(grad, tf.Tensor)  # dense, not IndexedSlices
    # d loss / d values[i] = weights[j] where permutation[j] == i, i.e. j = order[i].
    np.testing.assert_array_equal(grad.numpy(), tf.gather(weights, order).numpy())


def test_permute_rows_gradient_compiles_with_xla_when_a_level_is_empty():
    # Rows pooled per FPN level are concatenated and put back in RoI order; with
    # tf.gather the gradient reaching an empty level is a scatter into a
    # [0, ...] tensor, which XLA refuses ("Scatter dimension 0 is of size zero").
    empty = tf.Variable(tf.zeros([0, 3, 2]))
    full = tf.Variable(tf.ones([4, 3, 2]))
    order = tf.constant([2, 0, 3, 1])

    @tf.function(jit_compile=True)
    def gradients():
        with tf.GradientTape() as tape:
            rows = tf.concat([empty * 2.0, full * 3.0], axis=0)
            out = permute_rows(rows, tf.argsort(order), order)
            loss = tf.reduce_sum(out * tf.reshape(tf.range(24, dtype=tf.float32), [4, 3, 2]))
        return tape.gradient(loss, [empty, full])

    grad_empty, grad_full = gradients()
    assert grad_empty.shape == (0, 3, 2)
    expected = 3.0 * tf.gather(tf.reshape(tf.range(24, dtype=tf.float32), [4, 3, 2]), order)
    np.testing.assert_allclose(grad_full.numpy(), expected.numpy())


# --- mask targets and training with each method ------------------------------------

def test_quantised_methods_train_with_the_roialign_mask_targets():
    """RoIPool / RoIWarp change only the features' pooling: their mask targets are
    RoIAlign's (the features' geometry), not the legacy crop_and_resize ones."""
    from mrcnn.modeling.roi_heads.mask_head import mask_targets_graph

    yy, xx = np.mgrid[:64, :64]
    gt = (((yy - 30.3) ** 2 + (xx - 33.1) ** 2) < 13 ** 2).astype(np.float32)[None]  # [G, H, W]
    rois = _norm([[14, 17, 47, 50], [20, 12, 45, 41]], 64)
    gt_boxes = _norm([[17, 20, 44, 47]] * 2, 64)
    targets = {method: mask_targets_graph(gt, tf.constant([0, 0]), rois, gt_boxes, (28, 28),
                                          False, method, tf.constant([64.0, 64.0])).numpy()
               for method in POOLING_METHODS}
    for method in ("roi_pool", "roi_warp"):
        np.testing.assert_array_equal(targets[method], targets["roi_align"])
    assert (targets["roi_align"] != targets["crop_and_resize"]).any()
    assert 0 < targets["roi_align"].mean() < 1


class GivenRoisConfig(TinyConfig):
    # RoIs from the data pipeline (jittered gt boxes): the heads see positives.
    USE_RPN_ROIS = False
    WEIGHT_DECAY = 0.0
    POST_NMS_ROIS_TRAINING = 64
    SEED = 3


@pytest.mark.parametrize("method,aggregation", [("roi_pool", "avg"), ("roi_warp", "max"),
                                                ("roi_align", "max")])
def test_tiny_model_trains_a_step_with_each_pooling(method, aggregation, tmp_path):
    from mrcnn import model as modellib
    from mrcnn.data.pipeline import build_training_dataset

    config = type("C", (GivenRoisConfig,), {"ROI_POOLING_METHOD": method,
                                            "ROI_ALIGN_AGGREGATION": aggregation})()
    model = modellib.MaskRCNN("training", config, str(tmp_path))
    for name in ("roi_align_classifier", "roi_align_mask"):
        layer = model.keras_model.get_layer(name)
        assert (layer.method, layer.aggregation) == (method, aggregation)
    assert model.roi_pooling_method == method
    model.set_trainable("heads", verbose=0)
    model.compile(0.01, config.LEARNING_MOMENTUM)
    data = build_training_dataset(RectanglesDataset([2, 3], seed=0), config, shuffle=False,
                                  repeat=False, seed=0)
    heads = ("mrcnn_class_conv1", "mrcnn_mask_conv1", "mrcnn_mask")
    before = {n: np.array(model.keras_model.get_layer(n).kernel) for n in heads}
    logs = {k: float(v) for k, v in model.keras_model.train_step(next(iter(data))).items()}
    assert all(np.isfinite(v) for v in logs.values()), logs
    assert logs["mrcnn_mask_loss"] > 0 and logs["mrcnn_class_loss"] > 0
    for name in heads:
        assert not np.array_equal(before[name],
                                  np.array(model.keras_model.get_layer(name).kernel)), name
