"""ResNet-50 / ResNet-101 backbone (Keras 3 functional graph builders).

The layer names (``conv1``, ``bn_conv1``, ``res2a_branch2a``, ``bn2a_branch2a``,
..., ``res5c_branch2c``) are the weights contract with the released COCO
weights (see ``shared/reference/coco_h5_layers_*.tsv``); do not rename them.

Architecture (the "Caffe" ResNet the released weights were trained with):

* stem: zero-pad 3, 7x7/2 conv ``conv1``, ``bn_conv1``, ReLU, 3x3/2 max pool
  (``same`` padding) -> C1 (stride 4);
* stages 2..5 of bottleneck blocks; the first block of a stage (``a``) is a
  projection block whose 1x1 ``branch2a`` conv carries the stride (1 for
  stage 2, 2 for stages 3..5); blocks ``b``, ``c``... are identity blocks.
  ResNet-50: 3, 4, 6, 3 blocks; ResNet-101: 3, 4, 23, 3 (res4a, res4b..res4w).
  C2..C5 have strides 4, 8, 16, 32 and 256, 512, 1024, 2048 channels.

Batch normalisation uses :class:`BatchNorm`, whose ``train_bn`` fixes the mode:
``False`` -> always inference mode (moving statistics frozen, the default for
small batches), ``True`` -> always training mode, ``None`` -> follow the Keras
``training`` flag. ``gamma``/``beta`` remain trainable variables either way
(whether they are trained is decided by ``layer.trainable``); note that in
Keras 3 a BatchNormalization layer with ``trainable=False`` also runs in
inference mode.
"""

import keras
from keras import layers

__all__ = ["BatchNorm", "resnet_graph", "identity_block", "conv_block", "RESNET_BLOCKS"]

