"""The mask branch: the mask head, its targets (graph and NumPy twin), its loss,
and pasting its outputs into the image in the graph.

RoIs are normalised ``(y1, x1, y2, x2)``; the targets' geometry in the RoIAlign
path is the features' (the RoI's exact pixel box, aligned, bin centres: see
`mrcnn.structures.coords`). Pasting in NumPy is
`mrcnn.structures.interpolation.paste_masks`; `paste_masks_graph` is its twin.
"""

import numpy as np
import tensorflow as tf
from keras import layers

from mrcnn.config import MASK_LOSSES
from mrcnn.constants import LEGACY_POOLING_METHOD
from mrcnn.modeling.backbone import BatchNorm
from mrcnn.modeling.folding import FoldableConv2D, conv_bn
from mrcnn.modeling.layers import MergeRoiAxis, SplitRoiAxis, roi_wise
from mrcnn.modeling.losses import EPSILON, mean_or_zero
from mrcnn.modeling.roi_heads.box_head import positive_rows, roi_pooling_kwargs
from mrcnn.modeling.roi_heads.poolers import PyramidROIAlign
from mrcnn.ops import roi_align
from mrcnn.structures.coords import norm_to_pixels_graph
from mrcnn.structures.interpolation import roi_align as roi_align_np
from mrcnn.structures.interpolation_tf import resize_taps_graph


def build_fpn_mask_graph(rois, feature_maps, image_meta, pool_size, num_classes,
                         train_bn=False, roi_pooling=None, conv_channels=256, logits=False,
                         mask_loss="sigmoid", class_agnostic=False):
    """Mask head.

    Args: as :func:`fpn_classifier_graph` (``pool_size`` = MASK_POOL_SIZE, 14);
        ``conv_channels``: width of the four 3x3 convs and the deconv (256 in
        the released weights; fewer makes the head, the costliest part of a
        small model's training step on a CPU, proportionally cheaper).

        logits: False: the layer ``mrcnn_mask`` is the 1x1 convolution with its
            activation (probabilities; the inference graph, as the released
            weights' layer); True: the same layer without the activation, so the
            training loss is computed from logits (no saturation at |logit| ~ 16
            where clipped probabilities stop the gradient). Same weights.
        mask_loss: ``"sigmoid"`` (the released weights: a sigmoid per channel)
            or ``"softmax"`` (a softmax over the channels at each pixel; see
            `mrcnn_mask_loss`): the activation of ``mrcnn_mask``.
        class_agnostic: False: ``NC = num_classes`` channels, one mask per
            class (the released layout, kernel ``(1, 1, C, num_classes)``);
            True: ``NC = 1``, one mask per RoI. Its one channel is the object
            logit against a background logit fixed at 0; the two-way softmax
            over ``(0, z)`` is ``sigmoid(z)``, so it always has a sigmoid.

    Returns:
        ``[B, R, 2 * pool_size, 2 * pool_size, NC]`` mask probabilities, or
        their logits (float32; layer ``mrcnn_mask_per_roi``: the weights' layer
        ``mrcnn_mask`` computes them as ``[B * R, ...]``, RoIs in the batch axis).
    """
    _check_mask_loss(mask_loss)
    x = PyramidROIAlign((pool_size, pool_size), name="roi_align_mask",
                        **roi_pooling_kwargs(roi_pooling))([rois, image_meta] + list(feature_maps))
    x = MergeRoiAxis(name="mrcnn_mask_rois")(x)                        # [B * R, p, p, C]
    for i in range(1, 5):
        x = conv_bn(x, roi_wise(FoldableConv2D(conv_channels, 3, padding="same",
                                               name=f"mrcnn_mask_conv{i}")),
                    roi_wise(BatchNorm(train_bn=train_bn, name=f"mrcnn_mask_bn{i}")))
        x = roi_wise(layers.Activation("relu", name=f"mrcnn_mask_relu{i}"))(x)
    return mask_outputs(x, rois, num_classes, conv_channels=conv_channels, logits=logits,
                        mask_loss=mask_loss, class_agnostic=class_agnostic)


