"""Tests of learning-rate schedules (mrcnn.engine.schedules): the presets' values, the
Config fields' validation, and a schedule continuing across train() calls and resumes."""

import os

import keras
import numpy as np
import pytest

from model_fixtures import RectanglesDataset, TinyConfig
from mrcnn import model as modellib
from mrcnn.engine import schedules


def _rates(schedule, steps):
    return [float(schedule(step)) for step in steps]


def test_linear_warmup_then_constant():
    schedule = schedules.WarmupDecay(0.02, warmup_steps=10, warmup_factor=0.1)
    np.testing.assert_allclose(_rates(schedule, [0, 5, 9, 10, 11, 1000]),
                               [0.002, 0.011, 0.0182, 0.02, 0.02, 0.02], rtol=1e-6)


def test_step_and_cosine_presets_in_epochs():
    class Step(TinyConfig):
        STEPS_PER_EPOCH = 10
        LEARNING_RATE_SCHEDULE = "step"
        LEARNING_RATE_STEP_EPOCHS = (2, 4)
        LEARNING_RATE_STEP_FACTOR = 0.5

    step = schedules.schedule_from_config(Step(), 1.0)
    # Epochs 1-2 are steps 0-19, epoch 3 starts at step 20.
    np.testing.assert_allclose(_rates(step, [0, 19, 20, 39, 40, 500]),
                               [1, 1, 0.5, 0.5, 0.25, 0.25], rtol=1e-6)

    class Cosine(TinyConfig):
        STEPS_PER_EPOCH = 10
        LEARNING_RATE_SCHEDULE = "cosine"
        LEARNING_RATE_COSINE_EPOCHS = 2
        LEARNING_RATE_COSINE_MIN_FACTOR = 0.1
        WARMUP_STEPS = 4
        WARMUP_FACTOR = 0.5

    cosine = schedules.schedule_from_config(Cosine(), 2.0)
    expected = [2.0 * 0.5,                                        # warm-up start
                2.0 * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * 2 / 20))) * 0.75,
                2.0 * (0.1 + 0.9 * 0.5),                          # half way
                2.0 * 0.1, 2.0 * 0.1]                             # the end, then flat
    np.testing.assert_allclose(_rates(cosine, [0, 2, 10, 20, 35]), expected, rtol=1e-5)


def test_resolve_learning_rate_keeps_plain_numbers_and_wraps_schedules():
    config = TinyConfig()
    rate = schedules.resolve_learning_rate(config, 1)
    assert rate == 1.0 and type(rate) is float  # Keras' optimizers want a float
    assert schedules.resolve_learning_rate(config, np.float32(0.5)) == 0.5
    decay = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5)
    wrapped = schedules.resolve_learning_rate(config, decay)
    assert isinstance(wrapped, schedules.GlobalStepSchedule) and wrapped.schedule is decay
    wrapped.offset = 10
    assert float(wrapped(0)) == pytest.approx(0.05)
    assert schedules.resolve_learning_rate(config, wrapped) is wrapped

    class Warm(TinyConfig):
        WARMUP_STEPS = 5
    preset = schedules.resolve_learning_rate(Warm(), 0.01)
    assert float(preset(0)) == pytest.approx(0.01 * 0.001)
    with pytest.raises(ValueError, match=r"Warm.WARMUP_STEPS=5 asks for a preset"):
        schedules.resolve_learning_rate(Warm(), decay)
    with pytest.raises(ValueError, match="finite number >= 0"):
        schedules.resolve_learning_rate(config, float("nan"))
    with pytest.raises(ValueError, match="finite number >= 0"):
        schedules.resolve_learning_rate(config, -0.1)
    with pytest.raises(TypeError, match="expected a number or a keras"):
        schedules.resolve_learning_rate(config, "0.01")


@pytest.mark.parametrize("field, value, message", [
    ("LEARNING_RATE_SCHEDULE", "linear", "expected one of"),
    ("WARMUP_STEPS", -1, "expected an integer >= 0"),
    ("WARMUP_STEPS", 2.5, "expected an integer >= 0"),
    ("WARMUP_FACTOR", 0, r"expected a number in \(0, 1\]"),
    ("WARMUP_FACTOR", 1.5, r"expected a number in \(0, 1\]"),
    ("LEARNING_RATE_STEP_FACTOR", 0.0, r"expected a number in \(0, 1\]"),
    ("LEARNING_RATE_STEP_EPOCHS", (5, 3), "expected increasing epoch numbers"),
    ("LEARNING_RATE_STEP_EPOCHS", (0,), "expected increasing epoch numbers"),
    ("LEARNING_RATE_STEP_EPOCHS", 5, "expected increasing epoch numbers"),
    ("LEARNING_RATE_COSINE_MIN_FACTOR", -0.1, r"expected a number in \[0, 1\]"),
    ("LEARNING_RATE_COSINE_EPOCHS", 0, "expected a positive number of epochs"),
])
def test_schedule_fields_are_validated(field, value, message):
    config = type("Bad", (TinyConfig,), {field: value})
    with pytest.raises(ValueError, match=f"Bad.{field}: {message}"):
        config()


