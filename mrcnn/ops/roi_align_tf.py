"""RoIAlign in pure TensorFlow: the fallback for the compiled op, same maths.

Semantics (shared with ``custom_ops/roi_align``; those of detectron2's and
torchvision's RoIAlign):

* ``boxes`` are ``(y1, x1, y2, x2)`` in input-image pixels, continuous
  coordinates (a box edge is a position, not a pixel index; nothing is
  rounded). They are multiplied by ``spatial_scale`` to get feature-map
  coordinates, then shifted by ``-0.5`` when ``aligned`` (feature value ``[i, j]``
  sits at the pixel centre ``(i + 0.5, j + 0.5)``).
* With ``aligned=False`` the RoI height and width are clamped to at least 1.
* The RoI is split into ``pooled_h x pooled_w`` equal bins. Each bin averages
  ``grid_h x grid_w`` bilinear samples placed at the centres of a regular
  sub-grid of the bin. ``grid = sampling_ratio`` when ``sampling_ratio > 0``,
  otherwise ``ceil(roi_size / pooled_size)`` per axis and per RoI (adaptive).
  The average divides by ``max(grid_h * grid_w, 1)``.
* A sample with ``y < -1`` or ``y > H`` (or ``x < -1`` or ``x > W``) contributes
  zero; otherwise a negative coordinate is clamped to 0 and a coordinate past
  the last row/column uses that row/column.

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


def roi_align_tf(features, boxes, box_indices, output_size, spatial_scale=1.0,
                 sampling_ratio=2, aligned=True):
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

    Returns:
      ``[K, pooled_h, pooled_w, C]`` tensor of ``features.dtype``.
    """
    pooled_h, pooled_w = (int(s) for s in output_size)
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
    count = tf.cast(count, compute_dtype)
    out = tf.reduce_sum(out, axis=[2, 4]) / count[:, None, None, None]
    del n
    return tf.cast(out, out_dtype) if out_dtype != compute_dtype else out
