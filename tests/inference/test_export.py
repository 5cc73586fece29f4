"""Tests of mrcnn.inference.export: in-graph resize/unmold maths against the NumPy path, and a
SavedModel that, reloaded in a fresh process, reproduces MaskRCNN.detect()."""

import os
import subprocess
import sys
import textwrap
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from model_fixtures import TinyConfig
from mrcnn import model as modellib
from mrcnn.inference.export import (export_saved_model, resample_linear_graph, resize_square_graph, unmold_detections_graph)
from mrcnn.modeling.roi_heads.mask_head import paste_masks_graph
from mrcnn.structures.images import resize, resize_image
from mrcnn.structures.masks import unmold_mask
from mrcnn.inference.molding import unmold_detections


class ExportConfig(TinyConfig):
    IMAGES_PER_GPU = 1
    IMAGE_MAX_DIM = 128
    # Keep every detection so random weights still produce some; seeded so the
    # random initial weights (and with them the detections) are the same every run.
    DETECTION_MIN_CONFIDENCE = 0.0
    SEED = 1


# ----------------------------------------------------------------------------- pure maths
@pytest.mark.parametrize("src, dst", [((5, 7), (11, 3)), ((28, 28), (40, 13)),
                                      ((64, 96), (85, 128)), ((200, 100), (128, 64)),
                                      ((9, 9), (9, 9))])
def test_resample_linear_graph_equals_skimage_resize(src, dst):
    image = np.random.default_rng(0).random(src + (2,)) * 255
    expected = resize(image, dst, preserve_range=True)
    got = resample_linear_graph(tf.constant(image), tf.constant(dst)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-9)


def test_resample_linear_graph_hand_values():
    # 1x2 -> 1x4 along x: samples at -0.25, 0.25, 0.75, 1.25; outside taps are 0,
    # then clipped to the input's range [10, 30] (scikit-image's clip=True): the
    # first sample, 0.75 * 10 = 7.5, is lifted to 10.
    image = np.array([[[10.0], [30.0]]])
    got = resample_linear_graph(tf.constant(image), (1, 4)).numpy()[0, :, 0]
    np.testing.assert_allclose(got, [10.0, 15.0, 25.0, 22.5])


@pytest.mark.parametrize("shape", [(64, 96, 3), (200, 100, 3), (30, 50, 3), (128, 128, 3),
                                   (7, 300, 3)])
def test_resize_square_graph_equals_resize_image(shape):
    image = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    expected, window, scale, _, _ = resize_image(image, min_dim=64, max_dim=128,
                                                 mode="square")
    got, got_window, got_scale = resize_square_graph(tf.constant(image), 64, 128)
    np.testing.assert_array_equal(got_window.numpy(), window)
    assert got_scale.numpy() == pytest.approx(scale, rel=1e-12)
    assert got.dtype == tf.uint8 and got.shape == expected.shape
    # float64 maths and half-to-even rounding on both sides: identical pixels.
    np.testing.assert_array_equal(got.numpy(), expected)


def test_paste_masks_graph_equals_unmold_mask():
    rng = np.random.default_rng(2)
    height, width = 50, 70
    masks = rng.random((5, 14, 14)).astype(np.float32)
    boxes = np.array([[0, 0, 50, 70], [10, 20, 11, 21], [3, 60, 40, 70], [20, 5, 45, 30],
                      [0, 0, 5, 3]], np.int32)
    got = paste_masks_graph(tf.constant(masks), tf.constant(boxes),
                            tf.constant([height, width])).numpy()
    assert got.shape == (5, height, width) and got.dtype == bool
    for i in range(5):
        np.testing.assert_array_equal(got[i], unmold_mask(masks[i], boxes[i],
                                                          (height, width, 3)))
    # Nothing outside the box.
    assert not got[1][~(np.arange(height)[:, None] == 10) | ~(np.arange(width) == 20)].any()


@pytest.mark.parametrize("nc", [3, 1])     # class-specific, class-agnostic (channel 0)
def test_unmold_detections_graph_equals_numpy(nc):
    rng = np.random.default_rng(3)
    n = 8
    y1x1 = rng.random((n, 2)) * 0.7
    hw = rng.random((n, 2)) * 0.3 + 0.01
    detections = np.zeros((n + 2, 6), np.float32)           # 2 padding rows
    detections[:n, :2] = y1x1
    detections[:n, 2:4] = y1x1 + hw
    detections[:n, 4] = rng.integers(1, 3, n)
    detections[:n, 5] = rng.random(n)
    detections[3, 2:4] = detections[3, :2]                   # zero-area box: dropped
    masks = rng.random((n + 2, 14, 14, nc)).astype(np.float32)
    original, molded, window = (90, 60, 3), (128, 128, 3), np.array([0, 21, 128, 106])
    expected = unmold_detections(detections, masks, original, molded, window)
    got = unmold_detections_graph(tf.constant(detections), tf.constant(masks),
                                  tf.constant(original[:2]), molded[:2],
                                  tf.constant(window, tf.int32))
    assert len(expected[0]) == n - 1
    np.testing.assert_array_equal(got["rois"].numpy(), expected[0])
    np.testing.assert_array_equal(got["class_ids"].numpy(), expected[1])
    np.testing.assert_array_equal(got["scores"].numpy(), expected[2])
    np.testing.assert_array_equal(got["masks"].numpy(), expected[3])


