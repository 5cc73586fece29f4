"""Tests of mrcnn.modeling.backbone: ResNet / ResNeXt graphs (shapes, names, strides,
parameter counts), BatchNorm modes, and Mask R-CNN built on every backbone."""

import keras
import numpy as np
import pytest

from mrcnn import model as modellib
from mrcnn.config import BACKBONES
from mrcnn.modeling.backbone import BACKBONE_ARCHITECTURES, BatchNorm, resnet_graph
from model_fixtures import RectanglesDataset, TinyConfig


def test_resnet50_shapes_strides_and_block_names():
    image = keras.Input((64, 96, 3))
    c1, c2, c3, c4, c5 = resnet_graph(image, "resnet50", stage5=True, train_bn=False)
    assert tuple(c1.shape) == (None, 16, 24, 64)
    assert tuple(c2.shape) == (None, 16, 24, 256)
    assert tuple(c3.shape) == (None, 8, 12, 512)
    assert tuple(c4.shape) == (None, 4, 6, 1024)
    assert tuple(c5.shape) == (None, 2, 3, 2048)
    model = keras.Model(image, c5)
    names = {layer.name for layer in model.layers}
    # ResNet-50: 6 blocks in stage 4 (res4a..res4f), 3 in stage 5.
    assert {"conv1", "bn_conv1", "res4f_branch2c", "bn5c_branch2c", "res5a_branch1"} <= names
    assert "res4g_branch2a" not in names
    kernel = model.get_layer("res3a_branch2a").kernel
    assert tuple(kernel.shape) == (1, 1, 256, 128)
    # The stride of a projection block sits on the 1x1 branch2a conv.
    assert model.get_layer("res3a_branch2a").strides == (2, 2)
    assert model.get_layer("res3a_branch2b").strides == (1, 1)


def test_stage5_false_and_bad_architecture():
    image = keras.Input((64, 64, 3))
    outs = resnet_graph(image, "resnet50", stage5=False)
    assert outs[4] is None and tuple(outs[3].shape) == (None, 4, 4, 1024)
    with pytest.raises(ValueError, match="resnet34"):
        resnet_graph(image, "resnet34")


def _bn_model(train_bn):
    x = keras.Input((4,))
    bn = BatchNorm(train_bn=train_bn, name="bn")
    return keras.Model(x, bn(x)), bn


@pytest.mark.parametrize("train_bn", [False, True, None])
@pytest.mark.parametrize("training", [False, True])
def test_batchnorm_mode_follows_train_bn(train_bn, training):
    model, bn = _bn_model(train_bn)
    data = np.random.default_rng(0).normal(5.0, 2.0, (32, 4)).astype("float32")
    out = np.asarray(model(data, training=training))
    uses_batch_stats = training if train_bn is None else train_bn
    if uses_batch_stats:
        # Normalised with the batch's own statistics; moving mean moved.
        np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-4)
        assert np.all(np.asarray(bn.moving_mean) > 0.01)
    else:
        # Inference mode with fresh moving stats (mean 0, var 1): x / sqrt(1 + eps).
        np.testing.assert_allclose(out, data / np.sqrt(1.0 + 1e-3), rtol=1e-5)
        np.testing.assert_array_equal(np.asarray(bn.moving_mean), 0.0)


def test_batchnorm_config_roundtrip_and_validation():
    bn = BatchNorm(train_bn=False, name="bn_x")
    clone = BatchNorm.from_config(bn.get_config())
    assert clone.train_bn is False and clone.epsilon == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="train_bn"):
        BatchNorm(train_bn="yes")


def test_legacy_block_builders():
    from mrcnn.modeling.backbone import conv_block, identity_block
    x = keras.Input((8, 8, 16))
    y = conv_block(x, 3, (4, 4, 32), stage=7, block="a", strides=(2, 2), train_bn=False)
    z = identity_block(y, 3, (4, 4, 32), stage=7, block="b", train_bn=False)
    model = keras.Model(x, z)
    assert tuple(z.shape) == (None, 4, 4, 32)
    assert tuple(model.get_layer("res7a_branch1").kernel.shape) == (1, 1, 16, 32)
    assert tuple(model.get_layer("res7b_branch2b").kernel.shape) == (3, 3, 4, 4)
    assert model.get_layer("bn7b_branch2c").train_bn is False


# ------------------------------------------------------------------------ ResNeXt

def test_config_accepts_exactly_the_built_architectures():
    assert BACKBONES == BACKBONE_ARCHITECTURES


def _backbone_model(architecture, size=64):
    image = keras.Input((size, size, 3))
    return keras.Model(image, resnet_graph(image, architecture, stage5=True, train_bn=False)[1:])


