"""Tests of the MaskRCNN facade: building, detect, checkpoints, log dirs, run_graph."""

import os

import numpy as np
import pytest

from model_fixtures import TinyConfig
from mrcnn import model as modellib
from mrcnn.structures.anchors import get_anchors_for_config


class InferenceConfig(TinyConfig):
    IMAGES_PER_GPU = 2
    IMAGE_MAX_DIM = 128
    # Keep every detection so random weights still produce some; seeded so the
    # random initial weights (and with them the detections) are the same every run.
    DETECTION_MIN_CONFIDENCE = 0.0
    SEED = 1


@pytest.fixture(scope="module")
def inference_model(tmp_path_factory):
    return modellib.MaskRCNN("inference", InferenceConfig(),
                             str(tmp_path_factory.mktemp("logs")))


def _random_images(seed, shapes):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, shape, dtype=np.uint8) for shape in shapes]


# ----------------------------------------------------------------------------- building
def test_constructor_validates_arguments(tmp_path):
    with pytest.raises(ValueError, match="mode must be one of"):
        modellib.MaskRCNN("train", TinyConfig(), str(tmp_path))
    with pytest.raises(ValueError, match="model_dir must be a directory path"):
        modellib.MaskRCNN("inference", TinyConfig(), None)
    with pytest.raises(ValueError, match="instance of a mrcnn.config.Config"):
        modellib.MaskRCNN("inference", TinyConfig, str(tmp_path))


def test_inference_graph_inputs_outputs(inference_model):
    km = inference_model.keras_model
    assert [t.name for t in km.inputs] == ["input_image", "input_image_meta",
                                           "input_anchors"]
    # Named outputs (a dict), not a tuple read by position.
    assert list(km.output) == ["detections", "mrcnn_class", "mrcnn_bbox", "mrcnn_mask",
                               "rpn_rois", "rpn_class", "rpn_bbox"]
    config = inference_model.config
    detections, mrcnn_class, mrcnn_bbox, mrcnn_mask = [
        tuple(km.output[n].shape) for n in ("detections", "mrcnn_class", "mrcnn_bbox",
                                            "mrcnn_mask")]
    assert detections[1:] == (config.DETECTION_MAX_INSTANCES, 6)
    assert mrcnn_class[2:] == (config.NUM_CLASSES,)
    assert mrcnn_bbox[2:] == (config.NUM_CLASSES, 4)
    assert mrcnn_mask[1:] == (config.DETECTION_MAX_INSTANCES, 14, 14, config.NUM_CLASSES)
    names = {layer.name for layer in km.layers}
    for name in ("conv1", "res5c_branch2c", "fpn_p2", "rpn_model", "ROI",
                 "mrcnn_detection", "mrcnn_class_logits", "mrcnn_bbox_fc", "mrcnn_mask"):
        assert name in names
    # No anchors variable, nothing but layer weights.
    assert not [v for v in km.weights if "anchor" in v.path]


def test_get_anchors_normalised_and_pixel_cache(inference_model):
    anchors = inference_model.get_anchors((128, 128, 3))
    np.testing.assert_array_equal(anchors, get_anchors_for_config(inference_model.config,
                                                                  (128, 128)))
    pixels = inference_model.anchors
    assert pixels.shape == anchors.shape
    # Normalised = (pixels - [0, 0, 1, 1]) / 127.
    np.testing.assert_allclose(anchors, (pixels - [0, 0, 1, 1]) / 127.0, rtol=1e-5,
                               atol=1e-6)


# ----------------------------------------------------------------------------- detect
def test_detect_images_of_different_sizes_returns_original_coordinates(inference_model):
    shapes = [(64, 96, 3), (128, 128, 3), (30, 50, 3), (200, 100, 3), (64, 64, 3)]
    images = _random_images(1, shapes)
    results = inference_model.detect(images)
    assert len(results) == len(images)
    total = 0
    for shape, r in zip(shapes, results):
        n = len(r["class_ids"])
        total += n
        assert r["rois"].dtype == np.int32 and r["rois"].shape == (n, 4)
        assert r["class_ids"].dtype == np.int32
        assert r["scores"].dtype == np.float32 and r["scores"].shape == (n,)
        assert r["masks"].dtype == bool and r["masks"].shape == shape[:2] + (n,)
        if n:
            rois = r["rois"]
            assert (rois[:, 0] >= 0).all() and (rois[:, 1] >= 0).all()
            assert (rois[:, 2] <= shape[0]).all() and (rois[:, 3] <= shape[1]).all()
            assert (rois[:, 2] > rois[:, 0]).all() and (rois[:, 3] > rois[:, 1]).all()
            assert ((r["class_ids"] >= 1) & (r["class_ids"] < 3)).all()
            # Masks lie inside their boxes.
            for i in range(n):
                y1, x1, y2, x2 = rois[i]
                outside = r["masks"][:, :, i].copy()
                outside[y1:y2, x1:x2] = False
                assert not outside.any()
    assert total > 0, "random weights with min confidence 0 should give detections"


