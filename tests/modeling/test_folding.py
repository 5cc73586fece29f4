"""Batch norm folded into the convolutions of the inference graph
(`mrcnn.modeling.folding`, ``Config.FOLD_BATCH_NORM``).

Tolerance of folded vs unfolded: float32 keeps 24 bits (relative rounding
6e-8). Folding rounds ``K * s`` once per weight instead of ``conv * s`` once per
output, and the convolutions sum up to 64 * 9 .. 1024 * 9 products in an order
oneDNN chooses; these differences pass through ~55 convolutions (ResNet-50 and
the heads) whose random weights and BN statistics grow the activations. The
measured largest difference is 1e-5 .. 8e-5 of an output's largest magnitude
(class probabilities, after a softmax of logits in the tens, the largest); the
tests allow 5e-4 of it. A wrong fold (epsilon left out, the mean not
subtracted, the bias dropped) is off by far more: the layer test below uses
variances near epsilon so that even epsilon shows.
"""

import contextlib
import io

import h5py
import keras
import numpy as np
import pytest

from model_fixtures import TinyConfig
from mrcnn import model as modellib
from mrcnn.engine import checkpoints
from mrcnn.modeling.backbone import TORCH_BN_EPSILON, BatchNorm
from mrcnn.modeling.folding import (FoldableConv2D, conv_bn, foldable_pairs,
                                    set_batch_norm_folding)

RELATIVE_TOLERANCE = 5e-4
ARCHITECTURES = {  # id: (BACKBONE, HEAD_ARCHITECTURE, stage outputs compared)
    "resnet50-fpn": ("resnet50", "fpn", ("res2c_out", "res3d_out", "res4f_out", "res5c_out")),
    "resnext50-fpn": ("resnext50_32x4d", "fpn", ("res2c_out", "res3d_out", "res4f_out",
                                                 "res5c_out")),
    "resnet50-c4": ("resnet50", "c4", ("res2c_out", "res3d_out", "res4f_out")),
}
OUTPUTS = ("detections", "mrcnn_class", "mrcnn_bbox", "mrcnn_mask", "rpn_rois", "rpn_class",
           "rpn_bbox")


def _config(backbone, head, fold, **extra):
    attrs = dict(BACKBONE=backbone, HEAD_ARCHITECTURE=head, IMAGES_PER_GPU=1,
                 DETECTION_MIN_CONFIDENCE=0.0, FOLD_BATCH_NORM=fold, SEED=3, **extra)
    if head == "c4":
        attrs.update(POOL_SIZE=6, MASK_SHAPE=[6, 6])
    return type(f"{backbone}_{head}_{fold}", (TinyConfig,), attrs)()


def _randomise_batch_norms(keras_model, seed):
    """Non-trivial statistics: gamma, beta, moving mean and variance of every pair."""
    rng = np.random.default_rng(seed)
    for _, bn in foldable_pairs(keras_model):
        n = bn.gamma.shape[0]
        bn.gamma.assign(rng.uniform(0.5, 1.5, n).astype(np.float32))
        bn.beta.assign(rng.normal(0.0, 0.2, n).astype(np.float32))
        bn.moving_mean.assign(rng.normal(0.0, 0.2, n).astype(np.float32))
        bn.moving_variance.assign(rng.uniform(0.3, 2.0, n).astype(np.float32))


def _image(seed=0):
    return np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8)


def _outputs(model, image, extra=()):
    """The inference graph's outputs (a direct call) and ``extra`` layers' outputs
    (``run_graph``), numpy."""
    molded, metas, _ = model.mold_inputs([image])
    anchors = model.get_anchors(molded[0].shape)[None]
    out = model.keras_model([molded, metas, anchors], training=False)
    values = {name: np.asarray(out[name]) for name in OUTPUTS}
    if extra:
        with contextlib.redirect_stdout(io.StringIO()):
            values.update(model.run_graph([image], [(name, name) for name in extra]))
    return values


def _assert_close(folded, unfolded, label):
    for name, ref in unfolded.items():
        got = folded[name]
        assert got.shape == ref.shape, (label, name)
        scale = max(float(np.abs(ref).max()), 1e-6)
        error = float(np.abs(got.astype(np.float64) - ref).max())
        assert error <= RELATIVE_TOLERANCE * scale, (label, name, error, scale)


