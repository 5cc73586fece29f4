"""ResNet and ResNeXt backbones (Keras 3 functional graph builders).

The layer names (``conv1``, ``bn_conv1``, ``res2a_branch2a``, ``bn2a_branch2a``,
..., ``res5c_branch2c``) are the weights contract with the released COCO
weights (see ``shared/reference/coco_h5_layers_*.tsv``); do not rename them.
The ResNeXt backbones use the same names, so the layer presets of
``train(layers=...)`` (``"3+"``, ``"4+"``, ...) select the same stages.

Architectures (``Config.BACKBONE``, table :data:`BACKBONE_SPECS`):

=======================  ==============  ===========  ========================
name                     blocks/stage    cardinality  bottleneck width, stage 2
=======================  ==============  ===========  ========================
``resnet50``             3, 4, 6, 3      1            64
``resnet101``            3, 4, 23, 3     1            64
``resnext50_32x4d``      3, 4, 6, 3      32           32 x 4 = 128
``resnext101_32x4d``     3, 4, 23, 3     32           32 x 4 = 128
``resnext101_64x4d``     3, 4, 23, 3     64           64 x 4 = 256
``resnext101_32x8d``     3, 4, 23, 3     32           32 x 8 = 256
=======================  ==============  ===========  ========================

The bottleneck width doubles at each stage (ResNeXt paper, Table 1); the
block outputs (C2..C5) have 256, 512, 1024, 2048 channels and strides
4, 8, 16, 32 in every architecture. Blocks are lettered ``a``, ``b``, ...
(ResNet-101's stage 4: ``res4a`` .. ``res4w``); ``a`` has a 1x1 projection
shortcut (``branch1``), the others an identity shortcut.

Two layouts, one per family:

* **ResNet** (``resnet50`` / ``resnet101``): the "Caffe" ResNet the released
  COCO weights were trained with, unchanged: stem ``conv1_pad`` (zero pad 3),
  7x7/2 ``conv1``, ``bn_conv1``, ReLU, 3x3/2 max pool with ``same`` padding;
  the stride of a stage's first block sits on its 1x1 ``branch2a`` conv;
  convolutions have biases; BatchNorm epsilon is Keras's 1e-3.
* **ResNeXt** (``resnext*``): the published architecture as torchvision and
  timm build it (ResNeXt paper, Fig. 3c, the grouped-convolution form): the
  stride sits on the grouped 3x3 ``branch2b`` conv (zero padding 1 then a
  ``valid`` convolution, which is PyTorch's ``padding=1``); convolutions have
  no biases; BatchNorm epsilon 1e-5 (PyTorch's); the stem's max pool pads 1
  on every side (PyTorch's ``padding=1``; zero padding equals PyTorch's
  -inf padding there because the pooled values follow a ReLU). ImageNet
  checkpoints of torchvision / timm therefore load exactly
  (:mod:`mrcnn.weights.imagenet`).

Parameter counts (trainable Keras weights: kernels, BatchNorm gamma/beta,
and conv biases for the ResNet; the BatchNorm moving mean/variance are
non-trainable weights, as PyTorch's running statistics are buffers):
``resnext50_32x4d`` 22,979,904, ``resnext101_32x4d`` 42,128,704,
``resnext101_64x4d`` 81,406,272, ``resnext101_32x8d`` 86,742,336 -- the
torchvision classifiers' counts (25,028,904; 88,791,336; 83,455,272) minus
their 2048 x 1000 + 1000 fc, and for 32x4d (not in torchvision) timm's 44.2 M
classifier minus its fc. Tested in ``tests/modeling/test_backbone.py``.

Batch normalisation uses :class:`BatchNorm`, whose ``train_bn`` fixes the mode:
``False`` -> always inference mode (moving statistics frozen, the default for
small batches), ``True`` -> always training mode, ``None`` -> follow the Keras
``training`` flag. ``gamma``/``beta`` remain trainable variables either way
(whether they are trained is decided by ``layer.trainable``); note that in
Keras 3 a BatchNormalization layer with ``trainable=False`` also runs in
inference mode. Each convolution before a BatchNorm is a
:class:`mrcnn.modeling.folding.FoldableConv2D` joined to it with ``conv_bn``, so
the inference graph can fold the frozen statistics into the kernel
(``Config.FOLD_BATCH_NORM``; same layers and weights).
"""

