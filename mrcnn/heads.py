"""Mask R-CNN heads: box classifier/regressor and mask predictor (Keras 3).

Layer names are the weights contract (``mrcnn_class_conv1``, ``mrcnn_class_bn1``,
..., ``mrcnn_bbox_fc``, ``mrcnn_mask_conv1..4``, ``mrcnn_mask_bn1..4``,
``mrcnn_mask_deconv``, ``mrcnn_mask``): each is a :class:`TimeDistributed`
wrapper around the layer that owns the weights.

:class:`TimeDistributed` here applies the wrapped layer to all ``B * R`` RoIs
at once (reshape ``[B, R, ...] -> [B * R, ...]`` and back) instead of Keras'
per-timestep loop, which would build one copy of the layer's ops per RoI.
"""

import keras
import tensorflow as tf
from keras import layers

from mrcnn.backbone import BatchNorm
from mrcnn.layers.pyramid_roi_align import PyramidROIAlign

__all__ = ["TimeDistributed", "fpn_classifier_graph", "build_fpn_mask_graph"]


@keras.saving.register_keras_serializable(package="mrcnn")
class TimeDistributed(layers.TimeDistributed):
    """``keras.layers.TimeDistributed`` computed as one batched call.

    Input ``[B, R, ...]``; the wrapped layer sees ``[B * R, ...]``. The
    wrapped layer must treat samples independently (conv, dense, activation,
    batch norm in inference mode; in training mode batch norm statistics are
    taken over all ``B * R`` RoIs).
    """

    def call(self, inputs, training=None, mask=None):
        shape = tf.shape(inputs)
        flat = tf.reshape(inputs, tf.concat([[-1], shape[2:]], axis=0))
        flat = tf.ensure_shape(flat, [None] + list(inputs.shape[2:]))
        kwargs = {}
        if self.layer._call_has_training_arg:
            kwargs["training"] = training
        out = self.layer.call(flat, **kwargs)
        out_shape = tf.concat([shape[:2], tf.shape(out)[1:]], axis=0)
        return tf.ensure_shape(tf.reshape(out, out_shape),
                               [inputs.shape[0], inputs.shape[1]] + list(out.shape[1:]))


def _roi_pooling_kwargs(roi_pooling):
    roi_pooling = dict(roi_pooling or {})
    unknown = set(roi_pooling) - {"method", "sampling_ratio", "aligned"}
    if unknown:
        raise ValueError(f"roi_pooling: unknown keys {sorted(unknown)}; expected "
                         "method, sampling_ratio, aligned")
    return roi_pooling


def fpn_classifier_graph(rois, feature_maps, image_meta, pool_size, num_classes,
                         train_bn=False, fc_layers_size=1024, roi_pooling=None):
    """Box classification and regression head.

    Args:
        rois: ``[B, R, 4]`` normalised RoIs (Keras tensor).
        feature_maps: ``[P2, P3, P4, P5]`` Keras tensors.
        image_meta: ``[B, META]`` Keras tensor.
        pool_size: RoI pooling size (POOL_SIZE, 7).
        num_classes: NUM_CLASSES (background included).
        train_bn: see :class:`mrcnn.backbone.BatchNorm`.
        fc_layers_size: width of the two "fc" layers (1x1 convs), 1024.
        roi_pooling: dict with optional ``method``, ``sampling_ratio``,
            ``aligned`` for :class:`PyramidROIAlign`.

    Returns:
        ``mrcnn_class_logits [B, R, NC]``, ``mrcnn_probs [B, R, NC]`` (layer
        ``mrcnn_class``) and ``mrcnn_bbox [B, R, NC, 4]`` (deltas
        ``(dy, dx, log dh, log dw)`` still divided by BBOX_STD_DEV).
    """
    x = PyramidROIAlign((pool_size, pool_size), name="roi_align_classifier",
                        **_roi_pooling_kwargs(roi_pooling))([rois, image_meta] + list(feature_maps))
    x = TimeDistributed(layers.Conv2D(fc_layers_size, pool_size, padding="valid"),
                        name="mrcnn_class_conv1")(x)
    x = TimeDistributed(BatchNorm(train_bn=train_bn), name="mrcnn_class_bn1")(x)
    x = layers.Activation("relu", name="mrcnn_class_relu1")(x)
    x = TimeDistributed(layers.Conv2D(fc_layers_size, 1), name="mrcnn_class_conv2")(x)
    x = TimeDistributed(BatchNorm(train_bn=train_bn), name="mrcnn_class_bn2")(x)
    x = layers.Activation("relu", name="mrcnn_class_relu2")(x)
    shared = layers.Reshape((-1, fc_layers_size), name="pool_squeeze")(x)

    logits = TimeDistributed(layers.Dense(num_classes), name="mrcnn_class_logits")(shared)
    probs = layers.Activation("softmax", dtype="float32", name="mrcnn_class")(logits)
    x = TimeDistributed(layers.Dense(num_classes * 4), name="mrcnn_bbox_fc")(shared)
    bbox = layers.Reshape((-1, num_classes, 4), name="mrcnn_bbox")(x)
    return logits, probs, bbox


def build_fpn_mask_graph(rois, feature_maps, image_meta, pool_size, num_classes,
                         train_bn=False, roi_pooling=None, conv_channels=256, logits=False):
    """Mask head.

    Args: as :func:`fpn_classifier_graph` (``pool_size`` = MASK_POOL_SIZE, 14);
        ``conv_channels``: width of the four 3x3 convs and the deconv (256 in
        the released weights; fewer makes the head, the costliest part of a
        small model's training step on a CPU, proportionally cheaper).

        logits: False: the layer ``mrcnn_mask`` is the 1x1 convolution with a
            sigmoid (probabilities; the inference graph, as the released
            weights' layer); True: the same layer without the sigmoid, so the
            training loss is computed from logits (no saturation at |logit| ~ 16
            where clipped probabilities stop the gradient). Same weights.

    Returns:
        ``[B, R, 2 * pool_size, 2 * pool_size, NC]`` per-class sigmoid masks, or
        their logits (layer ``mrcnn_mask``, float32).
    """
    x = PyramidROIAlign((pool_size, pool_size), name="roi_align_mask",
                        **_roi_pooling_kwargs(roi_pooling))([rois, image_meta] + list(feature_maps))
    for i in range(1, 5):
        x = TimeDistributed(layers.Conv2D(conv_channels, 3, padding="same"),
                            name=f"mrcnn_mask_conv{i}")(x)
        x = TimeDistributed(BatchNorm(train_bn=train_bn), name=f"mrcnn_mask_bn{i}")(x)
        x = layers.Activation("relu", name=f"mrcnn_mask_relu{i}")(x)
    x = TimeDistributed(layers.Conv2DTranspose(conv_channels, 2, strides=2, activation="relu"),
                        name="mrcnn_mask_deconv")(x)
    activation = None if logits else "sigmoid"
    return TimeDistributed(layers.Conv2D(num_classes, 1, activation=activation, dtype="float32"),
                           dtype="float32", name="mrcnn_mask")(x)