def test_export_rejects_unsupported_models(tmp_path):
    class Pad64(ExportConfig):
        IMAGE_RESIZE_MODE = "pad64"

    with pytest.raises(ValueError, match="mode='inference'"):
        export_saved_model(types.SimpleNamespace(mode="training", config=ExportConfig()),
                           tmp_path / "a")
    with pytest.raises(ValueError, match="IMAGE_RESIZE_MODE 'pad64' is not supported"):
        export_saved_model(types.SimpleNamespace(mode="inference", config=Pad64()),
                           tmp_path / "b")
    with pytest.raises(ValueError, match="roi_align must be one of"):
        export_saved_model(types.SimpleNamespace(mode="inference", config=ExportConfig()),
                           tmp_path / "c", roi_align="cuda")


# ----------------------------------------------------------------------------- end to end
_RELOAD_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import tensorflow as tf
    saved, inputs, outputs = sys.argv[1:4]
    loaded = tf.saved_model.load(saved)
    serve = loaded.signatures["serving_default"]
    data = np.load(inputs)
    result = {}
    for i in range(len(data.files)):
        out = serve(image=tf.constant(data[f"image{i}"]))
        for key, value in out.items():
            result[f"{key}{i}"] = value.numpy()
    assert "mrcnn" not in sys.modules, "the SavedModel must not need mrcnn"
    np.savez(outputs, **result)
