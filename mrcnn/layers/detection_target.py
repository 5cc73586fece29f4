"""DetectionTargetLayer: sample RoIs from proposals and build head targets (training).

Per image (all boxes normalised, see :mod:`mrcnn.graph_ops`):

1. Drop zero rows (padding) of the proposals and the gt boxes.
2. Crowd gt (negative class id) is kept aside: a proposal whose IoU with a
   crowd box is >= 0.001 is never used as a negative. Crowd boxes are never
   matched as positives.
3. IoU of every proposal with the non-crowd gt boxes: positive if its best IoU
   is >= 0.5, negative if < 0.5 (and not touching a crowd box).
4. Sample at most ``int(train_rois_per_image * roi_positive_ratio)`` positives
   at random, then negatives to keep the ratio:
   ``int(num_pos / roi_positive_ratio) - num_pos``. An image with NO positives
   (e.g. no gt instances) gets the negatives of a full positive quota,
   ``int(max_pos / ratio) - max_pos``, so background-only images still train
   the background class (the old implementation returned no RoI at all there).
5. Targets of a positive RoI come from its best-IoU gt box: class id, box
   deltas ``box_refinement(roi, gt) / bbox_std_dev`` and a ``mask_shape`` mask.
   With ``pooling="roi_align"`` the mask is RoIAligned from the gt mask with
   the features' geometry (the RoI's exact pixel box, aligned: bin centres;
   adaptive sampling, i.e. an average over each bin) and thresholded at 0.5,
   so the head learns masks that line up with the pooled features and with
   pasting (`mrcnn.interpolation`). With ``"crop_and_resize"`` (the original's
   targets) it is ``tf.image.crop_and_resize`` of the normalised RoI, rounded.
   With mini-masks (``use_mini_mask``) the gt mask covers only the gt box, so
   the RoI is first expressed in that box's frame.
   The proposals are constants here (``stop_gradient``): the heads' losses do
   not train the RPN through them (the paper's approximate joint training).
   ``add_gt_boxes`` adds the gt boxes to the proposals first (torchvision,
   detectron2); ``fill_negatives`` fills every remaining row with negatives.
6. Output rows: positives, then negatives, then zero padding up to
   ``train_rois_per_image``; negatives and padding have class 0, zero deltas
   and zero masks.
"""

import keras
import numpy as np
import tensorflow as tf

from mrcnn.coords import norm_to_pixels_graph
from mrcnn.graph_ops import box_refinement_graph, overlaps_graph, pad_to_graph, trim_zeros_graph
from mrcnn.ops import roi_align

__all__ = ["DetectionTargetLayer", "detection_targets_graph"]


