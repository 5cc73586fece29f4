"""Tests of Dataset.load_keypoints / keypoint_classes (mrcnn.data.dataset)."""

import numpy as np
import pytest

from mrcnn.data.dataset import Dataset


class TwoInstances(Dataset):
    def load_mask(self, image_id):
        masks = np.zeros((8, 8, 2), bool)
        masks[:4, :4, 0] = masks[4:, 4:, 1] = True
        return masks, np.array([1, 1], np.int32)


def make(**info):
    ds = TwoInstances()
    ds.add_class("t", 1, "thing")
    ds.add_image("t", 0, None, **info)
    ds.prepare()
    return ds


def test_default_is_unlabelled_keypoints_aligned_with_the_masks():
    ds = make()
    out = ds.load_keypoints(0, num_keypoints=3)
    assert out.shape == (2, 3, 3) and out.dtype == np.float32 and not out.any()
    assert ds.load_keypoints(0).shape == (2, 0, 3)          # no keypoint names
    assert ds.keypoint_classes() is None


def test_keypoints_from_image_info_are_checked():
    points = [[[1.5, 2.5, 2]], [[6.0, 7.0, 1]]]
    ds = make(keypoints=points)
    assert ds.load_keypoints(0, 1).tolist() == points
    with pytest.raises(ValueError, match=r"image id 0 .*1 keypoints per instance, expected 2"):
        ds.load_keypoints(0, 2)
    with pytest.raises(ValueError, match="visibility .* must be 0, 1 or 2"):
        make(keypoints=[[[1, 1, 5]], [[0, 0, 0]]]).load_keypoints(0, 1)


def test_keypoint_classes_map_source_ids_to_internal_ids():
    ds = TwoInstances()
    ds.add_class("t", 7, "a")
    ds.add_class("t", 9, "b")
    ds.keypoint_class_sets = {"t.9": [0, 2]}
    ds.prepare()
    assert ds.keypoint_classes() == {2: [0, 2]}
