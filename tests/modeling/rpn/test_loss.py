"""Tests of mrcnn.modeling.rpn.loss on hand-computed values and the nothing-to-average cases."""

import numpy as np
import pytest

from loss_reference import cross_entropy as _ce
from mrcnn.modeling.rpn import loss as rpn_loss


def test_rpn_class_loss():
    match = np.array([[[1], [0], [-1]], [[0], [-1], [0]]], "int32")
    logits = np.array([[[0.0, 2.0], [5.0, -5.0], [1.0, 0.0]],
                       [[3.0, 3.0], [0.5, 1.5], [0.0, 0.0]]], "float32")
    expected = np.mean([_ce([0, 2], 1), _ce([1, 0], 0), _ce([0.5, 1.5], 0)])
    assert float(rpn_loss.rpn_class_loss(match, logits)) == pytest.approx(expected, rel=1e-5)
    # Rank-2 rpn_match works too; no labelled anchor -> exactly 0.
    assert float(rpn_loss.rpn_class_loss(match[..., 0], logits)) == pytest.approx(expected, rel=1e-5)
    assert float(rpn_loss.rpn_class_loss(np.zeros((2, 3, 1), "int32"), logits)) == 0.0


def test_rpn_bbox_loss_matches_ith_positive_with_ith_row():
    match = np.array([[[0], [1], [-1], [1]], [[1], [0], [0], [0]]], "int32")
    pred = np.zeros((2, 4, 4), "float32")
    pred[0, 1] = [0.5, 0, 0, 0]
    pred[0, 3] = [0, 3.0, 0, 0]
    pred[1, 0] = [0, 0, 0.2, 0]
    pred[0, 0] = [9, 9, 9, 9]      # neutral anchor: ignored
    target = np.zeros((2, 3, 4), "float32")
    target[0, 0] = [0.5, 0, 0, 0]  # first positive (anchor 1): exact -> 0
    target[0, 1] = [0, 1.0, 0, 0]  # second positive (anchor 3): |d| = 2 -> 1.5
    target[1, 0] = [0, 0, 0, 0]    # image 1, anchor 0: |d| = 0.2 -> 0.02
    target[1, 1] = [7, 7, 7, 7]    # padding row beyond the positives: ignored
    expected = (0.0 + 1.5 + 0.02) / (3 * 4)
    got = float(rpn_loss.rpn_bbox_loss(target, match, pred))
    assert got == pytest.approx(expected, rel=1e-5)
    assert float(rpn_loss.rpn_bbox_loss(target, -np.abs(match), pred)) == 0.0
