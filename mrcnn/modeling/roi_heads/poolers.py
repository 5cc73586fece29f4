"""PyramidROIAlign: pool each RoI from the FPN level that matches its size.

Level assignment (FPN paper, eq. 1), measured in INPUT-IMAGE PIXELS::

    level = floor(4 + log2(sqrt(w * h) / 224)), clamped to [2, 5]

where ``h`` and ``w`` are the RoI's pixel height and width (y2 - y1 of the pixel
box, see `mrcnn.structures.coords`) in the molded image, whose size ``(H, W)`` is read from
``image_meta`` (``image_shape``). So a 224x224-pixel RoI is pooled from P4,
112x112 from P3, anything under 112 from P2, 448 and over from P5. (The old
implementation measured the size in normalised units relative to
``224 / sqrt(image_area)`` and rounded instead of flooring;
``method="crop_and_resize"`` keeps that legacy rule, see below.)

Methods:

* ``"roi_align"`` (default): true RoIAlign via :func:`mrcnn.ops.roi_align`.
  Legacy-normalised boxes are converted back to their continuous pixel
  coordinates (`mrcnn.structures.coords.roi_align_boxes_graph`: the pixel box
  ``[100, 100, 324, 324)`` reaches the op as exactly that) and pooled with
  ``spatial_scale = 1 / stride`` of the level (strides 4, 8, 16, 32 for
  P2..P5), ``sampling_ratio`` samples per bin per axis, ``aligned``
  half-pixel offsets and ``aggregation`` (``"avg"`` or ``"max"`` of each bin's
  samples).
* ``"crop_and_resize"``: the old behaviour -- ``tf.image.crop_and_resize`` of
  the normalised boxes on each level to ``pool_shape`` (one bilinear sample per
  bin), with the old level rule ``round`` instead of ``floor``; use it with
  weights trained that way.
* ``"roi_pool"`` and ``"roi_warp"``: the quantised poolings of the paper's
  Table 2c (:mod:`mrcnn.ops.quantized`), on the same exact pixel boxes and
  levels as ``"roi_align"``: RoIPool rounds the box to the level's grid and
  takes the max over integer bins; RoIWarp rounds the box, then samples it as
  RoIAlign does (``sampling_ratio``, ``aligned``, ``aggregation``).

The output keeps the input RoI order: ``[B, R, ph, pw, C]``.
"""

import keras
import tensorflow as tf

from mrcnn.constants import LEGACY_POOLING_METHOD, ROI_ALIGN_AGGREGATIONS
from mrcnn.constants import POOLING_METHODS as _POOLING_METHODS
from mrcnn.structures.coords import box_sizes_px_graph, roi_align_boxes_graph
from mrcnn.structures.image_meta import image_hw_graph
from mrcnn.ops import roi_align, roi_pool, roi_warp

__all__ = ["PyramidROIAlign", "roi_levels_graph", "pyramid_roi_align_graph",
           "single_level_roi_align_graph",
           "permute_rows", "POOLING_METHODS"]

POOLING_METHODS = _POOLING_METHODS
LEVELS = (2, 3, 4, 5)


def roi_levels_graph(boxes, image_hw, rounding="floor"):
    """Pyramid level (int32 in 2..5) of each legacy-normalised RoI.

    Args:
        boxes: ``[..., 4]`` legacy-normalised ``(y1, x1, y2, x2)``.
        image_hw: ``[2]`` float ``(H, W)`` of the input image in pixels.
        rounding: ``"floor"`` (FPN paper; the RoIAlign path) measures the RoI's
            size in pixels (`mrcnn.structures.coords.box_sizes_px_graph`); ``"round"`` is
            the old implementation's rule, kept bit-for-bit for the legacy path
            (normalised size times the image size, rounded).

    Returns:
        int32 ``[...]`` levels; degenerate (zero-area) boxes go to level 2. A
        size exactly on a boundary (e.g. 224 px) belongs to the upper level.
    """
    boxes = tf.cast(boxes, tf.float32)
    image_hw = tf.cast(image_hw, tf.float32)
    if rounding == "floor":
        h, w = box_sizes_px_graph(boxes, image_hw)
    else:
        h = (boxes[..., 2] - boxes[..., 0]) * image_hw[0]
        w = (boxes[..., 3] - boxes[..., 1]) * image_hw[1]
    area = tf.maximum(h * w, 1e-6)
    k = 4.0 + tf.math.log(tf.sqrt(area) / 224.0) / tf.math.log(2.0)
    # The 1e-4 nudge makes exact boundaries (224, 112, 448 px) deterministic
    # across devices: a box exactly on a boundary goes to the upper level.
    k = tf.floor(k + 1e-4) if rounding == "floor" else tf.round(k)
    return tf.cast(tf.clip_by_value(k, 2.0, 5.0), tf.int32)


