"""Assembly of the Mask R-CNN Keras graphs (training and inference).

Both graphs share: backbone (``config.BACKBONE``) -> FPN (P2..P6) -> the shared
``rpn_model`` over P2..P6 -> ``ProposalLayer`` (named ``ROI``) -> classifier
and mask heads on FPN P2..P5. Layer names are the weights contract (see
/work/shared/reference/*.tsv and `mrcnn.weights`).

Training graph (fixed input size ``config.IMAGE_SHAPE``):

* inputs, in order (`training_input_names`): ``input_image`` float32
  ``[B, H, W, C]``, ``input_image_meta`` ``[B, IMAGE_META_SIZE]``,
  ``input_rpn_match`` int32 ``[B, A, 1]``, ``input_rpn_bbox`` ``[B, R, 4]``,
  ``input_gt_class_ids`` int32 ``[B, G]``, ``input_gt_boxes`` ``[B, G, 4]``
  pixels (y2/x2 exclusive; normalised in-graph), ``input_gt_masks`` bool
  ``[B, mh, mw, G]``, and ``input_rois`` ``[B, R', 4]`` pixels only when
  ``USE_RPN_ROIS`` is False.
* anchors: a constant (`AnchorsConstant`), never an input or a variable.
* outputs, in order (`TRAINING_OUTPUT_NAMES`): rpn_class_logits, rpn_class,
  rpn_bbox, mrcnn_class_logits, mrcnn_class, mrcnn_bbox, mrcnn_mask_logits
  (the layer ``mrcnn_mask`` without its sigmoid: the mask loss is computed from
  logits; same weights), rpn_rois, output_rois, target_class_ids, target_bbox,
  target_mask.
* the heads' targets are sampled from the proposals held constant
  (`DetectionTargetLayer`, ``stop_gradient``): the heads' losses train the
  heads and the backbone, not the RPN through its proposals.

Inference graph (any input size, multiple of 64): inputs ``input_image``
``[B, H, W, C]``, ``input_image_meta``, ``input_anchors`` ``[B, A, 4]``
normalised; outputs (`INFERENCE_OUTPUT_NAMES`) ``detections [B, D, 6]``
(y1, x1, y2, x2 normalised, class_id, score), ``mrcnn_class [B, P, NC]``,
``mrcnn_bbox [B, P, NC, 4]``, ``mrcnn_mask [B, D, mh, mw, NC]`` (computed for
the real detections only, zeros in the padding rows: the layer ``mrcnn_mask``
itself gives ``[B, n, mh, mw, NC]`` for the ``n`` leading rows), ``rpn_rois
[B, P, 4]``, ``rpn_class [B, A, 2]``, ``rpn_bbox [B, A, 4]``.
"""

import keras
import numpy as np
import tensorflow as tf

from mrcnn import heads
from mrcnn.anchors import get_anchors_for_config
from mrcnn.config import built_pooling_method
from mrcnn.backbone import resnet_graph
from mrcnn.fpn import fpn_graph
from mrcnn.graph_ops import norm_boxes_graph
from mrcnn.layers import DetectionLayer, DetectionTargetLayer, ProposalLayer
from mrcnn.rpn import build_rpn_model, rpn_outputs
from mrcnn.training import MaskRCNNKerasModel

__all__ = ["TRAINING_OUTPUT_NAMES", "INFERENCE_OUTPUT_NAMES", "training_input_names",
           "AnchorsConstant", "NormalizeBoxes", "DetectionBoxes", "RealDetectionBoxes", "PadRows",
           "build_training_model", "build_inference_model"]

TRAINING_OUTPUT_NAMES = (
    "rpn_class_logits", "rpn_class", "rpn_bbox", "mrcnn_class_logits", "mrcnn_class",
    "mrcnn_bbox", "mrcnn_mask_logits", "rpn_rois", "output_rois", "target_class_ids",
    "target_bbox", "target_mask")
INFERENCE_OUTPUT_NAMES = ("detections", "mrcnn_class", "mrcnn_bbox", "mrcnn_mask",
                          "rpn_rois", "rpn_class", "rpn_bbox")


def training_input_names(config):
    """Names of the training graph's inputs, in model order."""
    names = ["input_image", "input_image_meta", "input_rpn_match", "input_rpn_bbox",
             "input_gt_class_ids", "input_gt_boxes", "input_gt_masks"]
    if not config.USE_RPN_ROIS:
        names.append("input_rois")
    return names


