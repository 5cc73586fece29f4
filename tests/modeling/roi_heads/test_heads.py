"""Tests of the box and mask heads and of the whole graph's weights contract.

The name check builds ResNet-101 + FPN + RPN + both heads (NUM_CLASSES=81, a
64x64 image) and compares every weighted layer's name and weight shapes with
the reference TSV of the released COCO file (``coco_h5_layers_*_r101_c81.tsv``,
found in ``$MRCNN_REFERENCE_DIR``, or ``tests/fixtures``).
"""

import ast
import os

import keras
import numpy as np
import pytest

from mrcnn.modeling.backbone import resnet_graph
from mrcnn.modeling.fpn import fpn_graph
from mrcnn.modeling.roi_heads.mask_head import build_fpn_mask_graph
from mrcnn.modeling.roi_heads.box_head import fpn_classifier_graph
from mrcnn.structures.image_meta import compose_image_meta
from mrcnn.modeling.rpn.head import build_rpn_model, rpn_outputs
from locations import FIXTURES_DIR

TSV_NAME = "coco_h5_layers_{}_r101_c81.tsv"


def _find_tsv(mode):
    dirs = [os.environ.get("MRCNN_REFERENCE_DIR"), FIXTURES_DIR]
    for d in dirs:
        if d and os.path.exists(os.path.join(d, TSV_NAME.format(mode))):
            return os.path.join(d, TSV_NAME.format(mode))
    raise FileNotFoundError(f"reference TSV {TSV_NAME.format(mode)} not found in tests/fixtures "
                            "(or $MRCNN_REFERENCE_DIR)")


def _parse_tsv(path):
    """``{layer_name: [weight shapes in file order]}``, the anchors ConstLayer left out."""
    layers = {}
    with open(path) as f:
        next(f)
        for line in f:
            _, name, cls, weights = line.rstrip("\n").split("\t")
            if cls == "ConstLayer":
                continue
            layers[name] = [ast.literal_eval(w.rsplit(":", 1)[1]) for w in weights.split("; ")]
    return layers


def _tiny_meta(batch, num_classes, size=64):
    return np.stack([compose_image_meta(0, (size, size, 3), (size, size, 3), (0, 0, size, size),
                                        1.0, np.ones(num_classes)) for _ in range(batch)])


def _build(num_classes, architecture="resnet101", size=64, fc=1024, train_bn=False):
    image = keras.Input((size, size, 3), name="input_image")
    meta = keras.Input((12 + num_classes,), name="input_image_meta")
    rois = keras.Input((None, 4), name="input_rois")
    _, c2, c3, c4, c5 = resnet_graph(image, architecture, stage5=True, train_bn=train_bn)
    p2, p3, p4, p5, p6 = fpn_graph(c2, c3, c4, c5, 256)
    rpn = rpn_outputs(build_rpn_model(1, 3, 256), [p2, p3, p4, p5, p6])
    maps = [p2, p3, p4, p5]
    logits, probs, bbox = fpn_classifier_graph(rois, maps, meta, 7, num_classes,
                                               train_bn=train_bn, fc_layers_size=fc)
    masks = build_fpn_mask_graph(rois, maps, meta, 14, num_classes, train_bn=train_bn)
    return keras.Model([image, meta, rois], rpn + [logits, probs, bbox, masks])


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["training"])
def test_weighted_layers_match_reference_tsv(mode):
    reference = _parse_tsv(_find_tsv(mode))
    model = _build(81)
    ours = {layer.name: [tuple(w.shape) for w in layer.weights]
            for layer in model.layers if layer.weights}
    assert sorted(ours) == sorted(reference)
    mismatched = {n: (ours[n], reference[n]) for n in ours if ours[n] != reference[n]}
    assert not mismatched
    # The heads' layers are plain Keras layers on RoIs merged into the batch
    # axis (the released file's TimeDistributed groups load by name); the RPN
    # is a nested model.
    # (mrcnn_class_conv1 is a Conv2D that can fold its batch norm at inference.)
    assert isinstance(model.get_layer("mrcnn_class_conv1"), keras.layers.Conv2D)
    assert type(model.get_layer("mrcnn_mask")) is keras.layers.Conv2D
    assert not any(isinstance(layer, keras.layers.TimeDistributed) for layer in model.layers)
    assert isinstance(model.get_layer("rpn_model"), keras.Model)
    assert "res4w_branch2c" in ours and "res4x_branch2c" not in ours


