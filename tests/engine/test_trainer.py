"""Tests of training: the Keras train step, layer presets, train() checkpoints/resume."""

import importlib.util
import os
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from keypoint_fixtures import CornerRectangles, KeypointTinyConfig
from model_fixtures import RectanglesDataset, TinyConfig
from mrcnn import model as modellib
from mrcnn.structures.anchors import get_anchors_for_config
from mrcnn.data.pipeline import build_training_dataset
from mrcnn.modeling.assembly import TRAINING_OUTPUT_NAMES
from mrcnn.engine.trainer import (LAYER_PRESETS, LOSS_NAMES, loss_names, resolve_layer_regex,
                            weight_decay_variables)

HEAD_LAYERS = ("rpn_model", "fpn_c5p5", "fpn_c4p4", "fpn_c3p3", "fpn_c2p2", "fpn_p2",
               "fpn_p3", "fpn_p4", "fpn_p5", "mrcnn_class_conv1", "mrcnn_class_conv2",
               "mrcnn_class_logits", "mrcnn_bbox_fc", "mrcnn_mask_conv1",
               "mrcnn_mask_conv2", "mrcnn_mask_conv3", "mrcnn_mask_conv4",
               "mrcnn_mask_deconv", "mrcnn_mask")


class GivenRoisConfig(TinyConfig):
    # RoIs come from the data pipeline (mostly jittered gt boxes), so the box
    # and mask heads are sure to see positive RoIs; no weight decay, so any
    # change of a weight comes from the losses.
    USE_RPN_ROIS = False
    WEIGHT_DECAY = 0.0
    POST_NMS_ROIS_TRAINING = 64


def _one_batch(config, counts, seed=0):
    data = build_training_dataset(RectanglesDataset(counts, seed=seed), config,
                                  shuffle=False, repeat=False, seed=seed)
    return next(iter(data))


def _kernels(model, names):
    out = {}
    for name in names:
        layer = model.keras_model.get_layer(name)
        out[name] = [np.array(v) for v in layer.trainable_weights]
        assert out[name], f"{name} has no trainable weights"
    return out


@pytest.fixture(scope="module")
def training_model(tmp_path_factory):
    return modellib.MaskRCNN("training", TinyConfig(), str(tmp_path_factory.mktemp("logs")))


def test_training_graph_inputs_and_outputs(training_model, tmp_path):
    km = training_model.keras_model
    assert [t.name for t in km.inputs] == [
        "input_image", "input_image_meta", "input_rpn_match", "input_rpn_bbox",
        "input_gt_class_ids", "input_gt_boxes", "input_gt_masks"]
    names = {layer.name for layer in km.layers}
    assert {"ROI", "proposal_targets", "output_rois", "anchors"} <= names
    assert not [v for v in km.weights if "anchor" in v.path]
    # Anchors are the constant for IMAGE_SHAPE, in the RPN's order.
    np.testing.assert_array_equal(
        km.get_layer("anchors").anchors,
        get_anchors_for_config(training_model.config, training_model.config.IMAGE_SHAPE))
    assert km.get_layer("anchors").anchors.shape[0] == tuple(km.output["rpn_class_logits"].shape)[1]
    given = modellib.MaskRCNN("training", GivenRoisConfig(), str(tmp_path))
    assert given.keras_model.inputs[-1].name == "input_rois"