def test_detect_is_per_image_independent_of_batching(inference_model):
    # The same image alone (padded batch) and next to another gives the same result.
    a, b = _random_images(2, [(64, 64, 3), (100, 80, 3)])
    alone = inference_model.detect([a])[0]
    together = inference_model.detect([b, a, b])[1]
    np.testing.assert_array_equal(alone["rois"], together["rois"])
    np.testing.assert_array_equal(alone["class_ids"], together["class_ids"])
    np.testing.assert_allclose(alone["scores"], together["scores"], rtol=1e-4, atol=1e-5)


def test_detect_rejects_bad_input(inference_model, tmp_path):
    with pytest.raises(TypeError, match=r"detect\(\[image\]\)"):
        inference_model.detect(np.zeros((64, 64, 3), np.uint8))
    bad = np.zeros((64, 64, 3), np.float32)
    bad[3, 4, 1] = np.nan
    with pytest.raises(ValueError, match="image 1"):
        inference_model.detect([np.zeros((64, 64, 3), np.uint8), bad])
    with pytest.raises(ValueError, match="image 0"):
        inference_model.detect([np.zeros((0, 64, 3), np.uint8)])


def test_detect_converts_gray_rgba_and_float_images(inference_model):
    rgb = _random_images(5, [(64, 80, 3)])[0]
    gray = rgb[..., 0]
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=-1)
    as_float = rgb.astype(np.float32) / 255.0
    results = inference_model.detect([rgb, gray, gray[..., None], rgba, as_float])
    reference = inference_model.detect([np.repeat(gray[..., None], 3, axis=-1)])[0]
    assert len(reference["rois"]) > 0  # the comparison below is not vacuous
    for r in results:
        assert r["masks"].shape[:2] == (64, 80)
    for r in results[1:3]:  # grayscale, [H, W] and [H, W, 1], is replicated to RGB
        np.testing.assert_array_equal(r["rois"], reference["rois"])
        np.testing.assert_allclose(r["scores"], reference["scores"], rtol=1e-5)
    for r in results[3:]:  # alpha dropped; float in [0, 1] scaled to 0..255
        np.testing.assert_array_equal(r["rois"], results[0]["rois"])
        np.testing.assert_allclose(r["scores"], results[0]["scores"], rtol=1e-4)


def test_detect_molded_matches_detect(inference_model):
    images = _random_images(3, [(64, 64, 3), (90, 120, 3)])
    molded, metas, _ = inference_model.mold_inputs(images)
    direct = inference_model.detect(images)
    via_molded = inference_model.detect_molded(molded, metas)
    for d, m in zip(direct, via_molded):
        np.testing.assert_array_equal(d["rois"], m["rois"])
        np.testing.assert_array_equal(d["masks"], m["masks"])


def test_run_graph_returns_named_intermediates(inference_model):
    images = _random_images(4, [(64, 64, 3), (64, 64, 3)])
    km = inference_model.keras_model
    out = inference_model.run_graph(images, [
        ("proposals", km.get_layer("ROI").output),
        ("detections", "mrcnn_detection"),
    ])
    assert list(out) == ["proposals", "detections"]
    assert out["proposals"].shape == (2, inference_model.config.POST_NMS_ROIS_INFERENCE, 4)
    assert out["detections"].shape == (2, inference_model.config.DETECTION_MAX_INSTANCES, 6)
    # The same detections as the full model (unmolded by detect).
    r = inference_model.detect(images[:1])[0]
    assert (out["detections"][0, :, 4] > 0).sum() >= len(r["class_ids"])
    with pytest.raises(ValueError, match="no layer named 'nope'"):
        inference_model.run_graph(images, [("x", "nope")])


# ----------------------------------------------------------------------------- checkpoints
def test_save_load_checkpoint_gives_identical_detections(inference_model, tmp_path):
    images = _random_images(5, [(64, 64, 3), (80, 120, 3)])
    before = inference_model.detect(images)
    run_dir = tmp_path / "tiny20240102T0304"
    run_dir.mkdir()
    path = str(run_dir / "mask_rcnn_tiny_0007.h5")
    inference_model.save_weights(path)

    other_config = type("OtherSeed", (InferenceConfig,), {"SEED": 2})()
    other = modellib.MaskRCNN("inference", other_config, str(tmp_path))
    different = other.detect(images[:1])[0]
    assert not (len(different["scores"]) == len(before[0]["scores"]) and
                np.allclose(different["scores"], before[0]["scores"]))
    other.load_weights(path)
    assert other.epoch == 7 and other.log_dir == str(run_dir)
    after = other.detect(images)
    for b, a in zip(before, after):
        for key in ("rois", "class_ids", "scores", "masks"):
            np.testing.assert_array_equal(b[key], a[key])


