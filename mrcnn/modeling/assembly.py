"""Assembly of the Mask R-CNN Keras graphs (training and inference).

Both graphs share: backbone (``config.BACKBONE``) -> FPN (P2..P6) -> the shared
``rpn_model`` over P2..P6 -> ``ProposalLayer`` (named ``ROI``) -> classifier
and mask heads on FPN P2..P5. With ``HEAD_ARCHITECTURE = "c4"``: backbone to
C4 -> ``rpn_model`` on C4 -> ``ROI`` -> res5 box head and mask branch on C4
(`mrcnn.modeling.roi_heads.c4`); same inputs, outputs and output names, masks
``POOL_SIZE`` x ``POOL_SIZE``. Layer names are the weights contract (the
released COCO file's layer names and weight shapes: `mrcnn.weights.io`).

Both builders return a functional Keras model (of ``model_class``: the engine
passes its `MaskRCNNKerasModel`, which adds the train step) whose outputs are a
dict keyed by name (an ``OrderedDict``: Keras flattens a plain dict in key
order, which would reorder the layers and so the trainable variables, and with
them the sums over variables of the global-norm clip and the weight decay);
building a graph imports nothing of the training engine.

Training graph (fixed input size ``config.IMAGE_SHAPE``):

* inputs, in order (`training_input_names`): ``input_image`` float32
  ``[B, H, W, C]``, ``input_image_meta`` ``[B, IMAGE_META_SIZE]``,
  ``input_rpn_match`` int32 ``[B, A, 1]``, ``input_rpn_bbox`` ``[B, R, 4]``,
  ``input_gt_class_ids`` int32 ``[B, G]``, ``input_gt_boxes`` ``[B, G, 4]``
  pixels (y2/x2 exclusive; normalised in-graph), ``input_gt_masks`` bool
  ``[B, mh, mw, G]``, and ``input_rois`` ``[B, R', 4]`` pixels only when
  ``USE_RPN_ROIS`` is False.
* anchors: a constant (`AnchorsConstant`), never an input or a variable.
* outputs, a dict (keys `TRAINING_OUTPUT_NAMES`): rpn_class_logits, rpn_class,
  rpn_bbox, mrcnn_class_logits, mrcnn_class, mrcnn_bbox, mrcnn_mask_logits
  (the layer ``mrcnn_mask`` without its activation: the mask loss is computed
  from logits; same weights), rpn_rois, output_rois, target_class_ids, target_bbox,
  target_mask.
* the heads' targets are sampled from the proposals held constant
  (`DetectionTargetLayer`, ``stop_gradient``): the heads' losses train the
  heads and the backbone, not the RPN through its proposals.

Inference graph (any input size, multiple of 64): inputs ``input_image``
``[B, H, W, C]``, ``input_image_meta``, ``input_anchors`` ``[B, A, 4]``
normalised; outputs, a dict (keys `INFERENCE_OUTPUT_NAMES`): ``detections [B, D, 6]``
(y1, x1, y2, x2 normalised, class_id, score), ``mrcnn_class [B, P, NC]``,
``mrcnn_bbox [B, P, NC, 4]``, ``mrcnn_mask [B, D, mh, mw, NC]`` (computed for
the real detections only, zeros in the padding rows: the layer
``mrcnn_mask_per_roi`` gives ``[B, n, mh, mw, NC]`` for the ``n`` leading rows), ``rpn_rois
[B, P, 4]``, ``rpn_class [B, A, 2]``, ``rpn_bbox [B, A, 4]``.

The mask head's channels: ``NUM_CLASSES`` per-class sigmoid masks by default
(the released layout); a softmax over them with ``MASK_LOSS = "softmax"``; one
sigmoid mask per RoI (``mrcnn_mask [B, D, mh, mw, 1]``) with
``CLASS_AGNOSTIC_MASK`` (`mrcnn.modeling.roi_heads.mask_head`).

Keypoints (``NUM_KEYPOINTS`` K > 0, FPN head only; `mrcnn.modeling.roi_heads.keypoint_branch`):
the training graph takes ``input_gt_keypoints`` float32 ``[B, G, K, 3]`` ``(x, y,
v)`` input-image pixels (after ``input_gt_masks``), its targets layer gives the
positives' heatmap targets and it adds the outputs ``mrcnn_keypoint_logits [B, r,
m, m, K]`` (the head on the leading, positive rows, as the masks),
``target_keypoint_indices [B, T, K]`` int32 and ``target_keypoint_valid [B, T,
K]`` bool (`KEYPOINT_TRAINING_OUTPUT_NAMES`). The inference graph adds
``mrcnn_keypoints [B, D, K, 3]`` ``(x, y, score)`` in input-image pixels (the
heatmaps of the real detections decoded; zeros in the padding rows and for the
keypoints a detection's class lacks, ``KEYPOINT_CLASSES``). With K = 0
both graphs are exactly those without keypoints.

Batch norm: with ``FOLD_BATCH_NORM`` (default) both graphs fold each frozen
batch norm into the convolution before it (`mrcnn.modeling.folding`; same
layers and variables); a batch norm that trains (``TRAIN_BN`` True) never folds.
"""

