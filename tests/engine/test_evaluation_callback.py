"""Tests of evaluation while training (mrcnn.engine.evaluation_callback): metrics in the
History and TensorBoard, the best checkpoint, early stopping, no retracing of the train
step, chief-only work."""

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from locations import REPO_DIR, TESTS_DIR
from model_fixtures import RectanglesDataset, TinyConfig
from mrcnn import model as modellib
from mrcnn.engine import evaluation_callback as evaluation
from mrcnn.evaluation.coco import evaluate_model


class EvalConfig(TinyConfig):
    NAME = "evaltiny"
    STEPS_PER_EPOCH = 25  # all layers, Adam: enough for AP well above 0 on rectangles
    VALIDATION_STEPS = 0
    SEED = 3
    OPTIMIZER = "Adam"
    # A barely trained model scores low: keep every detection.
    DETECTION_MIN_CONFIDENCE = 0.0


class ShortConfig(EvalConfig):
    STEPS_PER_EPOCH = 2


TRAIN_COUNTS = [1, 2, 3, 1, 2, 2]
EVAL_COUNTS = [2, 1, 3, 2]
EVALUATION = {"every": 1, "images": 3, "best_metric": "segm_AP"}


class BatchLosses(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.losses = []

    def on_train_batch_end(self, batch, logs=None):
        self.losses.append(float(np.asarray(logs["loss"])))


def _train(model_dir, eval_settings, epochs, learning_rate=0.001, eager=False,
           train_step_calls=None, config_class=EvalConfig):
    """A tiny training run with evaluation; returns (model, history, printed text);
    ``history.batch_losses``: the running mean loss after each step."""
    model = modellib.MaskRCNN("training", config_class(), str(model_dir))
    model.run_eagerly = eager
    if train_step_calls is not None:  # counts the Python calls: one per trace
        step = model.keras_model.train_step

        def counting_train_step(data):
            train_step_calls.append(1)
            return step(data)
        model.keras_model.train_step = counting_train_step
    out, recorder = io.StringIO(), BatchLosses()
    with contextlib.redirect_stdout(out):
        history = model.train(RectanglesDataset(TRAIN_COUNTS, seed=2),
                              RectanglesDataset(EVAL_COUNTS, seed=7),
                              learning_rate=learning_rate, epochs=epochs, layers="all",
                              verbose=1, evaluation=eval_settings,
                              custom_callbacks=[recorder])
    history.batch_losses = recorder.losses
    return model, history, out.getvalue()


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """Two epochs of two steps, evaluated after each (traced, not eager)."""
    calls = []
    model, history, text = _train(tmp_path_factory.mktemp("evaluated"), EVALUATION,
                                  epochs=2, train_step_calls=calls)
    return model, history.history, text, calls, history.batch_losses


def test_metrics_are_in_the_history_with_coco_values(evaluated):
    model, history, text = evaluated[:3]
    assert history["evaluated_epochs"] == [1, 2]
    for name in evaluation.METRICS:
        values = history[f"val_{name}"]
        assert len(values) == 2, name
        assert all(0 <= v <= 1 or v == -1 for v in values), (name, values)
    # The evaluated images hold instances: every metric is defined, and the
    # model has learnt something.
    assert all(v >= 0 for name in evaluation.METRICS for v in history[f"val_{name}"])
    assert max(history["val_mAP50"]) > 0.2 and max(history["val_segm_AP"]) > 0.05
    assert len(history["loss"]) == 2
    lines = [l for l in text.splitlines() if "evaluation on 3 images in" in l]
    assert [l.split(":")[0] for l in lines] == ["Epoch 1", "Epoch 2"]
    assert all(" s: mask AP " in l and "mAP@0.5" in l for l in lines)


def test_the_train_step_is_traced_once(evaluated):
    # Two evaluations ran, the second between the epochs: no retrace.
    assert len(evaluated[3]) == 1


def test_best_checkpoint_loads_and_scores_what_was_logged(evaluated):
    model, history = evaluated[:2]
    best = os.path.join(model.log_dir, "mask_rcnn_evaltiny_best.h5")
    with open(os.path.join(model.log_dir, "mask_rcnn_evaltiny_best.json")) as f:
        record = json.load(f)
    values = history["val_segm_AP"]
    assert record["metric"] == "segm_AP" and record["images"] == 3
    assert record["epoch"] == 1 + int(np.argmax(values))  # the first of equal values
    assert record["value"] == pytest.approx(max(values))
    config = evaluation.evaluation_model_config(model.config)
    inference = modellib.MaskRCNN("inference", config, str(os.path.dirname(model.log_dir)))
    report = inference.load_weights(best, by_name=True)
    assert report.loaded and report.not_in_file == []
    scores = evaluate_model(inference, RectanglesDataset(EVAL_COUNTS, seed=7), [0, 1, 2],
                            verbose=False)
    epoch = record["epoch"] - 1
    assert scores["coco"]["segm"]["AP"] == pytest.approx(history["val_segm_AP"][epoch],
                                                         abs=1e-6)
    assert scores["coco"]["bbox"]["AP50"] == pytest.approx(
        history["val_bbox_AP50"][epoch], abs=1e-6)
    assert scores["mAP50"] == pytest.approx(history["val_mAP50"][epoch], abs=1e-6)


def test_find_last_resumes_from_the_newest_epoch_not_the_best(evaluated):
    model = evaluated[0]
    assert sorted(f for f in os.listdir(model.log_dir) if f.endswith(".h5")) == [
        "mask_rcnn_evaltiny_0001.h5", "mask_rcnn_evaltiny_0002.h5",
        "mask_rcnn_evaltiny_best.h5"]
    assert model.find_last() == os.path.join(model.log_dir, "mask_rcnn_evaltiny_0002.h5")


def test_find_last_ignores_the_best_checkpoint_file(tmp_path):
    model = modellib.MaskRCNN("inference", EvalConfig(), str(tmp_path))
    log_dir = tmp_path / "evaltiny20260101T0000"
    log_dir.mkdir()
    (log_dir / "mask_rcnn_evaltiny_best.h5").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="no mask_rcnn_"):
        model.find_last()
    (log_dir / "mask_rcnn_evaltiny_0001_interrupted.h5").write_bytes(b"")
    assert model.find_last().endswith("mask_rcnn_evaltiny_0001_interrupted.h5")
    (log_dir / "mask_rcnn_evaltiny_0003.h5").write_bytes(b"")
    assert model.find_last() == str(log_dir / "mask_rcnn_evaltiny_0003.h5")
    # Loading the best file for training starts a new run (it names no epoch).
    model.set_log_dir(str(log_dir / "mask_rcnn_evaltiny_best.h5"))
    assert model.epoch == 0 and model.log_dir != str(log_dir)


