"""RoIAlign in pure TensorFlow: the fallback for the compiled op, same maths.

Semantics (shared with ``custom_ops/roi_align``; those of detectron2's and
torchvision's RoIAlign):

* ``boxes`` are ``(y1, x1, y2, x2)`` in input-image pixels, continuous
  coordinates (a box edge is a position, not a pixel index; nothing is
  rounded). They are multiplied by ``spatial_scale`` to get feature-map
  coordinates, then shifted by ``-0.5`` when ``aligned`` (feature value ``[i, j]``
  sits at the pixel centre ``(i + 0.5, j + 0.5)``).
* With ``aligned=False`` the RoI height and width are clamped to at least 1.
* The RoI is split into ``pooled_h x pooled_w`` equal bins. Each bin
  aggregates ``grid_h x grid_w`` bilinear samples placed at the centres of a
  regular sub-grid of the bin. ``grid = sampling_ratio`` when
  ``sampling_ratio > 0``, otherwise ``ceil(roi_size / pooled_size)`` per axis
  and per RoI (adaptive).
* ``aggregation="avg"``: the sum of the samples divided by
  ``max(grid_h * grid_w, 1)``. ``aggregation="max"``: their maximum, per
  channel. Ties go to the first sample in scan order (sample rows outer,
  sample columns inner: sample ``(i, j)`` is number ``i * grid_w + j``), and
  the gradient reaches that sample's four bilinear neighbours only. A bin
  without samples (adaptive grid of an inverted box) gives 0.
* A sample with ``y < -1`` or ``y > H`` (or ``x < -1`` or ``x > W``) has the
  value zero (it still counts in the average, and takes part in the max);
  otherwise a negative coordinate is clamped to 0 and a coordinate past the
  last row/column uses that row/column.

The gradient reaches ``features`` only: ``boxes`` go through ``stop_gradient``
so this path behaves like the compiled op (which has no box gradient).

Implementation: every sample point is computed at once (tensors of shape
``[K, pooled_h * grid_h]`` for rows and ``[K, pooled_w * grid_w]`` for columns;
bilinear weights are separable), then four ``tf.gather`` calls on the
flattened ``[N * H * W, C]`` map fetch the corners. Peak memory is about
``K * pooled_h * grid_h * pooled_w * grid_w * C`` floats per corner. In adaptive
mode the grid is the largest over the RoIs and unused samples are masked out.
"""

import tensorflow as tf

from mrcnn.structures.interpolation_tf import roi_align_taps_graph as bilinear_taps


def sample_coordinates(start, roi_size, pooled, grid, max_grid):
    """Sample positions along one axis, and a mask of the samples that exist.

    Args:
      start: ``[K]`` float32, RoI start on the feature map (after scale/shift).
      roi_size: ``[K]`` float32, RoI extent (after the aligned=False clamp).
      pooled: python int, bins along this axis.
      grid: ``[K]`` int32, samples per bin along this axis for each RoI.
      max_grid: scalar int32, the sub-grid length laid out (``>= max(grid)``).

    Returns:
      ``coords [K, pooled * max_grid]`` float32 ordered bin-major
      (bin ``p``, sample ``i`` at index ``p * max_grid + i``), and
      ``exists [K, pooled * max_grid]`` bool (``i < grid[k]``).
    """
    bin_size = roi_size / float(pooled)                                  # [K]
    grid_f = tf.cast(tf.maximum(grid, 1), tf.float32)                    # [K]
    p = tf.cast(tf.range(pooled), tf.float32)                            # [P]
    i = tf.range(max_grid)                                               # [G]
    i_f = tf.cast(i, tf.float32)
    coords = (start[:, None, None]
              + p[None, :, None] * bin_size[:, None, None]
              + (i_f[None, None, :] + 0.5) * (bin_size / grid_f)[:, None, None])
    exists = tf.broadcast_to(i[None, None, :] < grid[:, None, None], tf.shape(coords))
    k = tf.shape(start)[0]
    return tf.reshape(coords, [k, -1]), tf.reshape(exists, [k, -1])


def first_max(values, exists):
    """Maximum over the second-last axis, its gradient to the first maximum only.

    Args:
      values: ``[..., S, C]`` float.
      exists: ``[..., S]`` bool, the entries taking part (per position, for
        every channel).

    Returns:
      ``[..., C]``: per channel, the largest existing value (0 where no entry
      exists). Of equal values the one with the lowest index wins, and the
      gradient flows to that entry alone (``tf.reduce_max`` would split it
      between ties).
    """
    exists = exists[..., None]                                           # [..., S, 1]
    lowest = tf.constant(float("-inf"), values.dtype)
    masked = tf.where(exists, values, lowest)
    best = tf.reduce_max(masked, axis=-2, keepdims=True)                 # [..., 1, C]
    size = tf.shape(values)[-2]
    position = tf.reshape(tf.range(size), [-1, 1])                       # [S, 1]
    winner = tf.reduce_min(tf.where(exists & (masked >= best), position, size),
                           axis=-2, keepdims=True)                       # [..., 1, C]
    chosen = tf.equal(position, winner)                                  # [..., S, C]
    return tf.reduce_sum(tf.where(chosen, values, tf.zeros_like(values)), axis=-2)