""")


def _mask_iou(a, b):
    inter = np.logical_and(a, b).sum(axis=(0, 1))
    union = np.logical_or(a, b).sum(axis=(0, 1))
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


@pytest.mark.slow
def test_saved_model_reloaded_in_fresh_process_matches_detect(tmp_path):
    keras.utils.set_random_seed(0)
    model = modellib.MaskRCNN("inference", ExportConfig(), str(tmp_path / "logs"))
    # Random weights: make background unlikely so that every image has detections.
    logits = model.keras_model.get_layer("mrcnn_class_logits")
    logits.bias.assign(np.array([-20.0, 0.0, 0.0], np.float32))
    saved = model.export(str(tmp_path / "saved"))  # the MaskRCNN method
    pb = open(os.path.join(saved, "saved_model.pb"), "rb").read()
    assert b"MrcnnRoiAlign" not in pb          # portable: stock TF ops only

    rng = np.random.default_rng(4)
    images = [rng.integers(0, 256, shape, dtype=np.uint8)
              for shape in [(64, 96, 3), (200, 100, 3)]]
    np.savez(tmp_path / "in.npz", **{f"image{i}": im for i, im in enumerate(images)})
    script = tmp_path / "reload.py"
    script.write_text(_RELOAD_SCRIPT)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, str(script), saved, str(tmp_path / "in.npz"),
                           str(tmp_path / "out.npz")], capture_output=True, text=True,
                          env=env, cwd=str(tmp_path), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    served = np.load(tmp_path / "out.npz")

    expected = model.detect(images)
    for i, (image, ref) in enumerate(zip(images, expected)):
        rois, class_ids = served[f"rois{i}"], served[f"class_ids{i}"]
        scores, masks = served[f"scores{i}"], served[f"masks{i}"]
        assert len(ref["class_ids"]) > 0
        assert rois.dtype == np.int32 and class_ids.dtype == np.int32
        assert masks.dtype == bool and masks.shape == image.shape[:2] + (len(rois),)
        assert rois.shape == ref["rois"].shape
        np.testing.assert_allclose(rois, ref["rois"], atol=1)
        np.testing.assert_array_equal(class_ids, ref["class_ids"])
        np.testing.assert_allclose(scores, ref["scores"], atol=1e-4)
        assert _mask_iou(masks, ref["masks"]).min() > 0.95

    # The inference graph runs the mask head on the real detections only and
    # zero-pads the rest (graph.RealDetectionBoxes / PadRows). A higher score
    # threshold (read when the layer runs) leaves about half the rows as padding.
    detection_layer = model.keras_model.get_layer("mrcnn_detection")
    detection_layer.detection_min_confidence = float(np.median(expected[0]["scores"]))
    out = model.run_graph(images[:1], [("detections", "mrcnn_detection"),
                                       ("masks", model.keras_model.outputs[3])])
    real = int((out["detections"][0, :, 4] > 0).sum())
    assert 0 < real < ExportConfig.DETECTION_MAX_INSTANCES
    assert out["masks"].shape[1] == ExportConfig.DETECTION_MAX_INSTANCES
    assert (out["masks"][0, real:] == 0).all()
    assert (out["masks"][0, :real] > 0).all()          # sigmoid outputs


@pytest.mark.slow
def test_saved_model_with_compiled_roi_align(tmp_path):
    from mrcnn.inference.export import load_saved_model
    from mrcnn.ops import compiled_roi_align
    try:
        compiled_roi_align()
    except Exception as err:  # noqa: BLE001 - no compiler / op: nothing to test
        pytest.skip(f"compiled RoIAlign op unavailable: {err}")
    keras.utils.set_random_seed(1)
    model = modellib.MaskRCNN("inference", ExportConfig(), str(tmp_path / "logs"))
    logits = model.keras_model.get_layer("mrcnn_class_logits")
    logits.bias.assign(np.array([-20.0, 0.0, 0.0], np.float32))
    saved = export_saved_model(model, tmp_path / "saved", roi_align="compiled")
    assert b"MrcnnRoiAlign" in open(os.path.join(saved, "saved_model.pb"), "rb").read()
    loaded = load_saved_model(saved)
    image = np.random.default_rng(5).integers(0, 256, (80, 120, 3), dtype=np.uint8)
    out = loaded.detect(tf.constant(image))
    ref = model.detect([image])[0]
    assert len(ref["class_ids"]) > 0
    np.testing.assert_allclose(out["rois"].numpy(), ref["rois"], atol=1)
    np.testing.assert_array_equal(out["class_ids"].numpy(), ref["class_ids"])
    np.testing.assert_allclose(out["scores"].numpy(), ref["scores"], atol=1e-4)
    assert _mask_iou(out["masks"].numpy(), ref["masks"]).min() > 0.95


def test_maskrcnn_export_method_requires_inference_mode(tmp_path):
    from model_fixtures import TinyConfig
    from mrcnn import model as modellib
    training = modellib.MaskRCNN("training", TinyConfig(), str(tmp_path))
    with pytest.raises(ValueError, match="inference"):
        training.export(str(tmp_path / "saved"))


@pytest.mark.slow
@pytest.mark.parametrize("mask_loss, class_agnostic, head", [
    ("softmax", False, "fpn"), ("sigmoid", True, "fpn"), ("softmax", True, "fpn"),
    ("sigmoid", False, "c4")])
def test_serving_module_matches_detect_for_each_mask_variant(mask_loss, class_agnostic, head,
                                                             tmp_path):
    from mrcnn.inference.export import build_serving_module

    class VariantConfig(ExportConfig):
        MASK_LOSS = mask_loss
        CLASS_AGNOSTIC_MASK = class_agnostic
        HEAD_ARCHITECTURE = head
        if head == "c4":
            POOL_SIZE = 6
            MASK_SHAPE = [6, 6]

    keras.utils.set_random_seed(2)
    model = modellib.MaskRCNN("inference", VariantConfig(), str(tmp_path / "logs"))
    model.keras_model.get_layer("mrcnn_class_logits").bias.assign(
        np.array([-20.0, 0.0, 0.0], np.float32))
    channels = 1 if class_agnostic else VariantConfig.NUM_CLASSES
    assert model.keras_model.get_layer("mrcnn_mask").kernel.shape[-1] == channels
    module = build_serving_module(model)
    images = [np.random.default_rng(6).integers(0, 256, shape, dtype=np.uint8)
              for shape in [(64, 96, 3), (150, 100, 3)]]
    for image, ref in zip(images, model.detect(images)):
        out = {k: v.numpy() for k, v in module.detect(tf.constant(image)).items()}
        assert len(ref["class_ids"]) > 0
        assert out["masks"].shape == image.shape[:2] + (len(out["rois"]),)
        np.testing.assert_allclose(out["rois"], ref["rois"], atol=1)
        np.testing.assert_array_equal(out["class_ids"], ref["class_ids"])
        np.testing.assert_allclose(out["scores"], ref["scores"], atol=1e-4)
        assert _mask_iou(out["masks"], ref["masks"]).min() > 0.95


def test_saved_model_returns_the_keypoints_detect_returns(tmp_path):
    from keypoint_fixtures import KeypointTinyInferenceConfig

    class KeypointExportConfig(KeypointTinyInferenceConfig):
        IMAGE_MAX_DIM = 128
        SEED = 1

    keras.utils.set_random_seed(3)
    model = modellib.MaskRCNN("inference", KeypointExportConfig(), str(tmp_path / "logs"))
    model.keras_model.get_layer("mrcnn_class_logits").bias.assign(
        np.array([-20.0, 0.0, 0.0], np.float32))
    loaded = tf.saved_model.load(export_saved_model(model, tmp_path / "saved"))
    images = [np.random.default_rng(7).integers(0, 256, shape, dtype=np.uint8)
              for shape in [(64, 96, 3), (150, 100, 3)]]
    for image, ref in zip(images, model.detect(images)):
        out = {k: v.numpy() for k, v in loaded.detect(tf.constant(image)).items()}
        assert len(ref["class_ids"]) > 0 and ref["keypoints"].shape == (len(ref["rois"]), 2, 3)
        np.testing.assert_array_equal(out["class_ids"], ref["class_ids"])
        assert out["keypoints"].dtype == np.float32
        np.testing.assert_allclose(out["keypoints"], ref["keypoints"], atol=1e-3)
        # Real decodes (random heatmaps), in the original image.
        assert np.ptp(ref["keypoints"][..., 0]) > 1
        assert ref["keypoints"][..., 0].max() <= image.shape[1]
