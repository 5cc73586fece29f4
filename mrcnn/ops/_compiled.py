"""Loader and Python wrapper of the compiled RoIAlign op (``custom_ops/roi_align``).

:func:`load` builds the shared library if the cache has none (see
:mod:`mrcnn.ops.build`), loads it with ``tf.load_op_library`` and returns
:func:`roi_align_compiled`. The gradient of ``MrcnnRoiAlign`` is registered
here: it calls ``MrcnnRoiAlignGrad`` (``aggregation="avg"``) or
``MrcnnRoiAlignMaxGrad`` (``"max"``, which recomputes each bin's winning sample
from the features) for ``features`` and returns ``None`` for ``boxes`` and
``box_indices`` (no gradient w.r.t. boxes, by design: detection heads treat
proposals as constants). A graph saved before the ``aggregation`` attribute
existed loads with its default, ``"avg"``.

dtypes: the forward op runs float32, float64, float16 and bfloat16 natively
(16-bit types accumulate in float32). The grad ops are float32/float64; for
16-bit features the incoming gradient (and, for max, the features: exact in
float32, so the same samples win) is cast to float32 and the result back.

Determinism: the CPU grad kernel gives each output element to one thread (no
atomics), so it is deterministic. The CUDA grad kernel accumulates with
atomicAdd, whose order varies from run to run. With TensorFlow's op
determinism enabled (``Config.DETERMINISTIC``,
``tf.config.experimental.enable_op_determinism()``) and the op on a GPU, the
gradient is therefore computed with the pure-TF implementation instead
(:func:`mrcnn.ops.roi_align_tf.roi_align_tf`: the same maths, backpropagated
through ``tf.gather``, whose GPU gradient TensorFlow makes deterministic in
that mode); the forward pass stays compiled.
"""

import os
import threading

import tensorflow as tf

_lock = threading.Lock()
_library = None
_library_path = None


def load():
    """Build (if needed) and load the op library; return the wrapper function."""
    global _library, _library_path
    with _lock:
        if _library is None:
            from mrcnn.ops import build
            path = build.ensure_built()
            _library = tf.load_op_library(str(path))
            _library_path = path
    return roi_align_compiled


def library_path():
    """Path of the loaded shared library, or ``None`` before :func:`load`."""
    return _library_path


def _attrs(output_size, spatial_scale, sampling_ratio, aligned):
    return dict(pooled_height=int(output_size[0]), pooled_width=int(output_size[1]),
                spatial_scale=float(spatial_scale), sampling_ratio=int(sampling_ratio),
                aligned=bool(aligned))


def roi_align_compiled(features, boxes, box_indices, output_size, spatial_scale=1.0,
                       sampling_ratio=2, aligned=True, aggregation="avg"):
    """RoIAlign via the compiled op; same arguments as :func:`mrcnn.ops.roi_align`."""
    if _library is None:
        load()
    return _library.mrcnn_roi_align(
        features, tf.cast(boxes, tf.float32), tf.cast(box_indices, tf.int32),
        aggregation=str(aggregation),
        **_attrs(output_size, spatial_scale, sampling_ratio, aligned))


def _aggregation_of(op):
    """The ``aggregation`` attribute of an ``MrcnnRoiAlign`` op (``"avg"`` where a
    graph predates it)."""
    try:
        value = op.get_attr("aggregation")
    except ValueError:
        return "avg"
    return value.decode() if isinstance(value, bytes) else str(value)


def op_determinism_enabled():
    """Whether ``tf.config.experimental.enable_op_determinism()`` was called.

    TensorFlow exposes the flag only privately; if that moves, the older
    ``TF_DETERMINISTIC_OPS`` environment variable is read instead.
    """
    try:
        from tensorflow.python.framework import config as tf_config
        return bool(tf_config.is_op_determinism_enabled())
    except (ImportError, AttributeError):
        return os.environ.get("TF_DETERMINISTIC_OPS", "").strip().lower() in ("1", "true")


def needs_deterministic_gradient(features):
    """Whether the gradient w.r.t. ``features`` must avoid the CUDA grad kernel:
    op determinism is on and the op runs on a GPU (its placement, or, when the
    graph does not say, whether TensorFlow sees a GPU: ops go there first)."""
    if not op_determinism_enabled():
        return False
    device = (getattr(features, "device", "") or "").upper()
    if device:
        return ":GPU:" in device or device.startswith("GPU")
    return bool(tf.config.list_logical_devices("GPU"))


def deterministic_gradient(features, boxes, box_indices, grad, **attrs):
    """Gradient of RoIAlign w.r.t. ``features`` through the pure-TF maths.

    ``attrs``: the op's attributes (pooled_height, pooled_width,
    spatial_scale, sampling_ratio, aligned, optionally aggregation). Returns a
    dense tensor of ``features.dtype`` and shape.
    """
    from mrcnn.ops.roi_align_tf import roi_align_tf

    with tf.GradientTape() as tape:
        tape.watch(features)
        pooled = roi_align_tf(features, boxes, box_indices,
                              (attrs["pooled_height"], attrs["pooled_width"]),
                              spatial_scale=attrs["spatial_scale"],
                              sampling_ratio=attrs["sampling_ratio"],
                              aligned=attrs["aligned"],
                              aggregation=attrs.get("aggregation", "avg"))
    result = tape.gradient(pooled, features, output_gradients=tf.cast(grad, pooled.dtype))
    return tf.convert_to_tensor(result)


@tf.RegisterGradient("MrcnnRoiAlign")
def _roi_align_grad(op, grad):
    features = op.inputs[0]
    grad_dtype = tf.float64 if features.dtype == tf.float64 else tf.float32
    attrs = dict(pooled_height=op.get_attr("pooled_height"),
                 pooled_width=op.get_attr("pooled_width"),
                 spatial_scale=op.get_attr("spatial_scale"),
                 sampling_ratio=op.get_attr("sampling_ratio"),
                 aligned=op.get_attr("aligned"))
    aggregation = _aggregation_of(op)
    if needs_deterministic_gradient(features):
        grad_features = deterministic_gradient(features, op.inputs[1], op.inputs[2], grad,
                                               aggregation=aggregation, **attrs)
        return [tf.cast(grad_features, features.dtype), None, None]
    if aggregation == "max":
        grad_features = _library.mrcnn_roi_align_max_grad(
            tf.cast(grad, grad_dtype), tf.cast(features, grad_dtype), op.inputs[1],
            op.inputs[2], **attrs)
    else:
        grad_features = _library.mrcnn_roi_align_grad(
            tf.cast(grad, grad_dtype), op.inputs[1], op.inputs[2],
            tf.shape(features, out_type=tf.int32), **attrs)
    return [tf.cast(grad_features, features.dtype), None, None]