@pytest.fixture(scope="module", params=list(ARCHITECTURES))
def pair(request, tmp_path_factory):
    """A folded and an unfolded inference model with the same random weights."""
    backbone, head, stages = ARCHITECTURES[request.param]
    logs = str(tmp_path_factory.mktemp("fold"))
    folded = modellib.MaskRCNN("inference", _config(backbone, head, True), logs)
    _randomise_batch_norms(folded.keras_model, seed=11)
    unfolded = modellib.MaskRCNN("inference", _config(backbone, head, False), logs)
    unfolded.keras_model.set_weights(folded.keras_model.get_weights())
    return request.param, folded, unfolded, stages


def test_folded_graph_equals_unfolded_within_float32_rounding(pair):
    name, folded, unfolded, stages = pair
    backbone, head, _ = ARCHITECTURES[name]
    # Every batch norm of the graph (the C4 head's nested res5 model included) is paired.
    bns = [l for l in _all_layers(folded.keras_model) if isinstance(l, BatchNorm)]
    pairs = foldable_pairs(folded.keras_model)
    assert len(pairs) == len(bns) == {"fpn": 53 + 6, "c4": 53}[head]
    assert all(bn.mrcnn_folded for bn in bns)
    assert not any(bn.mrcnn_folded for bn in _all_layers(unfolded.keras_model)
                   if isinstance(bn, BatchNorm))
    conv1 = folded.keras_model.get_layer("conv1")
    assert conv1.use_bias == (backbone == "resnet50")
    assert folded.keras_model.get_layer("bn_conv1").epsilon == \
        (1e-3 if backbone == "resnet50" else TORCH_BN_EPSILON)

    image = _image()
    a = _outputs(folded, image, stages)
    b = _outputs(unfolded, image, stages)
    _assert_close(a, b, name)
    # The same detections: class ids equal, boxes and scores within rounding.
    np.testing.assert_array_equal(a["detections"][..., 4], b["detections"][..., 4])
    assert (a["detections"][0, :, 4] > 0).sum() > 0
    # Not trivially equal: folding changes the rounding.
    assert any(not np.array_equal(a[k], b[k]) for k in b)
    if head == "fpn":
        # The legacy pooling folds too. tf.image.crop_and_resize of a proposal
        # that reaches the image's right or bottom edge (x2 or y2 = 1) samples
        # its last column / row at W - 1 or, by the last ulp of the box, just
        # past it, where it returns 0: such a RoI's features jump with any
        # rounding change (folding, oneDNN on or off alike). The RPN and the
        # RoIs inside the image agree within rounding: the RPN's box deltas are
        # scaled down so that proposals stay near their anchors, inside the image.
        saved = []
        for model in (folded, unfolded):
            checkpoints.set_pooling_method(model.keras_model, "crop_and_resize")
            deltas = model.keras_model.get_layer("rpn_model").get_layer("rpn_bbox_pred")
            saved.append((deltas, deltas.get_weights()))
            deltas.set_weights([w * 1e-3 for w in deltas.get_weights()])
        try:
            a, b = _outputs(folded, image), _outputs(unfolded, image)
            _assert_close({k: a[k] for k in ("rpn_class", "rpn_bbox", "rpn_rois")},
                          {k: b[k] for k in ("rpn_class", "rpn_bbox", "rpn_rois")}, name)
            inside = np.all(np.maximum(a["rpn_rois"], b["rpn_rois"])[0, :, 2:] < 1 - 1e-4,
                            axis=1)
            assert inside.sum() >= 10
            _assert_close({k: a[k][0, inside] for k in ("mrcnn_class", "mrcnn_bbox")},
                          {k: b[k][0, inside] for k in ("mrcnn_class", "mrcnn_bbox")},
                          name + " crop_and_resize")
        finally:
            for model in (folded, unfolded):
                checkpoints.set_pooling_method(model.keras_model, "roi_align")
            for deltas, weights in saved:
                deltas.set_weights(weights)


def test_folded_batch_norm_passes_through_and_unfolded_normalises(pair):
    name, folded, unfolded, _ = pair
    layers = ("res2a_branch2a", "bn2a_branch2a", "res4a_branch1", "bn4a_branch1")
    a = _outputs(folded, _image(1), layers)
    b = _outputs(unfolded, _image(1), layers)
    # Folded: the convolution already normalises, its batch norm is the identity.
    np.testing.assert_array_equal(a["res2a_branch2a"], a["bn2a_branch2a"])
    np.testing.assert_array_equal(a["res4a_branch1"], a["bn4a_branch1"])
    # Unfolded: the batch norm layer applies (x - mean) / sqrt(var + eps) * gamma + beta.
    bn = unfolded.keras_model.get_layer("bn2a_branch2a")
    x = b["res2a_branch2a"].astype(np.float64)
    expected = ((x - np.asarray(bn.moving_mean)) / np.sqrt(np.asarray(bn.moving_variance)
                                                           + bn.epsilon)
                * np.asarray(bn.gamma) + np.asarray(bn.beta))
    np.testing.assert_allclose(b["bn2a_branch2a"], expected, rtol=1e-5,
                               atol=1e-5 * np.abs(expected).max())
    assert not np.allclose(b["res2a_branch2a"], b["bn2a_branch2a"], atol=1e-2)
    _assert_close({k: a[k] for k in ("bn2a_branch2a",)}, {"bn2a_branch2a": b["bn2a_branch2a"]},
                  name)


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


