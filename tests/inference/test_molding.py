"""Tests of mrcnn.inference.molding: molding images and unmolding detections (NumPy only)."""

import numpy as np
import pytest

from mrcnn.structures.boxes import norm_boxes
from mrcnn.config import Config
from mrcnn.structures.image_meta import parse_image_meta
from mrcnn.inference.molding import (class_masks, group_by_shape, mold_image_for_inference,
                                     mold_inputs, unmold_detections, unmold_result)
from mrcnn.structures.masks import unmold_mask


class SmallConfig(Config):
    NAME = "small"
    NUM_CLASSES = 3
    IMAGE_MIN_DIM = 64
    IMAGE_MAX_DIM = 128
    IMAGES_PER_GPU = 2


def test_mold_image_square_window_scale_and_meta():
    config = SmallConfig()
    image = np.full((64, 128, 3), 200, np.uint8)
    molded, meta, window = mold_image_for_inference(image, config)
    assert molded.shape == (128, 128, 3) and molded.dtype == np.float32
    # 64 rows padded to 128: 32 on top, 32 below.
    assert window.tolist() == [32, 0, 96, 128]
    np.testing.assert_allclose(molded[40, 10], 200 - config.MEAN_PIXEL, rtol=1e-6)
    np.testing.assert_allclose(molded[0, 0], -config.MEAN_PIXEL, rtol=1e-6)
    parsed = parse_image_meta(meta)
    assert parsed["original_image_shape"].tolist() == [64, 128, 3]
    assert parsed["image_shape"].tolist() == [128, 128, 3]
    assert parsed["window"].tolist() == [32, 0, 96, 128]
    assert parsed["scale"] == pytest.approx(1.0)
    assert meta.shape == (config.IMAGE_META_SIZE,)


def test_mold_inputs_stacks_same_shapes_and_lists_different_ones():
    config = SmallConfig()
    same = [np.zeros((64, 64, 3), np.uint8), np.zeros((50, 100, 3), np.uint8)]
    molded, metas, windows = mold_inputs(same, config)  # square: both 128x128
    assert isinstance(molded, np.ndarray) and molded.shape == (2, 128, 128, 3)
    assert metas.shape == (2, config.IMAGE_META_SIZE) and windows.shape == (2, 4)
    # 50x100 scaled by 64/50 = 1.28 -> 64x128, padded 32 top.
    assert windows[1].tolist() == [32, 0, 96, 128]

    pad_config = SmallConfig()
    pad_config.IMAGE_RESIZE_MODE = "pad64"
    molded, metas, windows = mold_inputs([np.zeros((64, 64, 3), np.uint8),
                                          np.zeros((64, 100, 3), np.uint8)], pad_config)
    assert isinstance(molded, list)
    assert [m.shape for m in molded] == [(64, 64, 3), (64, 128, 3)]
    assert windows[1].tolist() == [0, 14, 64, 114]


def test_mold_inputs_rejects_bad_images_clearly():
    config = SmallConfig()
    with pytest.raises(ValueError, match="image 1.*\\[height, width, 3\\]"):
        mold_inputs([np.zeros((64, 64, 3)), np.zeros((64, 64))], config)
    with pytest.raises(ValueError, match="LIST of images"):
        mold_inputs(np.zeros((64, 64, 3)), config)
    none_config = SmallConfig()
    none_config.IMAGE_RESIZE_MODE = "none"
    with pytest.raises(ValueError, match="multiple of 64"):
        mold_inputs([np.zeros((60, 64, 3))], none_config)


def test_group_by_shape_batches_same_shapes_only():
    shapes = [(1, 1), (2, 2), (1, 1), (1, 1), (2, 2)]
    assert group_by_shape(shapes, 2) == [[0, 2], [3], [1, 4]]
    assert group_by_shape(shapes, 1) == [[0], [2], [3], [1], [4]]


def _mask_head_output(n, num_classes, class_ids):
    """Sigmoid outputs that are 1 everywhere for each detection's own class."""
    masks = np.zeros((n, 28, 28, num_classes), np.float32)
    for i, c in enumerate(class_ids):
        masks[i, :, :, c] = 1.0
    return masks


