"""Frozen batch norm folded into the convolution before it.

A batch-norm layer in inference mode is an affine map per output channel:
``y = (x - mean) * s + beta`` with ``s = gamma / sqrt(moving_var + eps)``. After
a convolution ``x = conv(u, K) + b`` it equals one convolution with

    K' = K * s                   (s broadcast over the kernel's last axis, the
                                  output channels; grouped kernels too)
    b' = (b - mean) * s + beta   (b = 0 for a convolution without bias)

so the graphs can skip the normalisation pass over every feature map
(`Config.FOLD_BATCH_NORM`, on by default).

How: the builders create each convolution that feeds a `BatchNorm` as a
`FoldableConv2D` and join the two with `conv_bn`. `set_batch_norm_folding`
(called by `mrcnn.modeling.assembly`'s graph builders) switches the pairs
of a built model on: the convolution then computes ``K'`` and ``b'`` inside the
graph from its own and the batch norm's variables on every call (elementwise
work on the kernels only, negligible next to the convolution), and the batch
norm passes its input through. There is still one set of variables, with the
layer names and shapes of the released weights: `load_weights`, `set_weights`,
`get_weights`, `save_weights` and checkpoints see (and write) the unfolded
kernels, biases and statistics, and a weight change takes effect at the next
call. In the training graph the gradients of the kernel, bias, ``gamma`` and
``beta`` flow through ``K'`` and ``b'`` (the same maths as through the separate
layers; tested), which removes the batch norm's forward and backward passes
over the activations (0.88-0.97x the float32 step at 1024 px, best of alternated
runs; the bf16 step 0.81x in one run). A batch norm
that trains on batch statistics never folds.

A pair folds only while its batch norm runs in inference mode
(`BatchNorm.runs_in_inference_mode`: ``train_bn`` False, or None under
``training=False``, or a non-trainable layer), decided when the graph is traced.

What changes: the float rounding (one rounding of ``K * s`` instead of one of
``conv * s``; outputs agree within float32 rounding, ``tests/modeling/
test_folding.py``), and an intermediate output read with ``run_graph``: the
output of a folded convolution layer is already normalised (its batch norm's
output is unchanged). Under a mixed-precision policy the folded kernel is
computed in float32 from the kernel as the policy reads it and cast back to the
compute dtype (one more rounding to bfloat16 / float16).

The legacy pooling (``ROI_POOLING_METHOD = "crop_and_resize"``, the released
weights' path) folds too: it is the original's algorithm, not its float
rounding. One place there is sensitive to the last bit of a box:
``tf.image.crop_and_resize`` samples a RoI that reaches the image's right or
bottom edge (x2 or y2 = 1) at ``W - 1`` or, by rounding, just past it, where it
returns 0; so that RoI's pooled features, box and mask can jump with any change
of rounding upstream. The unfolded graph does the same between oneDNN on and off
(``TF_ENABLE_ONEDNN_OPTS``), measured on one model: its box deltas moved as much
as folding moves them. Bit-exact agreement with the original implementation is
therefore not a property either graph has; ``FOLD_BATCH_NORM = False`` keeps
the unfolded rounding.
"""

import weakref

import keras
from keras import layers, ops

__all__ = ["FoldableConv2D", "conv_bn", "set_batch_norm_folding", "folded_kernel_and_bias",
           "foldable_pairs"]


def folded_kernel_and_bias(conv, batch_norm):
    """Float32 ``(K', b')`` of ``conv`` followed by ``batch_norm`` in inference mode.

    Args:
        conv: a built ``Conv2D`` (kernel ``[kh, kw, in / groups, out]``, channels last).
        batch_norm: a built ``BatchNormalization`` over the last axis (``out`` channels).

    Returns:
        ``kernel [kh, kw, in / groups, out]`` and ``bias [out]``, tensors.
    """
    scale = ops.rsqrt(ops.cast(batch_norm.moving_variance, "float32") + batch_norm.epsilon)
    if batch_norm.scale:
        scale = scale * ops.cast(batch_norm.gamma, "float32")
    bias = -ops.cast(batch_norm.moving_mean, "float32")
    if conv.use_bias:
        bias = bias + ops.cast(conv.bias, "float32")
    bias = bias * scale
    if batch_norm.center:
        bias = bias + ops.cast(batch_norm.beta, "float32")
    kernel = ops.cast(conv.kernel, "float32") * scale
    return kernel, bias