@pytest.mark.parametrize("use_bias,epsilon,groups", [(True, 1e-3, 1), (False, 1e-5, 4)])
def test_one_pair_folds_exactly_the_batch_norm_maths(use_bias, epsilon, groups):
    """One conv + BN: folded output vs the unfolded layers, with variances near
    epsilon (so that leaving epsilon out would show), a negative gamma, means
    and betas of the size of the activations."""
    rng = np.random.default_rng(2)
    inputs = keras.Input([9, 9, 8])
    conv = FoldableConv2D(12, 3, strides=2, padding="same", groups=groups, use_bias=use_bias)
    bn = BatchNorm(train_bn=False, epsilon=epsilon)
    model = keras.Model(inputs, conv_bn(inputs, conv, bn))
    conv.kernel.assign(rng.normal(0, 0.3, conv.kernel.shape).astype(np.float32))
    if use_bias:
        conv.bias.assign(rng.normal(0, 1.0, 12).astype(np.float32))
    bn.gamma.assign(rng.uniform(-1.5, 1.5, 12).astype(np.float32))
    bn.beta.assign(rng.normal(0, 1.0, 12).astype(np.float32))
    bn.moving_mean.assign(rng.normal(0, 1.0, 12).astype(np.float32))
    bn.moving_variance.assign((epsilon * rng.uniform(0.5, 3.0, 12)).astype(np.float32))
    x = rng.normal(0, 1.0, (2, 9, 9, 8)).astype(np.float32)
    unfolded = np.asarray(model(x, training=False))
    assert set_batch_norm_folding(model, True) == 1
    folded = np.asarray(model(x, training=False))
    assert np.array_equal(np.asarray(conv(x)), folded)  # the conv alone normalises
    np.testing.assert_allclose(folded, unfolded, rtol=1e-5, atol=1e-5 * np.abs(unfolded).max())
    assert np.abs(folded - unfolded).max() > 0  # folded: other rounding
    assert set_batch_norm_folding(model, False) == 1
    np.testing.assert_array_equal(np.asarray(model(x, training=False)), unfolded)
    # In training mode (a BN following the flag) nothing folds: batch statistics.
    set_batch_norm_folding(model, True)
    bn.train_bn = None
    batch_stats = np.asarray(model(x, training=True))
    np.testing.assert_allclose(batch_stats.mean(axis=(0, 1, 2)), np.asarray(bn.beta), atol=1e-4)
    bn.train_bn = True
    assert set_batch_norm_folding(model, True) == 0  # a training-mode BN never folds


def test_training_graph_folds_its_frozen_pairs_and_fold_off_does_not(tmp_path):
    training = modellib.MaskRCNN("training", TinyConfig(), str(tmp_path))
    assert len(foldable_pairs(training.keras_model)) == 53 + 6
    assert all(c.folded_batch_norm is b for c, b in foldable_pairs(training.keras_model))
    off = type("NoFold", (TinyConfig,), {"FOLD_BATCH_NORM": False})()
    training = modellib.MaskRCNN("training", off, str(tmp_path))
    assert not any(l.mrcnn_folded for l in _all_layers(training.keras_model)
                   if isinstance(l, BatchNorm))
    assert all(not c.folded_batch_norm for c, _ in foldable_pairs(training.keras_model))
    trains_bn = type("TrainBN", (TinyConfig,), {"TRAIN_BN": True})()
    training = modellib.MaskRCNN("training", trains_bn, str(tmp_path))
    assert set_batch_norm_folding(training.keras_model, True) == 0  # none is frozen
    assert TinyConfig().FOLD_BATCH_NORM is True
    with pytest.raises(ValueError, match="FOLD_BATCH_NORM"):
        type("C", (TinyConfig,), {"FOLD_BATCH_NORM": "yes"})()


