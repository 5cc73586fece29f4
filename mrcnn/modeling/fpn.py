"""Feature Pyramid Network top-down pathway (Keras 3 graph builder).

Layer names (weights contract): lateral 1x1 convs ``fpn_c5p5``, ``fpn_c4p4``,
``fpn_c3p3``, ``fpn_c2p2``; 3x3 output convs ``fpn_p2`` .. ``fpn_p5``.
"""

from keras import layers

__all__ = ["fpn_graph"]


def fpn_graph(c2, c3, c4, c5, pyramid_size=256):
    """Build P2..P6 from the backbone outputs C2..C5.

    ``P5 = lateral(C5)``; ``P(k) = upsample2x_nearest(P(k+1)) + lateral(C(k))``;
    each of P2..P5 then goes through a 3x3 ``same`` conv. P6 is a stride-2
    subsampling of P5 (max pool with a 1x1 window, as the released weights
    were trained with), used only by the RPN.

    Args:
        c2, c3, c4, c5: Keras tensors ``[B, H/s, W/s, C]`` with strides
            s = 4, 8, 16, 32.
        pyramid_size: channels of every pyramid level (TOP_DOWN_PYRAMID_SIZE).

    Returns:
        ``[P2, P3, P4, P5, P6]``, each ``[B, H/s, W/s, pyramid_size]`` with
        strides 4, 8, 16, 32, 64.
    """
    p5 = layers.Conv2D(pyramid_size, 1, name="fpn_c5p5")(c5)
    p4 = layers.Add(name="fpn_p4add")([
        layers.UpSampling2D(2, name="fpn_p5upsampled")(p5),
        layers.Conv2D(pyramid_size, 1, name="fpn_c4p4")(c4)])
    p3 = layers.Add(name="fpn_p3add")([
        layers.UpSampling2D(2, name="fpn_p4upsampled")(p4),
        layers.Conv2D(pyramid_size, 1, name="fpn_c3p3")(c3)])
    p2 = layers.Add(name="fpn_p2add")([
        layers.UpSampling2D(2, name="fpn_p3upsampled")(p3),
        layers.Conv2D(pyramid_size, 1, name="fpn_c2p2")(c2)])
    p2 = layers.Conv2D(pyramid_size, 3, padding="same", name="fpn_p2")(p2)
    p3 = layers.Conv2D(pyramid_size, 3, padding="same", name="fpn_p3")(p3)
    p4 = layers.Conv2D(pyramid_size, 3, padding="same", name="fpn_p4")(p4)
    p5 = layers.Conv2D(pyramid_size, 3, padding="same", name="fpn_p5")(p5)
    p6 = layers.MaxPooling2D(pool_size=1, strides=2, name="fpn_p6")(p5)
    return [p2, p3, p4, p5, p6]