def test_metrics_reach_tensorboard(evaluated):
    pytest.importorskip("tensorboard")
    import tensorflow as tf

    model = evaluated[0]
    folder = os.path.join(model.log_dir, "validation")
    values = []
    for name in sorted(os.listdir(folder)):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(folder, name)):
            for value in event.summary.value:
                if value.tag == "epoch_segm_AP":
                    values.append(float(tf.make_ndarray(value.tensor)))
    assert values == pytest.approx(evaluated[1]["val_segm_AP"], abs=1e-6)


@pytest.mark.slow
def test_a_worker_that_is_not_the_chief_writes_nothing_and_trains_the_same(
        tmp_path, monkeypatch):
    # Short runs (2 epochs of 2 steps) so that the CPU's summation order, whose
    # differences grow step by step, cannot hide what is compared: every step,
    # including those after the chief's evaluation between the epochs.
    chief, chief_history, _ = _train(tmp_path / "chief", EVALUATION, epochs=2,
                                     config_class=ShortConfig)
    assert chief_history.history["evaluated_epochs"] == [1, 2]
    monkeypatch.setattr(modellib.MaskRCNN, "is_chief", property(lambda self: False))
    worker_dir = tmp_path / "worker"
    worker_dir.mkdir()
    model, history, text = _train(worker_dir, EVALUATION, epochs=2,
                                  config_class=ShortConfig)
    assert os.listdir(worker_dir) == []  # no log directory, checkpoint or best file
    assert not any(key.startswith("val_") for key in history.history)
    assert history.history["evaluated_epochs"] == [] and "evaluation on" not in text
    assert getattr(model, "_evaluation_model", None) is None
    # The chief's evaluation model was built before the run was seeded, and its
    # evaluations draw no training random numbers: the same losses step by step.
    assert len(history.batch_losses) == len(chief_history.batch_losses) == 4
    np.testing.assert_allclose(history.batch_losses, chief_history.batch_losses,
                               rtol=1e-4)
    np.testing.assert_allclose(history.history["loss"], chief_history.history["loss"],
                               rtol=1e-4)


def test_early_stopping_after_patience_evaluations_without_improvement(tmp_path):
    # Learning rate 0: the weights, and so the metrics, cannot change.
    settings = evaluation.EvaluationConfig(every=1, images=2, best_metric="val_mAP50",
                                           early_stopping_patience=2, min_delta=1e-6)
    model, history, text = _train(tmp_path, settings, epochs=6, learning_rate=0.0,
                                  eager=True, config_class=ShortConfig)
    assert history.history["evaluated_epochs"] == [1, 2, 3]
    assert len(history.history["loss"]) == 3 and model.epoch == 3
    assert "stopping early (patience 2)" in text
    assert "2 evaluation(s) without improvement" in text
    assert sorted(f for f in os.listdir(model.log_dir) if f.endswith(".h5")) == [
        "mask_rcnn_evaltiny_0001.h5", "mask_rcnn_evaltiny_0002.h5",
        "mask_rcnn_evaltiny_0003.h5", "mask_rcnn_evaltiny_best.h5"]
    with open(os.path.join(model.log_dir, "mask_rcnn_evaltiny_best.json")) as f:
        assert json.load(f)["epoch"] == 1