def test_unmold_detections_maps_boxes_to_original_pixels():
    # Original 64x128 image molded (square, scale 1) into 128x128, window rows 32..96.
    original_shape, image_shape, window = (64, 128, 3), (128, 128, 3), (32, 0, 96, 128)
    # Box (10, 20, 30, 60) in the original is (42, 20, 62, 60) in the molded image.
    molded_boxes = np.array([[42, 20, 62, 60],     # real detection, class 2
                             [42, 20, 42, 60],     # zero height once unmolded
                             [0, 0, 0, 0]],        # padding row
                            np.float64)
    detections = np.zeros((3, 6), np.float32)
    detections[:, :4] = norm_boxes(molded_boxes, image_shape[:2])
    detections[:2, 4] = [2, 1]
    detections[:2, 5] = [0.9, 0.8]
    masks = _mask_head_output(3, 3, [2, 1, 0])
    boxes, class_ids, scores, full_masks = unmold_detections(
        detections, masks, original_shape, image_shape, window)
    assert boxes.dtype == np.int32 and class_ids.dtype == np.int32
    assert scores.dtype == np.float32 and full_masks.dtype == bool
    assert boxes.tolist() == [[10, 20, 30, 60]]
    assert class_ids.tolist() == [2]
    assert scores == pytest.approx([0.9])
    assert full_masks.shape == (64, 128, 1)
    expected = np.zeros((64, 128), bool)
    expected[10:30, 20:60] = True
    np.testing.assert_array_equal(full_masks[:, :, 0], expected)


def test_unmold_detections_scaled_image_and_other_class_channel_ignored():
    # 32x32 original scaled x2 into 64x64 (no padding): window is the full image.
    original_shape, image_shape, window = (32, 32, 3), (64, 64, 3), (0, 0, 64, 64)
    # Molded box rows 0..63 (exclusive 64) covers the whole image.
    detections = np.zeros((2, 6), np.float32)
    detections[0, :4] = norm_boxes(np.array([0, 0, 64, 32.0]), image_shape[:2])
    detections[0, 4:] = [1, 0.75]
    masks = np.zeros((2, 28, 28, 3), np.float32)
    masks[0, :, :, 2] = 1.0  # wrong class channel: must not be used
    boxes, class_ids, scores, full_masks = unmold_detections(
        detections, masks, original_shape, image_shape, window)
    # Normalised y: 0..1 -> pixels 0..32; x: 0..31/63 -> 0..round(31*31/63)+1 = 16.
    assert boxes.tolist() == [[0, 0, 32, 16]]
    assert not full_masks.any()


def test_unmold_detections_no_detections():
    boxes, class_ids, scores, masks = unmold_detections(
        np.zeros((5, 6), np.float32), np.zeros((5, 28, 28, 3), np.float32),
        (40, 50, 3), (64, 64, 3), (12, 7, 52, 57))
    assert boxes.shape == (0, 4) and class_ids.shape == (0,) and scores.shape == (0,)
    assert masks.shape == (40, 50, 0) and masks.dtype == bool


def test_class_masks_takes_each_class_channel_or_the_one_channel():
    rng = np.random.default_rng(0)
    per_class = rng.random((3, 4, 5, 3)).astype(np.float32)
    got = class_masks(per_class, [2, 1, 2])
    assert got.shape == (3, 4, 5)
    np.testing.assert_array_equal(got[0], per_class[0, :, :, 2])
    np.testing.assert_array_equal(got[1], per_class[1, :, :, 1])
    np.testing.assert_array_equal(got[2], per_class[2, :, :, 2])
    agnostic = per_class[..., :1]                   # a class-agnostic head: 1 channel
    np.testing.assert_array_equal(class_masks(agnostic, [2, 1, 2]), per_class[..., 0])
    with pytest.raises(ValueError, match=r"class_masks: expected masks \[N, mh, mw, NC\]"):
        class_masks(per_class, [1, 2])


def test_unmold_detections_class_agnostic_masks_use_channel_0():
    # Two detections of different classes in a 64x64 image (no resize): with one
    # channel both paste channel 0; the class-specific output with that same mask
    # in every channel gives the same result.
    original_shape = image_shape = (64, 64, 3)
    window = (0, 0, 64, 64)
    detections = np.zeros((3, 6), np.float32)
    detections[0, :4] = norm_boxes(np.array([4, 4, 36, 30.0]), image_shape[:2])
    detections[1, :4] = norm_boxes(np.array([30, 20, 60, 60.0]), image_shape[:2])
    detections[:2, 4:] = [[2, 0.9], [1, 0.8]]
    rng = np.random.default_rng(1)
    agnostic = rng.random((3, 14, 14, 1)).astype(np.float32)
    boxes, class_ids, _, masks = unmold_detections(detections, agnostic, original_shape,
                                                   image_shape, window)
    assert class_ids.tolist() == [2, 1] and masks.shape == (64, 64, 2)
    for i in range(2):
        expected = unmold_mask(agnostic[i, :, :, 0], boxes[i], original_shape)
        assert expected.any() and not expected.all()
        np.testing.assert_array_equal(masks[:, :, i], expected)
    tiled = np.repeat(agnostic, 3, axis=-1)
    np.testing.assert_array_equal(
        unmold_detections(detections, tiled, original_shape, image_shape, window)[3], masks)


