"""Mixed precision: the Keras dtype policy a Mask R-CNN graph is built under,
and loss scaling for its optimizer.

``Config.MIXED_PRECISION`` picks the policy:

* ``None`` (or ``"float32"``): everything in float32.
* ``"mixed_float16"``: convolutions, dense layers and activations compute in
  float16, variables stay float32; the optimizer is wrapped in
  ``keras.optimizers.LossScaleOptimizer`` (dynamic loss scaling: the loss is
  multiplied by a scale before the gradients are taken, the gradients are
  divided by it, and a step whose gradients overflow is skipped and halves
  the scale). For GPUs with float16 tensor cores.
* ``"mixed_bfloat16"``: the same with bfloat16, which has float32's exponent
  range, so no loss scaling. For TPUs, Ampere and newer GPUs, and CPUs with
  AVX512_BF16 / AMX.

What stays float32 under either policy (numerical safety): the image and box
inputs, anchors, proposals and their NMS (`ProposalLayer`), RoI sampling and
targets (`DetectionTargetLayer`), RoIAlign's sampling coordinates (the pooled
values take the feature maps' dtype; `mrcnn.ops.roi_align` accumulates in
float32), the refinement and NMS of detections (`DetectionLayer`), the class
softmax, the mask sigmoid, and every loss plus the weight decay (their
inputs are cast to float32 first, see `mrcnn.modeling.losses`).

The policy is applied only while the graph is built (`dtype_policy`): each
layer keeps the policy it was created with, and Keras' process-wide default
is restored afterwards, so a float32 model and a mixed one can live side by
side.
"""

import contextlib

import keras

__all__ = ["POLICIES", "policy_name", "dtype_policy", "wrap_optimizer", "uses_loss_scaling"]

POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")


def policy_name(mixed_precision):
    """``Config.MIXED_PRECISION`` value -> a Keras policy name from `POLICIES`.

    ``None``/``False``/``"float32"`` give ``"float32"``; anything else not in
    `POLICIES` raises ValueError naming the field.
    """
    if mixed_precision in (None, False, "float32"):
        return "float32"
    if mixed_precision not in POLICIES:
        raise ValueError(f"Config.MIXED_PRECISION: expected None, 'mixed_float16' or "
                         f"'mixed_bfloat16', got {mixed_precision!r}")
    return mixed_precision


@contextlib.contextmanager
def dtype_policy(name):
    """Make ``name`` Keras' default dtype policy inside the ``with`` block only."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def uses_loss_scaling(name):
    """Whether the policy ``name`` needs loss scaling (float16's narrow exponent)."""
    return name == "mixed_float16"


def wrap_optimizer(optimizer, name):
    """``optimizer`` wrapped in a dynamic ``LossScaleOptimizer`` under
    ``mixed_float16``; returned unchanged for the other policies."""
    if uses_loss_scaling(name):
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer
