"""Helpers of the original (matterport) Mask R-CNN that user code still calls.

The old single-file ``model.py`` and ``utils.py`` exposed per-image graph
functions with a ``config`` argument; here they are thin wrappers over the
functions the layers use (which take explicit arguments), so there is still one
implementation of each:

* :func:`batch_slice` -- run a per-image function over a batch (Python loop).
* :func:`detection_targets_graph` -- training targets of one image
  (:func:`mrcnn.modeling.roi_heads.sampling.detection_targets_graph`).
* :func:`refine_detections_graph` -- final detections of one image
  (:func:`mrcnn.modeling.roi_heads.detection.refine_detections_graph`).
* :func:`batch_pack_graph` -- concatenate the first ``counts[i]`` rows of each
  batch row.
* :func:`mold_mask` -- resize/pad instance masks like the image is molded for
  inference (the original's unfinished stub, made to work).

Box conventions: graph functions take boxes ``(y1, x1, y2, x2)`` NORMALISED to
the molded image (:func:`mrcnn.structures.boxes_tf.norm_boxes_graph`); ``mold_mask``
works in pixels.
"""

import numpy as np
import tensorflow as tf

from mrcnn.config import built_pooling_method
from mrcnn.structures.images import resize_image
from mrcnn.structures.masks import resize_mask
from mrcnn.inference.molding import inference_resize_mode
from mrcnn.modeling.roi_heads import detection as _detection
from mrcnn.modeling.roi_heads import sampling as _detection_target
from mrcnn.modeling.losses import smooth_l1
from mrcnn.modeling.roi_heads.box_head import mrcnn_bbox_loss, mrcnn_class_loss
from mrcnn.modeling.roi_heads.mask_head import mrcnn_mask_loss
from mrcnn.modeling.rpn.loss import rpn_bbox_loss, rpn_class_loss

__all__ = ["batch_slice", "detection_targets_graph", "refine_detections_graph",
           "batch_pack_graph", "mold_mask"]


def batch_slice(inputs, graph_fn, batch_size, names=None):
    """Split ``inputs`` along the batch axis, run ``graph_fn`` on each slice and
    stack the results (the original ``utils.batch_slice``).

    Useful for functions that only handle one image at a time. Unlike
    ``tf.map_fn`` this is a Python loop, so ``batch_size`` must be a Python int
    (the batch dimension must be known); the graph is unrolled per image.

    Args:
        inputs: a tensor (or array) ``[B, ...]`` or a list/tuple of them, all
            with at least ``batch_size`` rows on axis 0.
        graph_fn: called as ``graph_fn(*slices)`` with one ``[...]`` slice of
            each input; returns a tensor or a list/tuple of tensors. Every call
            must return the same number of outputs with equal shapes.
        batch_size: number of slices (Python int >= 1).
        names: optional list of names of the stacked outputs (one per output).

    Returns:
        A tensor ``[batch_size, ...]`` if ``graph_fn`` returns one tensor,
        else a list of such tensors, one per output.
    """
    if not isinstance(inputs, (list, tuple)):
        inputs = [inputs]
    batch_size = int(batch_size)
    if batch_size < 1:
        raise ValueError(f"batch_slice: batch_size must be >= 1, got {batch_size}")

    outputs = []
    for i in range(batch_size):
        output_slice = graph_fn(*[x[i] for x in inputs])
        if not isinstance(output_slice, (tuple, list)):
            output_slice = [output_slice]
        outputs.append(output_slice)
    counts = {len(o) for o in outputs}
    if len(counts) != 1:
        raise ValueError(f"batch_slice: graph_fn returned different numbers of outputs "
                         f"for different slices: {sorted(counts)}")
    outputs = list(zip(*outputs))   # per output: batch_size tensors

    if names is None:
        names = [None] * len(outputs)
    elif len(names) != len(outputs):
        raise ValueError(f"batch_slice: {len(names)} names for {len(outputs)} outputs")
    result = [tf.stack(o, axis=0, name=n) for o, n in zip(outputs, names)]
    return result[0] if len(result) == 1 else result