def mask_outputs(x, rois, num_classes, conv_channels=256, logits=False, mask_loss="sigmoid",
                 class_agnostic=False):
    """The mask head's last layers (the FPN and C4 heads'): a 2x deconvolution
    (``mrcnn_mask_deconv``) and the per-class 1x1 convolution (``mrcnn_mask``).

    Args:
        x: ``[B * R, s, s, C]`` per-RoI features (RoIs in the batch axis).
        rois: ``[B, R, 4]`` (for the RoI axis).
        num_classes, conv_channels, logits, mask_loss, class_agnostic: see
            `build_fpn_mask_graph`.

    Returns:
        ``[B, R, 2 s, 2 s, NC]`` (layer ``mrcnn_mask_per_roi``).
    """
    _check_mask_loss(mask_loss)
    x = roi_wise(layers.Conv2DTranspose(conv_channels, 2, strides=2, activation="relu",
                                        name="mrcnn_mask_deconv"))(x)
    channels = 1 if class_agnostic else num_classes
    if logits:
        activation = None
    else:
        activation = "softmax" if mask_loss == "softmax" and channels > 1 else "sigmoid"
    mask_layer = roi_wise(layers.Conv2D(channels, 1, activation=activation, dtype="float32",
                                        name="mrcnn_mask"))
    # What the layer was built for (recorded in checkpoints: mrcnn.engine.checkpoints).
    mask_layer.mrcnn_mask_loss, mask_layer.mrcnn_class_agnostic = mask_loss, class_agnostic
    x = mask_layer(x)
    # float32 like the layer: a policy-dtype layer would cast the masks back to bf16.
    return SplitRoiAxis(dtype="float32", name="mrcnn_mask_per_roi")([x, rois])


def _mask_boxes_roi_align(pos_rois, roi_gt_boxes, mask_hw, image_hw, use_mini_mask):
    """Boxes of the positive RoIs in the gt-mask arrays' pixel coordinates.

    A full-image mask's pixels are the image's; a mini-mask of ``[mh, mw]``
    pixels covers its gt box, so a RoI is re-expressed in that box's frame and
    scaled by ``mh / gh`` (pixel boxes via `mrcnn.structures.coords`).
    """
    rois_px = norm_to_pixels_graph(pos_rois, image_hw)
    if not use_mini_mask:
        return rois_px
    gt_px = norm_to_pixels_graph(roi_gt_boxes, image_hw)
    origin = tf.stack([gt_px[:, 0], gt_px[:, 1]] * 2, axis=1)
    size = tf.stack([gt_px[:, 2] - gt_px[:, 0], gt_px[:, 3] - gt_px[:, 1]] * 2, axis=1)
    mask_hw = tf.cast(mask_hw, tf.float32)
    cells = tf.stack([mask_hw[0], mask_hw[1]] * 2)
    return (rois_px - origin) * cells / tf.maximum(size, 1e-6)


def mask_targets_graph(gt_masks, assignment, pos_rois, roi_gt_boxes, mask_shape, use_mini_mask,
                  pooling, image_hw):
    """``[p, mask_h, mask_w]`` float32 0/1 mask targets of the positive RoIs.

    Every pooling but the legacy ``"crop_and_resize"`` gets the RoIAligned
    targets: ``"roi_pool"`` and ``"roi_warp"`` (the paper's Table 2c rows)
    change only how the features are pooled, not what the head learns.
    """
    mask_h, mask_w = mask_shape
    masks = tf.cast(gt_masks, tf.float32)[..., None]                       # [G, mh, mw, 1]
    if pooling != LEGACY_POOLING_METHOD:
        # The features' geometry: aligned RoIAlign (bin centres) of the gt mask,
        # adaptive sampling (an area average per bin), thresholded at 0.5.
        boxes = _mask_boxes_roi_align(pos_rois, roi_gt_boxes, tf.shape(masks)[1:3],
                                      image_hw, use_mini_mask)
        pooled = roi_align(masks, tf.stop_gradient(boxes), assignment, (mask_h, mask_w),
                           spatial_scale=1.0, sampling_ratio=0, aligned=True)
        return tf.cast(pooled[..., 0] >= 0.5, tf.float32)
    # Legacy (the original's targets): crop_and_resize of normalised boxes, rounded.
    crop_boxes = pos_rois
    if use_mini_mask:
        gy1, gx1, gy2, gx2 = tf.unstack(roi_gt_boxes, num=4, axis=1)
        y1, x1, y2, x2 = tf.unstack(pos_rois, num=4, axis=1)
        gh = gy2 - gy1
        gw = gx2 - gx1
        crop_boxes = tf.stack([(y1 - gy1) / gh, (x1 - gx1) / gw,
                               (y2 - gy1) / gh, (x2 - gx1) / gw], axis=1)
    roi_masks = tf.gather(masks, assignment)
    out = tf.image.crop_and_resize(roi_masks, crop_boxes, tf.range(tf.shape(pos_rois)[0]),
                                   (mask_h, mask_w))
    return tf.round(out[..., 0])


