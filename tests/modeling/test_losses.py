"""Tests of mrcnn.modeling.losses (the shared pieces: smooth_l1) on hand-computed values."""

import numpy as np

from mrcnn.modeling import losses


def _sl1(d):
    d = np.abs(np.asarray(d, np.float64))
    return np.where(d < 1, 0.5 * d ** 2, d - 0.5)


def test_smooth_l1():
    np.testing.assert_allclose(np.asarray(losses.smooth_l1([0.0, 0.0, 0.0], [0.5, -2.0, 1.0])),
                               [0.125, 1.5, 0.5])