@pytest.mark.parametrize("settings, message", [
    ({"every": 0}, "every: expected a positive integer"),
    ({"best_metric": "segm_AR"}, "best_metric: expected one of"),
    ({"best_metric": None, "early_stopping_patience": 2}, "needs a best_metric"),
    ({"images": []}, "list of image ids is empty"),
    ({"min_delta": -0.1}, "min_delta: expected a number >= 0"),
    ({"evry": 2}, r"unknown setting\(s\) \['evry'\]"),
])
def test_bad_settings_are_named(settings, message):
    with pytest.raises(ValueError, match=message):
        evaluation.evaluation_config(settings)


def test_keypoint_ap_is_logged_and_picks_the_best_checkpoint(tmp_path):
    # A keypoint head adds keypoint AP (OKS) of the same detections; it can be the
    # best metric, and the best checkpoint rescored gives the logged value.
    from keypoint_fixtures import CornerRectangles, KeypointTinyConfig
    from mrcnn.evaluation.keypoints import evaluate_keypoints

    class KeypointEvalConfig(KeypointTinyConfig):
        NAME = "evalkp"
        STEPS_PER_EPOCH = 12
        VALIDATION_STEPS = 0
        SEED = 3
        OPTIMIZER = "Adam"
        DETECTION_MIN_CONFIDENCE = 0.0
        KEYPOINT_OKS_SIGMAS = (0.1, 0.1)

    settings = {"every": 1, "images": 3, "best_metric": "val_keypoints_AP"}
    model = modellib.MaskRCNN("training", KeypointEvalConfig(), str(tmp_path))
    eval_set = CornerRectangles(EVAL_COUNTS, seed=7)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        history = model.train(CornerRectangles(TRAIN_COUNTS, seed=2), eval_set,
                              learning_rate=0.001, epochs=1, layers="all", verbose=1,
                              evaluation=settings).history
    for name in evaluation.METRICS + evaluation.KEYPOINT_METRICS:
        assert len(history[f"val_{name}"]) == 1 and 0 <= history[f"val_{name}"][0] <= 1, name
    assert "keypoint AP " in out.getvalue()
    with open(os.path.join(model.log_dir, "mask_rcnn_evalkp_best.json")) as f:
        record = json.load(f)
    assert record["metric"] == "keypoints_AP"
    assert record["value"] == pytest.approx(history["val_keypoints_AP"][0])
    inference = modellib.MaskRCNN("inference", evaluation.evaluation_model_config(
        model.config), str(tmp_path))
    inference.load_weights(os.path.join(model.log_dir, "mask_rcnn_evalkp_best.h5"),
                           by_name=True)
    results = evaluate_model(inference, eval_set, [0, 1, 2], verbose=False)["results"]
    stats = evaluate_keypoints(eval_set, results, [0, 1, 2], sigmas=(0.1, 0.1), verbose=False)
    assert stats["AP"] == pytest.approx(history["val_keypoints_AP"][0], abs=1e-6)
    assert stats["AP50"] == pytest.approx(history["val_keypoints_AP50"][0], abs=1e-6)


def test_keypoint_best_metric_needs_a_keypoint_head(evaluated):
    with pytest.raises(ValueError, match=r"'keypoints_AP': the model has no keypoint head"):
        evaluation.make_callback(evaluated[0], {"best_metric": "keypoints_AP"},
                                 RectanglesDataset([1, 1]))


def test_make_callback_needs_a_data_set_and_known_image_ids(evaluated):
    model = evaluated[0]
    with pytest.raises(ValueError, match="no data set to evaluate on"):
        evaluation.make_callback(model, {"every": 2}, None)
    with pytest.raises(ValueError, match=r"ids \[9\] are not in the data set"):
        evaluation.make_callback(model, {"images": [0, 9]}, RectanglesDataset([1, 1]))
    with pytest.raises(TypeError, match="EvaluationConfig or a dict"):
        evaluation.make_callback(model, 5, RectanglesDataset([1, 1]))
    assert evaluation.make_callback(model, None, RectanglesDataset([1, 1])) is None