class Float32Layer(keras.layers.Layer):
    """A layer that computes in float32 whatever the dtype policy (boxes, anchors:
    see `mrcnn.precision`); ``dtype`` may still be given explicitly."""

    def __init__(self, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)


class AnchorsConstant(Float32Layer):
    """Broadcast a constant ``[A, 4]`` anchor array to ``[B, A, 4]``.

    The anchors live as a NumPy attribute, not a variable: nothing is saved.
    Input: any tensor whose first axis is the batch (the image).
    """

    def __init__(self, anchors, **kwargs):
        kwargs.setdefault("name", "anchors")
        super().__init__(**kwargs)
        self.anchors = np.asarray(anchors, dtype=np.float32)

    def call(self, reference):
        batch = tf.shape(reference)[0]
        anchors = tf.constant(self.anchors)
        return tf.broadcast_to(anchors[None], tf.stack([batch, *self.anchors.shape]))

    def compute_output_shape(self, input_shape):
        return (input_shape[0],) + self.anchors.shape


class NormalizeBoxes(Float32Layer):
    """Pixel boxes ``[B, N, 4]`` (y2/x2 exclusive) -> normalised boxes.

    Inputs: ``[boxes, image]``; the image ``[B, H, W, C]`` gives the size.
    """

    def call(self, inputs):
        boxes, image = inputs
        return norm_boxes_graph(boxes, tf.shape(image)[1:3])

    def compute_output_shape(self, input_shape):
        return input_shape[0]


class LeadingRows(Float32Layer):
    """The first ``count`` rows ``[B, count, ...]`` of ``[B, N, ...]`` (no weights).

    In training, `DetectionTargetLayer` puts the positive RoIs first and
    samples at most ``int(TRAIN_ROIS_PER_IMAGE * ROI_POSITIVE_RATIO)`` of them,
    and the mask loss only uses positives: so the mask head runs on these rows
    alone, which cuts its cost (the largest in the heads) by 1/ratio.
    """

    def __init__(self, count, **kwargs):
        super().__init__(**kwargs)
        self.count = int(count)

    def call(self, x):
        return x[:, :self.count]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.count) + tuple(input_shape[2:])

    def get_config(self):
        return {**super().get_config(), "count": self.count}


class RealDetectionBoxes(Float32Layer):
    """Box columns of the leading, real rows of ``[B, D, 6]`` detections.

    `DetectionLayer` puts each image's real detections (class_id > 0) first
    and zero-pads the rest. Output: ``[B, n, 4]`` (no gradient) with ``n`` the
    largest count of real detections in the batch, at least 1 (so the mask
    head never sees an empty batch). The mask head then runs on ``n`` rows
    instead of DETECTION_MAX_INSTANCES: with a trained model and
    DETECTION_MIN_CONFIDENCE 0.7 usually a handful instead of 100.
    """

    def call(self, detections):
        real = tf.reduce_sum(tf.cast(detections[..., 4] > 0, tf.int32), axis=1)
        count = tf.maximum(tf.reduce_max(real), 1)
        return tf.stop_gradient(detections[:, :count, :4])

    def compute_output_shape(self, input_shape):
        return (input_shape[0], None, 4)


class PadRows(Float32Layer):
    """Zero-pad axis 1 of ``[B, n, ...]`` to ``[B, rows, ...]`` (``n <= rows``)."""

    def __init__(self, rows, **kwargs):
        super().__init__(**kwargs)
        self.rows = int(rows)

    def call(self, x):
        pad = self.rows - tf.shape(x)[1]
        paddings = [[0, 0], [0, pad]] + [[0, 0]] * (len(x.shape) - 2)
        return tf.ensure_shape(tf.pad(x, paddings),
                               [x.shape[0], self.rows] + list(x.shape[2:]))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.rows) + tuple(input_shape[2:])

    def get_config(self):
        return {**super().get_config(), "rows": self.rows}


class DetectionBoxes(Float32Layer):
    """The box columns ``[B, D, 4]`` of ``[B, D, 6]`` detections (no gradient)."""

    def call(self, detections):
        return tf.stop_gradient(detections[..., :4])

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (4,)


