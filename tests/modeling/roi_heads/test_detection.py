"""Tests of DetectionLayer on hand-made classifier outputs."""

import numpy as np
import pytest

from mrcnn.structures import boxes as npb
from mrcnn.structures.image_meta import compose_image_meta
from mrcnn.modeling.roi_heads.detection import DetectionLayer

STD = np.array([0.1, 0.1, 0.2, 0.2])


def _inputs():
    rois = np.zeros((1, 6, 4), "float32")
    rois[0, :5] = [[0.1, 0.1, 0.3, 0.3],     # class 1, 0.90
                   [0.11, 0.1, 0.31, 0.3],   # class 1, 0.80: IoU ~0.9 with roi 0 -> suppressed
                   [0.1, 0.1, 0.3, 0.3],     # class 2, 0.95: other class -> kept
                   [0.6, 0.6, 0.9, 0.9],     # background wins -> dropped
                   [0.5, 0.1, 0.7, 0.3]]     # class 1, 0.60 < 0.7 -> dropped
    probs = np.zeros((1, 6, 3), "float32")
    probs[0, :, 0] = 1.0                      # row 5 (padding) would be background anyway
    probs[0, :5] = [[0.05, 0.90, 0.05], [0.1, 0.8, 0.1], [0.0, 0.05, 0.95],
                    [0.8, 0.1, 0.1], [0.2, 0.6, 0.2]]
    deltas = np.zeros((1, 6, 3, 4), "float32")
    # Class 2 of roi 2: move down by half its height and double the width.
    deltas[0, 2, 2] = [0.5 / STD[0], 0.0, 0.0, np.log(2.0) / STD[3]]
    # Distractor: deltas of a class that is not the argmax must not be used.
    deltas[0, 0, 2] = [5.0, 5.0, 1.0, 1.0]
    meta = compose_image_meta(0, (100, 200, 3), (128, 128, 3), (0, 0, 64, 128), 0.64,
                              [1, 1, 1])[None]
    return rois, probs, deltas, meta


def test_detections_hand_computed():
    rois, probs, deltas, meta = _inputs()
    layer = DetectionLayer(STD, detection_min_confidence=0.7, detection_max_instances=4,
                           detection_nms_threshold=0.3)
    assert layer.name == "mrcnn_detection"
    out = np.asarray(layer([rois, probs, deltas, meta]))
    assert out.shape == (1, 4, 6)
    # Roi 2 refined: centre y 0.2 -> 0.3, width 0.2 -> 0.4 => (0.2, 0.0, 0.4, 0.4); then
    # inside the window (normalised y2 = (64 - 1) / 127), so not clipped.
    refined = npb.apply_box_deltas(rois[0, 2:3], deltas[0, 2, 2:3] * STD)[0]
    np.testing.assert_allclose(refined, [0.2, 0.0, 0.4, 0.4], atol=1e-6)
    np.testing.assert_allclose(out[0, 0], [0.2, 0.0, 0.4, 0.4, 2, 0.95], atol=1e-6)
    np.testing.assert_allclose(out[0, 1], [0.1, 0.1, 0.3, 0.3, 1, 0.90], atol=1e-6)
    np.testing.assert_array_equal(out[0, 2:], 0.0)


def test_clipping_to_window_and_max_instances():
    rois, probs, deltas, meta = _inputs()
    rois[0, 0] = [0.4, 0.1, 0.8, 0.3]          # extends below the window (y2 = 63/127)
    out = np.asarray(DetectionLayer(STD, 0.7, 1, 0.3)([rois, probs, deltas, meta]))
    assert out.shape == (1, 1, 6)
    np.testing.assert_allclose(out[0, 0, 4:], [2, 0.95], atol=1e-6)   # best score only
    out = np.asarray(DetectionLayer(STD, 0.7, 5, 0.3)([rois, probs, deltas, meta]))
    row = out[0][np.isclose(out[0, :, 5], 0.9)][0]
    np.testing.assert_allclose(row[:4], [0.4, 0.1, 63.0 / 127.0, 0.3], atol=1e-6)


def test_nothing_detected_gives_zeros_and_config_roundtrip():
    rois, probs, deltas, meta = _inputs()
    layer = DetectionLayer(STD, 0.99, 3, 0.3)
    out = np.asarray(layer([np.concatenate([rois, rois]), np.concatenate([probs, probs]),
                            np.concatenate([deltas, deltas]), np.concatenate([meta, meta])]))
    assert out.shape == (2, 3, 6) and np.all(out == 0)
    clone = DetectionLayer.from_config(layer.get_config())
    assert (clone.detection_min_confidence, clone.detection_max_instances,
            clone.detection_nms_threshold) == (0.99, 3, 0.3)
    with pytest.raises(ValueError, match="bbox_std_dev"):
        DetectionLayer([1.0])