WORKER_SCRIPT = """
import json, sys
from model_fixtures import RectanglesDataset, TinyConfig
from mrcnn import model as modellib

class Config(TinyConfig):
    NAME = "mw"
    IMAGES_PER_GPU = 1
    STEPS_PER_EPOCH = 2
    VALIDATION_STEPS = 0
    DETECTION_MIN_CONFIDENCE = 0.0

model = modellib.MaskRCNN("training", Config(), sys.argv[1])  # MultiWorkerMirroredStrategy
history = model.train(
    RectanglesDataset([1, 2, 1, 2], seed=2), RectanglesDataset([2, 1, 3], seed=7),
    learning_rate=0.0, epochs=5, layers="heads", verbose=0,
    evaluation={"every": 1, "images": 3, "best_metric": "mAP50",
                "early_stopping_patience": 1, "min_delta": 1e-6})
print("RESULT " + json.dumps({"chief": model.is_chief, "epoch": model.epoch,
                              "history": history.history}), flush=True)
"""


@pytest.mark.slow
def test_multi_worker_run_shares_the_chiefs_metrics_and_stop(tmp_path):
    """Two workers on localhost: the chief evaluates and writes; the other worker
    logs the chief's metrics and stops at the same epoch (it would otherwise
    wait for the chief in the next step's all-reduce)."""
    sockets = [socket.socket() for _ in range(2)]
    for sock in sockets:
        sock.bind(("localhost", 0))
    workers = [f"localhost:{sock.getsockname()[1]}" for sock in sockets]
    for sock in sockets:
        sock.close()
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(WORKER_SCRIPT))
    procs = []
    for index in range(2):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([TESTS_DIR, REPO_DIR]),
                   TF_CPP_MIN_LOG_LEVEL="2", TF_CONFIG=json.dumps(
                       {"cluster": {"worker": workers},
                        "task": {"type": "worker", "index": index}}))
        procs.append(subprocess.Popen(
            [sys.executable, str(script), str(tmp_path / f"logs{index}")], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    results = []
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=600)
            assert proc.returncode == 0, out[-4000:]
            results.append(json.loads([l for l in out.splitlines()
                                       if l.startswith("RESULT ")][-1][7:]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    chief, other = results
    assert chief["chief"] and not other["chief"]
    assert chief["epoch"] == other["epoch"] == 2  # best at 1, no improvement at 2: stop
    for key in ["evaluated_epochs"] + [f"val_{m}" for m in evaluation.METRICS]:
        assert other["history"][key] == pytest.approx(chief["history"][key], abs=1e-6), key
    assert chief["history"]["evaluated_epochs"] == [1, 2]
    assert max(chief["history"]["val_mAP50"]) >= 0
    written = sorted(f for _, _, files in os.walk(tmp_path / "logs0") for f in files
                     if f.endswith((".h5", ".json")))
    assert written == ["mask_rcnn_mw_0001.h5", "mask_rcnn_mw_0002.h5",
                       "mask_rcnn_mw_best.h5", "mask_rcnn_mw_best.json"]
    assert not (tmp_path / "logs1").exists()


MIRRORED_SCRIPT = """
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from model_fixtures import RectanglesDataset, TinyConfig
from mrcnn import model as modellib

class Config(TinyConfig):
    NAME = "mirrored"
    IMAGES_PER_GPU = 1
    STEPS_PER_EPOCH = 2
    VALIDATION_STEPS = 0
    DETECTION_MIN_CONFIDENCE = 0.0

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
model = modellib.MaskRCNN("training", Config(), sys.argv[1], strategy=strategy)
history = model.train(RectanglesDataset([1, 2, 1, 2], seed=2), RectanglesDataset([2, 1], seed=7),
                      learning_rate=0.001, epochs=1, layers="heads", verbose=0,
                      evaluation={"every": 1, "images": 2})
trained = {v.path: v.numpy() for v in model.keras_model.weights}
copied = model._evaluation_model[1].keras_model
pairs = [(trained[v.path], v.numpy()) for v in copied.weights if v.path in trained]
same = all((a == b).all() for a, b in pairs)
print("RESULT " + json.dumps({"replicas": strategy.num_replicas_in_sync, "same": bool(same),
                              "compared": len(pairs), "weights": len(copied.weights),
                              "history": history.history}), flush=True)
"""


@pytest.mark.slow
def test_mirrored_strategy_evaluates_the_trained_weights(tmp_path):
    """Two replicas (logical CPUs): the inference copy holds the mirrored variables'
    trained values, and the metrics are logged."""
    script = tmp_path / "mirrored.py"
    script.write_text(textwrap.dedent(MIRRORED_SCRIPT))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([TESTS_DIR, REPO_DIR]),
               TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "logs")], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads([l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1][7:])
    assert result["replicas"] == 2 and result["same"]
    assert result["compared"] == result["weights"] > 100
    assert result["history"]["evaluated_epochs"] == [1]
    assert all(0 <= v[0] <= 1 for k, v in result["history"].items() if k.startswith("val_"))
