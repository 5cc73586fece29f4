"""Region Proposal Network head (Keras 3), shared across pyramid levels.

The head is one nested ``keras.Model`` named ``rpn_model`` (layers
``rpn_conv_shared``, ``rpn_class_raw``, ``rpn_bbox_pred``: the weights
contract), applied to every pyramid level P2..P6.

Output ordering matches :mod:`mrcnn.structures.anchors`: the ``[B, h, w, apl * k]`` conv
output is reshaped to ``[B, h * w * apl, k]``, i.e. cells row-major, then the
``apl`` anchors of a cell (ratios); levels are concatenated in P2..P6 order.
"""

import keras
from keras import layers

__all__ = ["rpn_graph", "build_rpn_model", "rpn_outputs"]


def rpn_graph(feature_map, anchors_per_location, anchor_stride, channels=512):
    """The RPN layers on one Keras tensor (legacy API; prefer :func:`build_rpn_model`).

    Args:
        feature_map: Keras tensor ``[B, h, w, depth]``.
        anchors_per_location: anchors per cell.
        anchor_stride: stride (cells) of the shared 3x3 conv.
        channels: its output channels (RPN_HEAD_CHANNELS; 512 in the released weights).

    Returns:
        ``[rpn_class_logits [B, h*w*apl, 2], rpn_probs [B, h*w*apl, 2],
        rpn_bbox [B, h*w*apl, 4]]`` (see :func:`build_rpn_model`).
    """
    shared = layers.Conv2D(channels, 3, padding="same", activation="relu", strides=anchor_stride,
                           name="rpn_conv_shared")(feature_map)
    x = layers.Conv2D(2 * anchors_per_location, 1, padding="valid", name="rpn_class_raw")(shared)
    logits = layers.Reshape((-1, 2), name="rpn_class_logits_flat")(x)
    probs = layers.Activation("softmax", dtype="float32", name="rpn_class_probs")(logits)
    x = layers.Conv2D(4 * anchors_per_location, 1, padding="valid", name="rpn_bbox_pred")(shared)
    bbox = layers.Reshape((-1, 4), name="rpn_bbox_flat")(x)
    return [logits, probs, bbox]


def build_rpn_model(anchor_stride, anchors_per_location, depth, channels=512):
    """Build the shared RPN head as a Keras model named ``rpn_model``.

    Args:
        anchor_stride: stride (cells) of the shared 3x3 conv (RPN_ANCHOR_STRIDE).
        anchors_per_location: anchors per cell (len(RPN_ANCHOR_RATIOS)).
        depth: channels of the feature maps (TOP_DOWN_PYRAMID_SIZE).
        channels: of the shared 3x3 conv (RPN_HEAD_CHANNELS).

    Returns:
        ``keras.Model`` with input ``[B, h, w, depth]`` (name
        ``input_rpn_feature_map``) and outputs ``[rpn_class_logits
        [B, h*w*apl, 2], rpn_probs [B, h*w*apl, 2] (softmax, index 1 =
        foreground), rpn_bbox [B, h*w*apl, 4] (dy, dx, log dh, log dw, still
        divided by RPN_BBOX_STD_DEV)]``.
    """
    feature_map = keras.Input(shape=(None, None, depth), name="input_rpn_feature_map")
    outputs = rpn_graph(feature_map, anchors_per_location, anchor_stride, channels)
    return keras.Model(feature_map, outputs, name="rpn_model")


def rpn_outputs(rpn_model, feature_maps):
    """Apply the RPN model to each level and concatenate over levels.

    Args:
        rpn_model: the model from :func:`build_rpn_model`.
        feature_maps: ``[P2, P3, P4, P5, P6]`` Keras tensors.

    Returns:
        ``[rpn_class_logits [B, A, 2], rpn_class [B, A, 2], rpn_bbox [B, A, 4]]``
        (layer names ``rpn_class_logits``, ``rpn_class``, ``rpn_bbox``), A the
        total anchor count, in anchor order.
    """
    per_level = [rpn_model(p) for p in feature_maps]
    names = ("rpn_class_logits", "rpn_class", "rpn_bbox")
    # float32 under mixed precision: the proposals rank and decode these.
    return [layers.Concatenate(axis=1, dtype="float32", name=name)(
                [outs[i] for outs in per_level])
            for i, name in enumerate(names)]
