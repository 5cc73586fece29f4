"""The box head: RoI features -> class logits / probabilities and per-class box
deltas, and its two losses.

RoIs are normalised ``(y1, x1, y2, x2)`` (see `mrcnn.structures.coords`). Box
deltas are ``(dy, dx, log dh, log dw)`` divided by ``BBOX_STD_DEV``.
"""

import tensorflow as tf
from keras import layers

from mrcnn.modeling.backbone import BatchNorm
from mrcnn.modeling.folding import FoldableConv2D, conv_bn
from mrcnn.modeling.layers import MergeRoiAxis, SplitRoiAxis, roi_wise
from mrcnn.modeling.losses import mean_or_zero, smooth_l1
from mrcnn.modeling.roi_heads.poolers import PyramidROIAlign


def roi_pooling_kwargs(roi_pooling):
    roi_pooling = dict(roi_pooling or {})
    unknown = set(roi_pooling) - {"method", "sampling_ratio", "aligned", "aggregation"}
    if unknown:
        raise ValueError(f"roi_pooling: unknown keys {sorted(unknown)}; expected "
                         "method, sampling_ratio, aligned, aggregation")
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
        train_bn: see :class:`mrcnn.modeling.backbone.BatchNorm`.
        fc_layers_size: width of the two "fc" layers (1x1 convs), 1024.
        roi_pooling: dict with optional ``method``, ``sampling_ratio``,
            ``aligned``, ``aggregation`` for :class:`PyramidROIAlign`.

    Returns:
        ``mrcnn_class_logits [B, R, NC]``, ``mrcnn_probs [B, R, NC]`` (layer
        ``mrcnn_class``) and ``mrcnn_bbox [B, R, NC, 4]`` (deltas
        ``(dy, dx, log dh, log dw)`` still divided by BBOX_STD_DEV).
    """
    x = PyramidROIAlign((pool_size, pool_size), name="roi_align_classifier",
                        **roi_pooling_kwargs(roi_pooling))([rois, image_meta] + list(feature_maps))
    x = MergeRoiAxis(name="mrcnn_class_rois")(x)                       # [B * R, p, p, C]
    x = conv_bn(x, roi_wise(FoldableConv2D(fc_layers_size, pool_size, padding="valid",
                                           name="mrcnn_class_conv1")),
                roi_wise(BatchNorm(train_bn=train_bn, name="mrcnn_class_bn1")))
    x = roi_wise(layers.Activation("relu", name="mrcnn_class_relu1"))(x)
    x = conv_bn(x, roi_wise(FoldableConv2D(fc_layers_size, 1, name="mrcnn_class_conv2")),
                roi_wise(BatchNorm(train_bn=train_bn, name="mrcnn_class_bn2")))
    x = roi_wise(layers.Activation("relu", name="mrcnn_class_relu2"))(x)
    shared = roi_wise(layers.Reshape((fc_layers_size,), name="pool_squeeze"))(x)
    return class_box_outputs(shared, rois, num_classes)


def class_box_outputs(shared, rois, num_classes):
    """The class and box layers on per-RoI features (the FPN and C4 heads').

    Args:
        shared: ``[B * R, F]`` features (RoIs in the batch axis).
        rois: ``[B, R, 4]`` the RoIs (for the RoI axis).
        num_classes: NUM_CLASSES.

    Returns:
        ``(logits [B, R, NC], probs [B, R, NC], bbox [B, R, NC, 4])``: layers
        ``mrcnn_class_logits``, ``mrcnn_class``, ``mrcnn_bbox_fc`` / ``mrcnn_bbox``.
    """
    logits = roi_wise(layers.Dense(num_classes, name="mrcnn_class_logits"))(shared)
    logits = SplitRoiAxis(name="mrcnn_class_logits_rois")([logits, rois])   # [B, R, NC]
    probs = layers.Activation("softmax", dtype="float32", name="mrcnn_class")(logits)
    x = roi_wise(layers.Dense(num_classes * 4, name="mrcnn_bbox_fc"))(shared)
    x = SplitRoiAxis(name="mrcnn_bbox_fc_rois")([x, rois])
    bbox = layers.Reshape((-1, num_classes, 4), name="mrcnn_bbox")(x)
    return logits, probs, bbox


def real_rows(rois):
    """bool ``[B, R]``: the RoI rows that are not zero padding (``rois [B, R, 4]``)."""
    return tf.reduce_any(tf.not_equal(tf.cast(rois, tf.float32), 0.0), axis=-1)


def mrcnn_class_loss(target_class_ids, pred_class_logits, active_class_ids, rois=None):
    """Head classification loss.

    Classes that are not active for the image's source dataset
    (``active_class_ids[b, c] == 0``) are masked out of the softmax (their
    logits are set to -1e9), so a RoI whose top guess is an inactive class is
    still corrected towards the active ones. The target class always stays in;
    an image with no active class at all (e.g. all-zero meta) masks nothing.
    Rows that are zero padding (``rois`` all zero) are left out of the average.

    Args:
        target_class_ids: ``[B, R]`` int.
        pred_class_logits: ``[B, R, NC]``.
        active_class_ids: ``[B, NC]`` 1/0 (from image meta).
        rois: optional ``[B, R, 4]`` sampled RoIs (``output_rois``); None: every
            row counts.

    Returns:
        mean softmax cross-entropy over the real rows; 0 if there are none.
    """
    target = tf.cast(target_class_ids, tf.int32)
    logits = tf.cast(pred_class_logits, tf.float32)
    num_classes = tf.shape(logits)[-1]
    active = tf.cast(active_class_ids, tf.float32) > 0                          # [B, NC]
    active = active | ~tf.reduce_any(active, axis=-1, keepdims=True)
    keep = active[:, None, :] | tf.one_hot(target, num_classes, on_value=True,
                                           off_value=False)                     # [B, R, NC]
    logits = tf.where(keep, logits, tf.fill(tf.shape(logits), -1e9))
    loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=target, logits=logits)
    if rois is None:
        return mean_or_zero(loss)
    weight = tf.cast(real_rows(rois), tf.float32)
    return tf.math.divide_no_nan(tf.reduce_sum(loss * weight), tf.reduce_sum(weight))


def positive_rows(target_class_ids):
    ids = tf.reshape(tf.cast(target_class_ids, tf.int32), [-1])
    ix = tf.where(ids > 0)[:, 0]
    return ix, tf.gather(ids, ix)


def mrcnn_bbox_loss(target_bbox, target_class_ids, pred_bbox):
    """Head box loss: smooth L1 of the gt class's deltas over positive RoIs.

    Args:
        target_bbox: ``[B, R, 4]``; target_class_ids: ``[B, R]`` int;
        pred_bbox: ``[B, R, NC, 4]``.

    Returns:
        smooth L1 averaged over the positives' coordinates; 0 if no positive.
    """
    ix, class_ids = positive_rows(target_class_ids)
    target = tf.gather(tf.reshape(tf.cast(target_bbox, tf.float32), [-1, 4]), ix)
    pred = tf.cast(pred_bbox, tf.float32)
    pred = tf.reshape(pred, tf.concat([[-1], tf.shape(pred)[2:]], 0))            # [B*R, NC, 4]
    pred = tf.gather(tf.gather(pred, ix), class_ids, batch_dims=1)              # [P, 4]
    return mean_or_zero(smooth_l1(target, pred))