@tf.custom_gradient
def permute_rows(values, permutation, inverse):
    """``values[permutation]`` with a dense gradient.

    Args:
        values: ``[N, ...]``.
        permutation: int ``[N]``, a permutation of ``0..N-1``.
        inverse: its inverse (``inverse[permutation[j]] == j``).

    Returns:
        ``[N, ...]`` rows of ``values`` in the order ``permutation``.

    ``tf.gather``'s gradient is a sparse ``IndexedSlices``; through the
    per-level ``concat`` it becomes one scatter per FPN level, and XLA (auto-
    clustering, ``Config.XLA``) rejects the scatter into an empty level. The
    gradient of a permutation is the inverse permutation of the incoming
    gradient: a plain gather.
    """
    def gradient(upstream):
        return tf.gather(upstream, inverse), None, None

    return tf.gather(values, permutation), gradient


def _pool_level(fmap, boxes, box_indices, image_hw, pool_shape, method, stride,
                sampling_ratio, aligned, aggregation):
    """Pool ``boxes [K, 4]`` (legacy-normalised) of images ``box_indices [K]`` from
    one feature map of pixel stride ``stride``: ``[K, ph, pw, C]``."""
    if method == "crop_and_resize":
        out = tf.image.crop_and_resize(tf.cast(fmap, tf.float32), boxes, box_indices,
                                       pool_shape, method="bilinear")
        return tf.cast(out, fmap.dtype)
    op_boxes = roi_align_boxes_graph(boxes, image_hw)
    if method == "roi_pool":
        return roi_pool(fmap, op_boxes, box_indices, pool_shape, spatial_scale=1.0 / stride)
    pool = roi_align if method == "roi_align" else roi_warp
    return pool(fmap, op_boxes, box_indices, pool_shape, spatial_scale=1.0 / stride,
                sampling_ratio=sampling_ratio, aligned=aligned, aggregation=aggregation)


def single_level_roi_align_graph(boxes, image_meta, feature_map, pool_shape,
                                 method="roi_align", sampling_ratio=2, aligned=True,
                                 stride=16, aggregation="avg"):
    """Pool every RoI from one feature map (the C4 head: C4, stride 16).

    Args: as `pyramid_roi_align_graph`, with one ``feature_map [B, h, w, C]``
        of pixel stride ``stride`` instead of the pyramid (no level rule).

    Returns:
        ``[B, R, ph, pw, C]`` in the dtype of the feature map.
    """
    ph, pw = (int(s) for s in pool_shape)
    boxes = tf.cast(boxes, tf.float32)
    batch, num_rois = tf.shape(boxes)[0], tf.shape(boxes)[1]
    flat_boxes = tf.stop_gradient(tf.reshape(boxes, [-1, 4]))
    flat_batch = tf.reshape(tf.repeat(tf.range(batch), num_rois), [-1])
    out = _pool_level(feature_map, flat_boxes, flat_batch, image_hw_graph(image_meta),
                      (ph, pw), method, stride, sampling_ratio, aligned, aggregation)
    out = tf.reshape(out, tf.concat([[batch, num_rois, ph, pw], tf.shape(out)[3:]], axis=0))
    return tf.ensure_shape(out, [None, None, ph, pw, feature_map.shape[-1]])


def pyramid_roi_align_graph(boxes, image_meta, feature_maps, pool_shape,
                            method="roi_align", sampling_ratio=2, aligned=True,
                            strides=(4, 8, 16, 32), aggregation="avg"):
    """Pool RoIs from P2..P5 (pure TF; the maths of :class:`PyramidROIAlign`).

    Args:
        boxes: ``[B, R, 4]`` normalised RoIs (zero rows are pooled too; their
            output is whatever the level-2 map gives at the origin).
        image_meta: ``[B, META]`` image meta (for the input image size).
        feature_maps: ``[P2, P3, P4, P5]`` each ``[B, h, w, C]``.
        pool_shape: ``(ph, pw)``.
        method: one of `POOLING_METHODS` (see the module docstring).
        sampling_ratio, aligned, aggregation: of ``"roi_align"`` and
            ``"roi_warp"`` (:func:`mrcnn.ops.roi_align`).

    Returns:
        ``[B, R, ph, pw, C]`` in the dtype of the feature maps.
    """
    ph, pw = (int(s) for s in pool_shape)
    boxes = tf.cast(boxes, tf.float32)
    batch = tf.shape(boxes)[0]
    num_rois = tf.shape(boxes)[1]
    image_hw = image_hw_graph(image_meta)
    levels = roi_levels_graph(
        boxes, image_hw, "round" if method == LEGACY_POOLING_METHOD else "floor")   # [B, R]
    flat_boxes = tf.reshape(boxes, [-1, 4])
    flat_levels = tf.reshape(levels, [-1])
    flat_batch = tf.reshape(tf.repeat(tf.range(batch), num_rois), [-1])

    pooled, order = [], []
    for level, fmap, stride in zip(LEVELS, feature_maps, strides):
        ix = tf.where(tf.equal(flat_levels, level))[:, 0]                 # [K]
        level_boxes = tf.stop_gradient(tf.gather(flat_boxes, ix))
        box_indices = tf.stop_gradient(tf.gather(flat_batch, ix))
        out = _pool_level(fmap, level_boxes, box_indices, image_hw, (ph, pw), method, stride,
                          sampling_ratio, aligned, aggregation)
        pooled.append(out)
        order.append(ix)
    pooled = tf.concat(pooled, axis=0)
    order = tf.concat(order, axis=0)
    # Undo the grouping by level: put row order[i] back at position order[i].
    order = tf.cast(order, tf.int32)
    pooled = permute_rows(pooled, tf.argsort(order), order)
    channels = feature_maps[0].shape[-1]
    out = tf.reshape(pooled, tf.concat([[batch, num_rois, ph, pw],
                                        tf.shape(pooled)[3:]], axis=0))
    return tf.ensure_shape(out, [None, None, ph, pw, channels])


