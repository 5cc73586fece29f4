"""Tests of LabelmeDataset.load_keypoints (mrcnn.data.loaders.labelme): point shapes
assigned to instances, on files written here."""

import json

import numpy as np
import pytest
from PIL import Image

from mrcnn.data.loaders import LabelmeDataset


def shape(label, shape_type, points, group_id=None):
    return {"label": label, "shape_type": shape_type, "points": points, "group_id": group_id}


def write(tmp_path, shapes, name="a"):
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(tmp_path / f"{name}.png")
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"shapes": shapes, "imagePath": f"{name}.png",
                                "imageHeight": 30, "imageWidth": 40, "imageData": None}))
    return str(path)


def load(path, **kwargs):
    ds = LabelmeDataset()
    ds.load_labelme(path, **kwargs)
    ds.prepare()
    return ds


BASE = [shape("tri", "polygon", [[10, 5], [2, 20], [18, 20]]),
        shape("box", "rectangle", [[22, 4], [36, 16]]),
        shape("box", "rectangle", [[24, 20], [30, 28]], group_id=7)]


def test_points_go_to_the_mask_holding_them_snapped_or_by_group(tmp_path):
    path = write(tmp_path, BASE + [
        shape("apex", "point", [[10.0, 5.0]]),          # the sharp apex: snapped (1.58 px away)
        shape("corner", "point", [[22.0, 4.0]]),        # the rectangle's corner pixel
        shape("corner", "point", [[39.0, 2.0]], 7),     # far, but group_id 7
    ])
    ds = load(path)
    assert ds.keypoint_names == ("apex", "corner")      # sorted point labels
    masks, _ = ds.load_mask(0)
    out = ds.load_keypoints(0)
    assert out.shape == (3, 2, 3)
    assert not masks[5, 10, 0]                           # the vertex pixel is outside...
    assert out[0].tolist() == [[10.0, 5.0, 2], [0, 0, 0]]   # ...but within 2 px
    assert out[1].tolist() == [[0, 0, 0], [22.0, 4.0, 2]]
    assert out[2].tolist() == [[0, 0, 0], [39.0, 2.0, 2]]


def test_overlapping_masks_give_the_point_to_the_top_instance(tmp_path):
    path = write(tmp_path, [shape("box", "rectangle", [[0, 0], [20, 20]]),
                            shape("box", "rectangle", [[5, 5], [15, 15]]),
                            shape("corner", "point", [[10.5, 10.5]])])
    out = load(path).load_keypoints(0)
    assert out[:, 0, 2].tolist() == [0, 2]


@pytest.mark.parametrize("extra, message", [
    ([shape("apex", "point", [[38.0, 27.0]])], r"shape 3 \(point 'apex'\): at \(38.0, 27.0\) "
                                               r"it lies on no instance"),
    ([shape("apex", "point", [[10.0, 15.0]]), shape("apex", "point", [[9.0, 16.0]])],
     r"shape 4 .*instance 0 \('tri'\) already has a point 'apex'"),
    ([shape("apex", "point", [[10.0, 15.0]], group_id=3)], "no instance has group_id 3"),
])
def test_bad_points_name_the_file_and_shape(tmp_path, extra, message):
    ds = load(write(tmp_path, BASE + extra))
    with pytest.raises(ValueError, match=message):
        ds.load_keypoints(0)


def test_explicit_keypoint_names_order_and_unknown_label(tmp_path):
    path = write(tmp_path, BASE + [shape("apex", "point", [[10.0, 15.0]]),
                                   shape("ear", "point", [[25.0, 6.0]])])
    with pytest.raises(ValueError, match=r"point 'ear'\): the label is not one of "
                                         r"keypoint_names \['corner', 'apex'\]"):
        load(path, keypoint_names=["corner", "apex"]).load_keypoints(0)
    out = load(path, keypoint_names=["ear", "apex"]).load_keypoints(0)
    assert out[0].tolist() == [[0, 0, 0], [10.0, 15.0, 2]]
    assert out[1].tolist() == [[25.0, 6.0, 2], [0, 0, 0]]
