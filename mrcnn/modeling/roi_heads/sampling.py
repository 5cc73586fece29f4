"""DetectionTargetLayer: sample RoIs from proposals and build head targets (training).

Per image (all boxes normalised, see :mod:`mrcnn.structures.boxes_tf`):

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
   pasting (`mrcnn.structures.interpolation`). With ``"crop_and_resize"`` (the original's
   targets) it is ``tf.image.crop_and_resize`` of the normalised RoI, rounded.
   ``"roi_pool"`` and ``"roi_warp"`` (the paper's Table 2c baselines) pool
   only the features differently: their targets are the RoIAligned ones.
   With mini-masks (``use_mini_mask``) the gt mask covers only the gt box, so
   the RoI is first expressed in that box's frame.
   The proposals are constants here (``stop_gradient``): the heads' losses do
   not train the RPN through them (the paper's approximate joint training).
   ``add_gt_boxes`` adds the gt boxes to the proposals first (torchvision,
   detectron2); ``fill_negatives`` fills every remaining row with negatives.
6. Output rows: positives, then negatives, then zero padding up to
   ``train_rois_per_image``; negatives and padding have class 0, zero deltas
   and zero masks.
7. Keypoints (Keypoint R-CNN, only when the layer is given ``num_keypoints`` >
   0 and the gt keypoints as a fifth input): each positive RoI's best-IoU gt
   keypoints become heatmap targets, the cell of each labelled keypoint inside
   the RoI (`mrcnn.modeling.roi_heads.keypoint_head.roi_keypoint_targets_graph`,
   the RoIAlign cell geometry); keypoints outside the RoI, unlabelled or not
   of the RoI's class (``KEYPOINT_CLASSES``) are invalid, as are every
   negative's and padding row's.
"""

import keras
import numpy as np
import tensorflow as tf

from mrcnn.constants import LEGACY_POOLING_METHOD
from mrcnn.modeling.matching import as_gt, outside_crowd, rng_of
from mrcnn.modeling.roi_heads.keypoint_head import roi_keypoint_targets_graph
from mrcnn.modeling.roi_heads.mask_head import crop_and_resize_mask, mask_targets_graph
from mrcnn.structures.boxes import box_refinement, compute_overlaps
from mrcnn.structures.boxes_tf import (box_refinement_graph, overlaps_graph, pad_to_graph,
                                       trim_zeros_graph)

__all__ = ["DetectionTargetLayer", "detection_targets_graph"]


