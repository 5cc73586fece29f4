"""Tests for mrcnn.structures.anchors: counts, ordering and specific coordinates."""

import numpy as np
import pytest

from mrcnn.structures import anchors as A
from mrcnn.structures.boxes import norm_boxes
from mrcnn.config import Config


class TinyConfig(Config):
    NAME = "tiny"
    NUM_CLASSES = 2
    IMAGE_MIN_DIM = 64
    IMAGE_MAX_DIM = 128
    BACKBONE = "resnet50"


def test_generate_anchors_order_and_coordinates():
    anchors = A.generate_anchors(32, [0.5, 1, 2], (2, 3), 4, 1)
    assert anchors.shape == (2 * 3 * 3, 4)
    # index ((y * W + x) * R + r): cell (0, 1), ratio 1 -> centre (0, 4), 32 x 32
    np.testing.assert_allclose(anchors[(0 * 3 + 1) * 3 + 1], [-16, -12, 16, 20])
    # cell (1, 2), ratio 2 (w / h = 2) -> centre (4, 8), h = 32/sqrt2, w = 32*sqrt2
    h, w = 32 / np.sqrt(2), 32 * np.sqrt(2)
    np.testing.assert_allclose(anchors[(1 * 3 + 2) * 3 + 2],
                               [4 - h / 2, 8 - w / 2, 4 + h / 2, 8 + w / 2])
    # every anchor of a scale has area scale**2 and ratio width / height
    hs = anchors[:, 2] - anchors[:, 0]
    ws = anchors[:, 3] - anchors[:, 1]
    np.testing.assert_allclose(hs * ws, 32 ** 2)
    np.testing.assert_allclose(ws / hs, np.tile([0.5, 1, 2], 6))


def test_generate_anchors_several_scales_and_stride():
    anchors = A.generate_anchors([8, 16], [1, 4], (3, 5), 10, 2)
    # cells y in {0, 2}, x in {0, 2, 4}; 2 ratios x 2 scales per cell
    assert anchors.shape == (2 * 3 * 4, 4)
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    np.testing.assert_allclose(centres[::4], [[0, 0], [0, 20], [0, 40],
                                              [20, 0], [20, 20], [20, 40]])
    # within a cell: ratio-major, scale-minor -> (r=1, s=0): h = 8/2, w = 8*2
    np.testing.assert_allclose(anchors[2], [-2, -8, 2, 8])
    np.testing.assert_allclose(anchors[3], [-4, -16, 4, 16])


def test_generate_anchors_rejects_bad_ratio():
    with pytest.raises(ValueError, match="ratios"):
        A.generate_anchors(32, [0, 1], (2, 2), 4, 1)


def test_compute_backbone_shapes_ceil():
    config = TinyConfig()
    shapes = A.compute_backbone_shapes(config, (100, 130, 3))
    np.testing.assert_array_equal(shapes, [[25, 33], [13, 17], [7, 9], [4, 5], [2, 3]])
    assert np.issubdtype(shapes.dtype, np.integer)


def _fake_backbone(input_image, stage5=False, train_bn=None):
    raise AssertionError("not called by anchor code")


def _fake_shapes(image_shape):
    return [[image_shape[0] // s, image_shape[1] // s] for s in (4, 8, 16, 32, 64)]


def test_compute_backbone_shapes_callable_backbone():
    class CallableConfig(TinyConfig):
        BACKBONE = staticmethod(_fake_backbone)
        COMPUTE_BACKBONE_SHAPE = _fake_shapes   # plain function in the class body

    shapes = A.compute_backbone_shapes(CallableConfig(), (100, 130, 3))
    np.testing.assert_array_equal(shapes, [[25, 32], [12, 16], [6, 8], [3, 4], [1, 2]])


def test_pyramid_anchor_count_and_specific_anchor():
    config = TinyConfig()
    shapes = A.compute_backbone_shapes(config, config.IMAGE_SHAPE)
    anchors = A.generate_pyramid_anchors(config.RPN_ANCHOR_SCALES, config.RPN_ANCHOR_RATIOS,
                                         shapes, config.BACKBONE_STRIDES,
                                         config.RPN_ANCHOR_STRIDE)
    # 128 px: 32^2 + 16^2 + 8^2 + 4^2 + 2^2 = 1364 cells, 3 ratios each
    assert anchors.shape == (1364 * 3, 4)
    # level P3 (stride 8, scale 64), cell (2, 5), ratio 1
    index = 32 * 32 * 3 + (2 * 16 + 5) * 3 + 1
    np.testing.assert_allclose(anchors[index], [16 - 32, 40 - 32, 16 + 32, 40 + 32])
    with pytest.raises(ValueError, match="per level"):
        A.generate_pyramid_anchors((32, 64), [1], shapes, config.BACKBONE_STRIDES, 1)


def test_get_anchors_for_config_normalised_and_cached():
    A.clear_anchor_cache()
    config = TinyConfig()
    anchors = A.get_anchors_for_config(config, config.IMAGE_SHAPE)
    assert anchors.dtype == np.float32 and anchors.shape == (4092, 4)
    index = 32 * 32 * 3 + (2 * 16 + 5) * 3 + 1
    # legacy normalisation: (box - [0, 0, 1, 1]) / 127
    np.testing.assert_allclose(anchors[index], np.array([-16, 8, 47, 71]) / 127, rtol=1e-6)
    assert A.get_anchors_for_config(config, (128, 128, 3)) is anchors
    assert not anchors.flags.writeable
    other = A.get_anchors_for_config(config, (64, 128, 3))
    assert other.shape == ((16 * 32 + 8 * 16 + 4 * 8 + 2 * 4 + 1 * 2) * 3, 4)

    class FewerRatios(TinyConfig):
        RPN_ANCHOR_RATIOS = [1]
    fewer = A.get_anchors_for_config(FewerRatios(), config.IMAGE_SHAPE)
    assert fewer.shape == (1364, 4)
    pixels = A.generate_pyramid_anchors(config.RPN_ANCHOR_SCALES, [1],
                                        A.compute_backbone_shapes(config, (128, 128)),
                                        config.BACKBONE_STRIDES, 1)
    np.testing.assert_allclose(fewer, norm_boxes(pixels, (128, 128)))