import collections

import keras
from keras import layers

from mrcnn.modeling.folding import FoldableConv2D, conv_bn

__all__ = ["BatchNorm", "BackboneSpec", "BACKBONE_SPECS", "BACKBONE_ARCHITECTURES",
           "backbone_spec", "resnet_graph", "backbone_stage", "identity_block",
           "conv_block", "RESNET_BLOCKS", "TORCH_BN_EPSILON"]

# PyTorch's BatchNorm epsilon (torchvision / timm), used by the ResNeXt layers.
TORCH_BN_EPSILON = 1e-5


class BackboneSpec(collections.namedtuple(
        "BackboneSpec", ["blocks", "cardinality", "width_per_group", "layout"])):
    """One architecture: ``blocks`` per stage 2..5, ``cardinality`` (groups of
    the 3x3 convs), ``width_per_group`` (channels per group in stage 2) and
    ``layout``: ``"caffe"`` (the released ResNet) or ``"torch"`` (ResNeXt)."""

    def width(self, stage):
        """Bottleneck width (channels of the 1x1 ``2a`` and 3x3 ``2b`` convs)."""
        return self.cardinality * self.width_per_group * 2 ** (stage - 2)

    @staticmethod
    def out_channels(stage):
        """Block output channels: 256, 512, 1024, 2048 for stages 2..5."""
        return 256 * 2 ** (stage - 2)


BACKBONE_SPECS = {
    "resnet50": BackboneSpec((3, 4, 6, 3), 1, 64, "caffe"),
    "resnet101": BackboneSpec((3, 4, 23, 3), 1, 64, "caffe"),
    "resnext50_32x4d": BackboneSpec((3, 4, 6, 3), 32, 4, "torch"),
    "resnext101_32x4d": BackboneSpec((3, 4, 23, 3), 32, 4, "torch"),
    "resnext101_64x4d": BackboneSpec((3, 4, 23, 3), 64, 4, "torch"),
    "resnext101_32x8d": BackboneSpec((3, 4, 23, 3), 32, 8, "torch"),
}
# The names ``Config.BACKBONE`` accepts (besides a callable).
BACKBONE_ARCHITECTURES = tuple(BACKBONE_SPECS)
# Blocks per stage (stages 2, 3, 4, 5) of the ResNets (legacy name).
RESNET_BLOCKS = {k: v.blocks for k, v in BACKBONE_SPECS.items() if v.layout == "caffe"}


def backbone_spec(architecture):
    """The :class:`BackboneSpec` of a name; ValueError naming the choices."""
    if architecture not in BACKBONE_SPECS:
        raise ValueError(f"resnet_graph: unknown architecture {architecture!r}; expected "
                         f"one of {list(BACKBONE_ARCHITECTURES)}")
    return BACKBONE_SPECS[architecture]