def test_one_step_finite_losses_and_every_head_changes(tmp_path):
    config = GivenRoisConfig()
    model = modellib.MaskRCNN("training", config, str(tmp_path))
    model.set_trainable("heads", verbose=0)
    model.compile(0.01, config.LEARNING_MOMENTUM)
    batch = _one_batch(config, [2, 3])
    before = _kernels(model, HEAD_LAYERS)
    backbone_before = np.array(model.keras_model.get_layer("res2a_branch2a").kernel)
    logs = {k: float(v) for k, v in model.keras_model.train_step(batch).items()}
    # Without a keypoint head: the five Mask R-CNN losses, no keypoint loss.
    assert loss_names(config) == LOSS_NAMES[:5] and "mrcnn_keypoint_loss" in LOSS_NAMES
    assert set(logs) == {"loss", "weight_decay_loss", *loss_names(config)}
    assert all(np.isfinite(v) for v in logs.values()), logs
    for name in loss_names(config):
        assert logs[name] > 0, f"{name} should be positive on a batch with objects"
    assert logs["loss"] == pytest.approx(sum(logs[n] for n in loss_names(config)), rel=1e-5)
    after = _kernels(model, HEAD_LAYERS)
    for name in HEAD_LAYERS:
        for b, a in zip(before[name], after[name]):
            assert np.isfinite(a).all()
            assert not np.array_equal(a, b), f"{name} did not change"
    # The backbone is frozen by the "heads" preset.
    np.testing.assert_array_equal(
        backbone_before, np.array(model.keras_model.get_layer("res2a_branch2a").kernel))


def test_images_without_instances_train_without_nan(training_model):
    config = training_model.config
    training_model.set_trainable("all", verbose=0)
    training_model.compile(0.001, config.LEARNING_MOMENTUM)
    batch = _one_batch(config, [0, 0])
    assert not np.asarray(batch["input_gt_class_ids"]).any()
    logs = {k: float(v) for k, v in training_model.keras_model.train_step(batch).items()}
    assert all(np.isfinite(v) for v in logs.values()), logs
    # Nothing to box or mask: those losses are exactly 0; the RPN still learns
    # "background" and weight decay is on.
    assert logs["mrcnn_bbox_loss"] == 0 and logs["mrcnn_mask_loss"] == 0
    assert logs["rpn_class_loss"] > 0 and logs["weight_decay_loss"] > 0
    for v in training_model.keras_model.trainable_weights:
        assert np.isfinite(np.array(v)).all(), v.path


def test_head_losses_send_no_gradient_to_the_rpn(training_model):
    """Approximate joint training (the paper, torchvision, detectron2): the
    proposals are constants for the heads, so the heads' losses give the RPN's
    weights no gradient; the RPN's own losses do."""
    import tensorflow as tf
    km = training_model.keras_model
    batch = _one_batch(training_model.config, [3, 2])
    inputs = km._ordered_inputs(batch)
    rpn_vars = km.get_layer("rpn_model").trainable_variables
    assert rpn_vars
    with tf.GradientTape(persistent=True) as tape:
        outputs = km(inputs, training=True)
        losses = km.compute_mrcnn_losses(inputs, outputs)
    for name in ("mrcnn_class_loss", "mrcnn_bbox_loss", "mrcnn_mask_loss"):
        for grad in tape.gradient(losses[name], rpn_vars):
            assert grad is None or not np.asarray(grad).any(), name
    rpn_grads = tape.gradient([losses["rpn_bbox_loss"], losses["rpn_class_loss"]], rpn_vars)
    assert any(g is not None and np.asarray(g).any() for g in rpn_grads)


def _losses_and_gradients(keras_model, batch, seed=5):
    keras.utils.set_random_seed(seed)  # the same RoI sampling for both graphs
    inputs = keras_model._ordered_inputs(batch)
    variables = keras_model.trainable_variables
    with tf.GradientTape() as tape:
        outputs = keras_model(inputs, training=True)
        losses = keras_model.compute_mrcnn_losses(inputs, outputs)
        total = tf.add_n(list(losses.values()))
    grads = tape.gradient(total, variables)
    return ({k: float(v) for k, v in losses.items()}, np.asarray(outputs["target_class_ids"]),
            {v.path: np.asarray(g) for v, g in zip(variables, grads) if g is not None})