def roi_align_tf(features, boxes, box_indices, output_size, spatial_scale=1.0,
                 sampling_ratio=2, aligned=True, aggregation="avg"):
    """RoIAlign with TensorFlow ops only (differentiable w.r.t. ``features``).

    Args:
      features: ``[N, H, W, C]`` float tensor (float16/bfloat16 are computed in
        float32 and cast back; float64 is computed in float64).
      boxes: ``[K, 4]`` float32 ``(y1, x1, y2, x2)`` in input-image pixels
        (continuous coordinates, multiplied by ``spatial_scale``).
      box_indices: ``[K]`` int32, the image of each box in ``features``.
      output_size: ``(pooled_h, pooled_w)`` python ints.
      spatial_scale: python float, feature-map size / image size.
      sampling_ratio: python int, samples per bin per axis; ``<= 0`` adaptive.
      aligned: python bool, half-pixel shift (see module docstring).
      aggregation: ``"avg"`` or ``"max"`` (see module docstring).

    Returns:
      ``[K, pooled_h, pooled_w, C]`` tensor of ``features.dtype``.
    """
    pooled_h, pooled_w = (int(s) for s in output_size)
    if aggregation not in ("avg", "max"):
        raise ValueError(f"roi_align_tf: aggregation must be 'avg' or 'max', got "
                         f"{aggregation!r}")
    features = tf.convert_to_tensor(features)
    out_dtype = features.dtype
    compute_dtype = tf.float64 if out_dtype == tf.float64 else tf.float32
    feats = tf.cast(features, compute_dtype) if out_dtype != compute_dtype else features
    boxes = tf.stop_gradient(tf.cast(boxes, tf.float32))
    box_indices = tf.cast(box_indices, tf.int32)

    shape = tf.shape(feats)
    n, h, w, c = shape[0], shape[1], shape[2], shape[3]
    k = tf.shape(boxes)[0]
    offset = 0.5 if aligned else 0.0
    scaled = boxes * spatial_scale - offset
    y1, x1, y2, x2 = tf.unstack(scaled, num=4, axis=1)
    roi_h = y2 - y1
    roi_w = x2 - x1
    if not aligned:
        roi_h = tf.maximum(roi_h, 1.0)
        roi_w = tf.maximum(roi_w, 1.0)

    if sampling_ratio > 0:
        grid_h = tf.fill([k], sampling_ratio)
        grid_w = tf.fill([k], sampling_ratio)
        max_gh = max_gw = tf.constant(int(sampling_ratio))
    else:
        # ceil() of a negative size (inverted box) gives no samples at all.
        grid_h = tf.maximum(tf.cast(tf.math.ceil(roi_h / pooled_h), tf.int32), 0)
        grid_w = tf.maximum(tf.cast(tf.math.ceil(roi_w / pooled_w), tf.int32), 0)
        max_gh = tf.maximum(tf.reduce_max(tf.concat([grid_h, [1]], 0)), 1)
        max_gw = tf.maximum(tf.reduce_max(tf.concat([grid_w, [1]], 0)), 1)
    count = tf.cast(tf.maximum(grid_h * grid_w, 1), tf.float32)           # [K]

    ys, y_exists = sample_coordinates(y1, roi_h, pooled_h, grid_h, max_gh)
    xs, x_exists = sample_coordinates(x1, roi_w, pooled_w, grid_w, max_gw)
    y_lo, y_hi, wy_lo, wy_hi = bilinear_taps(ys, y_exists, h)            # [K, Sy]
    x_lo, x_hi, wx_lo, wx_hi = bilinear_taps(xs, x_exists, w)            # [K, Sx]

    flat = tf.reshape(feats, [-1, c])                                    # [N*H*W, C]
    row_base = (box_indices[:, None] * h)                                # [K, 1]
    out = None
    for yi, wy in ((y_lo, wy_lo), (y_hi, wy_hi)):
        rows = (row_base + yi) * w                                       # [K, Sy]
        for xi, wx in ((x_lo, wx_lo), (x_hi, wx_hi)):
            index = rows[:, :, None] + xi[:, None, :]                    # [K, Sy, Sx]
            weight = tf.cast(wy[:, :, None] * wx[:, None, :], compute_dtype)
            term = tf.gather(flat, index) * weight[..., None]            # [K, Sy, Sx, C]
            out = term if out is None else out + term

    out = tf.reshape(out, [k, pooled_h, max_gh, pooled_w, max_gw, c])
    if aggregation == "max":
        # [K, ph, pw, gh * gw, C], sample (i, j) of a bin at i * gw + j (scan order).
        samples = tf.reshape(tf.transpose(out, [0, 1, 3, 2, 4, 5]),
                             [k, pooled_h, pooled_w, max_gh * max_gw, c])
        exists = (tf.reshape(y_exists, [k, pooled_h, max_gh, 1, 1])
                  & tf.reshape(x_exists, [k, 1, 1, pooled_w, max_gw]))
        exists = tf.reshape(tf.transpose(exists, [0, 1, 3, 2, 4]),
                            [k, pooled_h, pooled_w, max_gh * max_gw])
        out = first_max(samples, exists)
    else:
        count = tf.cast(count, compute_dtype)
        out = tf.reduce_sum(out, axis=[2, 4]) / count[:, None, None, None]
    del n
    return tf.cast(out, out_dtype) if out_dtype != compute_dtype else out
