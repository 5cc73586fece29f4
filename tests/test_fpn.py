"""Tests of mrcnn.fpn.fpn_graph: shapes, names and the top-down maths."""

import keras
import numpy as np

from mrcnn.fpn import fpn_graph


def _fpn_model(depth=8):
    cs = [keras.Input((16 // s, 16 // s, ch)) for s, ch in ((1, 3), (2, 4), (4, 5), (8, 6))]
    ps = fpn_graph(*cs, pyramid_size=depth)
    return keras.Model(cs, ps)


def test_fpn_shapes_and_names():
    model = _fpn_model()
    shapes = [tuple(o.shape) for o in model.outputs]
    assert shapes == [(None, 16, 16, 8), (None, 8, 8, 8), (None, 4, 4, 8), (None, 2, 2, 8),
                      (None, 1, 1, 8)]
    for name, shape in (("fpn_c5p5", (1, 1, 6, 8)), ("fpn_c2p2", (1, 1, 3, 8)),
                        ("fpn_p3", (3, 3, 8, 8))):
        assert tuple(model.get_layer(name).kernel.shape) == shape


def test_fpn_top_down_values():
    """P6 subsamples P5; P4's pre-conv sum is upsample(P5 lateral) + C4 lateral."""
    model = _fpn_model()
    rng = np.random.default_rng(1)
    inputs = [rng.normal(size=(1,) + tuple(i.shape[1:])).astype("float32") for i in model.inputs]
    p2, p3, p4, p5, p6 = [np.asarray(o) for o in model(inputs)]
    np.testing.assert_allclose(p6, p5[:, ::2, ::2], rtol=1e-6)

    def lateral(name, x):
        layer = model.get_layer(name)
        return x @ np.asarray(layer.kernel)[0, 0] + np.asarray(layer.bias)

    m5 = lateral("fpn_c5p5", inputs[3])
    m4 = lateral("fpn_c4p4", inputs[2]) + m5.repeat(2, axis=1).repeat(2, axis=2)
    add = keras.Model(model.inputs, model.get_layer("fpn_p4add").output)
    np.testing.assert_allclose(np.asarray(add(inputs)), m4, rtol=1e-4, atol=1e-5)