import collections

import keras

from mrcnn.modeling.roi_heads.box_head import fpn_classifier_graph
from mrcnn.modeling.roi_heads.mask_head import build_fpn_mask_graph
from mrcnn.modeling.roi_heads.c4 import (C4_CHANNELS, build_res5_head, c4_box_head,
                                         c4_mask_head, c4_training_mask_head)
from mrcnn.structures.anchors import anchors_per_location, get_anchors_for_config
from mrcnn.config import built_pooling_method
from mrcnn.modeling.backbone import resnet_graph
from mrcnn.modeling.fpn import fpn_graph
from mrcnn.modeling.folding import set_batch_norm_folding
from mrcnn.modeling.layers import (AnchorsConstant, LeadingRows, NormalizeBoxes, PadRows,
                                   PositiveRows, RealDetectionBoxes)
from mrcnn.modeling.roi_heads.detection import DetectionLayer
from mrcnn.modeling.roi_heads.keypoint_branch import (DetectionKeypoints,
                                                      check_keypoint_architecture,
                                                      has_keypoints, keypoint_heatmaps)
from mrcnn.modeling.roi_heads.keypoint_head import config_class_table
from mrcnn.modeling.roi_heads.sampling import DetectionTargetLayer
from mrcnn.modeling.rpn.proposals import ProposalLayer
from mrcnn.modeling.rpn.head import build_rpn_model, rpn_outputs

__all__ = ["TRAINING_OUTPUT_NAMES", "INFERENCE_OUTPUT_NAMES", "KEYPOINT_TRAINING_OUTPUT_NAMES",
           "KEYPOINT_INFERENCE_OUTPUT_NAMES", "training_input_names", "training_output_names",
           "inference_output_names", "build_training_model", "build_inference_model"]

TRAINING_OUTPUT_NAMES = (
    "rpn_class_logits", "rpn_class", "rpn_bbox", "mrcnn_class_logits", "mrcnn_class",
    "mrcnn_bbox", "mrcnn_mask_logits", "rpn_rois", "output_rois", "target_class_ids",
    "target_bbox", "target_mask")
INFERENCE_OUTPUT_NAMES = ("detections", "mrcnn_class", "mrcnn_bbox", "mrcnn_mask",
                          "rpn_rois", "rpn_class", "rpn_bbox")
# Added after those with NUM_KEYPOINTS > 0.
KEYPOINT_TRAINING_OUTPUT_NAMES = ("mrcnn_keypoint_logits", "target_keypoint_indices",
                                  "target_keypoint_valid")
KEYPOINT_INFERENCE_OUTPUT_NAMES = ("mrcnn_keypoints",)


def training_input_names(config):
    """Names of the training graph's inputs, in model order."""
    names = ["input_image", "input_image_meta", "input_rpn_match", "input_rpn_bbox",
             "input_gt_class_ids", "input_gt_boxes", "input_gt_masks"]
    if has_keypoints(config):
        names.append("input_gt_keypoints")
    if not config.USE_RPN_ROIS:
        names.append("input_rois")
    return names


def training_output_names(config):
    """Keys of the training graph's outputs, in order."""
    extra = KEYPOINT_TRAINING_OUTPUT_NAMES if has_keypoints(config) else ()
    return TRAINING_OUTPUT_NAMES + extra


