"""Custom ops: RoIAlign, compiled (C++/CUDA) with a pure-TensorFlow fallback,
and the quantised poolings it replaced (RoIPool, RoIWarp; pure TensorFlow).

    from mrcnn.ops import roi_align
    pooled = roi_align(features, boxes, box_indices, (7, 7), spatial_scale=1 / 4)
    peaks = roi_align(features, boxes, box_indices, (7, 7), spatial_scale=1 / 4,
                      aggregation="max")

``aggregation`` (the paper: "aggregate the result (using max or average)"):
``"avg"`` averages each bin's bilinear samples, ``"max"`` takes their maximum
(per channel; ties go to the first sample in scan order, rows of samples
outer, and the gradient reaches that sample's four bilinear neighbours only).
`roi_pool` and `roi_warp` (:mod:`mrcnn.ops.quantized`) are the quantised
baselines of the paper's Table 2c.

Which implementation runs is chosen once, on first use, by the environment
variable ``MRCNN_ROI_ALIGN_IMPL``:

* unset or ``auto``: the compiled op (built on first use, see
  :mod:`mrcnn.ops.build`); if it cannot be built or loaded, a warning saying why
  is issued once and the pure-TF path (:mod:`mrcnn.ops.roi_align_tf`) is used.
* ``compiled``: the compiled op or a ``RuntimeError`` saying why not.
* ``tf``: the pure-TF path, nothing is compiled.

``MRCNN_OPS_SKIP_BUILD=1`` makes ``auto`` use the pure-TF path without trying
to build (the op tests then skip their compiled half). Build settings
(``MRCNN_OPS_CACHE``, ``MRCNN_OPS_SKIP_CUDA``, ...) are described in
:mod:`mrcnn.ops.build`.

Both implement the same maths (see :mod:`mrcnn.ops.roi_align_tf`) and both give
a gradient w.r.t. ``features`` only; ``boxes`` get no gradient.

A graph that uses the compiled op (e.g. an exported SavedModel) names the op
``MrcnnRoiAlign``; loading such a graph elsewhere needs the library loaded first
(``mrcnn.ops.compiled_roi_align()``), or the model rebuilt with
``MRCNN_ROI_ALIGN_IMPL=tf``.
"""

import os
import threading
import warnings

# How a RoIAlign bin aggregates its samples (`Config.ROI_ALIGN_AGGREGATION`).
from mrcnn.constants import ROI_ALIGN_AGGREGATIONS as AGGREGATIONS

# TensorFlow is imported lazily so that ``python -m mrcnn.ops.build`` (and its
# CUDA compile check) does not pay for it before it needs it.

# The pure-TF function itself: ``from mrcnn.ops.roi_align_tf import roi_align_tf``.
__all__ = ["roi_align", "roi_pool", "roi_warp", "implementation", "fallback_reason",
           "compiled_roi_align", "reset_implementation", "AGGREGATIONS"]

IMPL_ENV = "MRCNN_ROI_ALIGN_IMPL"
IMPL_CHOICES = ("auto", "compiled", "tf")

_lock = threading.Lock()
_chosen = None          # (name, function) once resolved
_fallback_reason = None


def _tf_impl():
    from mrcnn.ops.roi_align_tf import roi_align_tf
    return roi_align_tf


def _requested_impl():
    value = os.environ.get(IMPL_ENV, "auto").strip().lower() or "auto"
    if value not in IMPL_CHOICES:
        raise ValueError(f"{IMPL_ENV}={value!r}: expected one of {IMPL_CHOICES}")
    return value


def compiled_roi_align():
    """Return the compiled op's Python wrapper, building/loading it if needed.

    Raises whatever building or loading raised (``RuntimeError``, ``OSError``,
    ``tf.errors.NotFoundError``...).
    """
    from mrcnn.ops import _compiled
    return _compiled.load()


def _resolve():
    global _chosen, _fallback_reason
    with _lock:
        if _chosen is not None:
            return _chosen
        requested = _requested_impl()
        if requested == "tf":
            _chosen = ("tf", _tf_impl())
        elif requested == "compiled":
            try:
                _chosen = ("compiled", compiled_roi_align())
            except Exception as err:  # noqa: BLE001 - re-raised with context
                raise RuntimeError(f"{IMPL_ENV}=compiled but the compiled RoIAlign op "
                                   f"could not be built or loaded: {err}") from err
        elif os.environ.get("MRCNN_OPS_SKIP_BUILD"):
            _fallback_reason = "MRCNN_OPS_SKIP_BUILD is set"
            _chosen = ("tf", _tf_impl())
        else:
            try:
                _chosen = ("compiled", compiled_roi_align())
            except Exception as err:  # noqa: BLE001 - any failure means fallback
                _fallback_reason = f"{type(err).__name__}: {err}"
                warnings.warn("mrcnn.ops: compiled RoIAlign op unavailable, using the "
                              f"pure-TensorFlow fallback ({_fallback_reason})",
                              RuntimeWarning, stacklevel=3)
                _chosen = ("tf", _tf_impl())
        return _chosen


def implementation():
    """Name of the implementation ``roi_align`` uses: ``"compiled"`` or ``"tf"``."""
    return _resolve()[0]