def _check_mask_loss(mask_loss):
    if mask_loss not in MASK_LOSSES:
        raise ValueError(f"mask_loss (Config.MASK_LOSS): expected one of {MASK_LOSSES}, "
                         f"got {mask_loss!r}")


def class_masks_graph(masks, class_ids):
    """Each row's own mask out of the head's per-channel output.

    Args:
        masks: ``[N, h, w, NC]``: ``NC = NUM_CLASSES`` (class-specific head)
            or 1 (class-agnostic head, ``CLASS_AGNOSTIC_MASK``).
        class_ids: int ``[N]``, the rows' classes.

    Returns:
        ``[N, h, w]``: channel ``class_ids[i]`` of row ``i``, or channel 0 of
        every row when there is one channel (NUM_CLASSES >= 2 always, so one
        channel means class-agnostic).
    """
    class_ids = tf.cast(class_ids, tf.int32)
    channel = tf.where(tf.shape(masks)[-1] > 1, class_ids, tf.zeros_like(class_ids))
    return tf.gather(tf.transpose(masks, [0, 3, 1, 2]), channel, batch_dims=1)


def mrcnn_mask_loss(target_masks, target_class_ids, pred_masks, from_logits=False,
                    mask_loss="sigmoid"):
    """Mask loss over the positive RoIs' pixels (``Config.MASK_LOSS``).

    ``"sigmoid"`` (the paper's choice, the default): binary cross-entropy of
    the RoI's ground-truth class channel against its 0/1 target; the other
    channels get no loss, so classes do not compete.

    ``"softmax"``: at every pixel of a positive RoI, the cross-entropy of the
    softmax over the ``NC`` channels against one class label: the RoI's class
    ``k`` where its target is 1, background (channel 0) where it is 0:
    ``-log(softmax(z)[label])`` with ``label = k * target``. This is the
    per-pixel softmax with a multinomial cross-entropy loss of FCN semantic
    segmentation that the paper compares with (its Table 2b, "softmax"), over
    ``K + 1`` classes, background included, inside each RoI: the classes'
    masks compete for each pixel. The channel of class ``k`` then predicts
    ``P(pixel is k)``, and the detection's mask is that probability >= 0.5.

    Class-agnostic heads (``pred_masks`` with one channel): channel 0 serves
    every class. The two-way softmax of the object logit ``z`` against a
    background logit fixed at 0 is ``sigmoid(z)``, so both kinds compute the
    sigmoid loss.

    Args:
        target_masks: ``[B, R, h, w]`` 0/1.
        target_class_ids: ``[B, R]`` int; ``> 0`` marks the positives.
        pred_masks: ``[B, R, h, w, NC]`` (``NC`` static: NUM_CLASSES or 1)
            probabilities (sigmoid, or softmax over ``NC``), or logits with
            ``from_logits=True`` (what training uses: exact gradients at any
            confidence; from probabilities, which are clipped to
            ``[1e-7, 1 - 1e-7]`` as in the original, a pixel whose |logit| is
            past about 16 gets no gradient, however wrong it is).
        from_logits: see ``pred_masks``.
        mask_loss: ``"sigmoid"`` or ``"softmax"``.

    Returns:
        mean cross-entropy over the positives' pixels; 0 if no positive.
    """
    _check_mask_loss(mask_loss)
    ix, class_ids = positive_rows(target_class_ids)
    target = tf.cast(target_masks, tf.float32)
    target = tf.gather(tf.reshape(target, tf.concat([[-1], tf.shape(target)[2:]], 0)), ix)
    pred = tf.cast(pred_masks, tf.float32)
    pred = tf.gather(tf.reshape(pred, tf.concat([[-1], tf.shape(pred)[2:]], 0)), ix)
    # pred: [P, h, w, NC]; target: [P, h, w]
    if mask_loss == "softmax" and pred.shape[-1] != 1:
        labels = tf.where(target >= 0.5, class_ids[:, None, None], 0)         # [P, h, w]
        if from_logits:
            return mean_or_zero(tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=labels, logits=pred))
        prob = tf.gather(pred, labels, batch_dims=3)
        return mean_or_zero(-tf.math.log(tf.clip_by_value(prob, EPSILON, 1.0)))
    pred = class_masks_graph(pred, class_ids)                                   # [P, h, w]
    if from_logits:
        return mean_or_zero(tf.nn.sigmoid_cross_entropy_with_logits(labels=target,
                                                                     logits=pred))
    pred = tf.clip_by_value(pred, EPSILON, 1.0 - EPSILON)
    bce = -(target * tf.math.log(pred) + (1.0 - target) * tf.math.log(1.0 - pred))
    return mean_or_zero(bce)


