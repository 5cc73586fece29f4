"""Tests of mrcnn.modeling.rpn.head: output layout (matches anchor order) and level concatenation."""

import keras
import numpy as np

from mrcnn.structures.anchors import generate_anchors, generate_pyramid_anchors
from mrcnn.modeling.rpn.head import build_rpn_model, rpn_outputs


def test_rpn_model_layout_matches_anchor_order():
    rpn = build_rpn_model(anchor_stride=1, anchors_per_location=3, depth=8)
    assert rpn.name == "rpn_model"
    assert [l.name for l in rpn.layers if l.weights] == [
        "rpn_conv_shared", "rpn_class_raw", "rpn_bbox_pred"]
    fmap = np.random.default_rng(0).normal(size=(2, 4, 5, 8)).astype("float32")
    logits, probs, bbox = [np.asarray(o) for o in rpn(fmap)]
    assert logits.shape == (2, 60, 2) and probs.shape == (2, 60, 2) and bbox.shape == (2, 60, 4)
    np.testing.assert_allclose(probs, np.exp(logits) / np.exp(logits).sum(-1, keepdims=True),
                               rtol=1e-5)
    raw = keras.Model(rpn.inputs, [rpn.get_layer("rpn_class_raw").output,
                                   rpn.get_layer("rpn_bbox_pred").output])
    raw_class, raw_bbox = [np.asarray(o) for o in raw(fmap)]
    # Anchor index (y * W + x) * apl + a, as in mrcnn.structures.anchors.
    y, x, a = 3, 2, 1
    idx = (y * 5 + x) * 3 + a
    np.testing.assert_allclose(logits[1, idx], raw_class[1, y, x, 2 * a:2 * a + 2], rtol=1e-6)
    np.testing.assert_allclose(bbox[1, idx], raw_bbox[1, y, x, 4 * a:4 * a + 4], rtol=1e-6)


def test_rpn_outputs_concatenate_levels_in_anchor_count():
    rpn = build_rpn_model(1, 3, 8)
    sizes = [16, 8, 4, 2, 1]
    maps = [keras.Input((s, s, 8)) for s in sizes]
    outs = rpn_outputs(rpn, maps)
    model = keras.Model(maps, outs)
    assert [l.name for l in model.layers[-3:]] == ["rpn_class_logits", "rpn_class", "rpn_bbox"]
    anchors = generate_pyramid_anchors((32, 64, 128, 256, 512), [0.5, 1, 2],
                                       np.array([[s, s] for s in sizes]), [4, 8, 16, 32, 64], 1)
    assert tuple(outs[0].shape) == (None, len(anchors), 2)
    # The first level's rows come first: compare with the model applied to P2 alone.
    feats = [np.random.default_rng(i).normal(size=(1, s, s, 8)).astype("float32")
             for i, s in enumerate(sizes)]
    full = np.asarray(model(feats)[2])
    np.testing.assert_allclose(full[:, :16 * 16 * 3], np.asarray(rpn(feats[0])[2]), rtol=1e-5)
    np.testing.assert_allclose(full[:, -3:], np.asarray(rpn(feats[4])[2]), rtol=1e-5)


def _set_random_weights(rpn, rng):
    weights = {}
    for name in ("rpn_conv_shared", "rpn_class_raw", "rpn_bbox_pred"):
        layer = rpn.get_layer(name)
        weights[name] = [rng.normal(scale=0.3, size=w.shape).astype("float32")
                         for w in layer.get_weights()]
        layer.set_weights(weights[name])
    return weights


def test_rpn_anchor_stride_two():
    rng = np.random.default_rng(0)
    rpn = build_rpn_model(anchor_stride=2, anchors_per_location=3, depth=8)
    weights = _set_random_weights(rpn, rng)
    fmap = rng.normal(size=(1, 8, 6, 8)).astype("float32")
    logits, probs, bbox = [np.asarray(o)[0] for o in rpn(fmap)]
    # One row per anchor of generate_anchors with the same stride: 4 x 3 cells x 3 ratios.
    anchors = generate_anchors([32], [0.5, 1, 2], (8, 6), 4, 2)
    assert logits.shape == (len(anchors), 2) == (4 * 3 * 3, 2) and bbox.shape == (36, 4)

    # NumPy: 3x3 conv with stride 2 and 'same' padding (8x6 -> 4x3; the one pad row and
    # column go after the map), ReLU, then the two 1x1 convs; rows (y, x, anchor).
    kernel, bias = weights["rpn_conv_shared"]
    padded = np.pad(fmap[0].astype(np.float64), ((0, 1), (0, 1), (0, 0)))
    shared = np.zeros((4, 3, 512))
    for i in range(4):
        for j in range(3):
            shared[i, j] = np.einsum("yxc,yxcd->d", padded[2 * i:2 * i + 3, 2 * j:2 * j + 3],
                                     kernel) + bias
    shared = np.maximum(shared, 0)
    kernel, bias = weights["rpn_class_raw"]
    expected_logits = (shared @ kernel[0, 0] + bias).reshape(-1, 2)
    kernel, bias = weights["rpn_bbox_pred"]
    expected_bbox = (shared @ kernel[0, 0] + bias).reshape(-1, 4)
    np.testing.assert_allclose(logits, expected_logits, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(bbox, expected_bbox, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(probs[:, 1], 1 / (1 + np.exp(logits[:, 0] - logits[:, 1])),
                               rtol=1e-5)
    assert np.abs(expected_logits).max() > 1   # not a near-zero case

    # The same weights at stride 1: stride 2 keeps the cells (2i + 1, 2j + 1).
    dense = build_rpn_model(anchor_stride=1, anchors_per_location=3, depth=8)
    for name, values in weights.items():
        dense.get_layer(name).set_weights(values)
    dense_logits, _, dense_bbox = [np.asarray(o)[0] for o in dense(fmap)]
    np.testing.assert_allclose(logits.reshape(4, 3, 3, 2),
                               dense_logits.reshape(8, 6, 3, 2)[1::2, 1::2], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(bbox.reshape(4, 3, 3, 4),
                               dense_bbox.reshape(8, 6, 3, 4)[1::2, 1::2], rtol=1e-5, atol=1e-5)


def test_legacy_rpn_graph_builds_named_layers():
    from mrcnn.modeling.rpn.head import rpn_graph
    fmap = keras.Input((4, 4, 8))
    logits, probs, bbox = rpn_graph(fmap, anchors_per_location=3, anchor_stride=1)
    model = keras.Model(fmap, [logits, probs, bbox])
    assert tuple(bbox.shape) == (None, 48, 4)
    assert tuple(model.get_layer("rpn_class_raw").kernel.shape) == (1, 1, 512, 6)


def test_rpn_head_channels_set_the_shared_conv_width_and_the_rest_follows():
    assert build_rpn_model(1, 3, 8).get_layer("rpn_conv_shared").kernel.shape == (3, 3, 8, 512)
    rpn = build_rpn_model(1, 3, 8, channels=16)
    assert [tuple(l.kernel.shape) for l in rpn.layers if l.weights] == [
        (3, 3, 8, 16), (1, 1, 16, 6), (1, 1, 16, 12)]
    fmap = np.random.default_rng(1).normal(size=(1, 4, 5, 8)).astype("float32")
    assert [tuple(np.asarray(o).shape) for o in rpn(fmap)] == [(1, 60, 2), (1, 60, 2), (1, 60, 4)]
