"""Tests of CocoDataset's keypoints (mrcnn.data.loaders.coco) on files written here."""

import json

import pytest

from mrcnn.data.loaders import CocoDataset
from mrcnn.data.loaders.coco import COCO_KEYPOINT_SHIFT


def box_polygon(x1, y1, x2, y2):
    return [[x1, y1, x2, y1, x2, y2, x1, y2]]


@pytest.fixture
def coco_file(tmp_path):
    data = {
        "images": [{"id": 1, "file_name": "a.png", "width": 40, "height": 30}],
        "categories": [
            {"id": 1, "name": "person", "keypoints": ["nose", "left_eye", "right_eye"],
             "skeleton": [[1, 2], [1, 3]]},
            {"id": 2, "name": "cat", "keypoints": ["nose", "tail"], "skeleton": [[1, 2]]},
            {"id": 3, "name": "ball"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "iscrowd": 0,
             "segmentation": box_polygon(2, 2, 12, 20), "num_keypoints": 2,
             "keypoints": [5, 4, 2, 0, 0, 0, 9, 4, 1]},
            {"id": 11, "image_id": 1, "category_id": 3, "iscrowd": 0,   # covers no pixel
             "segmentation": box_polygon(30, 5, 30.2, 5.2)},
            {"id": 12, "image_id": 1, "category_id": 3, "iscrowd": 0,
             "segmentation": box_polygon(30, 5, 38, 12)},
            {"id": 13, "image_id": 1, "category_id": 2, "iscrowd": 0,
             "segmentation": box_polygon(15, 15, 28, 28), "keypoints": [20, 18, 2, 27, 26, 2]},
        ]}
    path = tmp_path / "kp.json"
    path.write_text(json.dumps(data))
    return str(path), str(tmp_path), data


def test_coco_keypoints_follow_load_mask_and_category_sets(coco_file):
    path, image_dir, _ = coco_file
    ds = CocoDataset()
    ds.load_coco(path, image_dir)
    ds.prepare()
    assert ds.keypoint_names == ("nose", "left_eye", "right_eye", "tail")
    assert ds.keypoint_skeleton == ((0, 1), (0, 2), (0, 3))
    assert ds.keypoint_classes() == {1: [0, 1, 2], 2: [0, 3]}
    with pytest.warns(UserWarning, match="covers no pixel"):
        masks, class_ids = ds.load_mask(0)
    out = ds.load_keypoints(0)
    assert masks.shape[-1] == 3 and out.shape == (3, 4, 3)
    s = COCO_KEYPOINT_SHIFT
    assert out[0].tolist() == [[5 + s, 4 + s, 2], [0, 0, 0], [9 + s, 4 + s, 1], [0, 0, 0]]
    assert not out[1].any()                                   # the ball: no keypoints
    assert out[2].tolist() == [[20 + s, 18 + s, 2], [0, 0, 0], [0, 0, 0], [27 + s, 26 + s, 2]]
    assert ds.load_keypoints(0, num_keypoints=6).shape == (3, 6, 3)
    with pytest.raises(ValueError, match="does not fit NUM_KEYPOINTS = 2"):
        ds.load_keypoints(0, num_keypoints=2)


def test_coco_bad_keypoints_name_the_annotation(coco_file, tmp_path):
    path, image_dir, data = coco_file
    data["annotations"][0]["keypoints"] = [5, 4, 2]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    ds = CocoDataset()
    ds.load_coco(str(bad), image_dir, class_ids=[1])
    ds.prepare()
    with pytest.raises(ValueError, match=r"image 1 .*annotation 10: 3 keypoint values, "
                                         r"expected 9"):
        ds.load_keypoints(0)
    data["categories"][0]["skeleton"] = [[1, 4]]
    bad.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="category 1 .*skeleton pair \\[1, 4\\]"):
        CocoDataset().load_coco(str(bad), image_dir)
