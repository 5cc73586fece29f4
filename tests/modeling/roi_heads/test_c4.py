"""The C4 head: its settings, anchors, pooling, layer presets and graph layout."""

import numpy as np
import pytest
import tensorflow as tf

from model_fixtures import TinyConfig
from mrcnn import model as modellib
from mrcnn.config import C4_DEFAULTS, Config
from mrcnn.engine.trainer import resolve_layer_regex
from mrcnn.modeling.roi_heads.poolers import (PyramidROIAlign, single_level_roi_align_graph)
from mrcnn.ops import roi_align, roi_pool, roi_warp
from mrcnn.structures.anchors import (anchors_per_location, generate_anchors,
                                      get_anchors_for_config, pixel_anchors_for_config)
from mrcnn.structures.boxes import norm_boxes
from mrcnn.structures.coords import roi_align_boxes_graph
from mrcnn.structures.image_meta import compose_image_meta


class PaperC4(Config):
    NAME = "c4"
    NUM_CLASSES = 3
    HEAD_ARCHITECTURE = "c4"


class TinyC4(TinyConfig):
    HEAD_ARCHITECTURE = "c4"
    POOL_SIZE = 6
    MASK_SHAPE = [6, 6]


def test_c4_takes_the_papers_settings_unless_the_subclass_sets_them():
    config = PaperC4()
    for name, value in C4_DEFAULTS.items():
        assert getattr(config, name) == value, name
    assert (config.POOL_SIZE, config.MASK_SHAPE, config.TRAIN_ROIS_PER_IMAGE,
            config.POST_NMS_ROIS_INFERENCE, config.BACKBONE_STRIDES) == (14, [14, 14], 64, 300, [16])
    # TinyConfig sets TRAIN_ROIS_PER_IMAGE = 32 and POST_NMS_ROIS_INFERENCE = 100: kept.
    tiny = TinyC4()
    assert (tiny.TRAIN_ROIS_PER_IMAGE, tiny.POST_NMS_ROIS_INFERENCE, tiny.POOL_SIZE) == (32, 100, 6)
    assert Config.BACKBONE_STRIDES == [4, 8, 16, 32, 64]  # the class is not changed
    fpn = type("Fpn", (Config,), {"NUM_CLASSES": 2})()
    assert (fpn.POOL_SIZE, fpn.MASK_SHAPE, fpn.TRAIN_ROIS_PER_IMAGE) == (7, [28, 28], 200)


@pytest.mark.parametrize("settings, field", [
    (dict(HEAD_ARCHITECTURE="c5"), "HEAD_ARCHITECTURE"),
    (dict(BACKBONE_STRIDES=[16, 32]), "BACKBONE_STRIDES"),
    (dict(MASK_SHAPE=[28, 28]), "MASK_SHAPE"),
    (dict(POOL_SIZE=7, MASK_SHAPE=[7, 7]), "POOL_SIZE"),
    (dict(BACKBONE=lambda *a, **k: None, COMPUTE_BACKBONE_SHAPE=lambda s: [[4, 4]]),
     "HEAD_ARCHITECTURE"),
])
def test_bad_c4_settings_name_the_field(settings, field):
    with pytest.raises(ValueError, match=rf"\.{field}:"):
        type("Bad", (PaperC4,), settings)()


def test_c4_anchors_put_every_scale_on_the_one_level():
    config = PaperC4()
    assert anchors_per_location(config) == 15
    pixels = pixel_anchors_for_config(config, (128, 96))
    expected = generate_anchors(config.RPN_ANCHOR_SCALES, config.RPN_ANCHOR_RATIOS, (8, 6), 16, 1)
    np.testing.assert_array_equal(pixels, expected)
    assert pixels.shape == (8 * 6 * 15, 4) and not pixels.flags.writeable
    np.testing.assert_allclose(get_anchors_for_config(config, (128, 96)),
                               norm_boxes(expected, (128, 96)), rtol=0, atol=0)
    # Cell (y, x) = (1, 2): centre (16, 32), ratio 1 (index 1) and scale 128 (index 2).
    box = pixels[(1 * 6 + 2) * 15 + 1 * 5 + 2]
    np.testing.assert_allclose(box, [16 - 64, 32 - 64, 16 + 64, 32 + 64])
    fpn = TinyConfig()
    assert anchors_per_location(fpn) == 3
    assert len(pixel_anchors_for_config(fpn, (64, 64))) == 3 * (16**2 + 8**2 + 4**2 + 2**2 + 1)