@keras.saving.register_keras_serializable(package="mrcnn")
class BatchNorm(layers.BatchNormalization):
    """BatchNormalization whose train/inference mode is fixed at construction.

    Args:
        train_bn: ``False`` (frozen: inference mode, moving statistics not
            updated), ``True`` (always training mode: batch statistics, moving
            statistics updated) or ``None`` (follow the ``training`` argument).
        **kwargs: passed to ``keras.layers.BatchNormalization``. The ResNet
            and the heads keep epsilon at the Keras default 0.001 (as in the
            released weights); the ResNeXt layers use 1e-5 (PyTorch's).
    """

    def __init__(self, train_bn=None, **kwargs):
        super().__init__(**kwargs)
        if train_bn not in (True, False, None):
            raise ValueError(f"BatchNorm {self.name!r}: train_bn must be True, False or "
                             f"None, got {train_bn!r}")
        self.train_bn = train_bn
        # Set by mrcnn.modeling.folding.set_batch_norm_folding: the convolution
        # before this layer applies it, and in inference mode it passes through.
        self.mrcnn_folded = False

    def runs_in_inference_mode(self, training=None):
        """Whether a call with ``training`` normalises with the moving statistics."""
        if self.train_bn is not None:
            training = self.train_bn
        return not (training and self.trainable)

    def call(self, inputs, training=None, mask=None):
        if self.train_bn is not None:
            training = self.train_bn
        if self.mrcnn_folded and self.runs_in_inference_mode(training):
            return inputs  # folded into the convolution before it
        return super().call(inputs, training=training, mask=mask)

    def get_config(self):
        config = super().get_config()
        config["train_bn"] = self.train_bn
        return config


def _bottleneck(x, filters, stage, block, kernel_size=3, strides=1, projection=False,
                train_bn=False, use_bias=True):
    """One bottleneck block of the Caffe-style ResNet (identity or projection shortcut).

    Layer names: ``res{stage}{block}_branch2a/2b/2c`` (+ ``_branch1`` for the
    projection shortcut) and ``bn{stage}{block}_branch...``.
    """
    f1, f2, f3 = filters
    conv = f"res{stage}{block}_branch"
    bn = f"bn{stage}{block}_branch"

    y = conv_bn(x, FoldableConv2D(f1, 1, strides=strides, use_bias=use_bias, name=conv + "2a"),
                BatchNorm(train_bn=train_bn, name=bn + "2a"))
    y = layers.Activation("relu")(y)
    y = conv_bn(y, FoldableConv2D(f2, kernel_size, padding="same", use_bias=use_bias,
                                  name=conv + "2b"),
                BatchNorm(train_bn=train_bn, name=bn + "2b"))
    y = layers.Activation("relu")(y)
    y = conv_bn(y, FoldableConv2D(f3, 1, use_bias=use_bias, name=conv + "2c"),
                BatchNorm(train_bn=train_bn, name=bn + "2c"))

    if projection:
        shortcut = conv_bn(x, FoldableConv2D(f3, 1, strides=strides, use_bias=use_bias,
                                             name=conv + "1"),
                           BatchNorm(train_bn=train_bn, name=bn + "1"))
    else:
        shortcut = x
    y = layers.Add(name=f"res{stage}{block}_add")([y, shortcut])
    return layers.Activation("relu", name=f"res{stage}{block}_out")(y)


def _resnext_bottleneck(x, width, out_channels, groups, stage, block, strides=1,
                        projection=False, train_bn=False):
    """One ResNeXt block (torchvision's layout): 1x1 -> grouped 3x3 (stride) -> 1x1.

    Same layer names as :func:`_bottleneck`; no conv biases; BatchNorm eps 1e-5.
    """
    conv = f"res{stage}{block}_branch"
    bn = f"bn{stage}{block}_branch"

    def norm(name):
        return BatchNorm(train_bn=train_bn, epsilon=TORCH_BN_EPSILON, name=name)

    y = conv_bn(x, FoldableConv2D(width, 1, use_bias=False, name=conv + "2a"), norm(bn + "2a"))
    y = layers.Activation("relu")(y)
    if strides == 1:
        conv2b = FoldableConv2D(width, 3, padding="same", groups=groups, use_bias=False,
                                name=conv + "2b")
    else:  # PyTorch's padding=1 (Keras "same" would pad 0 before, 1 after)
        y = layers.ZeroPadding2D(1, name=conv + "2b_pad")(y)
        conv2b = FoldableConv2D(width, 3, strides=strides, groups=groups, use_bias=False,
                                name=conv + "2b")
    y = layers.Activation("relu")(conv_bn(y, conv2b, norm(bn + "2b")))
    y = conv_bn(y, FoldableConv2D(out_channels, 1, use_bias=False, name=conv + "2c"),
                norm(bn + "2c"))

    if projection:
        shortcut = conv_bn(x, FoldableConv2D(out_channels, 1, strides=strides, use_bias=False,
                                             name=conv + "1"),
                           norm(bn + "1"))
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


