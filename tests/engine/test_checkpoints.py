"""Tests of checkpoint bookkeeping: find_last's log-directory matching and the
optimizer state kept with checkpoints (resuming continues the optimizer)."""

import os
import warnings

import h5py
import keras
import numpy as np
import pytest

from model_fixtures import RectanglesDataset, TinyConfig
from mrcnn.engine import checkpoints
from mrcnn.weights import io as weights
from mrcnn import model as modellib
from mrcnn.data.pipeline import build_training_dataset


class CocoConfig(TinyConfig):
    NAME = "coco"


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def test_find_last_ignores_runs_of_names_with_the_same_prefix(tmp_path):
    model = modellib.MaskRCNN("inference", CocoConfig(), str(tmp_path))
    _touch(tmp_path / "coco20260101T0000" / "mask_rcnn_coco_0003.h5")
    # Newer, and its name starts with "coco": another config's run.
    _touch(tmp_path / "coco_person20261201T1200" / "mask_rcnn_coco_person_0005.h5")
    # Not <name>YYYYMMDDTHHMM either: ignored.
    _touch(tmp_path / "coco20270101T00001" / "mask_rcnn_coco_0001.h5")
    _touch(tmp_path / "coco2027x101T0000" / "mask_rcnn_coco_0001.h5")
    (tmp_path / "coco20280101T0000").write_bytes(b"")  # a file, not a directory
    assert model.find_last() == str(tmp_path / "coco20260101T0000" /
                                     "mask_rcnn_coco_0003.h5")
    # The newest matching timestamp wins.
    _touch(tmp_path / "coco20260102T0000" / "mask_rcnn_coco_0001.h5")
    assert model.find_last() == str(tmp_path / "coco20260102T0000" /
                                     "mask_rcnn_coco_0001.h5")


def test_find_last_without_a_matching_directory(tmp_path):
    model = modellib.MaskRCNN("inference", CocoConfig(), str(tmp_path))
    _touch(tmp_path / "coco_person20261201T1200" / "mask_rcnn_coco_person_0005.h5")
    with pytest.raises(FileNotFoundError, match="cocoYYYYMMDDTHHMM"):
        model.find_last()
    assert os.path.isdir(tmp_path / "coco_person20261201T1200")


# ------------------------------------------------------------------ optimizer state

class AdamConfig(TinyConfig):
    NAME = "adam"
    OPTIMIZER = "Adam"
    USE_RPN_ROIS = False  # RoIs from the pipeline: every head gets gradients
    POST_NMS_ROIS_TRAINING = 64
    STEPS_PER_EPOCH = 2
    VALIDATION_STEPS = 0


TRAIN_SET_COUNTS = [1, 2, 1, 3]


@pytest.fixture(scope="module")
def adam_run(tmp_path_factory):
    """One epoch of 2 Adam steps, saved as <model_dir>/adam.../mask_rcnn_adam_0001.h5."""
    model_dir = str(tmp_path_factory.mktemp("logs"))
    model = modellib.MaskRCNN("training", AdamConfig(), model_dir)
    model.run_eagerly = True  # two steps: cheaper than tracing
    model.train(RectanglesDataset(TRAIN_SET_COUNTS, seed=3), None, learning_rate=0.001,
                epochs=1, layers="heads", verbose=0)
    return model, model.find_last()


def _optimizer_values(model):
    keyed = checkpoints._keyed_variables(model.keras_model.optimizer, model.keras_model)
    return {key: np.asarray(var).copy() for key, var in keyed.items()}


class OptimizerSnapshot(keras.callbacks.Callback):
    """The optimizer's variables when fit starts (after the restore, before a step)."""

    def on_train_begin(self, logs=None):
        self.values = _optimizer_values(self.owner)


def test_checkpoint_holds_optimizer_state_beside_the_legacy_layout(adam_run):
    model, path = adam_run
    assert path.endswith("mask_rcnn_adam_0001.h5")
    with h5py.File(path, "r") as f:
        layer_names = [n.decode() for n in f.attrs["layer_names"]]
        assert "optimizer_weights" not in layer_names and "conv1" in layer_names
        group = f["optimizer_weights"]
        assert weights._decode(group.attrs["optimizer"]) == "Adam"
        keys = [n.decode() for n in group.attrs["weight_names"]]
    state = checkpoints.read_optimizer_state(path)
    assert list(state.values) == keys and state.optimizer == "Adam"
    assert int(state.values["iteration"]) == 2
    assert not [k for k in keys if "learning_rate" in k]
    # m and v of every trainable (head) variable, keyed by its weights-file path.
    trainable = model.keras_model.trainable_variables
    assert len([k for k in keys if k.startswith("momentum/")]) == len(trainable)
    assert len([k for k in keys if k.startswith("velocity/")]) == len(trainable)
    assert "momentum/mrcnn_mask/mrcnn_mask/kernel:0" in keys
    assert "velocity/rpn_model/rpn_conv_shared/kernel:0" in keys
    assert np.abs(state.values["momentum/mrcnn_mask/mrcnn_mask/kernel:0"]).sum() > 0
    # The weights loader is not disturbed by the extra group.
    report = weights.load_weights(model.keras_model, path)
    assert "mrcnn_mask" in report.loaded


