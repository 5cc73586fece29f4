"""Tests of mrcnn.data.keypoint_inputs through the pipeline: keypoints follow the resize,
crops, flips (left / right swapped) and augmentation, and are padded beside the boxes."""

import albumentations as A
import numpy as np
import pytest

from keypoint_fixtures import CornerRectangles, KeypointTinyConfig, corner_keypoints
from mrcnn.data.errors import ImageLoadError
from mrcnn.data.pipeline import build_example, input_signature, load_image_gt


def _corners_match_boxes(keypoints, boxes, scale=1.0):
    """Keypoint 0 (top_left) at each box's top-left pixel centre, keypoint 1 at its
    top-right one (pixel centres: + / - half a source pixel, times the scale)."""
    half = 0.5 * scale
    y1, x1, x2 = boxes[:, 0], boxes[:, 1], boxes[:, 3]
    np.testing.assert_allclose(keypoints[:, 0, :2], np.stack([x1 + half, y1 + half], 1))
    np.testing.assert_allclose(keypoints[:, 1, :2], np.stack([x2 - half, y1 + half], 1))
    assert (keypoints[..., 2] == 2).all()


def test_the_pipeline_flip_mirrors_and_swaps_left_and_right():
    config = KeypointTinyConfig()
    dataset = CornerRectangles([3], seed=1)
    original = dataset.load_image(0)
    flipped = 0
    for seed in range(8):
        image, _, _, boxes, _, points = load_image_gt(
            dataset, config, 0, augment=True, rng=np.random.default_rng(seed), keypoints=True)
        flipped += np.array_equal(image, original[:, ::-1])
        # Mirrored or not, "top_left" is the left corner of the (new) box.
        _corners_match_boxes(points, boxes)
    assert 0 < flipped < 8
    # Without keypoints=True: the five items of before.
    assert len(load_image_gt(dataset, config, 0)) == 5


def test_albumentations_flip_through_build_example():
    config = KeypointTinyConfig()
    dataset = CornerRectangles([2], seed=4)
    example = build_example(dataset, config, 0, augmentation=A.HorizontalFlip(p=1.0),
                            rng=np.random.default_rng(0))
    points = example["input_gt_keypoints"]
    assert points.shape == (config.MAX_GT_INSTANCES, 2, 3) and points.dtype == np.float32
    assert not points[2:].any()                                      # padding rows
    _corners_match_boxes(points[:2], example["input_gt_boxes"][:2])
    # The mirror of the original corners, swapped.
    original = corner_keypoints(dataset.image_info[0]["shapes"])
    np.testing.assert_allclose(points[:2, 0, 0], 64 - original[:, 1, 0])
    assert set(input_signature(config)["input_gt_keypoints"][0]) <= {config.MAX_GT_INSTANCES, 2, 3}


class UpscaleConfig(KeypointTinyConfig):
    USE_MINI_MASK = False


def test_keypoints_follow_the_resize():
    # 48 x 48 images scaled x4/3 to the 64 x 64 input: continuous positions scale
    # by 4/3, and each corner stays on its (resized) rectangle.
    dataset = CornerRectangles([2, 3], size=48, seed=2)
    for image_id in dataset.image_ids:
        image, _, _, _, masks, points = load_image_gt(dataset, UpscaleConfig(), image_id,
                                                      keypoints=True)
        assert image.shape[:2] == (64, 64)
        original = corner_keypoints(dataset.image_info[image_id]["shapes"])
        np.testing.assert_allclose(points[..., :2], original[..., :2] * (64 / 48), rtol=1e-6)
        assert (points[..., 2] == 2).all()
        for n, k in np.ndindex(points.shape[:2]):
            assert masks[int(points[n, k, 1]), int(points[n, k, 0]), n]


class CropConfig(KeypointTinyConfig):
    IMAGE_RESIZE_MODE = "crop"      # random 64 x 64 crops of the 128 x 128 images
    USE_MINI_MASK = False


def _crop_offset(original, crop):
    h, w = crop.shape[:2]
    found = [(y, x) for y in range(original.shape[0] - h + 1)
             for x in range(original.shape[1] - w + 1)
             if np.array_equal(original[y:y + h, x:x + w], crop)]
    return found[0] if len(found) == 1 else None


def test_crops_unlabel_the_keypoints_they_leave_out():
    dataset = CornerRectangles([3] * 6, size=128, seed=5)
    dropped = kept = 0
    for image_id in dataset.image_ids:
        image, _, _, _, masks, points = load_image_gt(
            dataset, CropConfig(), image_id, rng=np.random.default_rng(image_id), keypoints=True)
        offset = _crop_offset(dataset.load_image(image_id), image)
        if offset is None:   # a crop of plain background matches several places
            continue
        full = dataset.load_mask(image_id)[0][offset[0]:offset[0] + 64,
                                              offset[1]:offset[1] + 64]
        original = corner_keypoints(dataset.image_info[image_id]["shapes"])
        original = original[full.any(axis=(0, 1))]                  # instances left in the crop
        assert points.shape == original.shape
        shifted = original[..., :2] - np.array([offset[1], offset[0]], np.float32)
        inside = ((shifted >= 0) & (shifted < 64)).all(axis=-1)
        np.testing.assert_allclose(points[..., :2][inside], shifted[inside])
        assert (points[inside][:, 2] == 2).all() and not points[~inside].any()
        dropped += int((~inside).sum())
        kept += int(inside.sum())
    assert dropped > 0 and kept > 0


class BadKeypoints(CornerRectangles):
    def load_keypoints(self, image_id, num_keypoints=None):
        return np.zeros((1, 3, 3), np.float32)


def test_wrong_keypoints_name_the_image():
    with pytest.raises(ImageLoadError, match=r"image id 0 .*load_keypoints"):
        load_image_gt(BadKeypoints([2]), KeypointTinyConfig(), 0, keypoints=True)