def detection_targets_graph(proposals, gt_class_ids, gt_boxes, gt_masks,
                            train_rois_per_image, roi_positive_ratio, bbox_std_dev,
                            mask_shape, use_mini_mask, pooling="roi_align", image_hw=None,
                            add_gt_boxes=False, fill_negatives=False, gt_keypoints=None,
                            keypoint_heatmap_size=None, keypoint_class_table=None,
                            keypoint_roi_expand=1.0):
    """Targets of ONE image (see the module docstring).

    Args:
        proposals: ``[P, 4]`` normalised, zero-padded. No gradient flows back
            through them (approximate joint training, as in the paper).
        gt_class_ids: ``[G]`` int (0 = padding, < 0 = crowd).
        gt_boxes: ``[G, 4]`` normalised, zero-padded.
        gt_masks: ``[mh, mw, G]`` bool/0-1 (mini-masks or full-image masks).
        pooling: ``"roi_align"`` (mask targets RoIAligned from the gt masks, the
            features' geometry; also for ``"roi_pool"`` and ``"roi_warp"``) or
            ``"crop_and_resize"`` (the original's).
        image_hw: ``(H, W)`` of the input image; needed by the RoIAligned
            targets with mini-masks (full masks are the image's size, which is used).
        add_gt_boxes: also sample the (non-crowd) gt boxes as proposals.
        fill_negatives: fill up to ``train_rois_per_image`` rows with negatives
            instead of keeping the positive ratio (torchvision's sampler).
        gt_keypoints: optional ``[G, K, 3]`` ``(x, y, v)`` input-image pixels,
            rows aligned with ``gt_boxes``; with it (and
            ``keypoint_heatmap_size``, ``image_hw``) the keypoint targets are
            returned too. ``keypoint_class_table``: bool ``[NUM_CLASSES, K]``
            (`keypoint_head.config_class_table`) or None. ``keypoint_roi_expand``:
            ``KEYPOINT_ROI_EXPAND`` (the targets cover each RoI scaled by it).

    Returns:
        ``rois [T, 4]`` float32, ``class_ids [T]`` int32, ``deltas [T, 4]``
        float32, ``masks [T, mask_h, mask_w]`` float32 0/1, with
        ``T = train_rois_per_image``; with ``gt_keypoints`` also
        ``keypoint_indices [T, K]`` int32 (``row * m + col``) and
        ``keypoint_valid [T, K]`` bool (False for negatives and padding).
    """
    t = int(train_rois_per_image)
    mask_h, mask_w = (int(s) for s in mask_shape)
    proposals = tf.stop_gradient(tf.cast(proposals, tf.float32))
    gt_boxes = tf.cast(gt_boxes, tf.float32)
    gt_class_ids = tf.cast(gt_class_ids, tf.int32)
    if not use_mini_mask:
        image_hw = tf.shape(gt_masks)[:2]       # full masks are the image's size
    elif image_hw is None and pooling != LEGACY_POOLING_METHOD:
        raise ValueError(f"detection_targets_graph: pooling {pooling!r} with mini-masks "
                         "needs image_hw (the input image's height and width)")
    image_hw = None if image_hw is None else tf.cast(image_hw, tf.float32)

    proposals, _ = trim_zeros_graph(proposals, name="trim_proposals")
    gt_boxes, non_zeros = trim_zeros_graph(gt_boxes, name="trim_gt_boxes")
    gt_class_ids = tf.boolean_mask(gt_class_ids, non_zeros)
    gt_masks = tf.boolean_mask(tf.transpose(gt_masks, [2, 0, 1]), non_zeros)  # [G, mh, mw]
    if gt_keypoints is not None:
        gt_keypoints = tf.boolean_mask(tf.cast(gt_keypoints, tf.float32), non_zeros)

    is_crowd = gt_class_ids < 0
    crowd_boxes = tf.boolean_mask(gt_boxes, is_crowd)
    gt_boxes = tf.boolean_mask(gt_boxes, ~is_crowd)
    gt_class_ids = tf.boolean_mask(gt_class_ids, ~is_crowd)
    gt_masks = tf.boolean_mask(gt_masks, ~is_crowd)
    if gt_keypoints is not None:
        gt_keypoints = tf.boolean_mask(gt_keypoints, ~is_crowd)
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

    masks = mask_targets_graph(gt_masks, assignment, pos_rois, roi_gt_boxes, (mask_h, mask_w),
                          use_mini_mask, pooling, image_hw)

    rois = pad_to_graph(tf.concat([pos_rois, neg_rois], axis=0), t)
    class_ids = pad_to_graph(roi_class_ids, t)
    deltas = pad_to_graph(deltas, t)
    masks = pad_to_graph(masks, t)
    if gt_keypoints is None:
        return rois, class_ids, deltas, masks
    if image_hw is None:
        raise ValueError("detection_targets_graph: keypoint targets need image_hw (the "
                         "input image's height and width)")
    kp_indices, kp_valid = roi_keypoint_targets_graph(
        gt_keypoints, assignment, pos_rois, roi_class_ids, image_hw,
        keypoint_heatmap_size, keypoint_class_table, keypoint_roi_expand)
    return (rois, class_ids, deltas, masks, pad_to_graph(kp_indices, t),
            tf.cast(pad_to_graph(tf.cast(kp_valid, tf.int32), t), tf.bool))