def test_unmold_result_maps_keypoints_to_original_pixels_and_drops_their_rows():
    # Original 32x64 image scaled x2 into 128x128 and padded: window rows 32..96.
    original_shape, image_shape, window = (32, 64, 3), (128, 128, 3), (32, 0, 96, 128)
    detections = np.zeros((3, 6), np.float32)
    detections[0, :4] = norm_boxes(np.array([40.0, 20, 80, 60]), image_shape[:2])
    detections[1, :4] = norm_boxes(np.array([40.0, 20, 40, 60]), image_shape[:2])  # empty
    detections[:2, 4:] = [[1, 0.9], [2, 0.8]]
    keypoints = np.zeros((3, 2, 3), np.float32)
    # Molded (x, y) = (21, 42) -> original ((21 - 0) / 2, (42 - 32) / 2) = (10.5, 5).
    keypoints[0] = [[21.0, 42.0, 0.7], [59.0, 79.0, 0.2]]
    keypoints[1] = [[1.0, 1.0, 0.5], [2.0, 2.0, 0.5]]
    r = unmold_result((detections, _mask_head_output(3, 3, [1, 2, 0]), keypoints),
                      original_shape, image_shape, window)
    assert sorted(r) == ["class_ids", "keypoints", "masks", "rois", "scores"]
    assert r["rois"].tolist() == [[4, 10, 24, 30]]
    assert r["keypoints"].dtype == np.float32 and r["keypoints"].shape == (1, 2, 3)
    np.testing.assert_allclose(r["keypoints"][0], [[10.5, 5.0, 0.7], [29.5, 23.5, 0.2]])
    # Without keypoints in the outputs: the four keys of a model without a keypoint head.
    plain = unmold_result((detections, _mask_head_output(3, 3, [1, 2, 0])), original_shape,
                          image_shape, window)
    assert sorted(plain) == ["class_ids", "masks", "rois", "scores"]
    empty = unmold_result((np.zeros((2, 6), np.float32), np.zeros((2, 28, 28, 3), np.float32),
                           np.zeros((2, 4, 3), np.float32)), original_shape, image_shape, window)
    assert empty["keypoints"].shape == (0, 4, 3)


def test_detect_returns_keypoints_in_original_image_pixels():
    # Uniform heatmaps: each keypoint decodes to the centre of its box's first
    # cell (score 1 / m**2), so in the original image it sits at the returned
    # box's corner plus half a cell, whatever the resize (x1.6 and x3.2 here, padded).
    from keypoint_fixtures import keypoint_inference_model

    model = keypoint_inference_model()
    m = model.config.KEYPOINT_HEATMAP_SIZE
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in [(24, 40, 3), (20, 12, 3)]]
    for image, r in zip(images, model.detect(images)):
        points, boxes = r["keypoints"], r["rois"].astype(np.float64)
        assert len(boxes) > 0 and points.shape == (len(boxes), 2, 3)
        assert points.dtype == np.float32
        np.testing.assert_allclose(points[..., 2], 1.0 / m ** 2, rtol=1e-4)
        y1, x1, y2, x2 = boxes.T
        # The returned boxes are rounded to whole pixels after the legacy
        # (size - 1) box scaling (`unmold_detections`): within 1 px of the
        # keypoints' exact mapping; without unmolding they would be off by the
        # padding (20 and 16 molded px) and the scale.
        np.testing.assert_allclose(points[..., 0], np.repeat(
            (x1 + 0.5 * (x2 - x1) / m)[:, None], 2, axis=1), atol=1.0)
        np.testing.assert_allclose(points[..., 1], np.repeat(
            (y1 + 0.5 * (y2 - y1) / m)[:, None], 2, axis=1), atol=1.0)
        assert points[..., 0].max() <= image.shape[1] and points[..., 1].max() <= image.shape[0]