def test_the_mask_head_on_the_positive_rows_gives_the_losses_and_gradients_of_all_rows(
        training_model, monkeypatch, tmp_path):
    from mrcnn.modeling import assembly
    from mrcnn.modeling.layers import PositiveRows

    class CapRows(PositiveRows):  # the sampler's cap of rows, padding included
        def call(self, inputs):
            return inputs[0][:, :self.count]

    config = training_model.config
    monkeypatch.setattr(assembly, "PositiveRows", CapRows)
    capped = modellib.MaskRCNN("training", config, str(tmp_path))
    monkeypatch.undo()
    assert isinstance(capped.keras_model.get_layer("mask_rois"), CapRows)
    assert type(training_model.keras_model.get_layer("mask_rois")) is PositiveRows
    for model in (training_model, capped):
        model.set_trainable("all", verbose=0)
    capped.keras_model.set_weights(training_model.keras_model.get_weights())
    batch = _one_batch(config, [3, 1])
    losses, ids, grads = _losses_and_gradients(training_model.keras_model, batch)
    capped_losses, capped_ids, capped_grads = _losses_and_gradients(capped.keras_model, batch)
    np.testing.assert_array_equal(ids, capped_ids)
    cap = int(config.TRAIN_ROIS_PER_IMAGE * config.ROI_POSITIVE_RATIO)
    assert 0 < (ids > 0).sum(axis=1).max() < cap  # fewer rows than the cap: a real cut
    assert losses["mrcnn_mask_loss"] > 0
    for name, value in capped_losses.items():
        assert losses[name] == pytest.approx(value, rel=1e-5, abs=1e-7), name
    assert grads.keys() == capped_grads.keys()
    assert any("mrcnn_mask_conv1" in path and np.abs(g).max() > 0
               for path, g in grads.items())
    for path, g in grads.items():
        np.testing.assert_allclose(g, capped_grads[path], rtol=1e-4,
                                   atol=1e-6 * max(1.0, np.abs(g).max()), err_msg=path)


def test_weight_decay_is_on_kernels_only(training_model):
    training_model.set_trainable("all", verbose=0)
    km = training_model.keras_model
    decayed = weight_decay_variables(km.trainable_variables)
    assert decayed and all(v.path.endswith("kernel") for v in decayed)
    assert not [v for v in decayed if re.search(r"(gamma|beta|bias)$", v.path)]
    n_kernels = sum(1 for v in km.trainable_variables if v.path.endswith("kernel"))
    assert len(decayed) == n_kernels
    expected = 0.5 * training_model.config.WEIGHT_DECAY * sum(
        float(np.sum(np.square(np.array(v)))) for v in decayed)
    assert float(km.weight_decay_loss()) == pytest.approx(expected, rel=1e-4)
    # Its gradient is WEIGHT_DECAY * kernel.
    some = decayed[:3] + decayed[-2:]
    with tf.GradientTape() as tape:
        decay = km.weight_decay_loss()
    for v, g in zip(some, tape.gradient(decay, some)):
        np.testing.assert_allclose(np.asarray(g), training_model.config.WEIGHT_DECAY *
                                   np.asarray(v), rtol=1e-6, atol=1e-12)


def _trainable_layer_names(model):
    names = set()
    for layer in model.keras_model.layers:
        if isinstance(layer, keras.Model):
            names |= {l.name for l in layer.layers if l.weights and l.trainable}
        elif layer.weights and layer.trainable:
            names.add(layer.name)
    return names


