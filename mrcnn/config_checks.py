"""Rules of `mrcnn.config.Config` for two groups of settings: the C4 head's
defaults and checks, and the learning-rate schedule's checks.

`Config.__init__` / `Config.validate` call these; ``fail(field, message)``
raises the ValueError naming the field. No TensorFlow here.
"""

import copy
import math

import numpy as np

from mrcnn.constants import LEARNING_RATE_SCHEDULES

__all__ = ["C4_DEFAULTS", "apply_c4_defaults", "validate_c4", "validate_schedule"]

# The paper's C4 settings (Figure 4 left, Section 3.1): taken with
# HEAD_ARCHITECTURE = "c4" by every setting below that a subclass does not set.
C4_DEFAULTS = {
    "BACKBONE_STRIDES": [16],        # one level: C4
    "POOL_SIZE": 14,                 # RoIAlign 14x14 on C4; res5 (stride 2) -> 7x7
    "MASK_POOL_SIZE": 14,            # the mask branch shares the box head's res5 features
    "MASK_SHAPE": [14, 14],          # 7x7 res5 output, 2x deconvolution
    "TRAIN_ROIS_PER_IMAGE": 64,      # sampled RoIs per image
    "POST_NMS_ROIS_INFERENCE": 300,  # proposals at test time
}


def _set_by_subclass(config, name):
    """Whether ``name`` is set on the instance or by a class below the base `Config`."""
    if name in vars(config):
        return True
    for cls in type(config).__mro__:
        if cls.__module__ == "mrcnn.config" and cls.__name__ == "Config":
            return False
        if name in vars(cls):
            return True
    return False


def apply_c4_defaults(config):
    """With ``HEAD_ARCHITECTURE = "c4"``, give `C4_DEFAULTS` to the settings the
    config's own classes do not set (on the instance; the classes are unchanged)."""
    if config.HEAD_ARCHITECTURE != "c4":
        return
    for name, value in C4_DEFAULTS.items():
        if not _set_by_subclass(config, name):
            setattr(config, name, copy.deepcopy(value))


def validate_c4(config, fail):
    """The C4 head's settings (`Config.HEAD_ARCHITECTURE = "c4"`)."""
    if callable(config.BACKBONE):
        fail("HEAD_ARCHITECTURE", "'c4' uses the named backbone's res5 stage as its "
             "head; a callable BACKBONE has none: use a named BACKBONE or 'fpn'")
    if [int(s) for s in config.BACKBONE_STRIDES] != [16]:
        fail("BACKBONE_STRIDES", f"'c4' has one level, C4 at stride 16: expected [16], "
             f"got {list(config.BACKBONE_STRIDES)}")
    if len(config.RPN_ANCHOR_SCALES) < 1:
        fail("RPN_ANCHOR_SCALES", "expected at least one scale")
    if config.POOL_SIZE % 2:
        fail("POOL_SIZE", f"'c4' pools POOL_SIZE x POOL_SIZE and res5 halves it: "
             f"expected an even size, got {config.POOL_SIZE}")
    if list(config.MASK_SHAPE) != [config.POOL_SIZE] * 2:
        fail("MASK_SHAPE", f"'c4' masks are the res5 output (POOL_SIZE / 2) upsampled "
             f"x2, so expected {[config.POOL_SIZE] * 2}, got {list(config.MASK_SHAPE)}")


def validate_schedule(config, fail):
    """The learning-rate schedule fields (see `Config.LEARNING_RATE_SCHEDULE`)."""
    def number(field, low, high, low_open):
        v = getattr(config, field)
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) \
                or not math.isfinite(v) or v > high or v < low or (low_open and v == low):
            fail(field, f"expected a number in {'(' if low_open else '['}{low}, {high}], "
                 f"got {v!r}")

    def count(field, minimum):
        v = getattr(config, field)
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
            fail(field, f"expected an integer >= {minimum}, got {v!r}")

    kind = config.LEARNING_RATE_SCHEDULE
    if kind not in LEARNING_RATE_SCHEDULES:
        fail("LEARNING_RATE_SCHEDULE", f"expected one of {LEARNING_RATE_SCHEDULES}, "
             f"got {kind!r}")
    count("WARMUP_STEPS", 0)
    number("WARMUP_FACTOR", 0, 1, low_open=True)
    number("LEARNING_RATE_STEP_FACTOR", 0, 1, low_open=True)
    number("LEARNING_RATE_COSINE_MIN_FACTOR", 0, 1, low_open=False)
    epochs = config.LEARNING_RATE_STEP_EPOCHS
    if not isinstance(epochs, (tuple, list)) or any(
            isinstance(e, bool) or not isinstance(e, (int, np.integer)) or e < 1
            for e in epochs) or list(epochs) != sorted(set(epochs)):
        fail("LEARNING_RATE_STEP_EPOCHS", f"expected increasing epoch numbers >= 1 "
             f"(a tuple, e.g. (8, 11)), got {epochs!r}")
    if kind == "step" and not epochs:
        fail("LEARNING_RATE_STEP_EPOCHS", "LEARNING_RATE_SCHEDULE='step' needs at least "
             "one epoch after which the rate drops, e.g. (11,)")
    cosine = config.LEARNING_RATE_COSINE_EPOCHS
    if cosine is not None or kind == "cosine":
        if isinstance(cosine, bool) or not isinstance(cosine, (int, np.integer)) \
                or cosine < 1:
            fail("LEARNING_RATE_COSINE_EPOCHS", f"expected a positive number of epochs"
                 f"{' (LEARNING_RATE_SCHEDULE=cosine needs one)' if kind == 'cosine' else ''}"
                 f", got {cosine!r}")