def inference_output_names(config):
    """Keys of the inference graph's outputs, in order."""
    extra = KEYPOINT_INFERENCE_OUTPUT_NAMES if has_keypoints(config) else ()
    return INFERENCE_OUTPUT_NAMES + extra


def _roi_pooling(config):
    # "auto" builds RoIAlign; MaskRCNN.load_weights may switch an inference
    # model to the file's pooling (see mrcnn.engine.checkpoints.resolve_pooling_method).
    return dict(method=built_pooling_method(config),
                sampling_ratio=config.ROI_ALIGN_SAMPLING_RATIO,
                aligned=config.ROI_ALIGN_ALIGNED,
                aggregation=config.ROI_ALIGN_AGGREGATION)


def _is_c4(config):
    return config.HEAD_ARCHITECTURE == "c4"


def _backbone_and_rpn(config, input_image):
    """Backbone, FPN (or C4 alone) and RPN.

    Returns ``(feature_maps, (rpn_class_logits, rpn_class, rpn_bbox))``: the
    heads' maps ``[P2, P3, P4, P5]``, or ``[C4]`` for the C4 head.
    """
    if _is_c4(config):   # validated: a named backbone
        _, _, _, c4, _ = resnet_graph(input_image, config.BACKBONE, stage5=False,
                                      train_bn=config.TRAIN_BN)
        rpn = build_rpn_model(config.RPN_ANCHOR_STRIDE, anchors_per_location(config),
                              C4_CHANNELS, config.RPN_HEAD_CHANNELS)
        return [c4], tuple(rpn_outputs(rpn, [c4]))
    if callable(config.BACKBONE):
        _, c2, c3, c4, c5 = config.BACKBONE(input_image, stage5=True,
                                            train_bn=config.TRAIN_BN)
    else:
        _, c2, c3, c4, c5 = resnet_graph(input_image, config.BACKBONE, stage5=True,
                                         train_bn=config.TRAIN_BN)
    p2, p3, p4, p5, p6 = fpn_graph(c2, c3, c4, c5, pyramid_size=config.TOP_DOWN_PYRAMID_SIZE)
    rpn = build_rpn_model(config.RPN_ANCHOR_STRIDE, anchors_per_location(config),
                          config.TOP_DOWN_PYRAMID_SIZE, config.RPN_HEAD_CHANNELS)
    rpn_class_logits, rpn_class, rpn_bbox = rpn_outputs(rpn, [p2, p3, p4, p5, p6])
    return [p2, p3, p4, p5], (rpn_class_logits, rpn_class, rpn_bbox)


def _proposals(config, rpn_class, rpn_bbox, anchors, count):
    return ProposalLayer(proposal_count=count, nms_threshold=config.RPN_NMS_THRESHOLD,
                         pre_nms_limit=config.PRE_NMS_LIMIT,
                         rpn_bbox_std_dev=config.RPN_BBOX_STD_DEV,
                         name="ROI")([rpn_class, rpn_bbox, anchors])


def _mask_kwargs(config, logits):
    return dict(conv_channels=config.MASK_HEAD_CONV_CHANNELS, logits=logits,
                mask_loss=config.MASK_LOSS, class_agnostic=config.CLASS_AGNOSTIC_MASK)


def max_positive_rows(config):
    """The sampler's cap of positive RoIs per image (the leading rows of its
    output): ``int(TRAIN_ROIS_PER_IMAGE * ROI_POSITIVE_RATIO)``, at least 1."""
    return max(1, int(config.TRAIN_ROIS_PER_IMAGE * config.ROI_POSITIVE_RATIO))


