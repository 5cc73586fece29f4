"""Tests for mrcnn.evaluation.dsb: the Data Science Bowl 2018 score on hand-computed cases."""

import numpy as np
import pytest

from evaluation_fixtures import box_masks as _mask

# pycocotools' decode trips a NumPy 2 deprecation warning; not ours to fix.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")


# ----------------------------------------------------------------------------- DSB metric
def test_dsb_score_hand_computed():
    from mrcnn.evaluation.dsb import DSB_IOU_THRESHOLDS, dsb_precisions, dsb_score
    shape = (40, 40)
    gt = _mask((0, 0, 10, 10), (20, 0, 30, 10), (0, 25, 10, 35), shape=shape)
    pred = np.zeros(shape + (4,), bool)
    pred[0:10, 1:11, 0] = True    # gt 0 shifted by a pixel: IoU 90 / 110 = 0.818
    pred[21:29, 1:9, 1] = True    # 8x8 inside gt 1: IoU 64 / 100 = 0.64
    pred[30:40, 30:40, 2] = True  # on nothing: a false positive at every threshold
    # channel 3 stays empty: left out.  gt 2 is never found: a false negative.
    # t = .50 .55 .60: TP 2, FP 1, FN 1 -> 2/4;  t = .65 .. .80: TP 1, FP 2, FN 2 -> 1/5;
    # t = .85 .90 .95: TP 0 -> 0.
    expected = [0.5] * 3 + [0.2] * 4 + [0.0] * 3
    assert DSB_IOU_THRESHOLDS == (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
    np.testing.assert_allclose(dsb_precisions(gt, pred), expected)
    assert dsb_score(gt, pred) == pytest.approx(0.23)
    # A hit needs IoU strictly above the threshold: IoU 0.64 counts at 0.6, not at 0.65.
    np.testing.assert_allclose(dsb_precisions(gt[..., 1:2], pred[..., 1:2], (0.6, 0.64, 0.65)),
                               [1.0, 0.0, 0.0])
    assert dsb_score(gt, gt) == 1.0


def test_dsb_score_edge_cases():
    from mrcnn.evaluation.dsb import dsb_score
    none = np.zeros((8, 8, 0), bool)
    one = _mask((1, 1, 4, 4), shape=(8, 8))
    assert dsb_score(none, none) == 1.0
    assert dsb_score(none, one) == 0.0 and dsb_score(one, none) == 0.0
    assert dsb_score(one, np.zeros((8, 8, 2), bool)) == 0.0  # empty predictions: none
    with pytest.raises(ValueError, match="image size"):
        dsb_score(one, np.zeros((9, 8, 1), bool))