def test_layer_presets_select_expected_layers(training_model):
    weighted = {l.name for l in training_model.keras_model.layers if l.weights}
    rpn_inner = {"rpn_conv_shared", "rpn_class_raw", "rpn_bbox_pred"}

    training_model.set_trainable("heads", verbose=0)
    heads = _trainable_layer_names(training_model)
    assert heads == {n for n in weighted if n.startswith(("mrcnn_", "fpn_"))} | rpn_inner

    training_model.set_trainable("4+", verbose=0)
    four = _trainable_layer_names(training_model)
    assert "res4a_branch2a" in four and "bn5c_branch2c" in four and "res4f_branch2c" in four
    assert "res3a_branch2a" not in four and "bn3d_branch2c" not in four
    assert heads < four

    training_model.set_trainable("3+", verbose=0)
    assert "res3a_branch1" in _trainable_layer_names(training_model)
    assert "res2c_branch2c" not in _trainable_layer_names(training_model)
    training_model.set_trainable("5+", verbose=0)
    five = _trainable_layer_names(training_model)
    assert "res5a_branch1" in five and "res4f_branch2c" not in five

    training_model.set_trainable("all", verbose=0)
    assert _trainable_layer_names(training_model) == (weighted - {"rpn_model"}) | rpn_inner

    # A custom regex: only the mask head; the RPN has no trainable variables.
    training_model.set_trainable(r"mrcnn\_mask.*", verbose=0)
    assert _trainable_layer_names(training_model) == {
        n for n in weighted if n.startswith("mrcnn_mask")}
    assert not training_model.keras_model.get_layer("rpn_model").trainable_weights
    assert training_model.keras_model.trainable_weights

    assert resolve_layer_regex("heads") == LAYER_PRESETS["heads"]
    with pytest.raises(ValueError, match="neither a preset"):
        resolve_layer_regex("res(")


