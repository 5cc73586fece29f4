"""A scalar NumPy RoIAlign (loops, float64): the reference the kernels and the
vectorised NumPy twin are tested against."""

import math

import numpy as np


def bilinear_reference(image, y, x):
    """Value of image [H, W, C] at (y, x) with RoIAlign's border rules."""
    height, width = image.shape[:2]
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return np.zeros(image.shape[2])
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
    return ((1 - dy) * (1 - dx) * image[y0, x0] + (1 - dy) * dx * image[y0, x1]
            + dy * (1 - dx) * image[y1, x0] + dy * dx * image[y1, x1])


def roi_align_reference(features, boxes, box_indices, output_size, spatial_scale=1.0,
                        sampling_ratio=2, aligned=True):
    features = np.asarray(features, np.float64)
    pooled_h, pooled_w = output_size
    out = np.zeros((len(boxes), pooled_h, pooled_w, features.shape[3]))
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
        image = features[box_indices[k]]
        for p in range(pooled_h):
            for q in range(pooled_w):
                total = np.zeros(features.shape[3])
                for i in range(grid_h):
                    y = y1 + p * bin_h + (i + 0.5) * bin_h / grid_h
                    for j in range(grid_w):
                        x = x1 + q * bin_w + (j + 0.5) * bin_w / grid_w
                        total += bilinear_reference(image, y, x)
                out[k, p, q] = total / count
    return out
