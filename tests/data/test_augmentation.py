"""Tests for mrcnn.data.augmentation: imgaug-like, albumentations and callable adapters."""

import albumentations as A
import numpy as np
import pytest

from mrcnn.data.augmentation import apply_augmentation, augmentation_kind
from mrcnn.structures.boxes import extract_bboxes


def _sample(n=2):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)
    masks = np.zeros((16, 24, n), bool)
    if n >= 1:
        masks[2:6, 1:5, 0] = True
    if n >= 2:
        masks[8:15, 10:20, 1] = True
    return image, masks


class FakeRandomShift:
    """imgaug-like: to_deterministic() fixes a random horizontal roll."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.calls = []

    def to_deterministic(self):
        shift = int(self.rng.integers(1, 10))
        outer = self

        class Deterministic:
            def augment_image(self, image):  # no `hooks` parameter: imgaug is absent
                outer.calls.append(image.dtype)
                return np.roll(image, shift, axis=1)

        self.shift = shift
        return Deterministic()


def test_imgaug_like_applies_the_same_transform_to_image_and_masks():
    image, masks = _sample()
    aug = FakeRandomShift(3)
    assert augmentation_kind(aug) == "imgaug"
    out_image, out_masks = apply_augmentation(aug, image, masks)
    np.testing.assert_array_equal(out_image, np.roll(image, aug.shift, axis=1))
    np.testing.assert_array_equal(out_masks, np.roll(masks, aug.shift, axis=1))
    assert out_masks.dtype == bool
    assert aug.calls == [np.uint8, np.uint8]  # image, then uint8 0/1 mask stack


def test_imgaug_like_with_no_instances():
    image, masks = _sample(0)
    out_image, out_masks = apply_augmentation(FakeRandomShift(0), image, masks)
    assert out_masks.shape == (16, 24, 0) and out_masks.dtype == bool
    assert out_image.shape == image.shape


@pytest.mark.parametrize("transform", [A.HorizontalFlip(p=1.0),
                                       A.Compose([A.HorizontalFlip(p=1.0)])])
def test_albumentations_horizontal_flip_mirrors_boxes(transform):
    image, masks = _sample()
    assert augmentation_kind(transform) == "albumentations"
    out_image, out_masks = apply_augmentation(transform, image, masks)
    np.testing.assert_array_equal(out_image, image[:, ::-1])
    assert out_masks.dtype == bool and out_masks.shape == masks.shape
    # Mirrored boxes: x1' = W - x2, x2' = W - x1 (exclusive ends), W = 24.
    assert extract_bboxes(out_masks).tolist() == [[2, 19, 6, 23], [8, 4, 15, 14]]


def test_albumentations_with_no_instances():
    image, masks = _sample(0)
    out_image, out_masks = apply_augmentation(A.HorizontalFlip(p=1.0), image, masks)
    np.testing.assert_array_equal(out_image, image[:, ::-1])
    assert out_masks.shape == (16, 24, 0)


def test_plain_callable():
    image, masks = _sample()

    def flip_up_down(image, masks):
        return image[::-1], masks[::-1].astype(np.uint8)  # non-bool masks accepted

    assert augmentation_kind(flip_up_down) == "callable"
    out_image, out_masks = apply_augmentation(flip_up_down, image, masks)
    np.testing.assert_array_equal(out_image, image[::-1])
    assert out_masks.dtype == bool
    assert extract_bboxes(out_masks).tolist() == [[10, 1, 14, 5], [1, 10, 8, 20]]


def test_float_masks_are_thresholded_at_half():
    image, masks = _sample(1)

    def soften(image, masks):
        return image, masks.astype(np.float32) * 0.4

    _, out_masks = apply_augmentation(soften, image, masks)
    assert not out_masks.any()


def test_unsupported_augmentation_is_a_type_error():
    image, masks = _sample()
    with pytest.raises(TypeError, match="imgaug augmenter"):
        apply_augmentation(42, image, masks)
    with pytest.raises(TypeError, match=r"must return \(image, masks\)"):
        apply_augmentation(lambda image, masks: image, image, masks)


def test_shape_and_dtype_changes_are_rejected():
    image, masks = _sample()
    with pytest.raises(ValueError, match="changed the image shape"):
        apply_augmentation(lambda i, m: (i[:8], m[:8]), image, masks)
    with pytest.raises(ValueError, match="returned masks of shape"):
        apply_augmentation(lambda i, m: (i, m[:, :, :1]), image, masks)
    with pytest.raises(TypeError, match="changed the image dtype"):
        apply_augmentation(lambda i, m: (i.astype(np.float32), m), image, masks)


def _keypoints():
    # Instance 0: (left, right) = (1.5, 3.5) at y 2.5; instance 1: (10.5, 19.5) at y 8.5.
    return np.array([[[1.5, 2.5, 2], [3.5, 2.5, 1]], [[10.5, 8.5, 2], [19.5, 8.5, 2]]],
                    np.float32)


def test_albumentations_flip_moves_and_swaps_keypoints():
    image, masks = _sample()
    out_image, out_masks, points = apply_augmentation(
        A.HorizontalFlip(p=1.0), image, masks, keypoints=_keypoints(), flip_permutation=[1, 0])
    np.testing.assert_array_equal(out_image, image[:, ::-1])
    # x -> 24 - x (continuous pixels), then left and right swapped; visibility kept.
    np.testing.assert_allclose(points, [[[20.5, 2.5, 1], [22.5, 2.5, 2]],
                                        [[4.5, 8.5, 2], [13.5, 8.5, 2]]])
    # Two flips: back where they were, not swapped.
    _, _, twice = apply_augmentation(A.Compose([A.HorizontalFlip(p=1.0), A.HorizontalFlip(p=1.0)]),
                                     image, masks, keypoints=_keypoints(), flip_permutation=[1, 0])
    np.testing.assert_allclose(twice, _keypoints(), atol=1e-5)
    # A vertical flip moves y only and swaps nothing.
    _, _, vertical = apply_augmentation(A.VerticalFlip(p=1.0), image, masks,
                                        keypoints=_keypoints(), flip_permutation=[1, 0])
    np.testing.assert_allclose(vertical[..., 1], 16 - _keypoints()[..., 1])
    np.testing.assert_allclose(vertical[..., 0], _keypoints()[..., 0])


def test_keypoints_moved_out_of_the_image_become_unlabelled():
    image, masks = _sample()
    shift = A.Affine(translate_px={"x": 6, "y": 0}, p=1.0)
    _, _, points = apply_augmentation(shift, image, masks, keypoints=_keypoints())
    np.testing.assert_allclose(points[0], [[7.5, 2.5, 2], [9.5, 2.5, 1]], atol=1e-4)
    np.testing.assert_allclose(points[1, 0], [16.5, 8.5, 2], atol=1e-4)
    assert not points[1, 1].any()                                    # 25.5 >= 24: outside


def test_keypoints_with_augmenters_that_cannot_move_them():
    image, masks = _sample()
    brighter = lambda i, m: (np.clip(i.astype(int) + 10, 0, 255).astype(np.uint8), m)  # noqa: E731
    out_image, out_masks, points = apply_augmentation(brighter, image, masks,
                                                      keypoints=_keypoints())
    np.testing.assert_array_equal(points, _keypoints())
    with pytest.raises(ValueError, match="cannot move the keypoints"):
        apply_augmentation(lambda i, m: (i[::-1], m[::-1]), image, masks, keypoints=_keypoints())
    with pytest.raises(ValueError, match="cannot move the keypoints"):
        apply_augmentation(FakeRandomShift(1), image, masks, keypoints=_keypoints())
    # Without labelled keypoints anything goes, and the keypoints come back as they were.
    _, _, none = apply_augmentation(lambda i, m: (i[::-1], m[::-1]), image, masks,
                                    keypoints=np.zeros((2, 2, 3), np.float32))
    assert not none.any()
