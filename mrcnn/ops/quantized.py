"""RoIPool and RoIWarp: the quantised poolings RoIAlign replaced (the paper's Table 2c).

Pure TensorFlow graph ops (gradients through TF autodiff, to ``features``
only; ``boxes`` are constants, as for `mrcnn.ops.roi_align`). Boxes are
``(y1, x1, y2, x2)`` in input-image pixels, continuous coordinates (pixel ``i``
covers ``[i, i + 1)``; a pixel box's y2/x2 are exclusive), multiplied by
``spatial_scale`` to reach the feature map, whose cell ``i`` covers ``[i, i + 1)``.

Quantisation (`quantize_boxes_graph`): each scaled edge is rounded to the
nearest cell boundary, halves up (``floor(v + 0.5)``, Fast R-CNN's ``round``
of positive coordinates), and the box keeps at least one cell: cells
``[round(y1 s), max(round(y2 s), round(y1 s) + 1))`` (same for x). Unlike Fast
R-CNN's Caffe layer, whose boxes are inclusive pixel indices
(``round(x2 s) - round(x1 s) + 1`` cells), the end is exclusive here, as
everywhere in the package.

* `roi_pool` (Fast R-CNN's RoIPool): the quantised box of ``h x w`` cells is
  split into ``pooled_h x pooled_w`` bins with integer boundaries: bin ``p``
  covers rows ``[y1q + floor(p h / ph), y1q + ceil((p + 1) h / ph))``
  (computed in integers, exact), clipped to the map; the output is the
  maximum over the bin's cells, 0 for a bin left empty by the clipping. Ties:
  the first cell in scan order (rows outer) gets the gradient, as Caffe's
  argmax does (the same rule as RoIAlign's max aggregation).
* `roi_warp` (the RoIWarp of the paper's Table 2c, from Dai et al.'s MNC):
  the quantised box, then `mrcnn.ops.roi_align` on it (bilinear samples
  aggregated by average or max, with the same ``sampling_ratio`` and
  ``aligned``): the only difference from RoIAlign is the rounding of the box.
"""

import tensorflow as tf

__all__ = ["quantize_boxes_graph", "roi_pool", "roi_warp"]


def quantize_boxes_graph(boxes, spatial_scale=1.0):
    """Boxes rounded to the feature grid (see the module docstring).

    Args:
        boxes: ``[K, 4]`` float ``(y1, x1, y2, x2)`` input-image pixels.
        spatial_scale: python float, feature-map size / image size.

    Returns:
        int32 ``[K, 4]`` ``(y1, x1, y2, x2)`` cell boundaries on the feature
        map, y2/x2 exclusive, ``y2 >= y1 + 1`` and ``x2 >= x1 + 1``.
    """
    scaled = tf.cast(boxes, tf.float32) * float(spatial_scale)
    rounded = tf.cast(tf.floor(scaled + 0.5), tf.int32)
    y1, x1, y2, x2 = tf.unstack(rounded, num=4, axis=1)
    return tf.stack([y1, x1, tf.maximum(y2, y1 + 1), tf.maximum(x2, x1 + 1)], axis=1)


def _bin_bounds(start, length, pooled, size):
    """First and one-past-last cell of every bin along one axis.

    Args:
        start, length: int32 ``[K]``, the quantised box's first cell and its
            number of cells (>= 1).
        pooled: python int, bins along the axis.
        size: scalar int32, the map's length along the axis.

    Returns:
        ``lo, hi`` int32 ``[K, pooled]`` clipped into ``[0, size]``: bin ``p``
        covers cells ``[lo, hi)`` (empty when ``hi <= lo``), with
        ``lo = start + floor(p * length / pooled)`` and
        ``hi = start + ceil((p + 1) * length / pooled)`` in integer arithmetic.
    """
    p = tf.range(pooled)[None, :]                                         # [1, P]
    lo = start[:, None] + tf.math.floordiv(p * length[:, None], pooled)
    hi = start[:, None] - tf.math.floordiv(-(p + 1) * length[:, None], pooled)
    return tf.clip_by_value(lo, 0, size), tf.clip_by_value(hi, 0, size)