def _mask_boxes_roi_align(pos_rois, roi_gt_boxes, mask_hw, image_hw, use_mini_mask):
    """Boxes of the positive RoIs in the gt-mask arrays' pixel coordinates.

    A full-image mask's pixels are the image's; a mini-mask of ``[mh, mw]``
    pixels covers its gt box, so a RoI is re-expressed in that box's frame and
    scaled by ``mh / gh`` (pixel boxes via `mrcnn.coords`).
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


def _mask_targets(gt_masks, assignment, pos_rois, roi_gt_boxes, mask_shape, use_mini_mask,
                  pooling, image_hw):
    """``[p, mask_h, mask_w]`` float32 0/1 mask targets of the positive RoIs."""
    mask_h, mask_w = mask_shape
    masks = tf.cast(gt_masks, tf.float32)[..., None]                       # [G, mh, mw, 1]
    if pooling == "roi_align":
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


def detection_targets_graph(proposals, gt_class_ids, gt_boxes, gt_masks,
                            train_rois_per_image, roi_positive_ratio, bbox_std_dev,
                            mask_shape, use_mini_mask, pooling="roi_align", image_hw=None,
                            add_gt_boxes=False, fill_negatives=False):
    """Targets of ONE image (see the module docstring).

    Args:
        proposals: ``[P, 4]`` normalised, zero-padded. No gradient flows back
            through them (approximate joint training, as in the paper).
        gt_class_ids: ``[G]`` int (0 = padding, < 0 = crowd).
        gt_boxes: ``[G, 4]`` normalised, zero-padded.
        gt_masks: ``[mh, mw, G]`` bool/0-1 (mini-masks or full-image masks).
        pooling: ``"roi_align"`` (mask targets RoIAligned from the gt masks, the
            features' geometry) or ``"crop_and_resize"`` (the original's).
        image_hw: ``(H, W)`` of the input image; needed by ``"roi_align"``
            with mini-masks (full masks are the image's size, which is used).
        add_gt_boxes: also sample the (non-crowd) gt boxes as proposals.
        fill_negatives: fill up to ``train_rois_per_image`` rows with negatives
            instead of keeping the positive ratio (torchvision's sampler).

    Returns:
        ``rois [T, 4]`` float32, ``class_ids [T]`` int32, ``deltas [T, 4]``
        float32, ``masks [T, mask_h, mask_w]`` float32 0/1, with
        ``T = train_rois_per_image``.
    """
    t = int(train_rois_per_image)
    mask_h, mask_w = (int(s) for s in mask_shape)
    proposals = tf.stop_gradient(tf.cast(proposals, tf.float32))
    gt_boxes = tf.cast(gt_boxes, tf.float32)
    gt_class_ids = tf.cast(gt_class_ids, tf.int32)
    if not use_mini_mask:
        image_hw = tf.shape(gt_masks)[:2]       # full masks are the image's size
    elif image_hw is None and pooling == "roi_align":
        raise ValueError("detection_targets_graph: pooling 'roi_align' with mini-masks "
                         "needs image_hw (the input image's height and width)")
    image_hw = None if image_hw is None else tf.cast(image_hw, tf.float32)

    proposals, _ = trim_zeros_graph(proposals, name="trim_proposals")
    gt_boxes, non_zeros = trim_zeros_graph(gt_boxes, name="trim_gt_boxes")
    gt_class_ids = tf.boolean_mask(gt_class_ids, non_zeros)
    gt_masks = tf.boolean_mask(tf.transpose(gt_masks, [2, 0, 1]), non_zeros)  # [G, mh, mw]

    is_crowd = gt_class_ids < 0
    crowd_boxes = tf.boolean_mask(gt_boxes, is_crowd)
    gt_boxes = tf.boolean_mask(gt_boxes, ~is_crowd)
    gt_class_ids = tf.boolean_mask(gt_class_ids, ~is_crowd)
    gt_masks = tf.boolean_mask(gt_masks, ~is_crowd)
    if add_gt_boxes:
        proposals = tf.concat([proposals, gt_boxes], axis=0)

    overlaps = overlaps_graph(proposals, gt_boxes)                            # [P, G]
    crowd_iou = overlaps_graph(proposals, crowd_boxes)                        # [P, Gc]
    # Empty reductions give -inf: no gt -> no positive; no crowd -> no veto.
    no_crowd = tf.reduce_max(crowd_iou, axis=1) < 0.001
    best_iou = tf.reduce_max(overlaps, axis=1)
    positive = best_iou >= 0.5
    negative = (best_iou < 0.5) & no_crowd

    max_pos = int(t * roi_positive_ratio)
    pos_ix = tf.random.shuffle(tf.where(positive)[:, 0])[:max_pos]
    num_pos = tf.shape(pos_ix)[0]
    if fill_negatives:
        num_neg = t - num_pos
    else:
        ratio_neg = tf.cast(tf.cast(num_pos, tf.float32) / roi_positive_ratio,
                            tf.int32) - num_pos
        empty_neg = int(max_pos / roi_positive_ratio) - max_pos
        num_neg = tf.where(num_pos > 0, ratio_neg, empty_neg)
    num_neg = tf.clip_by_value(num_neg, 0, t - num_pos)
    neg_ix = tf.random.shuffle(tf.where(negative)[:, 0])[:num_neg]

    pos_rois = tf.gather(proposals, pos_ix)
    neg_rois = tf.gather(proposals, neg_ix)

    # Best gt of each positive; guarded for G == 0 (then there are no positives).
    pos_overlaps = tf.gather(overlaps, pos_ix)                                # [p, G]
    assignment = tf.cond(tf.shape(pos_overlaps)[1] > 0,
                         lambda: tf.argmax(pos_overlaps, axis=1, output_type=tf.int32),
                         lambda: tf.zeros([tf.shape(pos_overlaps)[0]], tf.int32))
    roi_gt_boxes = tf.gather(gt_boxes, assignment)
    roi_class_ids = tf.gather(gt_class_ids, assignment)
    std = tf.constant(np.reshape(bbox_std_dev, [1, 4]), tf.float32)
    deltas = box_refinement_graph(pos_rois, roi_gt_boxes) / std

    masks = _mask_targets(gt_masks, assignment, pos_rois, roi_gt_boxes, (mask_h, mask_w),
                          use_mini_mask, pooling, image_hw)

    rois = pad_to_graph(tf.concat([pos_rois, neg_rois], axis=0), t)
    class_ids = pad_to_graph(roi_class_ids, t)
    deltas = pad_to_graph(deltas, t)
    masks = pad_to_graph(masks, t)
    return rois, class_ids, deltas, masks


@keras.saving.register_keras_serializable(package="mrcnn")
class DetectionTargetLayer(keras.layers.Layer):
    """Keras layer around :func:`detection_targets_graph`, mapped over the batch.

    Inputs: ``[proposals [B, P, 4] normalised, gt_class_ids [B, G] int,
    gt_boxes [B, G, 4] normalised, gt_masks [B, mh, mw, G] bool]``.
    Outputs: ``rois [B, T, 4]``, ``target_class_ids [B, T]`` int32,
    ``target_bbox [B, T, 4]``, ``target_mask [B, T, mask_h, mask_w]`` float32.
    """

    def __init__(self, train_rois_per_image=200, roi_positive_ratio=0.33,
                 bbox_std_dev=(0.1, 0.1, 0.2, 0.2), mask_shape=(28, 28),
                 use_mini_mask=True, pooling="roi_align", image_shape=None,
                 add_gt_boxes=False, fill_negatives=False, **kwargs):
        kwargs.setdefault("name", "proposal_targets")
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        # Dynamic shapes (NMS, boolean masks): not XLA-compilable.
        self.supports_jit = False
        self.train_rois_per_image = int(train_rois_per_image)
        self.roi_positive_ratio = float(roi_positive_ratio)
        if not 0 < self.roi_positive_ratio <= 1:
            raise ValueError(f"DetectionTargetLayer: roi_positive_ratio must be in (0, 1], "
                             f"got {roi_positive_ratio}")
        self.bbox_std_dev = [float(v) for v in np.reshape(bbox_std_dev, [-1])]
        self.mask_shape = tuple(int(s) for s in mask_shape)
        self.use_mini_mask = bool(use_mini_mask)
        self.pooling = pooling
        self.image_shape = None if image_shape is None else [int(v) for v in image_shape[:2]]
        self.add_gt_boxes = bool(add_gt_boxes)
        self.fill_negatives = bool(fill_negatives)

    def call(self, inputs):
        proposals, gt_class_ids, gt_boxes, gt_masks = inputs
        t = self.train_rois_per_image
        mh, mw = self.mask_shape

        def one(args):
            return detection_targets_graph(
                *args, t, self.roi_positive_ratio, self.bbox_std_dev, self.mask_shape,
                self.use_mini_mask, pooling=self.pooling, image_hw=self.image_shape,
                add_gt_boxes=self.add_gt_boxes, fill_negatives=self.fill_negatives)

        return tf.map_fn(
            one, (tf.cast(proposals, tf.float32), tf.cast(gt_class_ids, tf.int32),
                  tf.cast(gt_boxes, tf.float32), gt_masks),
            fn_output_signature=(tf.TensorSpec([t, 4], tf.float32), tf.TensorSpec([t], tf.int32),
                                 tf.TensorSpec([t, 4], tf.float32),
                                 tf.TensorSpec([t, mh, mw], tf.float32)))

    def compute_output_shape(self, input_shape):
        b = input_shape[0][0]
        t = self.train_rois_per_image
        return [(b, t, 4), (b, t), (b, t, 4), (b, t) + self.mask_shape]

    def compute_output_spec(self, inputs):
        b = inputs[0].shape[0]
        t = self.train_rois_per_image
        return [keras.KerasTensor((b, t, 4), "float32"), keras.KerasTensor((b, t), "int32"),
                keras.KerasTensor((b, t, 4), "float32"),
                keras.KerasTensor((b, t) + self.mask_shape, "float32")]

    def get_config(self):
        config = super().get_config()
        config.update(train_rois_per_image=self.train_rois_per_image,
                      roi_positive_ratio=self.roi_positive_ratio,
                      bbox_std_dev=self.bbox_std_dev, mask_shape=list(self.mask_shape),
                      use_mini_mask=self.use_mini_mask, pooling=self.pooling,
                      image_shape=self.image_shape, add_gt_boxes=self.add_gt_boxes,
                      fill_negatives=self.fill_negatives)
        return config