def detection_targets_graph(proposals, gt_class_ids, gt_boxes, gt_masks, config):
    """Training targets of ONE image (the original ``modellib`` signature).

    Samples positive (IoU >= 0.5 with a gt box) and negative RoIs from the
    proposals and builds their class ids, box deltas and masks; see
    :mod:`mrcnn.modeling.roi_heads.sampling` for the rules. Uses
    ``config.TRAIN_ROIS_PER_IMAGE``, ``ROI_POSITIVE_RATIO``, ``BBOX_STD_DEV``,
    ``MASK_SHAPE``, ``USE_MINI_MASK``, ``IMAGE_SHAPE``, the pooling method
    (mask targets as the model's) and the TRAIN_ROIS_* sampling options.

    Args:
        proposals: ``[P, 4]`` normalised ``(y1, x1, y2, x2)``, zero-padded.
        gt_class_ids: ``[G]`` int (0 = padding, negative = crowd).
        gt_boxes: ``[G, 4]`` normalised ``(y1, x1, y2, x2)``, zero-padded.
        gt_masks: ``[height, width, G]`` bool: mini-masks (``MINI_MASK_SHAPE``,
            cropped to the gt box) when ``config.USE_MINI_MASK``, else
            full-image masks.

    Returns:
        ``(rois [T, 4], class_ids [T] int32, deltas [T, 4], masks [T, mh, mw])``
        with ``T = TRAIN_ROIS_PER_IMAGE`` and ``(mh, mw) = MASK_SHAPE``: rois
        normalised; deltas ``(dy, dx, log dh, log dw) / BBOX_STD_DEV``; masks
        float32 0/1. Rows are positives, negatives, then zero padding.
    """
    return _detection_target.detection_targets_graph(
        proposals, gt_class_ids, gt_boxes, gt_masks,
        train_rois_per_image=config.TRAIN_ROIS_PER_IMAGE,
        roi_positive_ratio=config.ROI_POSITIVE_RATIO,
        bbox_std_dev=config.BBOX_STD_DEV,
        mask_shape=config.MASK_SHAPE,
        use_mini_mask=config.USE_MINI_MASK,
        pooling=built_pooling_method(config),
        image_hw=[int(v) for v in config.IMAGE_SHAPE[:2]],
        add_gt_boxes=config.TRAIN_ROIS_ADD_GT_BOXES,
        fill_negatives=config.TRAIN_ROIS_FILL_NEGATIVES)


def refine_detections_graph(rois, probs, deltas, window, config):
    """Final detections of ONE image (the original ``modellib`` signature).

    Class = argmax of ``probs``; the RoI is refined with that class's deltas
    (times ``BBOX_STD_DEV``) and clipped to ``window``; background, padding
    and scores below ``DETECTION_MIN_CONFIDENCE`` are dropped; per-class NMS
    at ``DETECTION_NMS_THRESHOLD``; the ``DETECTION_MAX_INSTANCES`` best are
    kept. See :func:`mrcnn.modeling.roi_heads.detection.refine_detections_graph`.

    Args:
        rois: ``[N, 4]`` normalised ``(y1, x1, y2, x2)`` (zero rows = padding).
        probs: ``[N, NUM_CLASSES]`` class probabilities.
        deltas: ``[N, NUM_CLASSES, 4]`` class-specific deltas
            ``(dy, dx, log dh, log dw)`` divided by ``BBOX_STD_DEV``.
        window: ``[4]`` normalised ``(y1, x1, y2, x2)`` of the real image in
            the padded input.

    Returns:
        float32 ``[DETECTION_MAX_INSTANCES, 6]`` rows
        ``(y1, x1, y2, x2, class_id, score)``, boxes normalised, by descending
        score, zero-padded.
    """
    return _detection.refine_detections_graph(
        rois, probs, deltas, window,
        bbox_std_dev=config.BBOX_STD_DEV,
        min_confidence=config.DETECTION_MIN_CONFIDENCE,
        max_instances=config.DETECTION_MAX_INSTANCES,
        nms_threshold=config.DETECTION_NMS_THRESHOLD)