class _Heads:
    """The box and mask heads of one graph: FPN (on P2..P5) or C4 (res5 on C4,
    one ``res5_head`` model shared by the box head and the masks)."""

    def __init__(self, config, feature_maps, image_meta):
        self.config, self.feature_maps, self.image_meta = config, feature_maps, image_meta
        self.res5 = (build_res5_head(config.BACKBONE, config.POOL_SIZE, config.TRAIN_BN)
                     if _is_c4(config) else None)
        self.features = None

    def boxes(self, rois):
        """``(class_logits, class_probs, bbox)`` of ``rois [B, R, 4]``."""
        config = self.config
        if self.res5 is not None:
            *outputs, self.features = c4_box_head(
                rois, self.feature_maps[0], self.image_meta, self.res5, config.POOL_SIZE,
                config.NUM_CLASSES, roi_pooling=_roi_pooling(config))
            return tuple(outputs)
        return fpn_classifier_graph(
            rois, self.feature_maps, self.image_meta, config.POOL_SIZE, config.NUM_CLASSES,
            train_bn=config.TRAIN_BN, fc_layers_size=config.FPN_CLASSIF_FC_LAYERS_SIZE,
            roi_pooling=_roi_pooling(config))

    def _positive_rows(self, head, rois, target_class_ids, rows_independent, name):
        """``head(boxes)`` on the leading (positive) rows of the sampled ``rois``:
        ``[B, max_positive, ...]``, the sampler's cap of positives per image.

        Where the head's rows are independent (no batch norm taking statistics
        over them) and XLA is off (which would recompile for every count), it
        runs on the batch's largest positive count only (`PositiveRows`) and its
        output is zero-padded to ``max_positive`` rows: the same losses and
        gradients, for a fraction of the work when few proposals overlap an
        object. Otherwise on all ``max_positive`` rows (`LeadingRows`)."""
        config = self.config
        max_positive = max_positive_rows(config)
        if not rows_independent or config.XLA:
            return head(LeadingRows(max_positive, name=name)(rois))
        boxes = PositiveRows(max_positive, name=name)([rois, target_class_ids])
        return PadRows(max_positive, name=f"{name}_padded")(head(boxes))

    def training_masks(self, rois, target_class_ids):
        """Mask logits of the positive rows of the sampled ``rois``:
        ``[B, max_positive, mh, mw, NC]`` (see `_positive_rows`)."""
        config = self.config
        if self.res5 is not None:
            return c4_training_mask_head(self.features, rois, max_positive_rows(config),
                                         config.NUM_CLASSES, **_mask_kwargs(config, True))
        return self._positive_rows(lambda boxes: self.masks(boxes, logits=True), rois,
                                   target_class_ids, config.TRAIN_BN is False, "mask_rois")

    def masks(self, boxes, logits=False):
        """Masks of ``boxes [B, n, 4]``: ``[B, n, mh, mw, NC]``."""
        config = self.config
        if self.res5 is not None:
            return c4_mask_head(boxes, self.feature_maps[0], self.image_meta, self.res5,
                                config.POOL_SIZE, config.NUM_CLASSES,
                                roi_pooling=_roi_pooling(config), **_mask_kwargs(config, logits))
        return build_fpn_mask_graph(
            boxes, self.feature_maps, self.image_meta, config.MASK_POOL_SIZE,
            config.NUM_CLASSES, train_bn=config.TRAIN_BN, roi_pooling=_roi_pooling(config),
            **_mask_kwargs(config, logits))

    def keypoints(self, boxes):
        """Keypoint heatmap logits of ``boxes [B, n, 4]``: ``[B, n, m, m, K]`` (FPN)."""
        return keypoint_heatmaps(boxes, self.feature_maps, self.image_meta, self.config,
                                 roi_pooling=_roi_pooling(self.config))

    def training_keypoints(self, rois, target_class_ids):
        """Keypoint logits of the positive rows of the sampled ``rois`` (the head
        has no batch norm: see `_positive_rows`)."""
        return self._positive_rows(self.keypoints, rois, target_class_ids, True,
                                   "keypoint_rois")