def test_presets_name_what_they_need():
    step = type("Step", (TinyConfig,), {"LEARNING_RATE_SCHEDULE": "step"})
    with pytest.raises(ValueError, match=r"Step.LEARNING_RATE_STEP_EPOCHS: .*needs at least"):
        step()
    cosine = type("Cos", (TinyConfig,), {"LEARNING_RATE_SCHEDULE": "cosine"})
    with pytest.raises(ValueError, match=r"Cos.LEARNING_RATE_COSINE_EPOCHS: .*cosine needs"):
        cosine()


# ----------------------------------------------------------------- across train() calls

class ScheduledConfig(TinyConfig):
    NAME = "sched"
    STEPS_PER_EPOCH = 2
    VALIDATION_STEPS = 0
    OPTIMIZER = "Adam"
    WARMUP_STEPS = 3
    WARMUP_FACTOR = 0.1
    LEARNING_RATE_SCHEDULE = "cosine"
    LEARNING_RATE_COSINE_EPOCHS = 3


PEAK = 0.002


class RateRecorder(keras.callbacks.Callback):
    """The learning rate each step is taken with, and the optimizer's iterations."""

    def __init__(self):
        super().__init__()
        self.rates, self.iterations = [], []

    def on_train_batch_begin(self, batch, logs=None):
        optimizer = self.model.optimizer
        self.rates.append(float(keras.ops.convert_to_numpy(optimizer.learning_rate)))
        self.iterations.append(int(keras.ops.convert_to_numpy(optimizer.iterations)))


def _train(model, epochs):
    recorder = RateRecorder()
    model.train(RectanglesDataset([1, 2, 1, 3], seed=3), None, learning_rate=PEAK,
                epochs=epochs, layers="heads", custom_callbacks=[recorder], verbose=0)
    return recorder


def _model(model_dir, weights=None):
    model = modellib.MaskRCNN("training", ScheduledConfig(), str(model_dir))
    model.run_eagerly = True  # a few steps: cheaper than tracing
    if weights:
        model.load_weights(weights)
    return model


def test_a_resumed_run_takes_the_uninterrupted_runs_learning_rates(tmp_path):
    expected = _rates(schedules.schedule_from_config(ScheduledConfig(), PEAK), range(6))
    assert len(set(np.round(expected, 12))) == 6  # warm-up, then cosine: all differ

    uninterrupted = _train(_model(tmp_path / "one"), epochs=3)
    np.testing.assert_allclose(uninterrupted.rates, expected, rtol=1e-6)
    assert uninterrupted.iterations == [0, 1, 2, 3, 4, 5]

    # Two train() calls in one process: the second builds a new optimizer
    # (iterations from 0), and the schedule still continues at step 4.
    staged = _model(tmp_path / "two")
    first = _train(staged, epochs=2)
    second = _train(staged, epochs=3)
    np.testing.assert_allclose(first.rates + second.rates, expected, rtol=1e-6)
    assert second.iterations == [0, 1]

    # A new process resuming from the epoch-2 checkpoint: the optimizer's
    # iterations come back from the file (4), and the rates follow.
    checkpoint = os.path.join(staged.log_dir, "mask_rcnn_sched_0002.h5")
    resumed = _model(tmp_path / "two", weights=checkpoint)
    assert resumed.epoch == 2
    third = _train(resumed, epochs=3)
    assert third.iterations == [4, 5]
    np.testing.assert_allclose(first.rates + third.rates, uninterrupted.rates, rtol=1e-6)


def test_start_schedule_sets_the_global_step_and_leaves_constant_rates_alone():
    optimizer = keras.optimizers.SGD(learning_rate=0.01)
    assert schedules.start_schedule(0.01, optimizer, 400) is None
    wrapped = schedules.GlobalStepSchedule(
        keras.optimizers.schedules.PiecewiseConstantDecay([5], [1.0, 0.5]))
    optimizer = keras.optimizers.SGD(learning_rate=wrapped)
    optimizer.iterations.assign(2)  # e.g. restored from a checkpoint
    assert schedules.start_schedule(wrapped, optimizer, 6) == pytest.approx(0.5)
    assert wrapped.offset == 4
    assert float(keras.ops.convert_to_numpy(optimizer.learning_rate)) == pytest.approx(0.5)