def batch_pack_graph(x, counts, num_rows):
    """Concatenate the first ``counts[i]`` values of each row ``i`` of ``x``.

    Args:
        x: ``[B, N, ...]`` tensor.
        counts: ``[B]`` int, ``0 <= counts[i] <= N``.
        num_rows: number of rows to pack (Python int, ``<= B``).

    Returns:
        ``[sum(counts[:num_rows]), ...]`` tensor.
    """
    x = tf.convert_to_tensor(x)
    counts = tf.convert_to_tensor(counts)
    outputs = [x[i, :counts[i]] for i in range(int(num_rows))]
    if not outputs:
        return x[0, :0]
    return tf.concat(outputs, axis=0)


def mold_mask(mask, config):
    """Resize and pad instance masks exactly like the image is molded for
    inference, so that they line up with the molded image.

    The image of shape ``[H, W, ...]`` is resized by
    :func:`mrcnn.inference.molding.mold_image_for_inference` with
    ``config.IMAGE_RESIZE_MODE`` (``"crop"`` becomes ``"pad64"`` at
    inference), ``IMAGE_MIN_DIM``, ``IMAGE_MAX_DIM`` and ``IMAGE_MIN_SCALE``;
    the same scale and padding are applied here with
    :func:`mrcnn.structures.masks.resize_mask` (nearest neighbour).

    Args:
        mask: ``[H, W, N]`` bool (or 0/1) masks of the original image, pixels.
        config: a `mrcnn.config.Config`.

    Returns:
        bool ``[H', W', N]`` masks, ``[H', W']`` being the molded image's size
        (e.g. ``[IMAGE_MAX_DIM, IMAGE_MAX_DIM]`` in ``"square"`` mode); pixels
        outside the image window are False.
    """
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise ValueError(f"mold_mask: expected masks [H, W, N], got shape {mask.shape}")
    dummy = np.zeros(mask.shape[:2], dtype=np.uint8)
    _, _, scale, padding, crop = resize_image(
        dummy, min_dim=config.IMAGE_MIN_DIM, min_scale=config.IMAGE_MIN_SCALE,
        max_dim=config.IMAGE_MAX_DIM, mode=inference_resize_mode(config))
    return resize_mask(mask, scale, padding, crop)


def smooth_l1_loss(y_true, y_pred):
    """Legacy name of :func:`smooth_l1`."""
    return smooth_l1(y_true, y_pred)


def rpn_class_loss_graph(rpn_match, rpn_class_logits):
    """Legacy name of :func:`rpn_class_loss`."""
    return rpn_class_loss(rpn_match, rpn_class_logits)


def rpn_bbox_loss_graph(config, target_bbox, rpn_match, rpn_bbox):
    """Legacy signature of :func:`rpn_bbox_loss` (``config`` is not needed)."""
    del config
    return rpn_bbox_loss(target_bbox, rpn_match, rpn_bbox)


def mrcnn_class_loss_graph(target_class_ids, pred_class_logits, active_class_ids):
    """Legacy name of :func:`mrcnn_class_loss`."""
    return mrcnn_class_loss(target_class_ids, pred_class_logits, active_class_ids)


def mrcnn_bbox_loss_graph(target_bbox, target_class_ids, pred_bbox):
    """Legacy name of :func:`mrcnn_bbox_loss`."""
    return mrcnn_bbox_loss(target_bbox, target_class_ids, pred_bbox)


def mrcnn_mask_loss_graph(target_masks, target_class_ids, pred_masks):
    """Legacy name of :func:`mrcnn_mask_loss`."""
    return mrcnn_mask_loss(target_masks, target_class_ids, pred_masks)