def roi_pool(features, boxes, box_indices, output_size, spatial_scale=1.0):
    """Fast R-CNN's RoIPool: quantised box, integer bins, max over each bin's cells.

    Args:
        features: ``[N, H, W, C]`` float (16-bit types computed in float32).
        boxes: ``[K, 4]`` float32 ``(y1, x1, y2, x2)`` input-image pixels.
        box_indices: ``[K]`` int32, the image of each box.
        output_size: ``(pooled_h, pooled_w)``.
        spatial_scale: python float, feature-map size / image size.

    Returns:
        ``[K, pooled_h, pooled_w, C]`` of ``features.dtype``; a bin outside
        the map gives 0. Differentiable w.r.t. ``features`` (the gradient of a
        bin goes to its first maximal cell).

    Implementation: a loop over the cell offsets ``(i, j)`` of the largest bin
    finds, per output element, the flat index of its first maximal cell
    (without gradient; each step gathers one ``[K, ph, pw, C]`` slice, so
    memory does not grow with the bins' size); one final gather of those cells
    gives the output and, through its gradient, routes each bin's gradient to
    its winning cell.
    """
    pooled_h, pooled_w = (int(s) for s in output_size)
    features = tf.convert_to_tensor(features)
    out_dtype = features.dtype
    compute_dtype = tf.float64 if out_dtype == tf.float64 else tf.float32
    feats = tf.cast(features, compute_dtype) if out_dtype != compute_dtype else features
    cells = tf.stop_gradient(quantize_boxes_graph(boxes, spatial_scale))
    box_indices = tf.cast(box_indices, tf.int32)
    shape = tf.shape(feats)
    h, w, c = shape[1], shape[2], shape[3]
    k = tf.shape(cells)[0]
    y1, x1, y2, x2 = tf.unstack(cells, num=4, axis=1)
    row_lo, row_hi = _bin_bounds(y1, y2 - y1, pooled_h, h)               # [K, ph]
    col_lo, col_hi = _bin_bounds(x1, x2 - x1, pooled_w, w)               # [K, pw]
    longest_h = tf.maximum(tf.reduce_max(tf.concat([tf.reshape(row_hi - row_lo, [-1]), [1]],
                                                   0)), 1)
    longest_w = tf.maximum(tf.reduce_max(tf.concat([tf.reshape(col_hi - col_lo, [-1]), [1]],
                                                   0)), 1)
    flat = tf.reshape(feats, [-1, c])                                     # [N*H*W, C]
    search = tf.stop_gradient(flat)
    last_row = tf.maximum(h - 1, 0)
    last_col = tf.maximum(w - 1, 0)

    def step(t, best, winner):
        i, j = t // longest_w, t % longest_w
        rows = row_lo + i                                                 # [K, ph]
        cols = col_lo + j                                                 # [K, pw]
        inside = (rows < row_hi)[:, :, None] & (cols < col_hi)[:, None, :]   # [K, ph, pw]
        rows = tf.minimum(rows, last_row)
        cols = tf.minimum(cols, last_col)
        index = ((box_indices[:, None] * h + rows) * w)[:, :, None] + cols[:, None, :]
        values = tf.gather(search, index)                                 # [K, ph, pw, C]
        better = inside[..., None] & (values > best)                      # strict: first wins
        return (t + 1, tf.where(better, values, best),
                tf.where(better, tf.broadcast_to(index[..., None], tf.shape(winner)), winner))

    best = tf.fill([k, pooled_h, pooled_w, c], tf.constant(float("-inf"), compute_dtype))
    winner = tf.fill([k, pooled_h, pooled_w, c], -1)
    _, _, winner = tf.while_loop(lambda t, *_: t < longest_h * longest_w, step,
                                 (tf.constant(0), best, winner),
                                 parallel_iterations=1, back_prop=False)
    winner = tf.stop_gradient(winner)
    found = winner >= 0
    channel = tf.broadcast_to(tf.range(c), tf.shape(winner))
    picked = tf.gather(tf.reshape(flat, [-1]), tf.maximum(winner, 0) * c + channel)
    out = tf.where(found, picked, tf.zeros_like(picked))
    return tf.cast(out, out_dtype) if out_dtype != compute_dtype else out


def roi_warp(features, boxes, box_indices, output_size, spatial_scale=1.0, sampling_ratio=2,
             aligned=True, aggregation="avg"):
    """RoIWarp: the box quantised to the feature grid, then RoIAlign's sampling.

    Args:
        features, boxes, box_indices, output_size, spatial_scale: as
            `roi_pool`.
        sampling_ratio, aligned, aggregation: as `mrcnn.ops.roi_align`, applied
            to the quantised box (in feature-map cells, so with ``aligned`` a
            bin covering exactly one cell samples that cell's centre).

    Returns:
        ``[K, pooled_h, pooled_w, C]`` of ``features.dtype``.
    """
    from mrcnn.ops import roi_align

    cells = tf.cast(tf.stop_gradient(quantize_boxes_graph(boxes, spatial_scale)), tf.float32)
    return roi_align(features, cells, box_indices, output_size, spatial_scale=1.0,
                     sampling_ratio=sampling_ratio, aligned=aligned, aggregation=aggregation)