@keras.saving.register_keras_serializable(package="mrcnn")
class FoldableConv2D(layers.Conv2D):
    """``keras.layers.Conv2D`` that can apply the batch norm after it (see the module).

    Without a pair switched on (`set_batch_norm_folding`) it is exactly
    ``Conv2D``: same weights, names, shapes and outputs.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._fold_state = _FoldState()

    @property
    def folded_batch_norm(self):
        """The paired batch norm when folding is switched on, else None."""
        state = self._fold_state
        return state.batch_norm() if state.enabled and state.batch_norm else None

    def call(self, inputs, training=None):
        batch_norm = self.folded_batch_norm
        if batch_norm is None or not batch_norm.runs_in_inference_mode(training):
            return super().call(inputs)
        kernel, bias = folded_kernel_and_bias(self, batch_norm)
        kernel = ops.cast(kernel, self.compute_dtype)
        outputs = self.convolution_op(inputs, kernel)
        outputs = ops.add(outputs, ops.cast(ops.reshape(bias, (1, 1, 1, self.filters)),
                                            outputs.dtype))
        if self.activation is not None:
            return self.activation(outputs)
        return outputs


class _FoldState:
    """A pair's link and switch, kept outside Keras' attribute tracking (a layer
    stored as an attribute of another would add its weights to the other's)."""

    def __init__(self):
        self.batch_norm = None  # weakref to the paired BatchNorm
        self.enabled = False


def conv_bn(x, conv, batch_norm):
    """``batch_norm(conv(x))``, recording the two layers as a foldable pair.

    Args:
        x: Keras tensor ``[B, H, W, C]``.
        conv: a `FoldableConv2D` (channels last, no activation: a ReLU after the
            batch norm is a layer of its own).
        batch_norm: a `mrcnn.modeling.backbone.BatchNorm` over the last axis,
            applied to this convolution's output only.

    Returns:
        the batch norm's output tensor.
    """
    if not isinstance(conv, FoldableConv2D):
        raise TypeError(f"conv_bn: {conv.name!r} must be a FoldableConv2D, got "
                        f"{type(conv).__name__}")
    if conv.activation is not keras.activations.linear or conv.data_format != "channels_last":
        raise ValueError(f"conv_bn: {conv.name!r} must be channels_last without an "
                         "activation to fold its batch norm")
    if tuple(batch_norm.axis if isinstance(batch_norm.axis, (list, tuple))
             else [batch_norm.axis]) not in ((-1,), (3,)):
        raise ValueError(f"conv_bn: {batch_norm.name!r} must normalise the last axis, got "
                         f"axis={batch_norm.axis!r}")
    if conv._fold_state.batch_norm is not None:
        raise ValueError(f"conv_bn: {conv.name!r} is already paired with a batch norm")
    y = batch_norm(conv(x))
    conv._fold_state.batch_norm = weakref.ref(batch_norm)
    batch_norm.mrcnn_fold_source = conv.name
    return y


def _layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _layers(layer)


def foldable_pairs(model):
    """``[(conv, batch_norm)]`` of every `conv_bn` pair in ``model`` (nested models
    included), whether switched on or not."""
    pairs = []
    for layer in _layers(model):
        if isinstance(layer, FoldableConv2D) and layer._fold_state.batch_norm is not None:
            batch_norm = layer._fold_state.batch_norm()
            if batch_norm is not None:
                pairs.append((layer, batch_norm))
    return pairs


def set_batch_norm_folding(model, enabled):
    """Switch the folding of every pair of ``model`` on or off.

    Takes effect when the graph is next traced: a `mrcnn.model.MaskRCNN` must
    drop its traced detect functions (``_predict_functions.clear()``).

    Returns:
        the number of pairs whose batch norm is frozen (``train_bn`` not True),
        i.e. that fold at inference when ``enabled``.
    """
    count = 0
    for conv, batch_norm in foldable_pairs(model):
        conv._fold_state.enabled = bool(enabled)
        batch_norm.mrcnn_folded = bool(enabled)
        count += batch_norm.train_bn is not True
    return count
