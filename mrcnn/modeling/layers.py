"""Weightless plumbing layers of the graphs: constants, box normalisation, row
selection and padding, and the per-RoI application of the heads' layers.
"""

import keras
import numpy as np
import tensorflow as tf

from mrcnn.structures.coords import norm_boxes_graph, scale_norm_boxes_graph
from mrcnn.structures.image_meta import image_hw_graph


class Float32Layer(keras.layers.Layer):
    """A layer that computes in float32 whatever the dtype policy (boxes, anchors:
    see `mrcnn.engine.precision`); ``dtype`` may still be given explicitly."""

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


def leading_count(real):
    """The batch's largest count of real rows, at least 1 (so that a head never
    sees an empty batch): int32 scalar from bool ``[B, N]`` ``real`` (each
    image's real rows lead, as the targets and detection layers order them)."""
    return tf.maximum(tf.reduce_max(tf.reduce_sum(tf.cast(real, tf.int32), axis=1)), 1)


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


class PositiveRows(LeadingRows):
    """The leading rows of ``[B, N, ...]`` that hold positives: ``[B, n, ...]``.

    Inputs: ``[x, target_class_ids [B, N]]`` (positives first, ``> 0``, as
    `DetectionTargetLayer` gives them). ``n`` is the largest positive count in
    the batch, at least 1 (no empty batch for the head) and at most ``count``
    (the sampler's cap). Heads whose rows are independent (frozen batch norm)
    then run on the positives alone instead of ``count`` rows, most of them
    zero padding when the proposals overlap few objects; their output is
    zero-padded back to ``count`` rows (`PadRows`), and the losses, which read
    positive rows only, are unchanged.
    """

    def call(self, inputs):
        x, class_ids = inputs
        return x[:, :leading_count(class_ids[:, :self.count] > 0)]

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], None) + tuple(input_shape[0][2:])


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
        return tf.stop_gradient(detections[:, :leading_count(detections[..., 4] > 0), :4])

    def compute_output_shape(self, input_shape):
        return (input_shape[0], None, 4)


class ScaleBoxes(Float32Layer):
    """Legacy-normalised boxes ``[B, N, 4]`` scaled about their centres by
    ``factor`` in pixels (`mrcnn.structures.coords.scale_norm_boxes_graph`;
    padding rows stay zeros). Inputs: ``[boxes, image_meta]`` (the image size)."""

    def __init__(self, factor, **kwargs):
        super().__init__(**kwargs)
        self.factor = float(factor)

    def call(self, inputs):
        boxes, image_meta = inputs
        return scale_norm_boxes_graph(boxes, self.factor, image_hw_graph(image_meta))

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


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


class MergeRoiAxis(keras.layers.Layer):
    """``[B, R, ...]`` -> ``[B * R, ...]``: RoIs flattened into the batch axis.

    The heads' convolutions and dense layers then run once over all RoIs of the
    batch, as plain Keras layers (their weights keep the names and shapes of the
    released file). Batch norm in training mode takes its statistics over all
    ``B * R`` RoIs. `SplitRoiAxis` restores the RoI axis.
    """

    def call(self, x):
        flat = tf.reshape(x, tf.concat([[-1], tf.shape(x)[2:]], axis=0))
        return tf.ensure_shape(flat, [None] + list(x.shape[2:]))

    def compute_output_shape(self, input_shape):
        return (None,) + tuple(input_shape[2:])


class SplitRoiAxis(keras.layers.Layer):
    """``[B * R, ...]`` -> ``[B, R, ...]``, with ``B`` and ``R`` taken from a
    reference tensor ``[B, R, ...]`` (the RoIs). Inputs: ``[flat, reference]``."""

    def call(self, inputs):
        flat, reference = inputs
        rows = tf.shape(reference)[:2]
        out = tf.reshape(flat, tf.concat([rows, tf.shape(flat)[1:]], axis=0))
        return tf.ensure_shape(out, list(reference.shape[:2]) + list(flat.shape[1:]))

    def compute_output_shape(self, input_shape):
        flat, reference = input_shape
        return tuple(reference[:2]) + tuple(flat[1:])


def roi_wise(layer):
    """Mark ``layer`` as running on RoIs merged into the batch axis (`MergeRoiAxis`):
    ``MaskRCNN.run_graph`` gives its output back as ``[images, RoIs, ...]``."""
    layer.mrcnn_roi_wise = True
    return layer


def is_roi_wise(layer):
    """Whether `roi_wise` marked ``layer``."""
    return bool(getattr(layer, "mrcnn_roi_wise", False))