def _roi_pooling(config):
    # "auto" builds RoIAlign; MaskRCNN.load_weights may switch an inference
    # model to the file's pooling (see mrcnn.checkpoints.resolve_pooling_method).
    return dict(method=built_pooling_method(config),
                sampling_ratio=config.ROI_ALIGN_SAMPLING_RATIO,
                aligned=config.ROI_ALIGN_ALIGNED)


def _backbone_and_rpn(config, input_image):
    """Backbone, FPN and RPN. Returns (rpn_feature_maps, mrcnn_feature_maps, rpn outputs)."""
    if callable(config.BACKBONE):
        _, c2, c3, c4, c5 = config.BACKBONE(input_image, stage5=True,
                                            train_bn=config.TRAIN_BN)
    else:
        _, c2, c3, c4, c5 = resnet_graph(input_image, config.BACKBONE, stage5=True,
                                         train_bn=config.TRAIN_BN)
    p2, p3, p4, p5, p6 = fpn_graph(c2, c3, c4, c5, pyramid_size=config.TOP_DOWN_PYRAMID_SIZE)
    rpn = build_rpn_model(config.RPN_ANCHOR_STRIDE, len(config.RPN_ANCHOR_RATIOS),
                          config.TOP_DOWN_PYRAMID_SIZE)
    rpn_class_logits, rpn_class, rpn_bbox = rpn_outputs(rpn, [p2, p3, p4, p5, p6])
    return [p2, p3, p4, p5], (rpn_class_logits, rpn_class, rpn_bbox)


def _proposals(config, rpn_class, rpn_bbox, anchors, count):
    return ProposalLayer(proposal_count=count, nms_threshold=config.RPN_NMS_THRESHOLD,
                         pre_nms_limit=config.PRE_NMS_LIMIT,
                         rpn_bbox_std_dev=config.RPN_BBOX_STD_DEV,
                         name="ROI")([rpn_class, rpn_bbox, anchors])


def _heads(config, rois, feature_maps, image_meta):
    """Classifier and mask heads on ``rois``: (logits, probs, bbox) and the mask."""
    class_logits, class_probs, bbox = heads.fpn_classifier_graph(
        rois, feature_maps, image_meta, config.POOL_SIZE, config.NUM_CLASSES,
        train_bn=config.TRAIN_BN, fc_layers_size=config.FPN_CLASSIF_FC_LAYERS_SIZE,
        roi_pooling=_roi_pooling(config))
    return class_logits, class_probs, bbox


def _mask_head(config, rois, feature_maps, image_meta, logits=False):
    return heads.build_fpn_mask_graph(
        rois, feature_maps, image_meta, config.MASK_POOL_SIZE, config.NUM_CLASSES,
        train_bn=config.TRAIN_BN, roi_pooling=_roi_pooling(config),
        conv_channels=config.MASK_HEAD_CONV_CHANNELS, logits=logits)


