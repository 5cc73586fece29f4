"""ProposalLayer: RPN outputs + anchors -> NMS-filtered proposals (normalised)."""

import keras
import numpy as np
import tensorflow as tf

from mrcnn.structures.coords import NORM_IMAGE_WINDOW
from mrcnn.structures.boxes_tf import apply_box_deltas_graph, clip_boxes_graph, pad_to_graph

__all__ = ["ProposalLayer", "proposals_graph"]


def proposals_graph(rpn_probs, rpn_bbox, anchors, proposal_count, nms_threshold,
                    pre_nms_limit, rpn_bbox_std_dev):
    """Proposals for a batch (pure TF; the maths of :class:`ProposalLayer`).

    Per image: foreground score = ``rpn_probs[..., 1]``; keep the
    ``min(pre_nms_limit, A)`` best-scoring anchors; apply their deltas
    (``rpn_bbox * rpn_bbox_std_dev``) to them; clip to ``[0, 1]``; greedy NMS
    (a box is dropped when its IoU with a kept, better box is > ``nms_threshold``);
    keep at most ``proposal_count`` in descending score order; zero-pad.

    Args:
        rpn_probs: ``[B, A, 2]`` softmax (index 1 = foreground).
        rpn_bbox: ``[B, A, 4]`` deltas divided by RPN_BBOX_STD_DEV.
        anchors: ``[B, A, 4]``, ``[1, A, 4]`` or ``[A, 4]`` normalised anchors.

    Returns:
        float32 ``[B, proposal_count, 4]`` normalised ``(y1, x1, y2, x2)``.
    """
    scores = tf.cast(rpn_probs[:, :, 1], tf.float32)
    deltas = tf.cast(rpn_bbox, tf.float32) * tf.constant(
        np.reshape(rpn_bbox_std_dev, [1, 1, 4]), tf.float32)
    anchors = tf.cast(anchors, tf.float32)
    if len(anchors.shape) == 2:
        anchors = anchors[None]
    batch = tf.shape(scores)[0]
    anchors = tf.broadcast_to(anchors, [batch, tf.shape(anchors)[1], 4])

    k = tf.minimum(pre_nms_limit, tf.shape(scores)[1])
    top_scores, ix = tf.math.top_k(scores, k=k, sorted=True)
    deltas = tf.gather(deltas, ix, batch_dims=1)
    anchors = tf.gather(anchors, ix, batch_dims=1)
    boxes = apply_box_deltas_graph(anchors, deltas)
    boxes = clip_boxes_graph(boxes, tf.constant(NORM_IMAGE_WINDOW))

    def nms(args):
        b, s = args
        keep = tf.image.non_max_suppression(b, s, proposal_count, iou_threshold=nms_threshold)
        return pad_to_graph(tf.gather(b, keep), proposal_count)

    return tf.map_fn(nms, (boxes, top_scores),
                     fn_output_signature=tf.TensorSpec([proposal_count, 4], tf.float32))


@keras.saving.register_keras_serializable(package="mrcnn")
class ProposalLayer(keras.layers.Layer):
    """Keras layer around :func:`proposals_graph`.

    Inputs: ``[rpn_probs [B, A, 2], rpn_bbox [B, A, 4], anchors [B|1, A, 4]]``.
    Output: ``[B, proposal_count, 4]`` normalised proposals, zero-padded.
    """

    def __init__(self, proposal_count, nms_threshold, pre_nms_limit=6000,
                 rpn_bbox_std_dev=(0.1, 0.1, 0.2, 0.2), **kwargs):
        kwargs.setdefault("name", "ROI")
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        # Dynamic shapes (NMS, boolean masks): not XLA-compilable.
        self.supports_jit = False
        self.proposal_count = int(proposal_count)
        self.nms_threshold = float(nms_threshold)
        self.pre_nms_limit = int(pre_nms_limit)
        self.rpn_bbox_std_dev = [float(v) for v in np.reshape(rpn_bbox_std_dev, [-1])]
        if len(self.rpn_bbox_std_dev) != 4:
            raise ValueError(f"ProposalLayer: rpn_bbox_std_dev must have 4 values, got "
                             f"{rpn_bbox_std_dev!r}")

    def call(self, inputs):
        rpn_probs, rpn_bbox, anchors = inputs
        return proposals_graph(rpn_probs, rpn_bbox, anchors, self.proposal_count,
                               self.nms_threshold, self.pre_nms_limit,
                               self.rpn_bbox_std_dev)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], self.proposal_count, 4)

    def get_config(self):
        config = super().get_config()
        config.update(proposal_count=self.proposal_count, nms_threshold=self.nms_threshold,
                      pre_nms_limit=self.pre_nms_limit,
                      rpn_bbox_std_dev=self.rpn_bbox_std_dev)
        return config
