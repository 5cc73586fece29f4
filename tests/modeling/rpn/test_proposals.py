"""Tests of ProposalLayer against a NumPy reference built on mrcnn.structures.boxes."""

import numpy as np
import pytest

from mrcnn.structures import boxes as npb
from mrcnn.modeling.rpn.proposals import ProposalLayer

STD = np.array([0.1, 0.1, 0.2, 0.2])


def _reference(probs, deltas, anchors, count, threshold, pre_nms):
    out = np.zeros((probs.shape[0], count, 4))
    for b in range(probs.shape[0]):
        scores = probs[b, :, 1]
        order = np.argsort(-scores, kind="stable")[:pre_nms]
        boxes = npb.apply_box_deltas(anchors[order], deltas[b, order] * STD)
        boxes = np.clip(boxes, 0.0, 1.0)
        keep = npb.non_max_suppression(boxes, scores[order], threshold)[:count]
        out[b, :len(keep)] = boxes[keep]
    return out


def _case(seed, batch=2, num_anchors=60):
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 1, (num_anchors, 2))
    sizes = rng.uniform(0.05, 0.4, (num_anchors, 2))
    anchors = np.concatenate([centres - sizes / 2, centres + sizes / 2], 1).astype("float32")
    fg = rng.uniform(0, 1, (batch, num_anchors))
    probs = np.stack([1 - fg, fg], -1).astype("float32")
    deltas = rng.normal(0, 1, (batch, num_anchors, 4)).astype("float32")
    return probs, deltas, anchors


@pytest.mark.parametrize("pre_nms,count", [(25, 10), (1000, 80)])
def test_proposals_match_numpy_reference(pre_nms, count):
    probs, deltas, anchors = _case(0)
    layer = ProposalLayer(count, 0.5, pre_nms, STD, name="ROI")
    got = np.asarray(layer([probs, deltas, np.broadcast_to(anchors, (2,) + anchors.shape)]))
    ref = _reference(probs, deltas, anchors, count, 0.5, pre_nms)
    assert got.shape == (2, count, 4)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    if count > 60:  # fewer survivors than proposal_count: zero padding at the end
        assert np.all(got[:, -1] == 0)


def test_anchors_without_batch_dim_and_config_roundtrip():
    probs, deltas, anchors = _case(1)
    layer = ProposalLayer(12, 0.7, 30, STD)
    assert layer.name == "ROI"
    a = np.asarray(layer([probs, deltas, anchors]))
    b = np.asarray(layer([probs, deltas, anchors[None]]))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a, _reference(probs, deltas, anchors, 12, 0.7, 30), atol=1e-5)
    clone = ProposalLayer.from_config(layer.get_config())
    assert (clone.proposal_count, clone.nms_threshold, clone.pre_nms_limit) == (12, 0.7, 30)
    assert clone.rpn_bbox_std_dev == pytest.approx(list(STD))
    with pytest.raises(ValueError, match="rpn_bbox_std_dev"):
        ProposalLayer(10, 0.7, 30, [0.1, 0.2])


def test_dynamic_shape_layers_opt_out_of_xla():
    """Keras' jit_compile="auto" must not try XLA on NMS / boolean-mask layers."""
    from mrcnn.modeling.roi_heads.detection import DetectionLayer
    from mrcnn.modeling.roi_heads.sampling import DetectionTargetLayer
    from mrcnn.modeling.roi_heads.poolers import PyramidROIAlign
    for layer in (ProposalLayer(4, 0.7), DetectionLayer(), DetectionTargetLayer(),
                  PyramidROIAlign((2, 2))):
        assert layer.supports_jit is False, type(layer).__name__


def test_diverging_size_deltas_give_finite_proposals():
    """Deltas a diverging network predicts (log-size * std far above 88)
    overflow exp(); the proposals must still be finite boxes in [0, 1]."""
    probs, deltas, anchors = _case(2)
    deltas[:, ::3, 2] = 1e4
    deltas[:, 1::3, 3] = 5e3
    got = np.asarray(ProposalLayer(20, 0.7, 60, STD)([probs, deltas, anchors]))
    assert np.isfinite(got).all() and got.min() >= 0 and got.max() <= 1
    clamped = npb.apply_box_deltas(anchors[None].repeat(2, 0).reshape(-1, 4),
                                   deltas.reshape(-1, 4) * STD, npb.MAX_LOG_SCALE_DELTA)
    assert np.isfinite(clamped).all()