def backbone_stage(x, architecture, stage, train_bn=False, strides=None):
    """Stage ``stage`` (2..5) of an architecture on a Keras tensor.

    Args:
        x: Keras tensor ``[B, H, W, C]`` (C: the previous stage's output
            channels, 64 for stage 2).
        architecture: a :data:`BACKBONE_ARCHITECTURES` name.
        stage: 2, 3, 4 or 5 (the layer names' stage digit).
        train_bn: see :class:`BatchNorm`.
        strides: stride of the first block; None -> 1 for stage 2, else 2.

    Returns:
        Keras tensor ``[B, H / strides, W / strides, 256 * 2 ** (stage - 2)]``.
    """
    spec = backbone_spec(architecture)
    if stage not in (2, 3, 4, 5):
        raise ValueError(f"backbone_stage: stage must be 2, 3, 4 or 5, got {stage!r}")
    if strides is None:
        strides = 1 if stage == 2 else 2
    out = spec.out_channels(stage)
    for i in range(spec.blocks[stage - 2]):
        letter = chr(ord("a") + i)
        first = dict(strides=strides, projection=True) if i == 0 else {}
        if spec.layout == "caffe":
            x = _bottleneck(x, (out // 4, out // 4, out), stage, letter,
                            train_bn=train_bn, **first)
        else:
            x = _resnext_bottleneck(x, spec.width(stage), out, spec.cardinality, stage,
                                    letter, train_bn=train_bn, **first)
    return x


def resnet_graph(input_image, architecture, stage5=True, train_bn=False):
    """Build a ResNet / ResNeXt backbone on a Keras tensor.

    Args:
        input_image: Keras tensor ``[B, H, W, C]`` (molded image; H and W
            multiples of 32 -- 64 with P6).
        architecture: a :data:`BACKBONE_ARCHITECTURES` name (``"resnet50"``,
            ``"resnet101"``, ``"resnext50_32x4d"``, ``"resnext101_32x4d"``,
            ``"resnext101_64x4d"``, ``"resnext101_32x8d"``).
        stage5: build stage 5 (C5); if False the last output is None.
        train_bn: see :class:`BatchNorm` (False, True or None).

    Returns:
        ``[C1, C2, C3, C4, C5]`` Keras tensors, strides 4, 4, 8, 16, 32
        (C1 is the stem output after max-pooling, 64 channels), C2..C5 with
        256, 512, 1024, 2048 channels.
    """
    spec = backbone_spec(architecture)
    torch_layout = spec.layout == "torch"

    x = layers.ZeroPadding2D(3, name="conv1_pad")(input_image)
    conv1 = FoldableConv2D(64, 7, strides=2, use_bias=not torch_layout, name="conv1")
    conv1.mrcnn_backbone = architecture  # recorded in checkpoints (mrcnn.engine.checkpoints)
    bn_kwargs = dict(epsilon=TORCH_BN_EPSILON) if torch_layout else {}
    x = conv_bn(x, conv1, BatchNorm(train_bn=train_bn, name="bn_conv1", **bn_kwargs))
    x = layers.Activation("relu", name="conv1_relu")(x)
    if torch_layout:
        x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
        c1 = x = layers.MaxPooling2D(3, strides=2, name="pool1")(x)
    else:
        c1 = x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool1")(x)

    c2 = x = backbone_stage(x, architecture, 2, train_bn)
    c3 = x = backbone_stage(x, architecture, 3, train_bn)
    c4 = x = backbone_stage(x, architecture, 4, train_bn)
    c5 = backbone_stage(x, architecture, 5, train_bn) if stage5 else None
    return [c1, c2, c3, c4, c5]
