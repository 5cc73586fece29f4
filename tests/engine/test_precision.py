"""Tests of mixed precision (mrcnn.engine.precision, Config.MIXED_PRECISION)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from model_fixtures import RectanglesDataset, TinyConfig
from mrcnn.modeling.roi_heads import box_head
from mrcnn.modeling.rpn import loss as rpn_loss
from mrcnn.engine import precision
from mrcnn import model as modellib

# Layers whose outputs are boxes, anchors, probabilities or targets: float32
# under every policy.
FLOAT32_LAYERS = ("anchors", "input_gt_boxes_norm", "rpn_class_logits", "rpn_class",
                  "rpn_bbox", "ROI", "proposal_targets", "mask_rois", "output_rois",
                  "mrcnn_class", "mrcnn_mask", "mrcnn_mask_per_roi")
COMPUTE_LAYERS = ("conv1", "res2a_branch2a", "fpn_p2", "mrcnn_class_conv1", "mrcnn_mask_conv1")


def _config(policy, **extra):
    attrs = {"MIXED_PRECISION": policy, "SEED": 2, **extra}
    return type("PrecisionConfig", (TinyConfig,), attrs)()


def test_policy_name():
    assert precision.policy_name(None) == "float32"
    assert precision.policy_name("float32") == "float32"
    assert precision.policy_name("mixed_bfloat16") == "mixed_bfloat16"
    with pytest.raises(ValueError, match="MIXED_PRECISION.*'float64'"):
        precision.policy_name("float64")


def test_config_rejects_unknown_policy():
    with pytest.raises(ValueError, match=r"PrecisionConfig.MIXED_PRECISION.*'fp16'"):
        _config("fp16")


def test_dtype_policy_is_restored_even_on_error():
    before = keras.config.dtype_policy().name
    with pytest.raises(RuntimeError):
        with precision.dtype_policy("mixed_float16"):
            assert keras.config.dtype_policy().name == "mixed_float16"
            raise RuntimeError("boom")
    assert keras.config.dtype_policy().name == before


def test_wrap_optimizer():
    sgd = keras.optimizers.SGD(0.1)
    assert precision.wrap_optimizer(sgd, "float32") is sgd
    assert precision.wrap_optimizer(sgd, "mixed_bfloat16") is sgd
    wrapped = precision.wrap_optimizer(keras.optimizers.SGD(0.1), "mixed_float16")
    assert isinstance(wrapped, keras.optimizers.LossScaleOptimizer)


def test_losses_stay_finite_where_float16_would_overflow():
    # exp(12) overflows float16 (max 65504): a float16 softmax of these logits
    # gives inf/NaN; the losses compute in float32 and match float32 inputs.
    logits = np.array([[[12.0, -12.0, 0.0], [-11.0, 11.5, 3.0]]])
    target = np.array([[1, 2]])
    active = np.ones((1, 3), np.float32)
    half = box_head.mrcnn_class_loss(target, logits.astype(np.float16), active)
    full = box_head.mrcnn_class_loss(target, logits.astype(np.float32), active)
    assert np.isfinite(float(half))
    assert float(half) == pytest.approx(float(full), rel=1e-3)
    rpn_logits = np.array([[[15.0, -15.0], [-14.0, 14.0]]])
    rpn_match = np.array([[[1], [-1]]], np.int32)
    half = rpn_loss.rpn_class_loss(rpn_match, rpn_logits.astype(np.float16))
    full = rpn_loss.rpn_class_loss(rpn_match, rpn_logits.astype(np.float32))
    assert np.isfinite(float(half))
    assert float(half) == pytest.approx(float(full), rel=1e-3, abs=1e-6)


def _layer_output_dtypes(keras_model, name):
    outputs = keras_model.get_layer(name).output
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    return {str(t.dtype) for t in outputs if "float" in str(t.dtype)}


@pytest.mark.slow
@pytest.mark.parametrize("policy, compute, optimizer", [
    ("mixed_float16", "float16", keras.optimizers.LossScaleOptimizer),
    ("mixed_bfloat16", "bfloat16", keras.optimizers.SGD),
])
def test_mixed_precision_training(tmp_path, policy, compute, optimizer):
    before = keras.config.dtype_policy().name
    # Dynamic loss scaling starts at 2**15 and skips the steps whose float16
    # gradients overflow, halving the scale each time: give it steps to settle.
    model = modellib.MaskRCNN("training", _config(policy, STEPS_PER_EPOCH=12),
                              str(tmp_path))
    km = model.keras_model
    assert keras.config.dtype_policy().name == before  # only the graph is mixed
    for name in COMPUTE_LAYERS:
        layer = km.get_layer(name)
        assert layer.compute_dtype == compute, name
        assert all(w.dtype == "float32" for w in layer.weights), name
    for name in FLOAT32_LAYERS:
        assert _layer_output_dtypes(km, name) == {"float32"}, name

    initial = {w.path: np.array(w) for w in km.trainable_weights}
    data = RectanglesDataset([1, 2, 3, 1, 2, 3])
    history = model.train(data, data, learning_rate=0.005, epochs=1, layers="all",
                          verbose=0)
    assert isinstance(km.optimizer, optimizer)
    if optimizer is keras.optimizers.LossScaleOptimizer:
        scale = float(km.optimizer.dynamic_scale)
        assert 1 <= scale < 2 ** 15  # some steps overflowed and were skipped
        applied = int(km.optimizer.inner_optimizer.iterations)
        assert 0 < applied < 12, applied
    for name, values in history.history.items():
        assert np.all(np.isfinite(values)), (name, values)
    assert history.history["rpn_class_loss"][0] > 0
    changed = [w.path for w in km.trainable_weights
               if not np.array_equal(np.array(w), initial[w.path])]
    for name in ("conv1", "fpn_p2", "rpn_conv_shared", "mrcnn_class_logits"):
        assert any(path.startswith(name + "/") for path in changed), name
    assert all(np.all(np.isfinite(np.array(w))) for w in km.weights)


@pytest.mark.slow
@pytest.mark.parametrize("policy, tolerance", [("mixed_float16", 0.02),
                                               ("mixed_bfloat16", 0.15)])
def test_mixed_precision_inference_matches_float32(tmp_path, policy, tolerance):
    reference = modellib.MaskRCNN("inference", _config(None, IMAGES_PER_GPU=1),
                                  str(tmp_path))
    mixed = modellib.MaskRCNN("inference", _config(policy, IMAGES_PER_GPU=1), str(tmp_path))
    mixed.keras_model.set_weights(reference.keras_model.get_weights())
    image = RectanglesDataset([3]).load_image(0)
    molded, metas, _ = reference.mold_inputs([image])
    anchors = reference.get_anchors(molded[0].shape)[None]
    outputs = [m.keras_model([tf.constant(molded), tf.constant(metas),
                              tf.constant(anchors)], training=False)
               for m in (reference, mixed)]
    for name in ("detections", "mrcnn_class", "mrcnn_mask", "rpn_rois", "rpn_class",
                 "rpn_bbox"):
        assert outputs[1][name].dtype == tf.float32, name
    # RPN probabilities after ~50 reduced-precision layers (random weights).
    difference = np.abs(outputs[1]["rpn_class"].numpy() - outputs[0]["rpn_class"].numpy())
    assert difference.max() < tolerance
    assert difference.mean() < tolerance / 10
    result = mixed.detect([image])[0]
    assert result["rois"].shape[0] == result["masks"].shape[-1]
    assert result["masks"].shape[:2] == image.shape[:2]
    assert result["masks"].dtype == bool