class EpochRecorder(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(epoch)


def test_train_writes_checkpoints_and_resume_continues_numbering(tmp_path):
    config = TinyConfig()
    config.STEPS_PER_EPOCH = 1
    train_set = RectanglesDataset([1, 2, 1, 3], seed=3)
    val_set = RectanglesDataset([2, 1], seed=4)
    model = modellib.MaskRCNN("training", config, str(tmp_path))
    model.run_eagerly = True  # a few steps: cheaper than tracing (the slow test traces)
    recorder = EpochRecorder()
    history = model.train(train_set, val_set, learning_rate=0.001, epochs=2,
                          layers="heads", custom_callbacks=[recorder], verbose=0)
    assert recorder.epochs == [0, 1] and model.epoch == 2
    assert "val_loss" in history.history and "val_mrcnn_mask_loss" in history.history
    assert len(history.history["rpn_class_loss"]) == 2
    log_dir = model.log_dir
    assert re.fullmatch(r"tiny\d{8}T\d{4}", os.path.basename(log_dir))
    files = sorted(os.listdir(log_dir))
    assert [f for f in files if f.endswith(".h5")] == ["mask_rcnn_tiny_0001.h5",
                                                      "mask_rcnn_tiny_0002.h5"]
    assert not [f for f in files if ".tmp" in f]
    if importlib.util.find_spec("tensorboard") is not None:
        # TensorBoard event files beside the checkpoints.
        events = [os.path.join(root, f) for root, _, fs in os.walk(log_dir) for f in fs
                  if "tfevents" in f]
        assert events

    last = model.find_last()
    assert last == os.path.join(log_dir, "mask_rcnn_tiny_0002.h5")
    resumed = modellib.MaskRCNN("training", config, str(tmp_path))
    resumed.run_eagerly = True
    resumed.load_weights(last)
    assert resumed.epoch == 2 and resumed.log_dir == log_dir
    # The checkpoint holds the trained weights.
    for name in ("mrcnn_mask", "fpn_p2", "res2a_branch2a"):
        for a, b in zip(model.keras_model.get_layer(name).weights,
                        resumed.keras_model.get_layer(name).weights):
            np.testing.assert_array_equal(np.array(a), np.array(b))
    recorder = EpochRecorder()
    resumed.train(train_set, None, learning_rate=0.001, epochs=3, layers="heads",
                  custom_callbacks=[recorder], verbose=0)
    assert recorder.epochs == [2] and resumed.epoch == 3
    assert sorted(f for f in os.listdir(log_dir) if f.endswith(".h5")) == [
        "mask_rcnn_tiny_0001.h5", "mask_rcnn_tiny_0002.h5", "mask_rcnn_tiny_0003.h5"]
    assert resumed.find_last().endswith("mask_rcnn_tiny_0003.h5")


def test_train_needs_training_mode(training_model, tmp_path):
    model = modellib.MaskRCNN("inference", TinyConfig(), str(tmp_path))
    with pytest.raises(ValueError, match="mode='training'"):
        model.train(RectanglesDataset([1, 1]), None, 0.001, 1, "heads")
    with pytest.raises(ValueError, match="mode='inference'"):
        training_model.detect([np.zeros((64, 64, 3), np.uint8)])
    with pytest.raises(ValueError, match="neither a preset"):
        training_model.train(RectanglesDataset([1, 1]), None, 0.001, 1, "[")


class LearnConfig(TinyConfig):
    # Batch statistics keep the randomly initialised ResNet's activations in
    # range, so all layers can learn from scratch in a few dozen steps.
    TRAIN_BN = True
    # RoIs from the data pipeline (mostly near gt boxes): every head sees
    # positive RoIs before and after training, so the losses compare.
    USE_RPN_ROIS = False
    POST_NMS_ROIS_TRAINING = 64
    STEPS_PER_EPOCH = 10
    VALIDATION_STEPS = 0


def _eval_losses(model, batches):
    """Mean unweighted losses over fixed batches (forward pass only)."""
    km = model.keras_model
    totals = []
    for batch in batches:
        inputs = [batch[n] for n in km.mrcnn_input_names]
        losses = km.compute_mrcnn_losses(inputs, km(inputs, training=False))
        totals.append({k: float(v) for k, v in losses.items()})
    return {k: float(np.mean([t[k] for t in totals])) for k in loss_names(model.config)}


@pytest.mark.slow
def test_training_a_few_dozen_steps_lowers_the_loss(tmp_path):
    keras.utils.set_random_seed(1)
    config = LearnConfig()
    train_set = RectanglesDataset([1, 2, 3, 1, 2, 2, 1, 3], seed=5)
    data = build_training_dataset(train_set, config, shuffle=False, repeat=False, seed=9)
    batches = list(data.take(2))
    model = modellib.MaskRCNN("training", config, str(tmp_path))
    before = _eval_losses(model, batches)
    assert before["mrcnn_bbox_loss"] > 0 and before["mrcnn_mask_loss"] > 0
    model.train(train_set, None, learning_rate=0.01, epochs=3, layers="all", verbose=0)
    after = _eval_losses(model, batches)
    print("before", before, "\nafter", after)
    assert sum(after.values()) < 0.75 * sum(before.values()), (before, after)
    for name in ("rpn_class_loss", "rpn_bbox_loss"):
        assert after[name] < before[name], (name, before, after)


def test_mask_head_runs_on_the_leading_positive_rows_only(tmp_path):
    """The mask head sees only the first int(T * ratio) RoIs, and every positive
    RoI of the sampled targets is among them (so the mask loss loses nothing)."""
    config = GivenRoisConfig()
    model = modellib.MaskRCNN("training", config, str(tmp_path))
    batch = _one_batch(config, [3, 3], seed=4)
    by_name = model.keras_model(batch, training=False)
    assert list(by_name) == list(TRAINING_OUTPUT_NAMES)
    max_positive = int(config.TRAIN_ROIS_PER_IMAGE * config.ROI_POSITIVE_RATIO)
    target_class_ids = np.asarray(by_name["target_class_ids"])
    assert np.asarray(by_name["mrcnn_mask_logits"]).shape[1] == max_positive
    assert (target_class_ids[:, :max_positive] > 0).sum() > 0   # there are positives
    assert np.all(target_class_ids[:, max_positive:] <= 0)      # none beyond the slice


@pytest.mark.parametrize("kind", ["Adam", "AdamW"])
def test_adam_optimizers_train_and_adamw_decays_kernels_only(kind, tmp_path):
    config = type("C", (GivenRoisConfig,), {"OPTIMIZER": kind, "WEIGHT_DECAY": 0.01})()
    model = modellib.MaskRCNN("training", config, str(tmp_path))
    model.set_trainable("heads", verbose=0)
    model.compile(0.001, 0.9)
    optimizer = model.keras_model.optimizer
    assert type(optimizer).__name__ == kind
    logs = model.keras_model.train_on_batch(_one_batch(config, [2, 1]), return_dict=True)
    assert np.isfinite(logs["loss"])
    if kind == "AdamW":
        # The decay is decoupled: no L2 term in the loss, and biases / BN are excluded.
        assert logs["weight_decay_loss"] == 0.0
        bias = model.keras_model.get_layer("mrcnn_bbox_fc").bias
        kernel = model.keras_model.get_layer("mrcnn_bbox_fc").kernel
        assert not optimizer._use_weight_decay(bias)
        assert optimizer._use_weight_decay(kernel)
    else:
        assert logs["weight_decay_loss"] > 0.0


class KeypointStepConfig(GivenRoisConfig, KeypointTinyConfig):
    # Both weights multiply the keypoint loss: 3 * 0.5.
    KEYPOINT_LOSS_WEIGHT = 0.5
    LOSS_WEIGHTS = {"mrcnn_keypoint_loss": 3.0}


def test_keypoint_step_reports_a_weighted_finite_loss_and_changes_the_keypoint_head(tmp_path):
    from mrcnn.modeling.roi_heads.keypoint_head import mrcnn_keypoint_loss

    config = KeypointStepConfig()
    model = modellib.MaskRCNN("training", config, str(tmp_path))
    km = model.keras_model
    assert [t.name for t in km.inputs][-2:] == ["input_gt_keypoints", "input_rois"]
    data = build_training_dataset(CornerRectangles([2, 3], seed=0), config, shuffle=False,
                                  repeat=False, seed=0)
    batch = next(iter(data))
    assert batch["input_gt_keypoints"].shape == (2, config.MAX_GT_INSTANCES, 2, 3)
    # The reported loss is the head's loss times both weights.
    inputs = [batch[n] for n in km.mrcnn_input_names]
    outputs = km(inputs, training=False)
    rows = outputs["mrcnn_keypoint_logits"].shape[1]
    assert outputs["target_keypoint_valid"][:, :rows].numpy().sum() > 0
    raw = float(mrcnn_keypoint_loss(outputs["target_keypoint_indices"][:, :rows],
                                    outputs["target_keypoint_valid"][:, :rows],
                                    outputs["mrcnn_keypoint_logits"]))
    reported = km.compute_mrcnn_losses(inputs, outputs)
    assert set(reported) == set(loss_names(config)) == set(LOSS_NAMES)
    assert float(reported["mrcnn_keypoint_loss"]) == pytest.approx(1.5 * raw, rel=1e-5)

    model.set_trainable("heads", verbose=0)
    model.compile(0.01, config.LEARNING_MOMENTUM)
    names = ("mrcnn_kp_conv1", "mrcnn_kp_conv2", "mrcnn_kp_deconv")
    before = _kernels(model, names)
    logs = {k: float(v) for k, v in km.train_step(batch).items()}
    assert set(logs) == {"loss", "weight_decay_loss", *LOSS_NAMES}
    assert np.isfinite(logs["mrcnn_keypoint_loss"]) and logs["mrcnn_keypoint_loss"] > 0
    assert logs["loss"] == pytest.approx(sum(logs[n] for n in LOSS_NAMES), rel=1e-5)
    after = _kernels(model, names)
    for name in names:
        for b, a in zip(before[name], after[name]):
            assert np.isfinite(a).all() and not np.array_equal(a, b), f"{name} did not change"
