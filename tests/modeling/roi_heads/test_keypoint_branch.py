"""Tests of mrcnn.modeling.roi_heads.keypoint_branch: the keypoint branch in the graphs
(names, the C4 refusal, the decoding layer on batches); the training step is tested in
tests/engine/test_trainer.py, detect / export in tests/inference."""

import numpy as np
import pytest
import tensorflow as tf

from keypoint_fixtures import KeypointTinyConfig
from model_fixtures import TinyConfig
from mrcnn.modeling.assembly import (INFERENCE_OUTPUT_NAMES, TRAINING_OUTPUT_NAMES,
                                     build_inference_model, build_training_model,
                                     inference_output_names, training_input_names,
                                     training_output_names)
from mrcnn.modeling.roi_heads.keypoint_branch import (DetectionKeypoints,
                                                      check_keypoint_architecture)
from mrcnn.structures.boxes import norm_boxes


class C4KeypointConfig(KeypointTinyConfig):
    HEAD_ARCHITECTURE = "c4"
    POOL_SIZE = 6
    MASK_SHAPE = [6, 6]


def test_c4_with_keypoints_is_refused_naming_both_settings():
    config = C4KeypointConfig()
    for build in (check_keypoint_architecture, build_training_model, build_inference_model):
        with pytest.raises(ValueError, match=r"NUM_KEYPOINTS = 2.*HEAD_ARCHITECTURE = 'c4'"):
            build(config)


def test_names_without_and_with_keypoints():
    plain, keypoints = TinyConfig(), KeypointTinyConfig()
    assert training_input_names(plain) == [
        "input_image", "input_image_meta", "input_rpn_match", "input_rpn_bbox",
        "input_gt_class_ids", "input_gt_boxes", "input_gt_masks"]
    assert training_output_names(plain) == TRAINING_OUTPUT_NAMES
    assert inference_output_names(plain) == INFERENCE_OUTPUT_NAMES
    assert training_input_names(keypoints)[-1] == "input_gt_keypoints"
    assert training_output_names(keypoints)[-3:] == (
        "mrcnn_keypoint_logits", "target_keypoint_indices", "target_keypoint_valid")
    assert inference_output_names(keypoints)[-1] == "mrcnn_keypoints"


def test_inference_graph_without_keypoints_has_no_keypoint_layer():
    model = build_inference_model(TinyConfig())
    assert list(model.output) == list(INFERENCE_OUTPUT_NAMES)
    assert not [layer.name for layer in model.layers
                if "kp" in layer.name or "keypoint" in layer.name]
    with_kp = build_inference_model(KeypointTinyConfig())
    assert list(with_kp.output) == list(INFERENCE_OUTPUT_NAMES) + ["mrcnn_keypoints"]
    assert tuple(with_kp.output["mrcnn_keypoints"].shape) == (None, 20, 2, 3)
    extra = {layer.name for layer in with_kp.layers} - {layer.name for layer in model.layers}
    assert {"roi_align_keypoint", "mrcnn_kp_conv1", "mrcnn_kp_conv2", "mrcnn_kp_deconv",
            "mrcnn_kp_upsample", "mrcnn_keypoints_per_roi", "detection_keypoints",
            "mrcnn_keypoints"} <= extra


def test_detection_keypoints_decode_planted_peaks_per_image_and_row():
    # Two images, three rows (the last of image 1 is padding), m = 8, K = 2: each
    # heatmap has one peak with equal neighbours (no sub-cell shift), so keypoint
    # k of a box is at the centre of its planted cell.
    m, hw = 8, (64, 96)
    boxes_px = np.array([[[0, 0, 32, 32], [8, 16, 40, 80], [10, 10, 26, 18]],
                         [[32, 48, 64, 96], [1, 2, 17, 10], [0, 0, 0, 0]]], np.float64)
    cells = np.array([[[[1, 2], [7, 7]], [[0, 0], [3, 5]], [[4, 4], [6, 1]]],
                      [[[2, 6], [5, 0]], [[7, 3], [0, 7]], [[0, 0], [0, 0]]]])
    heatmaps = np.zeros((2, 3, m, m, 2), np.float32)
    for b, i, k in np.ndindex(2, 3, 2):
        row, col = cells[b, i, k]
        heatmaps[b, i, row, col, k] = 5.0
    boxes = norm_boxes(boxes_px.reshape(-1, 4), hw).reshape(2, 3, 4).astype(np.float32)
    boxes[1, 2] = 0.0
    image = tf.zeros((2,) + hw + (3,))
    points = DetectionKeypoints()([tf.constant(heatmaps), tf.constant(boxes), image]).numpy()
    assert points.shape == (2, 3, 2, 3) and points.dtype == np.float32
    for b, i, k in np.ndindex(2, 3, 2):
        if (b, i) == (1, 2):
            continue
        y1, x1, y2, x2 = boxes_px[b, i]
        row, col = cells[b, i, k]
        expected = (x1 + (col + 0.5) * (x2 - x1) / m, y1 + (row + 0.5) * (y2 - y1) / m)
        np.testing.assert_allclose(points[b, i, k, :2], expected, atol=1e-3)
        peak = np.exp(5.0) / (np.exp(5.0) + m * m - 1)
        assert points[b, i, k, 2] == pytest.approx(peak, rel=1e-4)
    assert not points[1, 2].any()                                   # padding row
    # With the class table, keypoints of a class that lacks them are zeros:
    # class 1 has keypoint 0 only, class 2 both; the detections' class ids
    # are column 4 of their leading rows.
    detections = np.zeros((2, 5, 6), np.float32)
    detections[:, :3, 4] = [[1, 2, 1], [2, 1, 0]]
    table = [[False, False], [True, False], [True, True]]
    masked = DetectionKeypoints(class_table=table)(
        [tf.constant(heatmaps), tf.constant(boxes), image, tf.constant(detections)]).numpy()
    np.testing.assert_array_equal(masked[0, 1], points[0, 1])
    np.testing.assert_array_equal(masked[0, 0, 0], points[0, 0, 0])
    assert not masked[0, 0, 1].any() and not masked[0, 2, 1].any() and not masked[1, 1, 1].any()
    np.testing.assert_array_equal(masked[1, 0], points[1, 0])