def test_set_log_dir_and_find_last(tmp_path):
    model_dir = tmp_path / "logs"
    model = modellib.MaskRCNN("inference", InferenceConfig(), str(model_dir))
    with pytest.raises(FileNotFoundError, match="no log directory 'tinyYYYYMMDDTHHMM'"):
        model.find_last()
    # A fresh log dir is <model_dir>/<name>YYYYMMDDTHHMM and epoch 0.
    assert model.epoch == 0
    assert os.path.dirname(model.log_dir) == str(model_dir)
    base = os.path.basename(model.log_dir)
    assert base.startswith("tiny") and len(base) == len("tiny") + 13 and base[12] == "T"
    assert model.checkpoint_path.endswith("mask_rcnn_tiny_{epoch:04d}.h5")

    older, newer = model_dir / "tiny20240101T0000", model_dir / "tiny20240301T1200"
    older.mkdir(parents=True)
    (older / "mask_rcnn_tiny_0009.h5").write_bytes(b"")
    newer.mkdir()
    (model_dir / "other20250101T0000").mkdir()  # another config's runs are ignored
    with pytest.raises(FileNotFoundError, match="no mask_rcnn_.*checkpoint"):
        model.find_last()
    for epoch in (1, 3, 2):
        (newer / f"mask_rcnn_tiny_{epoch:04d}.h5").write_bytes(b"")
    assert model.find_last() == str(newer / "mask_rcnn_tiny_0003.h5")

    model.set_log_dir(str(newer / "mask_rcnn_tiny_0003.h5"))
    assert model.epoch == 3 and model.log_dir == str(newer)
    assert model.checkpoint_path == str(newer / "mask_rcnn_tiny_{epoch:04d}.h5")
    model.set_log_dir("/somewhere/mask_rcnn_coco.h5")  # not one of ours: fresh dir
    assert model.epoch == 0 and os.path.dirname(model.log_dir) == str(model_dir)


def test_module_level_names_for_old_code():
    for name in ("MaskRCNN", "log", "BatchNorm", "mold_image", "compose_image_meta",
                 "parse_image_meta", "load_image_gt", "data_generator"):
        assert callable(getattr(modellib, name)), name


def test_log_prints_statistics(capsys):
    modellib.log("boxes", np.array([[1, 5], [-2, 3]], np.int32))
    out = capsys.readouterr().out
    assert "boxes" in out and "(2, 2)" in out and "-2.00000" in out and "5.00000" in out
    assert "int32" in out


def test_detect_pad64_runs_different_molded_shapes_in_separate_batches(tmp_path):
    class Pad64Config(InferenceConfig):
        IMAGE_RESIZE_MODE = "pad64"

    model = modellib.MaskRCNN("inference", Pad64Config(), str(tmp_path))
    shapes = [(64, 64, 3), (64, 100, 3), (60, 60, 3)]  # molded: 64x64, 64x128, 64x64
    images = _random_images(6, shapes)
    results = model.detect(images)
    for shape, r in zip(shapes, results):
        assert r["masks"].shape[:2] == shape[:2]
        if len(r["rois"]):
            assert (r["rois"][:, 2] <= shape[0]).all() and (r["rois"][:, 3] <= shape[1]).all()
    # One compiled function per molded batch shape.
    assert sorted(k[1:3] for k in model._predict_functions) == [(64, 64), (64, 128)]
    # Repeated calls reuse them: each was traced exactly once.
    for _ in range(3):
        model.detect(images[:2])
    assert len(model._predict_functions) == 2
    assert [fn.experimental_get_tracing_count()
            for fn in model._predict_functions.values()] == [1, 1]


def test_training_checkpoint_loads_into_inference_model(tmp_path):
    trained = modellib.MaskRCNN("training", InferenceConfig(), str(tmp_path))
    path = str(tmp_path / "weights.h5")
    trained.save_weights(path)
    model = modellib.MaskRCNN("inference", InferenceConfig(), str(tmp_path))
    model.load_weights(path, by_name=True)
    for name in ("conv1", "fpn_p2", "mrcnn_bbox_fc", "mrcnn_mask"):
        for a, b in zip(trained.keras_model.get_layer(name).weights,
                        model.keras_model.get_layer(name).weights):
            np.testing.assert_array_equal(np.array(a), np.array(b))
    rpn_a = trained.keras_model.get_layer("rpn_model").get_layer("rpn_class_raw").kernel
    rpn_b = model.keras_model.get_layer("rpn_model").get_layer("rpn_class_raw").kernel
    np.testing.assert_array_equal(np.array(rpn_a), np.array(rpn_b))


def test_get_imagenet_weights_says_which_file_goes_where(inference_model, tmp_path,
                                                         monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError,
                       match="resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"):
        inference_model.get_imagenet_weights()
    target = tmp_path / "models" / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    target.parent.mkdir()
    target.write_bytes(b"")
    assert inference_model.get_imagenet_weights() == str(target)
