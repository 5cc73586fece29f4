"""Every backbone x head combination (`Config.BACKBONE` x `Config.HEAD_ARCHITECTURE`)
builds in both modes, takes a training step that changes every head's weights,
detects on images of two sizes, and gives identical outputs after its weights
are saved and reloaded. The FPN column detects with ``ROI_POOLING_METHOD =
"crop_and_resize"`` (the legacy pooling keeps working with every backbone),
the C4 column with RoIAlign (C4 with the other poolings: test_c4.py). Tiny
configs: the cost is the graphs' building."""

import warnings

import numpy as np
import pytest

from model_fixtures import RectanglesDataset, TinyConfig
from mrcnn import model as modellib
from mrcnn.config import BACKBONES
from mrcnn.engine.checkpoints import save_checkpoint

HEADS = ("fpn", "c4")
# The 101-layer backbones build 3-4 times slower: marked slow (still run in CI).
BACKBONE_PARAMS = [pytest.param(b, marks=pytest.mark.slow) if "101" in b else b
                   for b in BACKBONES]
# The weights each head owns (one per part: RPN, box head, mask branch; C4's res5).
HEAD_LAYERS = {
    "fpn": ("rpn_conv_shared", "mrcnn_class_conv1", "mrcnn_class_logits", "mrcnn_bbox_fc",
            "mrcnn_mask_conv1", "mrcnn_mask_deconv", "mrcnn_mask", "fpn_c5p5"),
    "c4": ("rpn_conv_shared", "res5a_branch2a", "res5c_branch2c", "mrcnn_class_logits",
           "mrcnn_bbox_fc", "mrcnn_mask_deconv", "mrcnn_mask"),
}


def _config(backbone, head, mode):
    attrs = dict(ROI_POOLING_METHOD="crop_and_resize" if (mode, head) == ("inference", "fpn")
                 else "roi_align",
                 BACKBONE=backbone, HEAD_ARCHITECTURE=head, IMAGES_PER_GPU=1 if mode ==
                 "inference" else 2, STEPS_PER_EPOCH=1, VALIDATION_STEPS=0,
                 DETECTION_MIN_CONFIDENCE=0.0, MASK_HEAD_CONV_CHANNELS=16, SEED=4,
                 RPN_ANCHOR_SCALES=(8, 16, 32, 64, 128))
    if head == "c4":
        attrs.update(POOL_SIZE=6, MASK_SHAPE=[6, 6], TRAIN_ROIS_PER_IMAGE=16)
    return type(f"{backbone}_{head}", (TinyConfig,), attrs)()


def _kernel(keras_model, name):
    for layer in [keras_model] + [l for l in keras_model.layers if hasattr(l, "layers")]:
        try:
            return np.asarray(layer.get_layer(name).weights[0]).copy()
        except ValueError:
            continue
    raise AssertionError(f"no layer {name!r}")


def _outputs(model, image):
    molded, metas, _ = model.mold_inputs([image])
    anchors = np.broadcast_to(model.get_anchors(molded[0].shape), (1,) + model.get_anchors(
        molded[0].shape).shape)
    out = model.keras_model([molded, metas, np.ascontiguousarray(anchors)], training=False)
    return {k: np.asarray(out[k]) for k in ("detections", "mrcnn_class", "mrcnn_bbox",
                                            "mrcnn_mask")}


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("backbone", BACKBONE_PARAMS)
def test_backbone_and_head_train_detect_save_reload(backbone, head, tmp_path):
    dataset = RectanglesDataset([2, 3], seed=7)
    model = modellib.MaskRCNN("training", _config(backbone, head, "training"), str(tmp_path))
    model.run_eagerly = True  # one step: cheaper than tracing the train step
    before = {n: _kernel(model.keras_model, n) for n in HEAD_LAYERS[head]}
    history = model.train(dataset, None, learning_rate=0.02, epochs=1, layers="heads",
                          verbose=0)
    losses = {k: v[0] for k, v in history.history.items() if k.endswith("loss")}
    assert len(losses) >= 6 and all(np.isfinite(v) for v in losses.values()), losses
    for name, kernel in before.items():
        assert not np.array_equal(_kernel(model.keras_model, name), kernel), name

    config = _config(backbone, head, "inference")
    inference = modellib.MaskRCNN("inference", config, str(tmp_path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        inference.load_weights(model.find_last(), by_name=True)
    assert inference.roi_pooling_method == config.ROI_POOLING_METHOD
    # Only the FPN column's explicit crop_and_resize differs from the file's record.
    assert any("RoI pooling 'roi_align'" in str(w.message) for w in caught) == (head == "fpn")
    if backbone.startswith("resnext"):  # grouped convolutions, cardinality 32 or 64
        assert inference.keras_model.get_layer("res4a_branch2b").groups == \
            (64 if "64x4d" in backbone else 32)
    mask_side = config.MASK_SHAPE[0]
    assert inference.keras_model.output["mrcnn_mask"].shape[2:4] == (mask_side, mask_side)
    images = [dataset.load_image(0), np.asarray(dataset.load_image(1)[8:56, :40])]  # 64x64, 48x40
    for image in images:
        r = inference.detect([image], verbose=0)[0]
        n = len(r["scores"])
        assert r["rois"].shape == (n, 4) and r["masks"].shape == image.shape[:2] + (n,)
        assert np.all(np.isfinite(r["scores"]))

    path = str(tmp_path / "saved.h5")
    save_checkpoint(inference.keras_model, path)
    first = _outputs(inference, images[1])
    for weight in inference.keras_model.weights:  # forget everything, then reload
        weight.assign(np.zeros(weight.shape, weight.dtype))
    inference.load_weights(path, by_name=True)
    second = _outputs(inference, images[1])
    for key in first:
        np.testing.assert_array_equal(first[key], second[key], err_msg=key)