def test_detection_keypoints_decode_in_the_expanded_box():
    # KEYPOINT_ROI_EXPAND = 1.5: the heatmap covers the box scaled about its centre,
    # so a planted cell decodes to that cell's centre in the larger box.
    m, hw = 8, (64, 64)
    box_px = np.array([[16, 16, 32, 48]], np.float64)                  # 16 x 32 px
    heatmaps = np.zeros((1, 1, m, m, 1), np.float32)
    heatmaps[0, 0, 0, 7, 0] = 5.0
    boxes = norm_boxes(box_px, hw).reshape(1, 1, 4).astype(np.float32)
    image = tf.zeros((1,) + hw + (3,))
    layer = DetectionKeypoints(roi_expand=1.5)
    points = layer([tf.constant(heatmaps), tf.constant(boxes), image]).numpy()
    y1, x1, y2, x2 = 12.0, 8.0, 36.0, 56.0                             # the expanded box
    expected = (x1 + 7.5 * (x2 - x1) / m, y1 + 0.5 * (y2 - y1) / m)
    np.testing.assert_allclose(points[0, 0, 0, :2], expected, atol=1e-3)
    assert points[0, 0, 0, 0] > box_px[0, 3]                            # past the box's edge
    assert DetectionKeypoints.from_config(layer.get_config()).roi_expand == 1.5
    assert "roi_expand" not in DetectionKeypoints().get_config()        # older graphs' config


def test_roi_expand_reaches_every_keypoint_layer_of_both_graphs():
    # One setting, three consumers: the pooled box (training and detection), the
    # targets (training) and the decoding (detection).
    config = KeypointTinyConfig()
    config.KEYPOINT_ROI_EXPAND = 1.25
    training = build_training_model(config)
    assert training.get_layer("keypoint_roi_expand").factor == 1.25
    assert training.get_layer("proposal_targets").get_config()["keypoint_roi_expand"] == 1.25
    inference = build_inference_model(config)
    assert inference.get_layer("keypoint_roi_expand").factor == 1.25
    assert inference.get_layer("detection_keypoints").roi_expand == 1.25
    plain = build_inference_model(KeypointTinyConfig())
    assert "keypoint_roi_expand" not in {layer.name for layer in plain.layers}


def test_roi_expand_targets_decode_back_to_their_keypoints():
    # A keypoint's target cell (training), one-hot as a heatmap, decodes (detection)
    # to within half a cell of the keypoint, with and without expansion; the
    # keypoint past the box's edge only has a target with it.
    from mrcnn.modeling.roi_heads.keypoint_head import (detection_keypoints_graph,
                                                        roi_keypoint_targets_graph)
    m, hw = 16, (64, 64)
    box_px = np.array([[20, 16, 44, 40]], np.float32)
    gt = np.array([[[16.5, 20.5, 2], [30.2, 33.7, 2], [40.6, 43.9, 2]]], np.float32)
    boxes = norm_boxes(box_px, hw).astype(np.float32)
    for expand, inside in ((1.0, [True, True, False]), (1.25, [True, True, True])):
        idx, valid = roi_keypoint_targets_graph(gt, [0], boxes, [1], hw, m, roi_expand=expand)
        assert np.asarray(valid)[0].tolist() == inside
        heatmaps = np.zeros((1, m, m, 3), np.float32)
        for k, cell in enumerate(np.asarray(idx)[0]):
            heatmaps[0, cell // m, cell % m, k] = 10.0
        points = np.asarray(detection_keypoints_graph(heatmaps, boxes, hw, expand))
        cell_px = 24.0 * expand / m
        err = np.abs(points[0, :, :2] - gt[0, :, :2])[np.array(inside)]
        assert err.max() <= cell_px / 2 + 1e-4
