"""Learning-rate schedules: a linear warm-up, then a constant, step or cosine rate, as a
function of the *global* training step.

`MaskRCNN.train(learning_rate=...)` takes a number (as before) or a Keras
``keras.optimizers.schedules.LearningRateSchedule``; `resolve_learning_rate`
turns it into what the optimizer gets:

* a number with ``Config.LEARNING_RATE_SCHEDULE = "constant"`` and
  ``WARMUP_STEPS = 0`` (the defaults): the number itself, exactly as before
  (the optimizer keeps a learning-rate variable);
* any other number: a `WarmupDecay` whose peak rate is that number, shaped
  by the Config's presets (``LEARNING_RATE_SCHEDULE``, ``WARMUP_STEPS``,
  ``WARMUP_FACTOR``, ``LEARNING_RATE_STEP_EPOCHS`` / ``_STEP_FACTOR``,
  ``LEARNING_RATE_COSINE_EPOCHS`` / ``_COSINE_MIN_FACTOR``; see `mrcnn.config`);
* a ``LearningRateSchedule``: used as given (the Config's presets must then
  be left at their defaults: ValueError otherwise).

Both schedules come wrapped in a `GlobalStepSchedule`, which calls them with the
global step ``epoch * STEPS_PER_EPOCH + (steps run in this epoch)``, where
``epoch`` is the number of epochs completed before the current ``train()`` call
(`MaskRCNN.epoch`). So the schedule does not restart when:

* a multi-stage script calls ``train()`` again (a new optimizer, whose
  ``iterations`` start from 0, e.g. the samples' learning-rate drop);
* a run is resumed with ``load_weights(find_last())``: the checkpoint's
  epoch gives the step, whether or not its optimizer state
  (``iterations`` included, `mrcnn.engine.checkpoints`) could be restored; an
  interrupted checkpoint (epoch ``N`` re-run) restarts at the step where
  epoch ``N`` began.

A resumed run therefore sees, step by step, the learning rates of the
uninterrupted run (tested). Changing ``STEPS_PER_EPOCH`` between runs moves the
global step with it (``epoch * STEPS_PER_EPOCH``).

Steps are 0-based: step ``s`` is the ``s + 1``-th update, in epoch
``s // STEPS_PER_EPOCH + 1`` (1-based, as in checkpoint names).
"""

import math

import keras
import tensorflow as tf

from mrcnn.config import LEARNING_RATE_SCHEDULES

__all__ = ["WarmupDecay", "GlobalStepSchedule", "schedule_from_config",
           "resolve_learning_rate", "start_schedule", "uses_schedule_presets"]


class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """``peak * warmup(step) * decay(step)`` at a 0-based step.

    Args:
        peak: the learning rate after the warm-up, before any decay.
        warmup_steps: linear warm-up length (0: none). ``warmup(step)`` goes
            from ``warmup_factor`` at step 0 linearly to 1 at ``warmup_steps``
            (1 after), as detectron2's linear warm-up.
        warmup_factor: the fraction of ``peak`` at step 0, in (0, 1].
        decay: ``"constant"`` (``decay = 1``), ``"step"`` (times
            ``step_factor`` once the step reaches each of ``boundaries``) or
            ``"cosine"`` (half a cosine from 1 at step 0 to ``min_factor`` at
            ``cosine_steps``, ``min_factor`` after).
        boundaries: increasing steps of the ``"step"`` decay.
        step_factor: the multiplier applied at each boundary.
        cosine_steps: length of the ``"cosine"`` decay in steps.
        min_factor: the ``"cosine"`` decay's final fraction of ``peak``.

    The warm-up multiplies the decay (it does not delay it). Returns a float32
    scalar tensor.
    """

    def __init__(self, peak, warmup_steps=0, warmup_factor=0.001, decay="constant",
                 boundaries=(), step_factor=0.1, cosine_steps=None, min_factor=0.0):
        if decay not in LEARNING_RATE_SCHEDULES:
            raise ValueError(f"WarmupDecay: decay must be one of {LEARNING_RATE_SCHEDULES}, "
                             f"got {decay!r}")
        if decay == "cosine" and not (cosine_steps and cosine_steps > 0):
            raise ValueError(f"WarmupDecay: the cosine decay needs cosine_steps > 0, got "
                             f"{cosine_steps!r}")
        self.peak = float(peak)
        self.warmup_steps = int(warmup_steps)
        self.warmup_factor = float(warmup_factor)
        self.decay = decay
        self.boundaries = tuple(int(b) for b in boundaries)
        self.step_factor = float(step_factor)
        self.cosine_steps = None if cosine_steps is None else int(cosine_steps)
        self.min_factor = float(min_factor)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        factor = tf.constant(1.0, tf.float32)
        if self.decay == "step" and self.boundaries:
            passed = tf.reduce_sum(tf.cast(
                step >= tf.constant(self.boundaries, tf.float32), tf.float32))
            factor = tf.pow(tf.constant(self.step_factor, tf.float32), passed)
        elif self.decay == "cosine":
            done = tf.minimum(step / float(self.cosine_steps), 1.0)
            factor = self.min_factor + (1.0 - self.min_factor) * 0.5 * (
                1.0 + tf.cos(math.pi * done))
        if self.warmup_steps > 0:
            alpha = tf.minimum(step / float(self.warmup_steps), 1.0)
            factor = factor * (self.warmup_factor + (1.0 - self.warmup_factor) * alpha)
        return self.peak * factor

    def get_config(self):
        return {"peak": self.peak, "warmup_steps": self.warmup_steps,
                "warmup_factor": self.warmup_factor, "decay": self.decay,
                "boundaries": list(self.boundaries), "step_factor": self.step_factor,
                "cosine_steps": self.cosine_steps, "min_factor": self.min_factor}

    def __repr__(self):
        parts = [f"peak={self.peak:g}"]
        if self.warmup_steps:
            parts.append(f"warm-up {self.warmup_steps} steps from x{self.warmup_factor:g}")
        if self.decay == "step":
            parts.append(f"x{self.step_factor:g} at steps {list(self.boundaries)}")
        elif self.decay == "cosine":
            parts.append(f"cosine to x{self.min_factor:g} at step {self.cosine_steps}")
        return f"WarmupDecay({', '.join(parts)})"


class GlobalStepSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """``schedule(iterations + offset)``: a schedule of the global step, called
    by the optimizer with its own ``iterations``.

    `start_schedule` sets ``offset`` once the optimizer exists (its
    ``iterations`` restored from a checkpoint or 0) and before the first step,
    so that the first step of a ``train()`` call is step
    ``epoch * STEPS_PER_EPOCH``. ``offset`` is a Python int, read when the
    train step is traced (each ``train()`` compiles and traces anew).
    """

    def __init__(self, schedule, offset=0):
        self.schedule = schedule
        self.offset = int(offset)

    def __call__(self, step):
        return self.schedule(tf.cast(step, tf.int64) + self.offset)

    def get_config(self):
        return {"schedule": keras.saving.serialize_keras_object(self.schedule),
                "offset": self.offset}

    @classmethod
    def from_config(cls, config):
        return cls(keras.saving.deserialize_keras_object(config["schedule"]),
                   config.get("offset", 0))

    def __repr__(self):
        return f"{self.schedule!r} of the global step"


def uses_schedule_presets(config):
    """Whether ``config`` asks for a warm-up or a decay (fields not at their defaults)."""
    return config.LEARNING_RATE_SCHEDULE != "constant" or config.WARMUP_STEPS > 0


def schedule_from_config(config, peak):
    """The `WarmupDecay` that ``config``'s presets describe, peaking at ``peak``.

    Epochs become steps through ``STEPS_PER_EPOCH``: ``"step"`` multiplies by
    ``LEARNING_RATE_STEP_FACTOR`` from the first step after each epoch of
    ``LEARNING_RATE_STEP_EPOCHS`` (1-based: ``(11,)`` runs epochs 12 and up at
    the lower rate); ``"cosine"`` reaches ``LEARNING_RATE_COSINE_MIN_FACTOR``
    at the end of epoch ``LEARNING_RATE_COSINE_EPOCHS``.
    """
    steps = int(config.STEPS_PER_EPOCH)
    cosine = config.LEARNING_RATE_COSINE_EPOCHS
    return WarmupDecay(
        peak, warmup_steps=config.WARMUP_STEPS, warmup_factor=config.WARMUP_FACTOR,
        decay=config.LEARNING_RATE_SCHEDULE,
        boundaries=[int(e) * steps for e in config.LEARNING_RATE_STEP_EPOCHS],
        step_factor=config.LEARNING_RATE_STEP_FACTOR,
        cosine_steps=None if cosine is None else int(cosine) * steps,
        min_factor=config.LEARNING_RATE_COSINE_MIN_FACTOR)


def resolve_learning_rate(config, learning_rate):
    """What the optimizer gets for ``train(learning_rate=...)`` (see the module docstring):
    a float, or a `GlobalStepSchedule`. A `GlobalStepSchedule` comes back unchanged.

    Raises:
        ValueError: a negative or non-finite number; a schedule together with
            Config presets (the field is named).
        TypeError: neither a number nor a ``LearningRateSchedule``.
    """
    if isinstance(learning_rate, GlobalStepSchedule):
        return learning_rate
    if isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule):
        if uses_schedule_presets(config):
            field = "LEARNING_RATE_SCHEDULE" if config.LEARNING_RATE_SCHEDULE != "constant" \
                else "WARMUP_STEPS"
            raise ValueError(
                f"learning_rate: a LearningRateSchedule is used as given, but "
                f"{type(config).__name__}.{field}={getattr(config, field)!r} asks for a "
                f"preset too; pass a number (the peak rate) to use the presets, or leave "
                f"LEARNING_RATE_SCHEDULE='constant' and WARMUP_STEPS=0")
        return GlobalStepSchedule(learning_rate)
    if isinstance(learning_rate, (bool, str)) or not (
            isinstance(learning_rate, (int, float)) or hasattr(learning_rate, "__float__")):
        raise TypeError(f"learning_rate: expected a number or a keras.optimizers.schedules."
                        f"LearningRateSchedule, got {type(learning_rate).__name__}: "
                        f"{learning_rate!r}")
    rate = float(learning_rate)
    if not math.isfinite(rate) or rate < 0:
        raise ValueError(f"learning_rate: expected a finite number >= 0, got {learning_rate!r}")
    if not uses_schedule_presets(config):
        return rate
    return GlobalStepSchedule(schedule_from_config(config, rate))


def start_schedule(learning_rate, optimizer, global_step):
    """Make the next step of ``optimizer`` step ``global_step`` of ``learning_rate``
    (a `GlobalStepSchedule`; anything else is left alone). Call it after the
    optimizer state is restored and before training; returns the rate of that
    step (a float), or None for a constant rate."""
    if not isinstance(learning_rate, GlobalStepSchedule):
        return None
    iterations = int(keras.ops.convert_to_numpy(optimizer.iterations))
    learning_rate.offset = int(global_step) - iterations
    return float(keras.ops.convert_to_numpy(learning_rate(iterations)))