def build_training_model(config, model_class=keras.Model):
    """The training graph: ``model_class(inputs=[...], outputs={name: tensor})``.

    Inputs in the order of `training_input_names`; outputs keyed by
    `TRAINING_OUTPUT_NAMES`.
    """
    config.validate_for_training()
    check_keypoint_architecture(config)
    keypoints = has_keypoints(config)
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
    if keypoints:
        inputs["input_gt_keypoints"] = keras.Input([None, config.NUM_KEYPOINTS, 3],
                                                   name="input_gt_keypoints")
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

    target_inputs = [candidate_rois, inputs["input_gt_class_ids"], gt_boxes,
                     inputs["input_gt_masks"]]
    keypoint_args = {}
    if keypoints:
        target_inputs.append(inputs["input_gt_keypoints"])
        keypoint_args = dict(num_keypoints=config.NUM_KEYPOINTS,
                             keypoint_heatmap_size=config.KEYPOINT_HEATMAP_SIZE,
                             keypoint_class_table=config_class_table(config),
                             keypoint_roi_expand=config.KEYPOINT_ROI_EXPAND)
    rois, target_class_ids, target_bbox, target_mask, *keypoint_targets = DetectionTargetLayer(
        config.TRAIN_ROIS_PER_IMAGE, config.ROI_POSITIVE_RATIO, config.BBOX_STD_DEV,
        config.MASK_SHAPE, config.USE_MINI_MASK, pooling=_roi_pooling(config)["method"],
        image_shape=(h, w), add_gt_boxes=config.TRAIN_ROIS_ADD_GT_BOXES,
        fill_negatives=config.TRAIN_ROIS_FILL_NEGATIVES, name="proposal_targets",
        **keypoint_args)(target_inputs)

    heads = _Heads(config, feature_maps, meta)
    class_logits, class_probs, bbox = heads.boxes(rois)
    mask_logits = heads.training_masks(rois, target_class_ids)
    output_rois = keras.layers.Identity(dtype="float32", name="output_rois")(rois)

    outputs = collections.OrderedDict(zip(TRAINING_OUTPUT_NAMES, (
        rpn_class_logits, rpn_class, rpn_bbox, class_logits, class_probs, bbox, mask_logits,
        rpn_rois, output_rois, target_class_ids, target_bbox, target_mask)))
    if keypoints:
        outputs.update(zip(KEYPOINT_TRAINING_OUTPUT_NAMES,
                           [heads.training_keypoints(rois, target_class_ids)] + keypoint_targets))
    model = model_class(inputs=[inputs[n] for n in training_input_names(config)],
                        outputs=outputs, name="mask_rcnn")
    if config.FOLD_BATCH_NORM:  # only the frozen ones (TRAIN_BN False) fold
        set_batch_norm_folding(model, True)
    return model


def build_inference_model(config, model_class=keras.Model):
    """The inference graph: ``model_class(inputs=[image, meta, anchors],
    outputs={name: tensor})``, outputs keyed by `inference_output_names`."""
    check_keypoint_architecture(config)
    channels = config.IMAGE_CHANNEL_COUNT
    image = keras.Input([None, None, channels], name="input_image")
    meta = keras.Input([config.IMAGE_META_SIZE], name="input_image_meta")
    anchors = keras.Input([None, 4], name="input_anchors")

    feature_maps, (_, rpn_class, rpn_bbox) = _backbone_and_rpn(config, image)
    rpn_rois = _proposals(config, rpn_class, rpn_bbox, anchors,
                          config.POST_NMS_ROIS_INFERENCE)
    heads = _Heads(config, feature_maps, meta)
    _, class_probs, bbox = heads.boxes(rpn_rois)
    detections = DetectionLayer(
        config.BBOX_STD_DEV, config.DETECTION_MIN_CONFIDENCE,
        config.DETECTION_MAX_INSTANCES, config.DETECTION_NMS_THRESHOLD,
        name="mrcnn_detection")([rpn_rois, class_probs, bbox, meta])
    # The mask head runs on the real detections only (see RealDetectionBoxes);
    # the output is padded back to DETECTION_MAX_INSTANCES rows (zeros).
    detection_boxes = RealDetectionBoxes(name="detection_boxes")(detections)
    mask = heads.masks(detection_boxes)
    mask = PadRows(config.DETECTION_MAX_INSTANCES, name="mrcnn_mask_padded")(mask)
    outputs = collections.OrderedDict(zip(INFERENCE_OUTPUT_NAMES, (
        detections, class_probs, bbox, mask, rpn_rois, rpn_class, rpn_bbox)))
    if has_keypoints(config):
        points = DetectionKeypoints(class_table=config_class_table(config),
                                    roi_expand=config.KEYPOINT_ROI_EXPAND,
                                    name="detection_keypoints")(
            [heads.keypoints(detection_boxes), detection_boxes, image, detections])
        outputs["mrcnn_keypoints"] = PadRows(config.DETECTION_MAX_INSTANCES,
                                             name="mrcnn_keypoints")(points)
    model = model_class(inputs=[image, meta, anchors], outputs=outputs, name="mask_rcnn")
    if config.FOLD_BATCH_NORM:
        set_batch_norm_folding(model, True)
    return model