def test_resnext50_layout_shapes_and_names():
    model = _backbone_model("resnext50_32x4d")
    assert [tuple(t.shape) for t in model.outputs] == [
        (None, 16, 16, 256), (None, 8, 8, 512), (None, 4, 4, 1024), (None, 2, 2, 2048)]
    conv3a = model.get_layer("res3a_branch2b")
    # Stage 3: width 2 x 32 x 4 = 256 in 32 groups of 8; the stride on the grouped 3x3.
    assert conv3a.groups == 32 and tuple(conv3a.kernel.shape) == (3, 3, 8, 256)
    assert conv3a.strides == (2, 2) and model.get_layer("res3a_branch2a").strides == (1, 1)
    assert model.get_layer("res3a_branch1").strides == (2, 2)
    assert tuple(model.get_layer("res5c_branch2b").kernel.shape) == (3, 3, 32, 1024)
    assert {"res4f_branch2c", "bn5c_branch2c", "res5a_branch1"} <= {l.name for l in model.layers}
    assert "res4g_branch2a" not in {l.name for l in model.layers}
    convs = [l for l in model.layers if isinstance(l, keras.layers.Conv2D)]
    assert len(convs) == 53 and not any(l.use_bias for l in convs)
    bns = [l for l in model.layers if isinstance(l, BatchNorm)]
    assert len(bns) == 53 and {l.epsilon for l in bns} == {1e-5}


def test_resnet_keeps_the_released_layout():
    model = _backbone_model("resnet50")
    bns = [l for l in model.layers if isinstance(l, BatchNorm)]
    assert {l.epsilon for l in bns} == {1e-3}
    assert all(l.use_bias and l.groups == 1 for l in model.layers
               if isinstance(l, keras.layers.Conv2D))
    assert model.get_layer("pool1").padding == "same"


# Trainable Keras weights (kernels, BatchNorm gamma / beta, and the ResNet's
# conv biases) and non-trainable ones (BatchNorm moving mean / variance). For
# the ResNeXts the trainable count is torchvision's classifier count (what
# `sum(p.numel() for p in model.parameters())` gives: weights and BatchNorm
# weight / bias, not its running-statistics buffers) minus the fc's
# 2048 * 1000 + 1000 = 2,049,000: 25,028,904, 83,455,272 and 88,791,336 for
# 50_32x4d, 101_64x4d, 101_32x8d; 101_32x4d, absent from torchvision, is
# 44,177,704 from the same construction (tests/weights/test_imagenet_convert.py).
# The ResNets are torchvision's backbone count (25,557,032 and 44,549,160 minus
# the fc) plus their conv biases (26,560 and 52,672).
PARAMETERS = {
    "resnet50": (23_508_032 + 26_560, 2 * 26_560),
    "resnet101": (42_500_160 + 52_672, 2 * 52_672),
    "resnext50_32x4d": (25_028_904 - 2_049_000, 2 * 34_112),
    "resnext101_32x4d": (44_177_704 - 2_049_000, 2 * 68_928),
    "resnext101_64x4d": (83_455_272 - 2_049_000, 2 * 101_440),
    "resnext101_32x8d": (88_791_336 - 2_049_000, 2 * 101_440),
}


@pytest.mark.parametrize("architecture", BACKBONE_ARCHITECTURES)  # 1-6 s each
def test_parameter_counts_are_the_published_architectures(architecture):
    model = _backbone_model(architecture, size=32)  # the count does not depend on the size
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    frozen = sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
    assert (trainable, frozen) == PARAMETERS[architecture]


def _config(architecture, **settings):
    attrs = dict(BACKBONE=architecture, IMAGES_PER_GPU=1, STEPS_PER_EPOCH=1,
                 VALIDATION_STEPS=0, DETECTION_MIN_CONFIDENCE=0.0, SEED=3, **settings)
    return type("XConfig", (TinyConfig,), attrs)()


def test_resnext50_takes_a_training_step_and_keeps_the_layer_presets(tmp_path):
    model = modellib.MaskRCNN("training", _config("resnext50_32x4d"), str(tmp_path))
    keras_model = model.keras_model
    before = {name: np.asarray(keras_model.get_layer(name).kernel).copy()
              for name in ("res2a_branch2b", "res5c_branch2b")}
    history = model.train(RectanglesDataset([2, 1], seed=6), None, learning_rate=0.01,
                          epochs=1, layers="all", verbose=0)
    losses = {k: v[0] for k, v in history.history.items() if k.endswith("loss")}
    assert len(losses) >= 6 and all(np.isfinite(v) for v in losses.values()), losses
    for name, kernel in before.items():  # the grouped convs receive gradients
        assert not np.allclose(np.asarray(keras_model.get_layer(name).kernel), kernel), name
    model.set_trainable("4+", verbose=0)
    assert not keras_model.get_layer("res3d_branch2b").trainable
    assert keras_model.get_layer("res4a_branch2b").trainable
    assert keras_model.get_layer("bn5c_branch2c").trainable