def test_save_after_folding_writes_the_unfolded_weights_and_reload_detects_the_same(
        tmp_path):
    config = _config("resnet50", "fpn", True)
    folded = modellib.MaskRCNN("inference", config, str(tmp_path))
    _randomise_batch_norms(folded.keras_model, seed=5)
    images = [_image(2)]
    first = folded.detect(images)
    never = modellib.MaskRCNN("inference", _config("resnet50", "fpn", False), str(tmp_path))
    never.keras_model.set_weights(folded.keras_model.get_weights())
    a = folded.save_weights(str(tmp_path / "folded.h5"))
    b = never.save_weights(str(tmp_path / "never.h5"))
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        names = []
        fa.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        other = []
        fb.visititems(lambda n, o: other.append(n) if isinstance(o, h5py.Dataset) else None)
        assert names == other and "bn_conv1/bn_conv1/moving_variance:0" in names
        for n in names:
            np.testing.assert_array_equal(fa[n][()], fb[n][()], err_msg=n)
    # Other weights into the traced model, then back: each time it detects exactly
    # as a fresh folded model loading the same file.
    _randomise_batch_norms(never.keras_model, seed=6)
    c = never.save_weights(str(tmp_path / "other.h5"))
    folded.load_weights(c)
    fresh = modellib.MaskRCNN("inference", config, str(tmp_path))
    fresh.load_weights(c)
    for x, y in zip(folded.detect(images), fresh.detect(images)):
        for key in ("rois", "class_ids", "scores", "masks"):
            np.testing.assert_array_equal(x[key], y[key], err_msg=key)
    folded.load_weights(a)
    for x, y in zip(folded.detect(images), first):
        for key in ("rois", "class_ids", "scores", "masks"):
            np.testing.assert_array_equal(x[key], y[key], err_msg=key)


@pytest.mark.parametrize("use_bias,epsilon,groups", [(True, 1e-3, 1), (False, 1e-5, 4)])
def test_training_through_a_folded_pair_gives_the_unfolded_gradients(use_bias, epsilon, groups):
    """Two conv + frozen BN pairs in training mode: the loss and the gradients of
    every trainable variable (kernels, biases, gamma, beta) through the folded
    kernels equal those through the separate layers, within float32 rounding."""
    import tensorflow as tf

    rng = np.random.default_rng(5)
    inputs = keras.Input([10, 10, 8])
    convs = [FoldableConv2D(16, 3, padding="same", groups=groups, use_bias=use_bias),
             FoldableConv2D(8, 1, use_bias=use_bias)]
    bns = [BatchNorm(train_bn=False, epsilon=epsilon) for _ in convs]
    x = conv_bn(inputs, convs[0], bns[0])
    x = conv_bn(keras.layers.Activation("relu")(x), convs[1], bns[1])
    model = keras.Model(inputs, x)
    for conv, bn in zip(convs, bns):
        conv.kernel.assign(rng.normal(0, 0.3, conv.kernel.shape).astype(np.float32))
        if use_bias:
            conv.bias.assign(rng.normal(0, 1.0, conv.bias.shape).astype(np.float32))
        n = bn.gamma.shape[0]
        bn.gamma.assign(rng.uniform(-1.5, 1.5, n).astype(np.float32))
        bn.beta.assign(rng.normal(0, 1.0, n).astype(np.float32))
        bn.moving_mean.assign(rng.normal(0, 1.0, n).astype(np.float32))
        bn.moving_variance.assign(rng.uniform(0.2, 3.0, n).astype(np.float32))
    images = tf.constant(rng.normal(0, 1.0, (2, 10, 10, 8)).astype(np.float32))
    weights = tf.constant(rng.normal(0, 1.0, (2, 10, 10, 8)).astype(np.float32))
    names = [v.path for v in model.trainable_variables]
    assert len(names) == (8 if use_bias else 6)  # 2 kernels (+ 2 biases), 2 gammas, 2 betas

    def loss_and_gradients():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(images, training=True) * weights)
        return float(loss), [np.asarray(g) for g in
                             tape.gradient(loss, model.trainable_variables)]

    set_batch_norm_folding(model, False)
    loss, grads = loss_and_gradients()
    assert set_batch_norm_folding(model, True) == 2
    folded_loss, folded_grads = loss_and_gradients()
    assert folded_loss == pytest.approx(loss, rel=1e-5)
    for name, g, f in zip(names, grads, folded_grads):
        assert np.abs(g).max() > 0, name
        np.testing.assert_allclose(f, g, rtol=1e-4, atol=1e-5 * np.abs(g).max(), err_msg=name)