def _heads_only(nc, size=64, depth=8, fc=32):
    """Both heads on pyramid-map inputs (no backbone: fast)."""
    maps = [keras.Input((size // s, size // s, depth)) for s in (4, 8, 16, 32)]
    meta = keras.Input((12 + nc,))
    rois = keras.Input((None, 4))
    logits, probs, bbox = fpn_classifier_graph(rois, maps, meta, 7, nc, fc_layers_size=fc)
    masks = build_fpn_mask_graph(rois, maps, meta, 14, nc)
    return keras.Model(maps + [meta, rois], [logits, probs, bbox, masks])


def test_head_output_shapes_and_values():
    nc = 3
    model = _heads_only(nc)
    rois = np.array([[[0.1, 0.1, 0.6, 0.7], [0.0, 0.0, 1.0, 1.0], [0.2, 0.3, 0.4, 0.5]]] * 2,
                    "float32")
    rng = np.random.default_rng(0)
    maps = [rng.normal(size=(1, 64 // s, 64 // s, 8)).astype("float32").repeat(2, 0)
            for s in (4, 8, 16, 32)]
    inputs = maps + [_tiny_meta(2, nc), rois]
    logits, probs, bbox, masks = [np.asarray(o) for o in model(inputs)]
    assert logits.shape == (2, 3, nc) and probs.shape == (2, 3, nc)
    assert bbox.shape == (2, 3, nc, 4) and masks.shape == (2, 3, 28, 28, nc)
    np.testing.assert_allclose(probs, np.exp(logits) / np.exp(logits).sum(-1, keepdims=True),
                               rtol=1e-4, atol=1e-6)
    assert np.all((masks > 0) & (masks < 1))
    # mrcnn_bbox is mrcnn_bbox_fc reshaped [NC * 4] -> [NC, 4].
    fc_out = keras.Model(model.inputs, model.get_layer("mrcnn_bbox_fc").output)
    np.testing.assert_allclose(np.asarray(fc_out(inputs)).reshape(2, 3, nc, 4), bbox,
                               rtol=1e-5, atol=1e-6)
    # Same maps twice -> same per-RoI outputs; different RoIs -> different outputs.
    np.testing.assert_allclose(probs[0], probs[1], rtol=1e-5)
    assert not np.allclose(logits[0, 0], logits[0, 1])
    # Frozen BN (train_bn=False): training=True gives the inference-mode result.
    np.testing.assert_allclose(np.asarray(model(inputs, training=True)[0]), logits,
                               rtol=1e-5, atol=1e-6)


def test_mask_head_conv_channels_are_configurable():
    import keras
    from mrcnn.modeling.roi_heads.mask_head import build_fpn_mask_graph
    rois = keras.Input((5, 4))
    meta = keras.Input((12 + 3,))
    maps = [keras.Input((64 // s, 64 // s, 32)) for s in (4, 8, 16, 32)]
    out = build_fpn_mask_graph(rois, maps, meta, 7, 3, conv_channels=48)
    model = keras.Model([rois, meta] + maps, out)
    assert tuple(out.shape[1:]) == (5, 14, 14, 3)
    assert model.get_layer("mrcnn_mask_conv1").kernel.shape == (3, 3, 32, 48)
    assert model.get_layer("mrcnn_mask_conv4").kernel.shape == (3, 3, 48, 48)
    assert model.get_layer("mrcnn_mask_deconv").kernel.shape == (2, 2, 48, 48)