def test_resumed_run_continues_the_optimizer(adam_run, capsys):
    _, path = adam_run
    saved = checkpoints.read_optimizer_state(path).values
    resumed = modellib.MaskRCNN("training", AdamConfig(), os.path.dirname(os.path.dirname(path)))
    resumed.run_eagerly = True
    assert resumed.find_last() == path
    resumed.load_weights(resumed.find_last())
    assert resumed.epoch == 1
    snapshot = OptimizerSnapshot()
    snapshot.owner = resumed
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # everything matches: no warning
        resumed.train(RectanglesDataset(TRAIN_SET_COUNTS, seed=3), None,
                      learning_rate=0.001, epochs=2, layers="heads",
                      custom_callbacks=[snapshot], verbose=1)
    out = capsys.readouterr().out
    assert f"Restored {len(saved)} of {len(saved)} optimizer variables (Adam, iteration 2)" \
        in out
    # Right after the restore, before any step: exactly the saved state.
    assert snapshot.values.keys() == saved.keys()
    for key, value in saved.items():
        np.testing.assert_array_equal(snapshot.values[key], value, err_msg=key)
    assert int(np.asarray(resumed.keras_model.optimizer.iterations)) == 4
    assert resumed.find_last().endswith("mask_rcnn_adam_0002.h5")
    assert int(checkpoints.read_optimizer_state(resumed.find_last()).values["iteration"]) == 4
    # Consumed: a second train() starts its optimizer fresh, as an uninterrupted run does.
    assert resumed._optimizer_state is None


def test_other_layers_selection_restores_what_matches_and_warns(adam_run):
    _, path = adam_run
    model = modellib.MaskRCNN("training", AdamConfig(), os.path.dirname(os.path.dirname(path)))
    model.load_weights(path)
    model.set_trainable(r"mrcnn\_mask.*", verbose=0)
    model.compile(0.001, 0.9)
    with pytest.warns(UserWarning, match="no variable in this run"):
        restored = checkpoints.before_fit(model, epochs=2, verbose=0)
    n_mask = len(model.keras_model.trainable_variables)
    assert restored == 1 + 2 * n_mask  # iteration + m and v of the mask head
    assert int(np.asarray(model.keras_model.optimizer.iterations)) == 2


def test_resumed_step_equals_the_uninterrupted_step(adam_run):
    uninterrupted, path = adam_run
    config = uninterrupted.config
    batch = next(iter(build_training_dataset(RectanglesDataset([2, 3], seed=8), config,
                                             shuffle=False, repeat=False, seed=0)))
    resumed = modellib.MaskRCNN("training", config, os.path.dirname(os.path.dirname(path)))
    resumed.load_weights(path)
    resumed.set_trainable("heads", verbose=0)
    resumed.compile(0.001, config.LEARNING_MOMENTUM)
    assert checkpoints.before_fit(resumed, epochs=2, verbose=0) > 0
    for model in (resumed, uninterrupted):  # the same RoI sampling in both steps
        keras.utils.set_random_seed(11)
        model.keras_model.train_step(batch)
    after = [_optimizer_values(m) for m in (resumed, uninterrupted)]
    assert int(after[0]["iteration"]) == int(after[1]["iteration"]) == 3
    for key in after[1]:
        np.testing.assert_allclose(after[0][key], after[1][key], rtol=1e-5, atol=1e-7,
                                   err_msg=key)
    for a, b in zip(resumed.keras_model.trainable_variables,
                    uninterrupted.keras_model.trainable_variables):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7,
                                   err_msg=a.path)


def test_files_without_optimizer_state_restore_nothing_silently(tmp_path):
    model = modellib.MaskRCNN("training", AdamConfig(), str(tmp_path))
    path = str(tmp_path / "plain.h5")
    weights.save_weights(model.keras_model, path)  # not compiled: no optimizer group
    with h5py.File(path, "r") as f:
        assert "optimizer_weights" not in f
    model.load_weights(path)
    assert model._optimizer_state is None
    model.compile(0.001, 0.9)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        assert checkpoints.before_fit(model, epochs=1, verbose=0) == 0