@pytest.mark.parametrize("method", ["roi_align", "roi_warp", "roi_pool", "crop_and_resize"])
def test_single_level_pooling_is_the_op_at_stride_16(method):
    rng = np.random.default_rng(0)
    c4 = tf.constant(rng.normal(size=(2, 6, 5, 3)), tf.float32)        # a 96 x 80 image
    boxes_px = np.array([[[8, 4, 40, 60], [0, 0, 96, 80]], [[30.5, 10, 70, 33], [5, 5, 9, 9]]])
    boxes = tf.constant(norm_boxes(boxes_px.reshape(-1, 4), (96, 80)).reshape(2, 2, 4))
    meta = compose_image_meta(0, (96, 80, 3), (96, 80, 3), (0, 0, 96, 80), 1.0, np.ones(3))
    metas = tf.constant(np.stack([meta, meta]), tf.float32)
    layer = PyramidROIAlign((4, 4), method=method, strides=(16,), sampling_ratio=2)
    out = layer([boxes, metas, c4])
    flat = tf.reshape(boxes, [-1, 4])
    index = tf.constant([0, 0, 1, 1])
    op_boxes = roi_align_boxes_graph(flat, tf.constant([96.0, 80.0]))
    if method == "crop_and_resize":
        expected = tf.image.crop_and_resize(c4, flat, index, (4, 4))
    elif method == "roi_pool":
        expected = roi_pool(c4, op_boxes, index, (4, 4), spatial_scale=1 / 16)
    else:
        op = roi_align if method == "roi_align" else roi_warp
        expected = op(c4, op_boxes, index, (4, 4), spatial_scale=1 / 16, sampling_ratio=2,
                      aligned=True)
    assert out.shape == (2, 2, 4, 4, 3)
    np.testing.assert_allclose(out.numpy().reshape(4, 4, 4, 3), expected.numpy(), atol=1e-6)
    again = single_level_roi_align_graph(boxes, metas, c4, (4, 4), method, 2, True, 16)
    np.testing.assert_array_equal(again.numpy(), out.numpy())
    with pytest.raises(ValueError, match="expected 1 feature maps"):
        layer([boxes, metas, c4, c4])


def test_c4_heads_preset_trains_res5_the_fpn_one_does_not():
    import re
    c4, fpn = resolve_layer_regex("heads", "c4"), resolve_layer_regex("heads", "fpn")
    assert re.fullmatch(c4, "res5a_branch2a") and re.fullmatch(c4, "bn5c_branch2c")
    assert not re.fullmatch(fpn, "res5a_branch2a")
    assert not re.fullmatch(c4, "res4a_branch2a")
    assert resolve_layer_regex("4+", "c4") == resolve_layer_regex("4+", "fpn")


def test_c4_graph_layout(tmp_path):
    """The RPN on C4 (1024 channels, 15 anchors), no FPN, res5 as one shared model."""
    model = modellib.MaskRCNN("inference", type("I", (TinyC4,), {"IMAGES_PER_GPU": 1})(),
                              str(tmp_path))
    km = model.keras_model
    names = {layer.name for layer in km.layers}
    assert not any(n.startswith("fpn_") for n in names) and "res5a_branch2a" not in names
    res5 = km.get_layer("res5_head")
    assert res5.get_layer("res5a_branch2a").strides == (2, 2)
    assert res5.get_layer("res5c_branch2c").filters == 2048
    rpn = km.get_layer("rpn_model")
    assert rpn.get_layer("rpn_conv_shared").kernel.shape == (3, 3, 1024, 512)
    assert rpn.get_layer("rpn_class_raw").kernel.shape[-1] == 2 * 15
    assert km.get_layer("mrcnn_class_logits").kernel.shape == (2048, 3)
    assert km.get_layer("mrcnn_mask_deconv").kernel.shape[-1] == 2048   # on res5's output
    assert km.output["mrcnn_mask"].shape[2:] == (6, 6, 3)
    # One res5 model, called twice: on the proposals and on the detections.
    assert len(res5._inbound_nodes) == 2