@keras.saving.register_keras_serializable(package="mrcnn")
class DetectionTargetLayer(keras.layers.Layer):
    """Keras layer around :func:`detection_targets_graph`, mapped over the batch.

    Inputs: ``[proposals [B, P, 4] normalised, gt_class_ids [B, G] int,
    gt_boxes [B, G, 4] normalised, gt_masks [B, mh, mw, G] bool]``.
    Outputs: ``rois [B, T, 4]``, ``target_class_ids [B, T]`` int32,
    ``target_bbox [B, T, 4]``, ``target_mask [B, T, mask_h, mask_w]`` float32.

    With ``num_keypoints`` K > 0 (Keypoint R-CNN) a fifth input ``gt_keypoints
    [B, G, K, 3]`` (input-image pixels, rows aligned with the gt boxes) and two
    more outputs: ``target_keypoint_indices [B, T, K]`` int32 (the target cell
    ``row * m + col`` of each keypoint, ``m = keypoint_heatmap_size``) and
    ``target_keypoint_valid [B, T, K]`` bool. ``keypoint_class_table``: bool
    ``[NUM_CLASSES, K]`` (nested lists or an array; None: every class has all).
    Needs ``image_shape``.
    """

    def __init__(self, train_rois_per_image=200, roi_positive_ratio=0.33,
                 bbox_std_dev=(0.1, 0.1, 0.2, 0.2), mask_shape=(28, 28),
                 use_mini_mask=True, pooling="roi_align", image_shape=None,
                 add_gt_boxes=False, fill_negatives=False, num_keypoints=0,
                 keypoint_heatmap_size=56, keypoint_class_table=None, keypoint_roi_expand=1.0,
                 **kwargs):
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
        self.num_keypoints = int(num_keypoints)
        self.keypoint_heatmap_size = int(keypoint_heatmap_size)
        self.keypoint_class_table = (None if keypoint_class_table is None else
                                     np.asarray(keypoint_class_table, dtype=bool).tolist())
        self.keypoint_roi_expand = float(keypoint_roi_expand)
        if self.num_keypoints and self.image_shape is None:
            raise ValueError(f"DetectionTargetLayer {self.name!r}: keypoint targets need "
                             f"image_shape (the input image's height and width)")

    def call(self, inputs):
        proposals, gt_class_ids, gt_boxes, gt_masks = inputs[:4]
        t = self.train_rois_per_image
        mh, mw = self.mask_shape
        k = self.num_keypoints
        keypoint_args = {}
        if k:
            keypoint_args = dict(keypoint_heatmap_size=self.keypoint_heatmap_size,
                                 keypoint_class_table=self.keypoint_class_table,
                                 keypoint_roi_expand=self.keypoint_roi_expand)

        def one(args):
            return detection_targets_graph(
                *args[:4], t, self.roi_positive_ratio, self.bbox_std_dev, self.mask_shape,
                self.use_mini_mask, pooling=self.pooling, image_hw=self.image_shape,
                add_gt_boxes=self.add_gt_boxes, fill_negatives=self.fill_negatives,
                gt_keypoints=args[4] if k else None, **keypoint_args)

        # No gradient reaches the proposals (approximate joint training). Stopped
        # here, before the map over the batch, it also keeps TensorFlow from
        # building the proposal layer's (all-zero) gradient: the map's loop and
        # the NMS loop of `ProposalLayer` backwards, ~60 ops in every step.
        elements = (tf.stop_gradient(tf.cast(proposals, tf.float32)),
                    tf.cast(gt_class_ids, tf.int32),
                    tf.cast(gt_boxes, tf.float32), gt_masks)
        signature = (tf.TensorSpec([t, 4], tf.float32), tf.TensorSpec([t], tf.int32),
                     tf.TensorSpec([t, 4], tf.float32), tf.TensorSpec([t, mh, mw], tf.float32))
        if k:
            elements += (tf.cast(inputs[4], tf.float32),)
            signature += (tf.TensorSpec([t, k], tf.int32), tf.TensorSpec([t, k], tf.bool))
        return tf.map_fn(one, elements, fn_output_signature=signature)

    def compute_output_shape(self, input_shape):
        b = input_shape[0][0]
        t = self.train_rois_per_image
        keypoints = [(b, t, self.num_keypoints)] * 2 if self.num_keypoints else []
        return [(b, t, 4), (b, t), (b, t, 4), (b, t) + self.mask_shape] + keypoints

    def compute_output_spec(self, inputs):
        b = inputs[0].shape[0]
        t = self.train_rois_per_image
        keypoints = []
        if self.num_keypoints:
            keypoints = [keras.KerasTensor((b, t, self.num_keypoints), "int32"),
                         keras.KerasTensor((b, t, self.num_keypoints), "bool")]
        return [keras.KerasTensor((b, t, 4), "float32"), keras.KerasTensor((b, t), "int32"),
                keras.KerasTensor((b, t, 4), "float32"),
                keras.KerasTensor((b, t) + self.mask_shape, "float32")] + keypoints

    def get_config(self):
        config = super().get_config()
        config.update(train_rois_per_image=self.train_rois_per_image,
                      roi_positive_ratio=self.roi_positive_ratio,
                      bbox_std_dev=self.bbox_std_dev, mask_shape=list(self.mask_shape),
                      use_mini_mask=self.use_mini_mask, pooling=self.pooling,
                      image_shape=self.image_shape, add_gt_boxes=self.add_gt_boxes,
                      fill_negatives=self.fill_negatives)
        if self.num_keypoints:  # without keypoints: the config of the graphs before them
            config.update(num_keypoints=self.num_keypoints,
                          keypoint_heatmap_size=self.keypoint_heatmap_size,
                          keypoint_class_table=self.keypoint_class_table)
            if self.keypoint_roi_expand != 1.0:
                config.update(keypoint_roi_expand=self.keypoint_roi_expand)
        return config


