"""Tests of mrcnn.modeling.backbone: ResNet graph shapes, block names, BatchNorm modes."""

import keras
import numpy as np
import pytest

from mrcnn.modeling.backbone import BatchNorm, resnet_graph


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