def crop_and_resize_mask(mask, box, output_shape, threshold=0.5):
    """The mask target of one RoI: RoIAlign of a 2-D mask, thresholded (NumPy).

    The graph's geometry (`mrcnn.modeling.roi_heads.sampling`, ``"roi_align"``):
    the box's bins are sampled at their centres (aligned RoIAlign, adaptive
    sampling: an average over each bin, `mrcnn.structures.interpolation.roi_align`).

    Args:
        mask: ``[H, W]`` bool or float mask; pixel ``(i, j)`` covers
            ``[i, i + 1) x [j, j + 1)``.
        box: ``(y1, x1, y2, x2)`` in the mask's pixel coordinates (floats
            allowed, may extend outside), y2/x2 exclusive.
        output_shape: ``(oh, ow)``.
        threshold: values ``>= threshold`` are 1; ``None`` returns the raw
            pooled values.

    Returns:
        float32 ``[oh, ow]``: 0/1 values (or raw values for ``threshold=None``).
    """
    values = roi_align_np(np.asarray(mask, dtype=np.float32), np.reshape(box, (1, 4)),
                       output_shape, spatial_scale=1.0, sampling_ratio=0, aligned=True)[0]
    if threshold is None:
        return values.astype(np.float32)
    return (values >= threshold).astype(np.float32)


# ----------------------------------------------------------------------------- unmolding
def paste_masks_graph(masks, boxes, image_hw, threshold=0.5):
    """Paste small masks into their boxes of a full image (vectorised `unmold_mask`).

    Each ``[mh, mw]`` mask is resized bilinearly (scikit-image's maths, see
    `resample_linear_graph`, clipped to the mask's value range) to its box
    size, thresholded (``>= threshold``) and placed at the box; outside its box
    a mask is False. The graph twin of `mrcnn.structures.interpolation.paste_masks`.

    Args:
        masks: float ``[N, mh, mw]`` probabilities.
        boxes: int32 ``[N, 4]`` ``(y1, x1, y2, x2)`` pixels, y2/x2 exclusive,
            inside the image (clipped by the caller).
        image_hw: int32 ``[2]`` ``(H, W)``.

    Returns:
        bool ``[N, H, W]``.
    """
    masks = tf.cast(masks, tf.float32)
    boxes = tf.cast(boxes, tf.int32)
    mh, mw = tf.shape(masks)[1], tf.shape(masks)[2]

    def taps(start, end, out_size, in_size):
        # Position of every output pixel in its box's mask, per instance: [N, out_size].
        local = tf.cast(tf.range(out_size)[None, :] - start[:, None], tf.float32)
        length = tf.cast(tf.maximum(end - start, 1), tf.float32)[:, None]
        coords = (local + 0.5) * (tf.cast(in_size, tf.float32) / length) - 0.5
        inside = (local >= 0.0) & (local < tf.cast(end - start, tf.float32)[:, None])
        lo, hi, w_lo, w_hi = resize_taps_graph(coords, in_size)
        zero = tf.zeros_like(w_lo)
        return lo, hi, tf.where(inside, w_lo, zero), tf.where(inside, w_hi, zero), inside

    x_lo, x_hi, wx_lo, wx_hi, in_x = taps(boxes[:, 1], boxes[:, 3], image_hw[1], mw)  # [N, W]
    cols = (tf.gather(masks, x_lo, axis=2, batch_dims=1) * wx_lo[:, None, :]
            + tf.gather(masks, x_hi, axis=2, batch_dims=1) * wx_hi[:, None, :])  # [N, mh, W]
    y_lo, y_hi, wy_lo, wy_hi, in_y = taps(boxes[:, 0], boxes[:, 2], image_hw[0], mh)  # [N, H]
    full = (tf.gather(cols, y_lo, axis=1, batch_dims=1) * wy_lo[:, :, None]
            + tf.gather(cols, y_hi, axis=1, batch_dims=1) * wy_hi[:, :, None])   # [N, H, W]
    # scikit-image's clip=True, inside each box: values stay in the mask's range.
    low = tf.reduce_min(masks, axis=[1, 2])[:, None, None]
    high = tf.reduce_max(masks, axis=[1, 2])[:, None, None]
    inside = in_y[:, :, None] & in_x[:, None, :]
    return inside & (tf.clip_by_value(full, low, high) >= threshold)