@pytest.mark.parametrize("kind, precision", [("SGD", None), ("AdamW", None),
                                             ("Adam", "mixed_float16")])
def test_optimizer_state_round_trip(kind, precision, tmp_path):
    config = type("C", (AdamConfig,), {"OPTIMIZER": kind, "MIXED_PRECISION": precision})()
    model = modellib.MaskRCNN("training", config, str(tmp_path))
    model.set_trainable("heads", verbose=0)
    model.compile(0.001, 0.9)
    optimizer = model.keras_model.optimizer
    optimizer.build(model.keras_model.trainable_variables)
    rng = np.random.default_rng(0)
    for key, var in checkpoints._keyed_variables(optimizer, model.keras_model).items():
        var.assign(rng.integers(1, 9, var.shape).astype(var.dtype) if "int" in var.dtype
                   else rng.normal(size=var.shape).astype(var.dtype))
    saved = _optimizer_values(model)
    slots = {"SGD": ["momentum"], "AdamW": ["momentum", "velocity"],
             "Adam": ["momentum", "velocity"]}[kind]
    n_vars = len(model.keras_model.trainable_variables)
    assert sorted({k.split("/")[0] for k in saved if "/" in k and
                   not k.startswith("loss_scale/")}) == slots
    assert sum(k.startswith(slots[0] + "/") for k in saved) == n_vars
    if precision:
        assert type(optimizer).__name__ == "LossScaleOptimizer"
        assert {"loss_scale/dynamic_scale", "loss_scale/step_counter"} <= set(saved)
    run_dir = tmp_path / "adam20260101T0000"
    run_dir.mkdir()
    path = model.save_weights(str(run_dir / "mask_rcnn_adam_0001.h5"))

    model.load_weights(path)
    model.compile(0.001, 0.9)  # a fresh optimizer
    assert checkpoints.before_fit(model, epochs=2, verbose=0) == len(saved)
    restored = _optimizer_values(model)
    assert restored.keys() == saved.keys()
    for key in saved:
        np.testing.assert_array_equal(restored[key], saved[key], err_msg=key)


# ------------------------------------------------------------------ architecture record

def test_checkpoints_record_the_architecture_and_loading_checks_it(adam_run, tmp_path):
    _, path = adam_run
    with h5py.File(path, "r") as f:
        record = weights._read_architecture(f.attrs[checkpoints.ARCHITECTURE_ATTR])
    assert record == {"HEAD_ARCHITECTURE": "fpn", "BACKBONE": "resnet50",
                      "RPN_HEAD_CHANNELS": 512, "ROI_ALIGN_AGGREGATION": "avg",
                      "MASK_LOSS": "sigmoid", "CLASS_AGNOSTIC_MASK": False}

    # Same shapes, other outputs: a softmax-mask model loads the file with a warning.
    softmax = type("Softmax", (TinyConfig,), {"MASK_LOSS": "softmax", "IMAGES_PER_GPU": 1})()
    model = modellib.MaskRCNN("inference", softmax, str(tmp_path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = model.load_weights(path, by_name=True)
    assert report.architecture == record
    assert "MASK_LOSS='sigmoid'" in report.details()
    assert any("trained with MASK_LOSS='sigmoid', but this model uses MASK_LOSS='softmax'"
               in str(w.message) for w in caught), [str(w.message) for w in caught]
    assert checkpoints.describe_model(model.keras_model)["MASK_LOSS"] == "softmax"

    # Other shapes: the error names the layer and the file's recorded architecture.
    c4 = type("C4", (TinyConfig,), {"HEAD_ARCHITECTURE": "c4", "POOL_SIZE": 6,
                                    "MASK_SHAPE": [6, 6], "IMAGES_PER_GPU": 1})()
    model = modellib.MaskRCNN("inference", c4, str(tmp_path))
    assert checkpoints.describe_model(model.keras_model)["HEAD_ARCHITECTURE"] == "c4"
    with pytest.raises(ValueError, match=r"(?s)shape.*records the architecture .*"
                                         r"HEAD_ARCHITECTURE='fpn'"):
        model.load_weights(path, by_name=True)

    # A narrower RPN head: the error names the recorded width.
    narrow = type("Narrow", (TinyConfig,), {"RPN_HEAD_CHANNELS": 64, "IMAGES_PER_GPU": 1})()
    model = modellib.MaskRCNN("inference", narrow, str(tmp_path))
    assert checkpoints.describe_model(model.keras_model)["RPN_HEAD_CHANNELS"] == 64
    with pytest.raises(ValueError, match=r"(?s)rpn_conv_shared.*RPN_HEAD_CHANNELS.*"
                                         r"records the architecture .*RPN_HEAD_CHANNELS=512"):
        model.load_weights(path, by_name=True)