@keras.saving.register_keras_serializable(package="mrcnn")
class PyramidROIAlign(keras.layers.Layer):
    """Keras layer around :func:`pyramid_roi_align_graph`.

    Inputs: ``[boxes [B, R, 4] normalised, image_meta [B, META], P2, P3, P4, P5]``,
    or one feature map instead of four with ``strides=(16,)`` (the C4 head:
    `single_level_roi_align_graph`, no level rule).
    Output: ``[B, R, ph, pw, C]`` (RoI order preserved).

    Args:
        pool_shape: ``(ph, pw)`` output size per RoI.
        method: one of `POOLING_METHODS`: ``"roi_align"``, ``"crop_and_resize"``,
            ``"roi_pool"``, ``"roi_warp"`` (see module docstring).
        sampling_ratio, aligned, aggregation: passed to
            :func:`mrcnn.ops.roi_align` (``"roi_align"`` and ``"roi_warp"``;
            ``aggregation`` is ``"avg"`` or ``"max"``).
        strides: pixel strides of the feature maps: ``(4, 8, 16, 32)`` for
            P2..P5, or one stride for one map.
    """

    def __init__(self, pool_shape, method="roi_align", sampling_ratio=2, aligned=True,
                 aggregation="avg", strides=(4, 8, 16, 32), **kwargs):
        # No autocast: boxes and image meta stay float32 under mixed precision;
        # the pooled output takes the feature maps' dtype.
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        # Dynamic shapes (NMS, boolean masks): not XLA-compilable.
        self.supports_jit = False
        if method not in POOLING_METHODS:
            raise ValueError(f"PyramidROIAlign {self.name!r}: method must be one of "
                             f"{POOLING_METHODS}, got {method!r}")
        if aggregation not in ROI_ALIGN_AGGREGATIONS:
            raise ValueError(f"PyramidROIAlign {self.name!r}: aggregation must be one of "
                             f"{ROI_ALIGN_AGGREGATIONS}, got {aggregation!r}")
        self.pool_shape = tuple(int(s) for s in pool_shape)
        self.method = method
        self.sampling_ratio = int(sampling_ratio)
        self.aligned = bool(aligned)
        self.aggregation = aggregation
        self.strides = tuple(int(s) for s in strides)
        if len(self.strides) not in (1, len(LEVELS)):
            raise ValueError(f"PyramidROIAlign {self.name!r}: strides must be 4 (P2..P5) "
                             f"or 1 (one map, C4), got {self.strides}")

    def call(self, inputs):
        boxes, image_meta = inputs[0], inputs[1]
        feature_maps = list(inputs[2:])
        if len(feature_maps) != len(self.strides):
            raise ValueError(f"PyramidROIAlign {self.name!r}: expected "
                             f"{len(self.strides)} feature maps (strides {self.strides}), "
                             f"got {len(feature_maps)}")
        if len(self.strides) == 1:
            return single_level_roi_align_graph(
                boxes, image_meta, feature_maps[0], self.pool_shape, self.method,
                self.sampling_ratio, self.aligned, self.strides[0], self.aggregation)
        return pyramid_roi_align_graph(boxes, image_meta, feature_maps, self.pool_shape,
                                       self.method, self.sampling_ratio, self.aligned,
                                       strides=self.strides, aggregation=self.aggregation)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], input_shape[0][1]) + self.pool_shape + (input_shape[2][-1],)

    def get_config(self):
        config = super().get_config()
        config.update(pool_shape=list(self.pool_shape), method=self.method,
                      sampling_ratio=self.sampling_ratio, aligned=self.aligned,
                      aggregation=self.aggregation, strides=list(self.strides))
        return config