ROI_POSITIVE_IOU = 0.5   # RoI IoU >= this: positive for the heads, else negative


def build_detection_targets(rpn_rois, gt_class_ids, gt_boxes, gt_masks, config, rng=None):
    """Sample RoIs and build the classifier, box and mask targets (NumPy, per image).

    The NumPy counterpart of the in-graph ``DetectionTargetLayer``, for
    inspection and debugging. A RoI is positive when its IoU with some
    non-crowd gt box is >= 0.5, negative when below 0.5 and its IoU with every
    crowd box is < 0.001. At most ``int(TRAIN_ROIS_PER_IMAGE *
    ROI_POSITIVE_RATIO)`` positives are kept (a random subset); negatives fill
    the rest up to ``TRAIN_ROIS_PER_IMAGE``; if there are too few RoIs the tail
    is zero (class 0, zero box, zero targets).

    Args:
        rpn_rois: ``[R, 4]`` RoIs, pixels (rows with zero area are ignored).
        gt_class_ids: int ``[G]`` (negative: crowd; 0: padding, ignored).
        gt_boxes: ``[G, 4]`` pixels, y2/x2 exclusive.
        gt_masks: bool ``[mh, mw, G]`` mini masks (``config.USE_MINI_MASK``,
            each relative to its gt box) or ``[H, W, G]`` full-image masks.
        config: uses TRAIN_ROIS_PER_IMAGE, ROI_POSITIVE_RATIO, NUM_CLASSES,
            BBOX_STD_DEV, MASK_SHAPE, USE_MINI_MASK.
        rng: ``numpy.random.Generator`` (None: unseeded).

    Returns:
        rois: float32 ``[T, 4]`` pixels (positives first, then negatives).
        roi_gt_class_ids: int32 ``[T]`` (0 for negatives and padding).
        bboxes: float32 ``[T, NUM_CLASSES, 4]``: for a positive, the deltas
            ``box_refinement(roi, gt) / BBOX_STD_DEV`` in its class's slot.
        masks: float32 ``[T, MASK_SHAPE[0], MASK_SHAPE[1], NUM_CLASSES]``: for a
            positive, its gt mask RoIAligned to the RoI and binarised (>= 0.5,
            `crop_and_resize_mask`: the graph's ``"roi_align"`` targets), in its
            class's slot.
    """
    rng = rng_of(rng)
    ids, boxes = as_gt(gt_class_ids, gt_boxes, "build_detection_targets")
    gt_masks = np.asarray(gt_masks)
    if gt_masks.ndim != 3 or gt_masks.shape[-1] != ids.shape[0]:
        raise ValueError(f"build_detection_targets: gt_masks must be [h, w, G] with "
                         f"G = {ids.shape[0]} instances, got shape {gt_masks.shape}")
    rois = np.asarray(rpn_rois, dtype=np.float64).reshape(-1, 4)
    rois = rois[(rois[:, 2] > rois[:, 0]) & (rois[:, 3] > rois[:, 1])]
    total = int(config.TRAIN_ROIS_PER_IMAGE)
    num_classes = int(config.NUM_CLASSES)
    mh, mw = (int(v) for v in config.MASK_SHAPE)

    out_rois = np.zeros((total, 4), dtype=np.float32)
    out_ids = np.zeros(total, dtype=np.int32)
    out_bbox = np.zeros((total, num_classes, 4), dtype=np.float32)
    out_masks = np.zeros((total, mh, mw, num_classes), dtype=np.float32)

    not_crowd = outside_crowd(rois, boxes[ids < 0])
    objects = np.flatnonzero(ids > 0)
    if objects.size and rois.shape[0]:
        overlaps = compute_overlaps(rois, boxes[objects])
        best = np.argmax(overlaps, axis=1)
        best_iou = overlaps[np.arange(rois.shape[0]), best]
    else:
        best = np.zeros(rois.shape[0], dtype=np.int64)
        best_iou = np.zeros(rois.shape[0])
    positives = np.flatnonzero(best_iou >= ROI_POSITIVE_IOU)
    negatives = np.flatnonzero((best_iou < ROI_POSITIVE_IOU) & not_crowd)
    positives = rng.permutation(positives)[:int(total * config.ROI_POSITIVE_RATIO)]
    negatives = rng.permutation(negatives)[:total - positives.size]

    n_pos, n_neg = positives.size, negatives.size
    out_rois[:n_pos] = rois[positives]
    out_rois[n_pos:n_pos + n_neg] = rois[negatives]
    if n_pos:
        gt_index = objects[best[positives]]
        class_ids = ids[gt_index].astype(np.int32)
        out_ids[:n_pos] = class_ids
        deltas = box_refinement(rois[positives], boxes[gt_index])
        deltas = deltas / np.asarray(config.BBOX_STD_DEV, dtype=np.float64)
        out_bbox[np.arange(n_pos), class_ids] = deltas.astype(np.float32)
        for i in range(n_pos):
            g = gt_index[i]
            roi = rois[positives[i]]
            if config.USE_MINI_MASK:
                gy1, gx1, gy2, gx2 = boxes[g]
                sy = gt_masks.shape[0] / max(gy2 - gy1, 1e-6)
                sx = gt_masks.shape[1] / max(gx2 - gx1, 1e-6)
                box = ((roi[0] - gy1) * sy, (roi[1] - gx1) * sx,
                       (roi[2] - gy1) * sy, (roi[3] - gx1) * sx)
            else:
                box = roi
            out_masks[i, :, :, class_ids[i]] = crop_and_resize_mask(
                gt_masks[:, :, g], box, (mh, mw))
    return out_rois, out_ids, out_bbox, out_masks


