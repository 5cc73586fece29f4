"""Tests of mrcnn.modeling.fpn.fpn_graph: shapes, names and the top-down maths."""

import keras
import numpy as np

from mrcnn.modeling.fpn import fpn_graph


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

    # Known weights: 1x1 laterals of ones with bias = level, 3x3 output convs of ones
    # and zero bias. Each output channel then holds the same value, computed below.
    for level in (2, 3, 4, 5):
        lateral = model.get_layer(f"fpn_c{level}p{level}")
        lateral.set_weights([np.ones(lateral.kernel.shape, "float32"),
                             np.full(lateral.bias.shape, level, "float32")])
        out = model.get_layer(f"fpn_p{level}")
        out.set_weights([np.ones(out.kernel.shape, "float32"),
                         np.zeros(out.bias.shape, "float32")])
    rng = np.random.default_rng(2)
    inputs = [rng.normal(size=(1,) + tuple(i.shape[1:])).astype("float32") for i in model.inputs]
    p2, p3, p4, p5, p6 = [np.asarray(o)[0] for o in model(inputs)]

    def up(x):          # nearest-neighbour 2x upsampling
        return x.repeat(2, axis=0).repeat(2, axis=1)

    def conv3x3(x):     # ones kernel, 'same' (one zero pixel around), over 8 channels
        h, w = x.shape
        padded = np.pad(x, 1)
        return 8 * sum(padded[dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3))

    c2, c3, c4, c5 = [x[0].astype(np.float64).sum(-1) for x in inputs]
    m5 = c5 + 5
    m4 = up(m5) + c4 + 4
    m3 = up(m4) + c3 + 3
    m2 = up(m3) + c2 + 2
    expected = [conv3x3(m) for m in (m2, m3, m4, m5)]
    expected.append(expected[-1][::2, ::2])   # P6: 1x1 max pool, stride 2, of P5
    for level, got, want in zip(range(2, 7), (p2, p3, p4, p5, p6), expected):
        np.testing.assert_allclose(got, np.repeat(want[..., None], 8, axis=-1), rtol=1e-5,
                                   atol=1e-4, err_msg=f"P{level}")


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
