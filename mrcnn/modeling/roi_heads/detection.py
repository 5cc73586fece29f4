"""DetectionLayer: classifier outputs -> final detections (inference)."""

import keras
import numpy as np
import tensorflow as tf

from mrcnn.structures.boxes_tf import (apply_box_deltas_graph, clip_boxes_graph, norm_boxes_graph, pad_to_graph)
from mrcnn.structures.image_meta import parse_image_meta_graph

__all__ = ["DetectionLayer", "refine_detections_graph", "detections_graph"]


def refine_detections_graph(rois, probs, deltas, window, bbox_std_dev,
                            min_confidence, max_instances, nms_threshold):
    """Detections of ONE image.

    Steps: class = argmax of ``probs``; score = its probability; refine the
    RoI with that class's deltas (``deltas * bbox_std_dev``); clip to
    ``window``; drop all-zero (padding) RoIs, background (class 0) and scores
    below ``min_confidence``; per-class greedy NMS (IoU > ``nms_threshold``
    suppresses; done as one NMS with boxes of each class shifted by
    ``2 * class_id`` so that different classes never overlap); keep the
    ``max_instances`` best by score; zero-pad.

    Args:
        rois: ``[R, 4]`` normalised RoIs (zero rows = padding).
        probs: ``[R, NC]`` class probabilities.
        deltas: ``[R, NC, 4]`` class-specific deltas divided by BBOX_STD_DEV.
        window: ``[4]`` normalised ``(y1, x1, y2, x2)`` of the real image
            inside the padded input.

    Returns:
        float32 ``[max_instances, 6]`` rows ``(y1, x1, y2, x2, class_id, score)``,
        boxes normalised, sorted by descending score, zero-padded.
    """
    rois = tf.cast(rois, tf.float32)
    probs = tf.cast(probs, tf.float32)
    deltas = tf.cast(deltas, tf.float32)
    class_ids = tf.argmax(probs, axis=1, output_type=tf.int32)                   # [R]
    scores = tf.gather(probs, class_ids, batch_dims=1)                          # [R]
    class_deltas = tf.gather(deltas, class_ids, batch_dims=1)                   # [R, 4]
    std = tf.constant(np.reshape(bbox_std_dev, [1, 4]), tf.float32)
    boxes = apply_box_deltas_graph(rois, class_deltas * std)
    boxes = clip_boxes_graph(boxes, window)

    is_roi = tf.reduce_any(tf.not_equal(rois, 0.0), axis=1)
    keep = is_roi & (class_ids > 0) & (scores >= min_confidence)
    ix = tf.where(keep)[:, 0]
    boxes = tf.gather(boxes, ix)
    scores = tf.gather(scores, ix)
    class_ids = tf.gather(class_ids, ix)

    offsets = 2.0 * tf.cast(class_ids, tf.float32)[:, None]
    nms_keep = tf.image.non_max_suppression(boxes + offsets, scores, max_instances,
                                            iou_threshold=nms_threshold)
    detections = tf.concat([tf.gather(boxes, nms_keep),
                            tf.cast(tf.gather(class_ids, nms_keep), tf.float32)[:, None],
                            tf.gather(scores, nms_keep)[:, None]], axis=1)
    return pad_to_graph(detections, max_instances)


def detections_graph(rois, probs, deltas, image_meta, bbox_std_dev, min_confidence,
                     max_instances, nms_threshold):
    """Batched :func:`refine_detections_graph`; the window comes from image meta.

    Args: ``rois [B, R, 4]``, ``probs [B, R, NC]``, ``deltas [B, R, NC, 4]``,
    ``image_meta [B, META]``. Returns ``[B, max_instances, 6]``.
    """
    meta = parse_image_meta_graph(image_meta)
    windows = norm_boxes_graph(meta["window"], meta["image_shape"][0, :2])      # [B, 4]

    def one(args):
        r, p, d, w = args
        return refine_detections_graph(r, p, d, w, bbox_std_dev, min_confidence,
                                       max_instances, nms_threshold)

    return tf.map_fn(one, (tf.cast(rois, tf.float32), tf.cast(probs, tf.float32),
                           tf.cast(deltas, tf.float32), windows),
                     fn_output_signature=tf.TensorSpec([max_instances, 6], tf.float32))


@keras.saving.register_keras_serializable(package="mrcnn")
class DetectionLayer(keras.layers.Layer):
    """Keras layer around :func:`detections_graph`.

    Inputs: ``[rois [B, R, 4], mrcnn_probs [B, R, NC], mrcnn_bbox [B, R, NC, 4],
    image_meta [B, META]]``. Output: ``[B, detection_max_instances, 6]``
    ``(y1, x1, y2, x2 normalised, class_id, score)``, zero-padded, boxes
    clipped to the image window.
    """

    def __init__(self, bbox_std_dev=(0.1, 0.1, 0.2, 0.2), detection_min_confidence=0.7,
                 detection_max_instances=100, detection_nms_threshold=0.3, **kwargs):
        kwargs.setdefault("name", "mrcnn_detection")
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        # Dynamic shapes (NMS, boolean masks): not XLA-compilable.
        self.supports_jit = False
        self.bbox_std_dev = [float(v) for v in np.reshape(bbox_std_dev, [-1])]
        if len(self.bbox_std_dev) != 4:
            raise ValueError(f"DetectionLayer: bbox_std_dev must have 4 values, got "
                             f"{bbox_std_dev!r}")
        self.detection_min_confidence = float(detection_min_confidence)
        self.detection_max_instances = int(detection_max_instances)
        self.detection_nms_threshold = float(detection_nms_threshold)

    def call(self, inputs):
        rois, probs, deltas, image_meta = inputs
        return detections_graph(rois, probs, deltas, image_meta, self.bbox_std_dev,
                                self.detection_min_confidence,
                                self.detection_max_instances, self.detection_nms_threshold)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], self.detection_max_instances, 6)

    def get_config(self):
        config = super().get_config()
        config.update(bbox_std_dev=self.bbox_std_dev,
                      detection_min_confidence=self.detection_min_confidence,
                      detection_max_instances=self.detection_max_instances,
                      detection_nms_threshold=self.detection_nms_threshold)
        return config