def build_training_model(config):
    """The training graph as a `MaskRCNNKerasModel` with its losses configured."""
    config.validate_for_training()
    h, w = int(config.IMAGE_SHAPE[0]), int(config.IMAGE_SHAPE[1])
    channels = config.IMAGE_CHANNEL_COUNT
    mask_shape = (tuple(config.MINI_MASK_SHAPE) if config.USE_MINI_MASK else (h, w))
    inputs = {
        "input_image": keras.Input([h, w, channels], name="input_image"),
        "input_image_meta": keras.Input([config.IMAGE_META_SIZE], name="input_image_meta"),
        "input_rpn_match": keras.Input([None, 1], name="input_rpn_match", dtype="int32"),
        "input_rpn_bbox": keras.Input([None, 4], name="input_rpn_bbox"),
        "input_gt_class_ids": keras.Input([None], name="input_gt_class_ids",
                                          dtype="int32"),
        "input_gt_boxes": keras.Input([None, 4], name="input_gt_boxes"),
        "input_gt_masks": keras.Input([mask_shape[0], mask_shape[1], None],
                                      name="input_gt_masks", dtype="bool"),
    }
    if not config.USE_RPN_ROIS:
        inputs["input_rois"] = keras.Input([None, 4], name="input_rois")
    image, meta = inputs["input_image"], inputs["input_image_meta"]

    gt_boxes = NormalizeBoxes(name="input_gt_boxes_norm")([inputs["input_gt_boxes"], image])
    anchors = AnchorsConstant(get_anchors_for_config(config, config.IMAGE_SHAPE),
                              name="anchors")(image)
    feature_maps, (rpn_class_logits, rpn_class, rpn_bbox) = _backbone_and_rpn(config, image)
    rpn_rois = _proposals(config, rpn_class, rpn_bbox, anchors,
                          config.POST_NMS_ROIS_TRAINING)
    if config.USE_RPN_ROIS:
        candidate_rois = rpn_rois
    else:
        candidate_rois = NormalizeBoxes(name="input_rois_norm")([inputs["input_rois"], image])

    rois, target_class_ids, target_bbox, target_mask = DetectionTargetLayer(
        config.TRAIN_ROIS_PER_IMAGE, config.ROI_POSITIVE_RATIO, config.BBOX_STD_DEV,
        config.MASK_SHAPE, config.USE_MINI_MASK, pooling=_roi_pooling(config)["method"],
        image_shape=(h, w), add_gt_boxes=config.TRAIN_ROIS_ADD_GT_BOXES,
        fill_negatives=config.TRAIN_ROIS_FILL_NEGATIVES, name="proposal_targets")(
        [candidate_rois, inputs["input_gt_class_ids"], gt_boxes, inputs["input_gt_masks"]])

    class_logits, class_probs, bbox = _heads(config, rois, feature_maps, meta)
    max_positive = max(1, int(config.TRAIN_ROIS_PER_IMAGE * config.ROI_POSITIVE_RATIO))
    mask_rois = LeadingRows(max_positive, name="mask_rois")(rois)
    mask_logits = _mask_head(config, mask_rois, feature_maps, meta, logits=True)
    output_rois = keras.layers.Identity(dtype="float32", name="output_rois")(rois)

    outputs = [rpn_class_logits, rpn_class, rpn_bbox, class_logits, class_probs, bbox,
               mask_logits, rpn_rois, output_rois, target_class_ids, target_bbox, target_mask]
    names = training_input_names(config)
    model = MaskRCNNKerasModel(inputs=[inputs[n] for n in names], outputs=outputs,
                               name="mask_rcnn")
    roles = {n: TRAINING_OUTPUT_NAMES.index(n) for n in (
        "rpn_class_logits", "rpn_bbox", "mrcnn_class_logits", "mrcnn_bbox",
        "mrcnn_mask_logits", "output_rois", "target_class_ids", "target_bbox",
        "target_mask")}
    # AdamW decays the weights itself (decoupled); the loss then has no L2 term.
    l2 = 0.0 if config.OPTIMIZER == "AdamW" else config.WEIGHT_DECAY
    model.configure_losses(names, roles, config.LOSS_WEIGHTS, l2)
    return model


def build_inference_model(config):
    """The inference graph (a `MaskRCNNKerasModel`; its train_step is not used)."""
    channels = config.IMAGE_CHANNEL_COUNT
    image = keras.Input([None, None, channels], name="input_image")
    meta = keras.Input([config.IMAGE_META_SIZE], name="input_image_meta")
    anchors = keras.Input([None, 4], name="input_anchors")

    feature_maps, (_, rpn_class, rpn_bbox) = _backbone_and_rpn(config, image)
    rpn_rois = _proposals(config, rpn_class, rpn_bbox, anchors,
                          config.POST_NMS_ROIS_INFERENCE)
    _, class_probs, bbox = _heads(config, rpn_rois, feature_maps, meta)
    detections = DetectionLayer(
        config.BBOX_STD_DEV, config.DETECTION_MIN_CONFIDENCE,
        config.DETECTION_MAX_INSTANCES, config.DETECTION_NMS_THRESHOLD,
        name="mrcnn_detection")([rpn_rois, class_probs, bbox, meta])
    # The mask head runs on the real detections only (see RealDetectionBoxes);
    # the output is padded back to DETECTION_MAX_INSTANCES rows (zeros).
    detection_boxes = RealDetectionBoxes(name="detection_boxes")(detections)
    mask = _mask_head(config, detection_boxes, feature_maps, meta)
    mask = PadRows(config.DETECTION_MAX_INSTANCES, name="mrcnn_mask_padded")(mask)
    return MaskRCNNKerasModel(
        inputs=[image, meta, anchors],
        outputs=[detections, class_probs, bbox, mask, rpn_rois, rpn_class, rpn_bbox],
        name="mask_rcnn")
