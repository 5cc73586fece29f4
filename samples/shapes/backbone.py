"""A small convolutional backbone for the shapes sample.

Flat-coloured squares, circles and triangles need far less capacity than a
ResNet-50, and on a 2-core CPU the backbone's cost decides how many training
steps fit into a few minutes. This backbone has the interface that
``Config.BACKBONE`` accepts for a callable::

    light_backbone(input_image, stage5=True, train_bn=True) -> [C1, C2, C3, C4, C5]

with strides 2, 4, 8, 16, 32 relative to the input, so the usual FPN levels
P2..P6 (strides 4..64) and ``BACKBONE_STRIDES`` apply unchanged, and
``light_backbone_shapes(image_shape)`` for ``Config.COMPUTE_BACKBONE_SHAPE``.

Each stage is a residual pair of 3x3 convolutions, the first with stride 2,
with batch normalisation (trained: the sample starts from scratch). Layer names
start with ``light_`` so they never collide with the ResNet names of the
released COCO weights.
"""

import math

from keras import layers

from mrcnn.modeling.backbone import BatchNorm

# Output channels of stages C1..C5.
STAGE_CHANNELS = (16, 32, 64, 128, 256)


def _conv_bn_relu(x, channels, stride, name, train_bn, relu=True):
    x = layers.Conv2D(channels, 3, strides=stride, padding="same", name=f"{name}_conv")(x)
    x = BatchNorm(train_bn=train_bn, name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x) if relu else x


def _stage(x, channels, name, train_bn):
    """Stride-2 downsampling conv, then a residual 3x3 conv pair."""
    x = _conv_bn_relu(x, channels, 2, f"{name}a", train_bn)
    y = _conv_bn_relu(x, channels, 1, f"{name}b", train_bn)
    y = _conv_bn_relu(y, channels, 1, f"{name}c", train_bn, relu=False)
    x = layers.Add(name=f"{name}_add")([x, y])
    return layers.Activation("relu", name=f"{name}_out")(x)


def light_backbone(input_image, stage5=True, train_bn=True):
    """Feature maps ``[C1, C2, C3, C4, C5]`` at strides 2..32 (C5 is None when
    ``stage5`` is False). Channels are `STAGE_CHANNELS`."""
    c1 = _conv_bn_relu(input_image, STAGE_CHANNELS[0], 2, "light_c1", train_bn)
    c2 = _stage(c1, STAGE_CHANNELS[1], "light_c2", train_bn)
    c3 = _stage(c2, STAGE_CHANNELS[2], "light_c3", train_bn)
    c4 = _stage(c3, STAGE_CHANNELS[3], "light_c4", train_bn)
    c5 = _stage(c4, STAGE_CHANNELS[4], "light_c5", train_bn) if stage5 else None
    return [c1, c2, c3, c4, c5]


def light_backbone_shapes(image_shape, strides=(4, 8, 16, 32, 64)):
    """``[[h, w], ...]`` of the FPN levels P2..P6 for an ``image_shape`` ``[H, W, ...]``
    (each stride-2 'same' convolution rounds up)."""
    return [[int(math.ceil(image_shape[0] / s)), int(math.ceil(image_shape[1] / s))]
            for s in strides]


__all__ = ["light_backbone", "light_backbone_shapes", "STAGE_CHANNELS"]
