"""Tests for benchmarks/bf16_agreement.py: the agreement figures on hand cases, and a
float32 / bfloat16 pair of tiny inference models (random seeded weights) loading one
float32 weights file and compared on a few images."""

import numpy as np
import pytest

from benchmark_scripts import load_benchmark
from model_fixtures import RectanglesDataset, TinyConfig

from samples.shapes.backbone import light_backbone, light_backbone_shapes

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")


bench = load_benchmark("bf16_agreement")


def _result(boxes, class_ids, scores, shape=(40, 40)):
    masks = np.zeros(shape + (len(boxes),), bool)
    for k, (y1, x1, y2, x2) in enumerate(boxes):
        masks[y1:y2, x1:x2, k] = True
    return {"rois": np.array(boxes, np.int32).reshape(-1, 4),
            "class_ids": np.array(class_ids, np.int32),
            "scores": np.array(scores, np.float32), "masks": masks}


def test_agreement_on_hand_cases():
    reference = [_result([(0, 0, 10, 10), (20, 20, 30, 30)], [1, 2], [0.9, 0.8]),
                 _result([(0, 0, 20, 20), (5, 25, 15, 35)], [1, 1], [0.7, 0.6]),
                 _result([], [], [])]
    other = [_result([(0, 0, 10, 10), (20, 20, 30, 30)], [1, 2], [0.91, 0.78]),
             # box IoU 380 / 400 = 0.95: paired; (5, 25, ...) found as the other class
             _result([(0, 0, 19, 20), (5, 25, 15, 35), (30, 0, 40, 10)], [1, 2, 1],
                     [0.75, 0.6, 0.55]),
             _result([], [], [])]
    a = bench.agreement(reference, other, iou_threshold=0.9)
    assert (a["reference_detections"], a["other_detections"], a["matched"]) == (4, 5, 3)
    assert a["matched_fraction"] == pytest.approx(3 / 4)
    assert a["other_matched_fraction"] == pytest.approx(3 / 5)
    assert a["box_iou_mean"] == pytest.approx((1 + 1 + 380 / 400) / 3)
    assert a["mask_iou_mean"] == pytest.approx((1 + 1 + 380 / 400) / 3)
    assert a["mask_iou_min"] == pytest.approx(380 / 400)
    assert a["score_abs_mean"] == pytest.approx((0.01 + 0.02 + 0.05) / 3, abs=1e-6)
    assert a["score_abs_max"] == pytest.approx(0.05, abs=1e-6)
    assert a["same_count_images"] == 2
    assert a["unpaired_score_median"] == pytest.approx(0.6)     # (5, 25, ...) of class 1
    # Confident reference detections only: 0.9 and 0.8 (its partner scores 0.78).
    confident = bench.agreement(reference, other, iou_threshold=0.9, min_score=0.79)
    assert (confident["reference_detections"], confident["matched"]) == (2, 2)
    assert confident["score_abs_max"] == pytest.approx(0.02, abs=1e-6)
    assert np.isnan(confident["unpaired_score_median"])
    assert bench.agreement(reference, other, 0.9, min_score=0.65)["matched_fraction"] == 1.0
    # At 0.96 the 0.95 pair is lost; with nothing paired the pair figures are NaN.
    assert bench.agreement(reference, other, iou_threshold=0.96)["matched"] == 2
    none = bench.agreement(reference[2:], other[2:])
    assert none["matched"] == 0 and np.isnan(none["matched_fraction"])
    assert np.isnan(none["score_abs_max"])
    with pytest.raises(ValueError, match="one result per image"):
        bench.agreement(reference, other[:2])


class _TinyDetecting(TinyConfig):
    BACKBONE = staticmethod(light_backbone)
    COMPUTE_BACKBONE_SHAPE = staticmethod(light_backbone_shapes)
    TOP_DOWN_PYRAMID_SIZE = 32
    FPN_CLASSIF_FC_LAYERS_SIZE = 32
    MASK_HEAD_CONV_CHANNELS = 16
    POST_NMS_ROIS_INFERENCE = 50
    DETECTION_MAX_INSTANCES = 8
    DETECTION_MIN_CONFIDENCE = 0.0
    IMAGES_PER_GPU = 1
    SEED = 3


def test_float32_weights_file_runs_under_bf16_and_the_runs_are_compared(tmp_path):
    import keras

    from mrcnn import model as modellib
    from mrcnn.engine.checkpoints import save_checkpoint

    keras.utils.set_random_seed(3)
    source = modellib.MaskRCNN("inference", _TinyDetecting(), str(tmp_path))
    # Background logit far down: every image gets detections from random weights.
    source.keras_model.get_layer("mrcnn_class_logits").bias.assign(
        np.array([-20.0, 0.0, 0.0], np.float32))
    weights = str(tmp_path / "tiny_float32.h5")
    save_checkpoint(source.keras_model, weights, include_optimizer=False)

    models = bench.build_models(_TinyDetecting(), weights, str(tmp_path))
    assert list(models) == ["float32", "mixed_bfloat16"]
    f32, bf16 = models["float32"].keras_model, models["mixed_bfloat16"].keras_model
    assert f32.get_layer("fpn_p2").compute_dtype == "float32"
    assert bf16.get_layer("fpn_p2").compute_dtype == "bfloat16"
    # The float32 file loads unchanged into the bf16 model: float32 variables, same values.
    for a, b, c in zip(source.keras_model.weights, f32.weights, bf16.weights):
        assert c.dtype == "float32"
        np.testing.assert_array_equal(np.asarray(b), np.asarray(a))
        np.testing.assert_array_equal(np.asarray(c), np.asarray(a))

    dataset = RectanglesDataset([2, 3, 1], seed=4)
    report = bench.compare(models, dataset, list(dataset.image_ids), iou_threshold=0.9)
    a = report["agreement"]
    assert report["confident"]["reference_detections"] <= a["reference_detections"]
    assert a["reference_detections"] > 0 and a["other_detections"] > 0
    assert 0 <= a["matched"] <= min(a["reference_detections"], a["other_detections"])
    assert 0.0 <= a["matched_fraction"] <= 1.0
    if a["matched"]:
        assert 0.9 <= a["box_iou_mean"] <= 1.0
        assert 0.0 <= a["mask_iou_min"] <= a["mask_iou_mean"] <= 1.0
        assert 0.0 <= a["score_abs_mean"] <= a["score_abs_max"] <= 1.0
    for name in models:
        assert len(report["seconds"][name]) == 3 and min(report["seconds"][name]) > 0
        metrics = report["metrics"][name]
        assert {"mAP50", "segm_AP", "bbox_AP", "segm_AP50"} <= set(metrics)
        assert all(0.0 <= v <= 1.0 or v == -1.0 for v in metrics.values())
    # The float32 run against itself: everything paired, identical scores.
    same = bench.agreement(report["results"]["float32"], report["results"]["float32"])
    assert same["matched_fraction"] == 1.0 and same["score_abs_max"] == 0.0
    assert same["mask_iou_min"] == 1.0
