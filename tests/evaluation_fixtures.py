"""Box-shaped masks and box arrays shared by the tests of mrcnn.evaluation."""

import numpy as np

H, W = 32, 48


def box_masks(*boxes, shape=(H, W)):
    """bool [H, W, N] with one filled box (y1, x1, y2, x2; exclusive end) per instance."""
    m = np.zeros(shape + (len(boxes),), dtype=bool)
    for k, (y1, x1, y2, x2) in enumerate(boxes):
        m[y1:y2, x1:x2, k] = True
    return m


def box_array(*boxes):
    return np.array(boxes, dtype=np.int32).reshape(-1, 4)
