"""Scalar NumPy RoIAlign and RoIPool (loops, float64): the references the
kernels, the pure-TF paths and the vectorised NumPy twin are tested against.

Max aggregation: per channel, the first sample in scan order (sample rows
outer, sample columns inner) holding the maximum wins; a later sample must be
strictly greater. `roi_align_max_gradient_reference` sends each incoming
gradient to the winner's four bilinear neighbours."""

import math

import numpy as np


def bilinear_taps_reference(height, width, y, x):
    """The four (row, col, weight) taps of a sample at (y, x) with RoIAlign's
    border rules; empty for a sample outside [-1, H] x [-1, W]."""
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return []
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = int(math.floor(y)), int(math.floor(x))
    if y0 >= height - 1:
        y0 = y1 = height - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= width - 1:
        x0 = x1 = width - 1
        x = float(x0)
    else:
        x1 = x0 + 1
    dy, dx = y - y0, x - x0
    return [(y0, x0, (1 - dy) * (1 - dx)), (y0, x1, (1 - dy) * dx),
            (y1, x0, dy * (1 - dx)), (y1, x1, dy * dx)]


def bilinear_reference(image, y, x):
    """Value of image [H, W, C] at (y, x) with RoIAlign's border rules."""
    total = np.zeros(image.shape[2])
    for row, col, weight in bilinear_taps_reference(image.shape[0], image.shape[1], y, x):
        total = total + weight * image[row, col]
    return total


def _bin_samples(boxes, output_size, spatial_scale, sampling_ratio, aligned):
    """For every RoI k and bin (p, q): the list of its sample positions (y, x)
    in scan order, and the bin's sample count for the average."""
    pooled_h, pooled_w = output_size
    shift = 0.5 if aligned else 0.0
    for k, box in enumerate(np.asarray(boxes, np.float64)):
        y1, x1, y2, x2 = box * spatial_scale - shift
        height, width = y2 - y1, x2 - x1
        if not aligned:
            height, width = max(height, 1.0), max(width, 1.0)
        bin_h, bin_w = height / pooled_h, width / pooled_w
        grid_h = sampling_ratio if sampling_ratio > 0 else math.ceil(height / pooled_h)
        grid_w = sampling_ratio if sampling_ratio > 0 else math.ceil(width / pooled_w)
        count = max(grid_h * grid_w, 1)
        for p in range(pooled_h):
            for q in range(pooled_w):
                points = [(y1 + p * bin_h + (i + 0.5) * bin_h / grid_h,
                           x1 + q * bin_w + (j + 0.5) * bin_w / grid_w)
                          for i in range(grid_h) for j in range(grid_w)]
                yield k, p, q, points, count


def _first_max(values):
    """Per channel, the index of the first maximum of values [S, C]."""
    best = np.zeros(values.shape[1], np.int64)
    for s in range(1, values.shape[0]):
        better = values[s] > values[best, np.arange(values.shape[1])]
        best[better] = s
    return best


def roi_align_reference(features, boxes, box_indices, output_size, spatial_scale=1.0,
                        sampling_ratio=2, aligned=True, aggregation="avg"):
    features = np.asarray(features, np.float64)
    out = np.zeros((len(boxes), output_size[0], output_size[1], features.shape[3]))
    for k, p, q, points, count in _bin_samples(boxes, output_size, spatial_scale,
                                               sampling_ratio, aligned):
        if not points:
            continue
        image = features[box_indices[k]]
        values = np.stack([bilinear_reference(image, y, x) for y, x in points])
        if aggregation == "max":
            out[k, p, q] = values[_first_max(values), np.arange(values.shape[1])]
        else:
            out[k, p, q] = values.sum(axis=0) / count
    return out


def roi_align_max_gradient_reference(features, boxes, box_indices, output_size, grads,
                                     spatial_scale=1.0, sampling_ratio=2, aligned=True):
    """d(sum(grads * roi_align_max(features))) / d(features): each bin's
    gradient goes to its winning sample's four neighbours."""
    features = np.asarray(features, np.float64)
    grads = np.asarray(grads, np.float64)
    out = np.zeros_like(features)
    height, width, channels = features.shape[1:]
    for k, p, q, points, _ in _bin_samples(boxes, output_size, spatial_scale,
                                           sampling_ratio, aligned):
        if not points:
            continue
        b = box_indices[k]
        values = np.stack([bilinear_reference(features[b], y, x) for y, x in points])
        for c, s in enumerate(_first_max(values)):
            for row, col, weight in bilinear_taps_reference(height, width, *points[s]):
                out[b, row, col, c] += weight * grads[k, p, q, c]
    return out


def roi_pool_reference(features, boxes, box_indices, output_size, spatial_scale=1.0):
    """Fast R-CNN's RoIPool with exclusive box ends (mrcnn.ops.quantized)."""
    features = np.asarray(features, np.float64)
    height, width = features.shape[1:3]
    pooled_h, pooled_w = output_size
    out = np.zeros((len(boxes), pooled_h, pooled_w, features.shape[3]))
    for k, box in enumerate(np.asarray(boxes, np.float64)):
        y1, x1, y2, x2 = (int(math.floor(v * spatial_scale + 0.5)) for v in box)
        y2, x2 = max(y2, y1 + 1), max(x2, x1 + 1)
        rh, rw = y2 - y1, x2 - x1
        for p in range(pooled_h):
            r0 = min(max(y1 + (p * rh) // pooled_h, 0), height)
            r1 = min(max(y1 + -((-(p + 1) * rh) // pooled_h), 0), height)
            for q in range(pooled_w):
                c0 = min(max(x1 + (q * rw) // pooled_w, 0), width)
                c1 = min(max(x1 + -((-(q + 1) * rw) // pooled_w), 0), width)
                if r1 > r0 and c1 > c0:
                    out[k, p, q] = features[box_indices[k], r0:r1, c0:c1].max(axis=(0, 1))
    return out


# --- inputs shared by the op tests ---------------------------------------------------

def linear_map(height, width, channels=1):
    """features[0, y, x, c] = 10 * y + x (+ 100 * c): bilinear-exact inside the map."""
    y, x = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    base = 10.0 * y + x
    return np.stack([base + 100.0 * c for c in range(channels)], -1)[None].astype(np.float32)


def random_case(seed, n=2, height=9, width=11, channels=3, k=24, spread=(-8, 20)):
    """Random float32 features [n, h, w, c], k boxes (a sixth of them inverted)
    spread over and around the map, and their image indices."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n, height, width, channels)).astype(np.float32)
    corners = rng.uniform(*spread, size=(k, 2, 2))
    boxes = np.concatenate([corners.min(1), corners.max(1)], 1).astype(np.float32)
    boxes[: k // 6, 2:] = boxes[: k // 6, :2] - 1.5   # a few inverted boxes
    box_indices = rng.integers(0, n, k).astype(np.int32)
    return features, boxes, box_indices