def generate_random_rois(image_shape, count, gt_class_ids, gt_boxes, rng=None):
    """Random RoIs for training the heads without the RPN (``USE_RPN_ROIS=False``).

    About 90% of the RoIs are jittered copies of the (non-crowd) gt boxes
    (centre shifted by a Gaussian of 1/10 of the box size, height and width
    scaled by ``exp(N(0, 0.2))``), so most overlap a gt box; the rest are
    uniform random boxes in the image. With no gt boxes all are uniform.

    Args:
        image_shape: ``(H, W[, C])`` of the network input.
        count: number of RoIs.
        gt_class_ids: int ``[G]`` (negative: crowd, not used for jitter).
        gt_boxes: ``[G, 4]`` pixels, y2/x2 exclusive.
        rng: ``numpy.random.Generator`` (None: unseeded).

    Returns:
        float32 ``[count, 4]`` RoIs ``(y1, x1, y2, x2)``, pixels, y2/x2
        exclusive, inside ``[0, H] x [0, W]``, each at least 1 pixel high and
        wide.
    """
    rng = rng_of(rng)
    height, width = float(image_shape[0]), float(image_shape[1])
    ids, boxes = as_gt(gt_class_ids, gt_boxes, "generate_random_rois")
    boxes = boxes[(ids > 0) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])]
    count = int(count)
    per_box = int(0.9 * count / boxes.shape[0]) if boxes.shape[0] else 0

    parts = []
    if per_box:
        h = np.repeat(boxes[:, 2] - boxes[:, 0], per_box)
        w = np.repeat(boxes[:, 3] - boxes[:, 1], per_box)
        cy = np.repeat(boxes[:, 0], per_box) + h / 2 + rng.normal(0, 0.1, h.size) * h
        cx = np.repeat(boxes[:, 1], per_box) + w / 2 + rng.normal(0, 0.1, w.size) * w
        h = h * np.exp(rng.normal(0, 0.2, h.size))
        w = w * np.exp(rng.normal(0, 0.2, w.size))
        parts.append(np.stack([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2], axis=1))
    rest = count - per_box * boxes.shape[0]
    ys = np.sort(rng.uniform(0, height, (rest, 2)), axis=1)
    xs = np.sort(rng.uniform(0, width, (rest, 2)), axis=1)
    parts.append(np.stack([ys[:, 0], xs[:, 0], ys[:, 1], xs[:, 1]], axis=1))
    rois = np.concatenate(parts, axis=0)

    # Clip into the image and enforce at least one pixel per side.
    rois[:, [0, 2]] = np.clip(rois[:, [0, 2]], 0, height)
    rois[:, [1, 3]] = np.clip(rois[:, [1, 3]], 0, width)
    rois[:, 0] = np.minimum(rois[:, 0], height - 1)
    rois[:, 1] = np.minimum(rois[:, 1], width - 1)
    rois[:, 2] = np.clip(np.maximum(rois[:, 2], rois[:, 0] + 1), 0, height)
    rois[:, 3] = np.clip(np.maximum(rois[:, 3], rois[:, 1] + 1), 0, width)
    return rois.astype(np.float32)
