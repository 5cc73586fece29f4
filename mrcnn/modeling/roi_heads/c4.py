"""The C4 head (``Config.HEAD_ARCHITECTURE = "c4"``): the paper's Figure 4, left.

The backbone stops at C4 (stride 16, 1024 channels); the RPN runs on C4 alone
(all ``RPN_ANCHOR_SCALES`` x ``RPN_ANCHOR_RATIOS`` anchors at each cell,
`mrcnn.structures.anchors.anchor_scales_per_level`); each RoI is pooled
``POOL_SIZE`` x ``POOL_SIZE`` (14) from C4 (`PyramidROIAlign` with one stride,
so the same RoIAlign / crop_and_resize / RoIPool / RoIWarp choices and box
conventions as the FPN head); the backbone's res5 stage (first block stride 2)
runs on the pooled features as the box head, giving ``[R, 7, 7, 2048]``;
then:

* box head: average pool, then the same ``mrcnn_class_logits`` /
  ``mrcnn_bbox_fc`` layers as the FPN head (`box_head.class_box_outputs`);
* mask branch: a 2x deconvolution (``mrcnn_mask_deconv``, ``MASK_HEAD_CONV_CHANNELS``
  channels) of the res5 output and a 1x1 convolution per class
  (``mrcnn_mask``): ``POOL_SIZE`` x ``POOL_SIZE`` masks (14x14)
  (`mask_head.mask_outputs`).

The res5 stage is one nested model, ``res5_head`` (layers ``res5a_branch2a`` ..
``bn5c_branch2c``, the names of the backbone's stage 5, so ImageNet weights load
into it by name), called on every sampled RoI in training and, at inference, on
the proposals (box head) and again on the detections (masks). In training the
mask branch takes the res5 output of the positive RoIs (the leading rows, see
`mrcnn.modeling.layers.LeadingRows`): the box and mask heads share that
computation, as in the paper.
"""

import keras
from keras import layers

from mrcnn.modeling.backbone import backbone_stage
from mrcnn.modeling.layers import LeadingRows, MergeRoiAxis, SplitRoiAxis, roi_wise
from mrcnn.modeling.roi_heads.box_head import class_box_outputs, roi_pooling_kwargs
from mrcnn.modeling.roi_heads.mask_head import mask_outputs
from mrcnn.modeling.roi_heads.poolers import PyramidROIAlign

__all__ = ["C4_STRIDE", "C4_CHANNELS", "RES5_HEAD_NAME", "build_res5_head",
           "c4_box_head", "c4_mask_head", "c4_training_mask_head"]

C4_STRIDE = 16
C4_CHANNELS = 1024
RES5_HEAD_NAME = "res5_head"


def build_res5_head(architecture, pool_size, train_bn=False):
    """The backbone's stage 5 as a model on pooled RoI features.

    Args:
        architecture: a named backbone (`mrcnn.modeling.backbone.BACKBONE_ARCHITECTURES`).
        pool_size: side of the pooled features (POOL_SIZE, even).
        train_bn: see :class:`mrcnn.modeling.backbone.BatchNorm`.

    Returns:
        ``keras.Model`` named ``res5_head``: ``[N, p, p, 1024] -> [N, p / 2, p / 2, 2048]``
        (N: RoIs merged into the batch axis).
    """
    features = keras.Input([pool_size, pool_size, C4_CHANNELS], name="input_res5_features")
    out = backbone_stage(features, architecture, 5, train_bn=train_bn, strides=2)
    return roi_wise(keras.Model(features, out, name=RES5_HEAD_NAME))


def _pool_c4(name, rois, c4, image_meta, pool_size, roi_pooling):
    x = PyramidROIAlign((pool_size, pool_size), strides=(C4_STRIDE,), name=name,
                        **roi_pooling_kwargs(roi_pooling))([rois, image_meta, c4])
    return x                                                         # [B, R, p, p, 1024]


def c4_box_head(rois, c4, image_meta, res5, pool_size, num_classes, roi_pooling=None):
    """Box head on C4.

    Args:
        rois: ``[B, R, 4]`` normalised RoIs (Keras tensor).
        c4: ``[B, h, w, 1024]`` C4 feature map (stride 16).
        image_meta: ``[B, META]``.
        res5: the model from `build_res5_head`.
        pool_size: POOL_SIZE (14).
        num_classes: NUM_CLASSES.
        roi_pooling: as `box_head.fpn_classifier_graph`.

    Returns:
        ``(logits [B, R, NC], probs [B, R, NC], bbox [B, R, NC, 4], features)``:
        the FPN head's outputs and layer names, and the res5 output
        ``[B * R, p / 2, p / 2, 2048]`` (RoIs in the batch axis).
    """
    x = _pool_c4("roi_align_classifier", rois, c4, image_meta, pool_size, roi_pooling)
    x = MergeRoiAxis(name="mrcnn_class_rois")(x)
    features = res5(x)
    shared = roi_wise(layers.GlobalAveragePooling2D(name="mrcnn_res5_pool"))(features)
    return class_box_outputs(shared, rois, num_classes) + (features,)


def c4_training_mask_head(features, rois, max_positive, num_classes, **mask_kwargs):
    """The training graph's masks from the box head's res5 features.

    Args:
        features: ``[B * R, p / 2, p / 2, 2048]`` from `c4_box_head`.
        rois: ``[B, R, 4]`` the sampled RoIs (positives first).
        max_positive: rows of ``rois`` that may be positive.
        num_classes, **mask_kwargs: see `mask_head.mask_outputs`.

    Returns:
        ``[B, max_positive, p, p, NC]`` (layer ``mrcnn_mask_per_roi``).
    """
    x = SplitRoiAxis(name="mrcnn_res5_rois")([features, rois])
    x = LeadingRows(max_positive, dtype=None, name="mrcnn_mask_res5")(x)
    mask_rois = LeadingRows(max_positive, name="mask_rois")(rois)
    x = MergeRoiAxis(name="mrcnn_mask_rois")(x)
    return mask_outputs(x, mask_rois, num_classes, **mask_kwargs)


def c4_mask_head(boxes, c4, image_meta, res5, pool_size, num_classes, roi_pooling=None,
                 **mask_kwargs):
    """Masks of ``boxes [B, n, 4]`` (the inference graph's detections): pool from
    C4, res5 (the box head's model, shared weights), deconvolution.

    Returns:
        ``[B, n, p, p, NC]`` (layer ``mrcnn_mask_per_roi``).
    """
    x = _pool_c4("roi_align_mask", boxes, c4, image_meta, pool_size, roi_pooling)
    x = MergeRoiAxis(name="mrcnn_mask_rois")(x)
    return mask_outputs(res5(x), boxes, num_classes, **mask_kwargs)