# Blocks per stage (stages 2, 3, 4, 5).
RESNET_BLOCKS = {"resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3)}


@keras.saving.register_keras_serializable(package="mrcnn")
class BatchNorm(layers.BatchNormalization):
    """BatchNormalization whose train/inference mode is fixed at construction.

    Args:
        train_bn: ``False`` (frozen: inference mode, moving statistics not
            updated), ``True`` (always training mode: batch statistics, moving
            statistics updated) or ``None`` (follow the ``training`` argument).
        **kwargs: passed to ``keras.layers.BatchNormalization`` (epsilon stays
            at the Keras default 0.001, as in the released weights).
    """

    def __init__(self, train_bn=None, **kwargs):
        super().__init__(**kwargs)
        if train_bn not in (True, False, None):
            raise ValueError(f"BatchNorm {self.name!r}: train_bn must be True, False or "
                             f"None, got {train_bn!r}")
        self.train_bn = train_bn

    def call(self, inputs, training=None, mask=None):
        if self.train_bn is not None:
            training = self.train_bn
        return super().call(inputs, training=training, mask=mask)

    def get_config(self):
        config = super().get_config()
        config["train_bn"] = self.train_bn
        return config


def _bottleneck(x, filters, stage, block, kernel_size=3, strides=1, projection=False,
                train_bn=False, use_bias=True):
    """One bottleneck block (identity or projection shortcut).

    Layer names: ``res{stage}{block}_branch2a/2b/2c`` (+ ``_branch1`` for the
    projection shortcut) and ``bn{stage}{block}_branch...``.
    """
    f1, f2, f3 = filters
    conv = f"res{stage}{block}_branch"
    bn = f"bn{stage}{block}_branch"

    y = layers.Conv2D(f1, 1, strides=strides, use_bias=use_bias, name=conv + "2a")(x)
    y = BatchNorm(train_bn=train_bn, name=bn + "2a")(y)
    y = layers.Activation("relu")(y)
    y = layers.Conv2D(f2, kernel_size, padding="same", use_bias=use_bias, name=conv + "2b")(y)
    y = BatchNorm(train_bn=train_bn, name=bn + "2b")(y)
    y = layers.Activation("relu")(y)
    y = layers.Conv2D(f3, 1, use_bias=use_bias, name=conv + "2c")(y)
    y = BatchNorm(train_bn=train_bn, name=bn + "2c")(y)

    if projection:
        shortcut = layers.Conv2D(f3, 1, strides=strides, use_bias=use_bias, name=conv + "1")(x)
        shortcut = BatchNorm(train_bn=train_bn, name=bn + "1")(shortcut)
    else:
        shortcut = x
    y = layers.Add(name=f"res{stage}{block}_add")([y, shortcut])
    return layers.Activation("relu", name=f"res{stage}{block}_out")(y)


def identity_block(input_tensor, kernel_size, filters, stage, block, use_bias=True,
                   train_bn=True):
    """Bottleneck block with an identity shortcut (legacy API name).

    Args:
        input_tensor: Keras tensor with ``filters[2]`` channels.
        kernel_size: size of the middle conv.
        filters: ``(f1, f2, f3)`` channels of the 1x1, kxk, 1x1 convs.
        stage, block: used in the layer names (``res{stage}{block}_branch2a``...).
        use_bias: conv biases (the released weights have them).
        train_bn: see :class:`BatchNorm`.
    """
    return _bottleneck(input_tensor, filters, stage, block, kernel_size=kernel_size,
                       train_bn=train_bn, use_bias=use_bias)


def conv_block(input_tensor, kernel_size, filters, stage, block, strides=(2, 2),
               use_bias=True, train_bn=True):
    """Bottleneck block with a 1x1 projection shortcut (legacy API name).

    Same arguments as :func:`identity_block`, plus ``strides`` applied by the
    first 1x1 conv and the shortcut conv.
    """
    return _bottleneck(input_tensor, filters, stage, block, kernel_size=kernel_size,
                       strides=strides, projection=True, train_bn=train_bn,
                       use_bias=use_bias)


def _stage(x, stage, blocks, filters, strides, train_bn):
    x = _bottleneck(x, filters, stage, "a", strides=strides, projection=True,
                    train_bn=train_bn)
    for i in range(1, blocks):
        x = _bottleneck(x, filters, stage, chr(ord("a") + i), train_bn=train_bn)
    return x


def resnet_graph(input_image, architecture, stage5=True, train_bn=False):
    """Build the ResNet backbone on a Keras tensor.

    Args:
        input_image: Keras tensor ``[B, H, W, C]`` (molded image; H and W
            multiples of 32 -- 64 with P6).
        architecture: ``"resnet50"`` or ``"resnet101"``.
        stage5: build stage 5 (C5); if False the last output is None.
        train_bn: see :class:`BatchNorm` (False, True or None).

    Returns:
        ``[C1, C2, C3, C4, C5]`` Keras tensors, strides 4, 4, 8, 16, 32
        (C1 is the stem output after max-pooling).
    """
    if architecture not in RESNET_BLOCKS:
        raise ValueError(f"resnet_graph: unknown architecture {architecture!r}; expected "
                         f"one of {sorted(RESNET_BLOCKS)}")
    n2, n3, n4, n5 = RESNET_BLOCKS[architecture]

    x = layers.ZeroPadding2D(3, name="conv1_pad")(input_image)
    x = layers.Conv2D(64, 7, strides=2, use_bias=True, name="conv1")(x)
    x = BatchNorm(train_bn=train_bn, name="bn_conv1")(x)
    x = layers.Activation("relu", name="conv1_relu")(x)
    c1 = x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool1")(x)

    c2 = x = _stage(x, 2, n2, (64, 64, 256), 1, train_bn)
    c3 = x = _stage(x, 3, n3, (128, 128, 512), 2, train_bn)
    c4 = x = _stage(x, 4, n4, (256, 256, 1024), 2, train_bn)
    c5 = _stage(x, 5, n5, (512, 512, 2048), 2, train_bn) if stage5 else None
    return [c1, c2, c3, c4, c5]