def fallback_reason():
    """Why the compiled op is not used in ``auto`` mode (``None`` if it is)."""
    _resolve()
    return _fallback_reason


def reset_implementation():
    """Forget the chosen implementation (re-read ``MRCNN_ROI_ALIGN_IMPL``); for tests."""
    global _chosen, _fallback_reason
    with _lock:
        _chosen = None
        _fallback_reason = None


def _check_args(features, boxes, box_indices, output_size, sampling_ratio, aggregation="avg"):
    try:
        pooled = tuple(int(s) for s in output_size)
    except TypeError:
        pooled = ()
    if len(pooled) != 2 or min(pooled) <= 0:
        raise ValueError(f"roi_align: output_size must be two positive ints "
                         f"(pooled_h, pooled_w), got {output_size!r}")
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"roi_align: aggregation must be one of {AGGREGATIONS}, got "
                         f"{aggregation!r}")
    if int(sampling_ratio) != sampling_ratio:
        raise ValueError(f"roi_align: sampling_ratio must be an int, got {sampling_ratio!r}")
    if features.shape.rank is not None and features.shape.rank != 4:
        raise ValueError(f"roi_align: features must be [N, H, W, C], got shape {features.shape}")
    if not (features.dtype.is_floating):
        raise ValueError(f"roi_align: features must be float16/bfloat16/float32/float64, "
                         f"got {features.dtype.name}")
    if boxes.shape.rank is not None and (boxes.shape.rank != 2 or
                                         boxes.shape[1] not in (None, 4)):
        raise ValueError(f"roi_align: boxes must be [K, 4] (y1, x1, y2, x2), got shape "
                         f"{boxes.shape}")
    if box_indices.shape.rank is not None and box_indices.shape.rank != 1:
        raise ValueError(f"roi_align: box_indices must be [K], got shape {box_indices.shape}")
    return pooled


def roi_align(features, boxes, box_indices, output_size, spatial_scale=1.0,
              sampling_ratio=2, aligned=True, aggregation="avg"):
    """RoIAlign: average (or maximum) of bilinear samples in each bin; no quantisation.

    Args:
      features: ``[N, H, W, C]`` (NHWC) float32, float16 or bfloat16 (float64
        too, mainly for gradient checks).
      boxes: ``[K, 4]`` float32 ``(y1, x1, y2, x2)`` in input-image pixels,
        continuous coordinates; multiplied by ``spatial_scale``.
      box_indices: ``[K]`` int32 index into the batch dimension of ``features``;
        an index outside ``[0, N)`` raises ``tf.errors.InvalidArgumentError`` on
        CPU (the compiled GPU kernel, which cannot check cheaply, gives zeros).
      output_size: ``(pooled_h, pooled_w)``.
      spatial_scale: feature-map size / input-image size (e.g. ``1/4`` for P2).
      sampling_ratio: samples per bin along each axis; ``<= 0``: adaptive,
        ``ceil(roi_size / pooled_size)`` per axis.
      aligned: ``True`` shifts box coordinates by -0.5 (pixel centres);
        ``False`` does not, and clamps RoI height/width to at least 1.
      aggregation: ``"avg"`` (the mean of the bin's samples) or ``"max"``
        (their maximum per channel; a sample outside the map counts as 0, a
        bin without samples gives 0; ties: the first sample in scan order,
        sample rows outer, sample columns inner; the gradient goes to the
        four bilinear neighbours of that sample only).

    Returns:
      ``[K, pooled_h, pooled_w, C]`` of ``features.dtype``. Differentiable
      w.r.t. ``features``; no gradient flows to ``boxes``. ``K = 0`` gives an
      empty result (and a zero gradient).
    """
    import tensorflow as tf

    features = tf.convert_to_tensor(features)
    boxes = tf.convert_to_tensor(boxes, dtype=tf.float32)
    box_indices = tf.convert_to_tensor(box_indices)
    if box_indices.dtype != tf.int32:
        box_indices = tf.cast(box_indices, tf.int32)
    pooled = _check_args(features, boxes, box_indices, output_size, sampling_ratio,
                         aggregation)
    _, function = _resolve()
    return function(features, boxes, box_indices, pooled, spatial_scale=float(spatial_scale),
                    sampling_ratio=int(sampling_ratio), aligned=bool(aligned),
                    aggregation=aggregation)


def roi_pool(features, boxes, box_indices, output_size, spatial_scale=1.0):
    """Fast R-CNN's RoIPool (quantised boxes and bins, max); see
    :func:`mrcnn.ops.quantized.roi_pool`."""
    from mrcnn.ops.quantized import roi_pool as function
    return function(features, boxes, box_indices, output_size, spatial_scale=spatial_scale)


def roi_warp(features, boxes, box_indices, output_size, spatial_scale=1.0, sampling_ratio=2,
             aligned=True, aggregation="avg"):
    """RoIWarp (the box quantised to the feature grid, then bilinear sampling as
    `roi_align`); see :func:`mrcnn.ops.quantized.roi_warp`."""
    from mrcnn.ops.quantized import roi_warp as function
    return function(features, boxes, box_indices, output_size, spatial_scale=spatial_scale,
                    sampling_ratio=sampling_ratio, aligned=aligned, aggregation=aggregation)
