"""The keypoint branch in the graphs (Keypoint R-CNN, ``NUM_KEYPOINTS`` > 0).

What `mrcnn.modeling.assembly` adds to the FPN graphs for keypoints; the head,
its targets, decoding and loss live in `mrcnn.modeling.roi_heads.keypoint_head`.

* `keypoint_heatmaps`: RoIs ``[B, R, 4]`` (legacy-normalised), scaled about
  their centres by ``KEYPOINT_ROI_EXPAND`` (layer ``keypoint_roi_expand``,
  only when it is not 1) -> RoIAlign on
  P2..P5 (``KEYPOINT_POOL_SIZE``, layer ``roi_align_keypoint``, the level rule
  and pooling method of the other heads) -> RoIs merged into the batch axis
  (``mrcnn_kp_rois``) -> `build_keypoint_head_graph` -> heatmap logits ``[B, R,
  m, m, K]`` (layer ``mrcnn_keypoints_per_roi``, ``m = KEYPOINT_HEATMAP_SIZE``).
* `DetectionKeypoints`: heatmaps of the detections -> keypoints ``(x, y,
  score)`` ``[B, n, K, 3]`` in input-image pixels (`detection_keypoints_graph`:
  arg-max, sub-cell refinement, the box's cell geometry); keypoints the
  detection's class does not have (``KEYPOINT_CLASSES``) are zeros.

FPN only: `check_keypoint_architecture` refuses the C4 head.
"""

import keras
import numpy as np
import tensorflow as tf

from mrcnn.modeling.layers import MergeRoiAxis, ScaleBoxes
from mrcnn.modeling.roi_heads.box_head import roi_pooling_kwargs
from mrcnn.modeling.roi_heads.keypoint_head import (build_keypoint_head_graph,
                                                    detection_keypoints_graph)
from mrcnn.modeling.roi_heads.poolers import PyramidROIAlign

__all__ = ["has_keypoints", "check_keypoint_architecture", "keypoint_heatmaps",
           "DetectionKeypoints"]


def has_keypoints(config):
    """Whether ``config`` builds the keypoint branch (``NUM_KEYPOINTS`` > 0)."""
    return int(getattr(config, "NUM_KEYPOINTS", 0) or 0) > 0


def check_keypoint_architecture(config):
    """ValueError naming both settings when keypoints are asked of the C4 head."""
    if has_keypoints(config) and config.HEAD_ARCHITECTURE != "fpn":
        raise ValueError(
            f"{type(config).__name__}: NUM_KEYPOINTS = {config.NUM_KEYPOINTS} needs "
            f"HEAD_ARCHITECTURE = 'fpn' (the keypoint head pools from the FPN levels), got "
            f"HEAD_ARCHITECTURE = {config.HEAD_ARCHITECTURE!r}; set NUM_KEYPOINTS = 0 or "
            f"HEAD_ARCHITECTURE = 'fpn'")


def keypoint_heatmaps(rois, feature_maps, image_meta, config, roi_pooling=None):
    """Keypoint heatmap logits of ``rois``.

    Args:
        rois: ``[B, R, 4]`` legacy-normalised boxes (`mrcnn.structures.coords`).
        feature_maps: ``[P2, P3, P4, P5]``.
        image_meta: ``[B, IMAGE_META_SIZE]``.
        config: NUM_KEYPOINTS, KEYPOINT_POOL_SIZE, KEYPOINT_HEAD_CONV,
            KEYPOINT_HEAD_CHANNELS, KEYPOINT_ROI_EXPAND (the heatmaps cover each
            RoI scaled by it about its centre).
        roi_pooling: the heads' pooling settings (`roi_pooling_kwargs`).

    Returns:
        float32 ``[B, R, m, m, K]`` logits, ``m = 4 * KEYPOINT_POOL_SIZE``.
    """
    size = int(config.KEYPOINT_POOL_SIZE)
    covered = rois
    if float(config.KEYPOINT_ROI_EXPAND) != 1.0:
        covered = ScaleBoxes(config.KEYPOINT_ROI_EXPAND, name="keypoint_roi_expand")(
            [rois, image_meta])
    pooled = PyramidROIAlign((size, size), name="roi_align_keypoint",
                             **roi_pooling_kwargs(roi_pooling))(
        [covered, image_meta] + list(feature_maps))
    pooled = MergeRoiAxis(name="mrcnn_kp_rois")(pooled)
    return build_keypoint_head_graph(pooled, config.NUM_KEYPOINTS,
                                     num_convs=config.KEYPOINT_HEAD_CONV,
                                     channels=config.KEYPOINT_HEAD_CHANNELS, rois=rois)


@keras.saving.register_keras_serializable(package="mrcnn")
class DetectionKeypoints(keras.layers.Layer):
    """Keypoints of detections from their heatmaps (no weights).

    Inputs: ``[heatmaps [B, n, m, m, K] logits, boxes [B, n, 4] legacy-normalised,
    image [B, H, W, C]]`` (the image gives the pixel frame), and with
    ``class_table`` (bool ``[NUM_CLASSES, K]``, `config_class_table`) a fourth,
    ``detections [B, D, 6]`` (their class ids, column 4, of the ``n`` leading
    rows). Output: float32 ``[B, n, K, 3]`` ``(x, y, score)`` in input-image
    pixels (continuous, the convention of `mrcnn.structures.keypoints`); rows
    whose box is all zeros (padding) and keypoints the row's class lacks are zeros.
    ``roi_expand``: ``KEYPOINT_ROI_EXPAND``, the heatmaps cover the boxes scaled
    by it about their centres.
    """

    def __init__(self, class_table=None, roi_expand=1.0, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.class_table = (None if class_table is None else
                            np.asarray(class_table, dtype=bool).tolist())
        self.roi_expand = float(roi_expand)

    def call(self, inputs):
        heatmaps, boxes, image = inputs[:3]
        heatmaps = tf.cast(heatmaps, tf.float32)
        boxes = tf.cast(boxes, tf.float32)
        m_h, m_w, k = (int(d) for d in heatmaps.shape[2:])
        rows = tf.shape(boxes)[:2]
        flat_maps = tf.reshape(heatmaps, [-1, m_h, m_w, k])
        flat_boxes = tf.reshape(boxes, [-1, 4])
        points = detection_keypoints_graph(flat_maps, flat_boxes, tf.shape(image)[1:3],
                                           self.roi_expand)
        keep = tf.reduce_any(tf.not_equal(flat_boxes, 0.0), axis=1)[:, None]     # [R, 1]
        if self.class_table is not None:
            ids = tf.cast(inputs[3][:, :rows[1], 4], tf.int32)
            table = tf.constant(np.asarray(self.class_table, dtype=bool))
            keep = keep & tf.gather(table, tf.maximum(tf.reshape(ids, [-1]), 0))
        points = tf.where(keep[..., None], points, tf.zeros_like(points))
        return tf.reshape(points, tf.concat([rows, [k, 3]], axis=0))

    def get_config(self):
        config = {**super().get_config(), "class_table": self.class_table}
        if self.roi_expand != 1.0:  # 1: the config of the graphs before the setting
            config["roi_expand"] = self.roi_expand
        return config

    def compute_output_shape(self, input_shape):
        heatmaps, boxes = input_shape[0], input_shape[1]
        return (boxes[0], boxes[1], heatmaps[-1], 3)
