"""Tests for mrcnn.data.loaders.labelme: labelme's own example files (compared with
labelme's VOC and COCO exports of them) and synthetic files written in tmp_path."""

import base64
import io
import json
import os
import re

import numpy as np
import pytest
from PIL import Image

from locations import REPO_DIR
from model_fixtures import TinyConfig
from mrcnn.data.loaders import CocoDataset, LabelmeDataset
from mrcnn.data.loaders.labelme import read_class_names

LABELME_DIR = os.path.join(os.path.dirname(REPO_DIR), "shared", "data", "labelme")
needs_labelme_data = pytest.mark.skipif(
    not os.path.isdir(os.path.join(LABELME_DIR, "data_annotated")),
    reason=f"labelme example data not found at {LABELME_DIR} (../shared/data/labelme "
           f"next to the repository)")


def _iou(a, b):
    return (a & b).sum() / (a | b).sum()


def _png(path):
    """A PNG's values: palette indices for palette PNGs, not RGB."""
    with Image.open(path) as im:
        assert im.mode in ("P", "L"), f"{path}: expected a palette or gray PNG, got {im.mode}"
        return np.asarray(im)


def _real_dataset(class_names=None):
    ds = LabelmeDataset()
    ds.load_labelme(os.path.join(LABELME_DIR, "data_annotated"), class_names=class_names)
    ds.prepare()
    return ds


def _name(ds, image_id):
    return os.path.splitext(os.path.basename(ds.image_info[image_id]["json_path"]))[0]


def _visible(masks):
    """Each instance's pixels not covered by a later one: labelme's exports paint
    the shapes in file order, so later instances hide earlier ones."""
    out = np.zeros_like(masks)
    covered = np.zeros(masks.shape[:2], dtype=bool)
    for k in range(masks.shape[-1] - 1, -1, -1):
        out[..., k] = masks[..., k] & ~covered
        covered |= masks[..., k]
    return out


# ------------------------------------------------------------- labelme's example files
@needs_labelme_data
def test_masks_match_labelme_instance_pngs():
    ds = _real_dataset()
    assert ds.num_images == 3
    ious, ignore_ious = [], []
    for image_id in ds.image_ids:
        name = _name(ds, image_id)
        masks, class_ids = ds.load_mask(image_id)
        assert masks.dtype == bool and class_ids.dtype == np.int32
        assert masks.shape[:2] == ds.load_image(image_id).shape[:2]
        objects = _png(os.path.join(LABELME_DIR, "data_dataset_voc", "SegmentationObject",
                                    f"{name}.png"))
        classes = _png(os.path.join(LABELME_DIR, "data_dataset_voc", "SegmentationClass",
                                    f"{name}.png"))
        visible = _visible(masks)
        # labelme numbers instances in order of first appearance, __ignore__ included;
        # the instance PNG keeps every object id and writes 0 where the class PNG is 255.
        object_ids = set(np.unique(objects).tolist()) - {0}
        assert object_ids == {k + 1 for k in np.flatnonzero(class_ids > 0)}
        for k in range(masks.shape[-1]):
            if class_ids[k] > 0:
                ious.append(_iou(visible[..., k], objects == k + 1))
        crowd = visible[..., class_ids < 0].any(axis=-1)
        if (classes == 255).any() or crowd.any():
            ignore_ious.append(_iou(crowd, classes == 255))
            assert not objects[classes == 255].any()
    assert len(ious) == 3 + 6 + 3 and len(ignore_ious) == 2
    # Measured: min 0.9336 (a 815-pixel bottle), median ~0.98; ignore regions 0.9648 /
    # 0.9777. labelme's PNGs are drawn by PIL with the outline, about one boundary
    # pixel wider than our pixel-centre rule, which costs small shapes most.
    assert min(ious) >= 0.93
    assert min(ignore_ious) >= 0.96


@needs_labelme_data
def test_class_ids_match_segmentation_class():
    names_file = os.path.join(LABELME_DIR, "data_dataset_voc", "class_names.txt")
    ds = _real_dataset(class_names=names_file)
    with open(names_file, encoding="utf-8") as f:
        listed = [line.strip() for line in f if line.strip()]
    assert listed[0] == "_background_"
    assert ds.class_names == ["BG"] + listed[1:]
    seen = set()
    for image_id in ds.image_ids:
        masks, class_ids = ds.load_mask(image_id)
        classes = _png(os.path.join(LABELME_DIR, "data_dataset_voc", "SegmentationClass",
                                    f"{_name(ds, image_id)}.png"))
        visible = _visible(masks)
        for k in np.flatnonzero(class_ids > 0):
            values, counts = np.unique(classes[visible[..., k]], return_counts=True)
            assert values[np.argmax(counts)] == class_ids[k]
            seen.add(ds.class_names[class_ids[k]])
        # Class values of the PNG are the ids of our instances' classes (and 0, 255).
        assert set(np.unique(classes).tolist()) - {0, 255} <= set(class_ids.tolist())
    assert seen == {"person", "bottle", "chair", "sofa", "bus", "car"}


@needs_labelme_data
def test_coco_loader_reads_labelme_coco_export_to_the_same_instances():
    ours = _real_dataset()
    coco = CocoDataset()
    coco.load_coco(os.path.join(LABELME_DIR, "data_dataset_coco", "annotations.json"),
                   os.path.join(LABELME_DIR, "data_dataset_coco"))
    coco.prepare()
    # labelme's "_background_" category (id 0, no annotations) is not a class.
    assert "_background_" not in coco.class_names
    assert coco.num_classes == 1 + 20
    by_name = {os.path.splitext(os.path.basename(info["path"]))[0]: i
               for i, info in enumerate(coco.image_info)}
    assert sorted(by_name) == sorted(_name(ours, i) for i in ours.image_ids)
    ious = []
    for image_id in ours.image_ids:
        masks, class_ids = ours.load_mask(image_id)
        coco_masks, coco_ids = coco.load_mask(by_name[_name(ours, image_id)])
        objects = class_ids > 0  # labelme's export leaves the __ignore__ regions out
        assert coco_ids.size == objects.sum()
        assert ([coco.class_names[c] for c in coco_ids]
                == [ours.class_names[c] for c in class_ids[objects]])
        for j, k in enumerate(np.flatnonzero(objects)):
            ious.append(_iou(masks[..., k], coco_masks[..., j]))
    # Measured min 0.9948: pycocotools rasterises polygons with the same pixel-centre
    # rule; the last boundary pixels differ.
    assert len(ious) == 12 and min(ious) >= 0.99


# ------------------------------------------------------------- synthetic files
H, W = 24, 32


def _image(seed=0, shape=(H, W, 3)):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _png_bytes(array):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _shape(label, points, shape_type="polygon", group_id=None, **extra):
    return {"label": label, "points": [list(map(float, p)) for p in points],
            "group_id": group_id, "shape_type": shape_type, "flags": {}, **extra}


def _write(folder, name, shapes, image=None, embed=False, write_image=True, size=None):
    """A labelme file ``<name>.json`` (+ ``<name>.png`` unless embed-only)."""
    folder.mkdir(parents=True, exist_ok=True)
    image = _image() if image is None else image
    if write_image:
        Image.fromarray(image).save(folder / f"{name}.png")
    height, width = size or image.shape[:2]
    data = {"version": "5.2.1", "flags": {}, "shapes": shapes, "imagePath": f"{name}.png",
            "imageData": base64.b64encode(_png_bytes(image)).decode() if embed else None,
            "imageHeight": height, "imageWidth": width}
    path = folder / f"{name}.json"
    path.write_text(json.dumps(data))
    return str(path)


SQUARE = [(2, 2), (6, 2), (6, 6), (2, 6)]


def test_pixel_rule_for_polygon_rectangle_and_circle(tmp_path):
    path = _write(tmp_path, "a", [
        _shape("cat", SQUARE),
        _shape("cat", [(14, 8.0), (10, 3.0)], "rectangle"),   # any corner order
        _shape("dog", [(20.0, 12.0), (23.0, 12.0)], "circle"),  # centre, point on circle
    ])
    ds = LabelmeDataset()
    ds.load_labelme(path)
    ds.prepare()
    masks, class_ids = ds.load_mask(0)
    assert masks.shape == (H, W, 3) and masks.dtype == bool
    assert ds.class_names == ["BG", "cat", "dog"]
    assert class_ids.tolist() == [1, 1, 2]
    # Pixel (r, c) is inside when its centre (c + 0.5, r + 0.5) is.
    expected = np.zeros((H, W, 3), dtype=bool)
    expected[2:6, 2:6, 0] = True          # centres 2.5 .. 5.5 inside [2, 6]
    expected[3:8, 10:14, 1] = True        # rows 3..7 (centres <= 8), columns 10..13
    rr, cc = np.mgrid[:H, :W]
    expected[..., 2] = (cc + 0.5 - 20) ** 2 + (rr + 0.5 - 12) ** 2 < 9
    np.testing.assert_array_equal(masks, expected)


def test_mask_shape_is_placed_at_its_first_point(tmp_path):
    plane = np.array([[1, 0, 0, 1], [0, 1, 1, 0], [1, 1, 1, 1]], np.uint8)
    encoded = base64.b64encode(_png_bytes(plane * 255)).decode()
    path = _write(tmp_path, "a", [_shape("cat", [(3.7, 2.2), (6.0, 4.0)], "mask",
                                         mask=encoded)])
    ds = LabelmeDataset()
    ds.load_labelme(path)
    masks, _ = ds.load_mask(0)
    expected = np.zeros((H, W), dtype=bool)
    expected[2:5, 3:7] = plane.astype(bool)  # labelme: top-left pixel int(points[0])
    np.testing.assert_array_equal(masks[..., 0], expected)
    bad = _write(tmp_path, "b", [_shape("cat", [(3, 2), (9, 4)], "mask", mask=encoded)])
    with pytest.raises(ValueError, match=r"shape 0 \(label 'cat'\): 'mask' is 4x3 \(WxH\)"):
        LabelmeDataset().load_labelme(bad)


def test_group_id_joins_shapes_of_one_label(tmp_path):
    path = _write(tmp_path, "a", [
        _shape("cat", [(1, 1), (5, 1), (5, 5), (1, 5)], group_id=3),
        _shape("cat", [(8, 1), (12, 1), (12, 5), (8, 5)]),                 # its own instance
        _shape("cat", [(1, 10), (5, 10), (5, 14), (1, 14)], group_id=3),  # joins the first
        _shape("dog", [(20, 10), (24, 10), (24, 14), (20, 14)], group_id=3),  # other label
    ])
    ds = LabelmeDataset()
    ds.load_labelme(path)
    ds.prepare()
    masks, class_ids = ds.load_mask(0)
    assert class_ids.tolist() == [1, 1, 2]
    first = np.zeros((H, W), dtype=bool)
    first[1:5, 1:5] = first[10:14, 1:5] = True
    np.testing.assert_array_equal(masks[..., 0], first)
    assert masks[..., 1].sum() == 16 and masks[1:5, 8:12, 1].all()
    assert masks[..., 2].sum() == 16 and masks[10:14, 20:24, 2].all()
    assert [len(i["shapes"]) for i in ds.image_info[0]["instances"]] == [2, 1, 1]


def test_points_and_lines_are_kept_but_are_not_masks(tmp_path):
    path = _write(tmp_path, "a", [
        _shape("cat", SQUARE, group_id=1),
        _shape("nose", [(4.5, 3.25)], "point", group_id=1),
        _shape("tail", [(1, 1), (9, 9), (12, 3)], "linestrip"),
    ])
    ds = LabelmeDataset()
    ds.load_labelme(path)
    ds.prepare()
    assert ds.class_names == ["BG", "cat"]  # point / line labels are no classes
    masks, class_ids = ds.load_mask(0)
    assert masks.shape[-1] == 1 and class_ids.tolist() == [1]
    info = ds.image_info[0]
    assert info["points"] == [{"label": "nose", "x": 4.5, "y": 3.25, "group_id": 1,
                               "shape_index": 1}]
    assert info["lines"] == [{"label": "tail", "shape_type": "linestrip",
                              "points": [[1.0, 1.0], [9.0, 9.0], [12.0, 3.0]],
                              "group_id": None, "shape_index": 2}]


def test_embedded_image_data_wins_over_the_image_file(tmp_path):
    embedded, on_disk = _image(1), _image(2)
    path = _write(tmp_path, "a", [_shape("cat", SQUARE)], image=on_disk)
    _write(tmp_path, "a", [_shape("cat", SQUARE)], image=embedded, embed=True,
           write_image=False)  # same json name: imageData now differs from a.png
    only_embedded = _write(tmp_path, "b", [_shape("cat", SQUARE)], image=embedded,
                           embed=True, write_image=False)  # b.png does not exist
    ds = LabelmeDataset()
    ds.load_labelme([path, only_embedded])
    ds.prepare()
    for image_id in ds.image_ids:
        assert ds.image_info[image_id]["image_source"] == "imageData"
        np.testing.assert_array_equal(ds.load_image(image_id), embedded)
    # Without imageData the file is read.
    plain = _write(tmp_path / "c", "a", [_shape("cat", SQUARE)], image=on_disk)
    ds = LabelmeDataset()
    ds.load_labelme(plain)
    assert ds.image_info[0]["image_source"] == "file"
    np.testing.assert_array_equal(ds.load_image(0), on_disk)


def test_class_names_list_and_file(tmp_path):
    files = [_write(tmp_path, "a", [_shape("cat", SQUARE), _shape("__ignore__", SQUARE)]),
             _write(tmp_path, "b", [_shape("dog", SQUARE)])]
    names_txt = tmp_path / "class_names.txt"
    names_txt.write_text("_background_\ndog\nbird\ncat\n")
    ds = LabelmeDataset()
    ds.load_labelme(str(tmp_path), class_names=str(names_txt))
    ds.prepare()
    assert ds.class_names == ["BG", "dog", "bird", "cat"]
    assert ds.load_mask(0)[1].tolist() == [3, -1] and ds.load_mask(1)[1].tolist() == [1]
    assert read_class_names(["__ignore__", "_background_", "a", "b"]) == ["a", "b"]

    with pytest.raises(ValueError, match=re.escape(files[1]) + r".*shape 0.*'dog'.*"
                                         r"not in class_names"):
        LabelmeDataset().load_labelme(files, class_names=["cat"])
    with pytest.raises(ValueError, match="duplicate names"):
        LabelmeDataset().load_labelme(files, class_names=["cat", "dog", "cat"])
    with pytest.raises(FileNotFoundError, match="class_names file"):
        LabelmeDataset().load_labelme(files, class_names=str(tmp_path / "missing.txt"))


def _bad_files(folder):
    """``{case: (json path, regex the error must match)}``; every case is one file."""
    cases = {}
    p = folder / "not_json.json"
    p.write_text('{"shapes": [')
    cases["not json"] = (str(p), r"is not valid JSON")
    cases["no shapes"] = (_write(folder, "empty", []), r"has no shapes")
    cases["2-point polygon"] = (
        _write(folder, "poly2", [_shape("cat", SQUARE), _shape("cat", [(1, 1), (5, 5)])]),
        r"shape 1 \(label 'cat'\): a polygon needs at least 3 points, got 2")
    cases["image missing"] = (_write(folder, "noimage", [_shape("cat", SQUARE)],
                                     write_image=False), r"image file .* does not exist")
    cases["image size"] = (_write(folder, "size", [_shape("cat", SQUARE)], size=(H, W + 1)),
                           r"is 32x24 \(WxH\) but the file says .* 33x24")
    cases["unknown type"] = (_write(folder, "kind", [_shape("cat", SQUARE, "blob")]),
                             r"shape 0 \(label 'cat'\): unknown shape_type 'blob'")
    cases["no pixel"] = (
        _write(folder, "outside", [_shape("cat", [(40, 1), (45, 1), (45, 5)])]),
        r"shape 0 \(label 'cat'\): the polygon covers no pixel")
    cases["zero circle"] = (_write(folder, "circle", [_shape("cat", [(3, 3), (3, 3)],
                                                             "circle")]),
                            r"shape 0 \(label 'cat'\): a circle of zero size")
    cases["only points"] = (_write(folder, "points", [_shape("nose", [(3, 3)], "point")]),
                            r"has no instance")
    return cases


def test_bad_input_names_the_file_and_the_shape(tmp_path):
    for case, (path, message) in _bad_files(tmp_path).items():
        with pytest.raises((ValueError, FileNotFoundError)) as info:
            LabelmeDataset().load_labelme(path)
        assert path in str(info.value), case
        assert re.search(message, str(info.value)), (case, str(info.value))


def test_skip_bad_skips_and_counts_the_bad_files(tmp_path):
    cases = _bad_files(tmp_path)
    good = _write(tmp_path, "good", [_shape("cat", SQUARE)])
    ds = LabelmeDataset()
    with pytest.warns(UserWarning, match=f"skipped {len(cases)} of {len(cases) + 1} files"):
        ds.load_labelme(str(tmp_path), skip_bad=True)
    ds.prepare()
    assert [info["json_path"] for info in ds.image_info] == [good]
    assert sorted(p for p, _ in ds.skipped_files) == sorted(p for p, _ in cases.values())
    for path, message in cases.values():
        assert re.search(message, dict(ds.skipped_files)[path])
    with pytest.raises(ValueError, match="none of the 1 files"), \
            pytest.warns(UserWarning, match="skipped 1 of 1 files"):
        LabelmeDataset().load_labelme(cases["no shapes"][0], skip_bad=True)


class _CrowdConfig(TinyConfig):
    IMAGE_MIN_DIM = IMAGE_MAX_DIM = 64
    RPN_TRAIN_ANCHORS_PER_IMAGE = 2048  # more than the anchors: no subsampling
    USE_MINI_MASK = False


def test_ignore_regions_are_crowd_in_the_training_targets(tmp_path):
    from mrcnn.data.pipeline import load_image_gt, pixel_anchors
    from mrcnn.modeling.matching import CROWD_IOU, outside_crowd
    from mrcnn.modeling.roi_heads.sampling import build_detection_targets
    from mrcnn.modeling.rpn.targets import build_rpn_targets

    path = _write(tmp_path, "a", [
        _shape("cat", [(4, 4), (24, 4), (24, 24), (4, 24)]),
        _shape("__ignore__", [(36, 40), (60, 60)], "rectangle"),
    ], image=_image(shape=(64, 64, 3)))
    ds = LabelmeDataset()
    ds.load_labelme(path, class_names=["cat", "dog"])
    ds.prepare()
    config = _CrowdConfig()
    image, _, class_ids, boxes, masks = load_image_gt(ds, config, 0)
    assert image.shape == (64, 64, 3)
    assert class_ids.tolist() == [1, -1]
    np.testing.assert_array_equal(boxes, [[4, 4, 24, 24], [40, 36, 60, 60]])

    anchors = pixel_anchors(config, image.shape)
    near_ignore = ~outside_crowd(anchors, boxes[1:])
    assert near_ignore.sum() > 50 and CROWD_IOU == 0.001
    match, _ = build_rpn_targets(anchors, class_ids, boxes, config,
                                 rng=np.random.default_rng(0))
    assert not (match[near_ignore] == -1).any()
    assert (match[~near_ignore] == -1).sum() > 100
    # Without the crowd region those anchors would be negatives.
    plain, _ = build_rpn_targets(anchors, class_ids[:1], boxes[:1], config,
                                 rng=np.random.default_rng(0))
    assert (plain[near_ignore] == -1).sum() > 50

    # RoI sampling: RoIs touching the ignore box are never negatives.
    rois = np.array([[40, 36, 60, 60], [30, 30, 50, 50], [0, 40, 20, 64], [4, 4, 24, 24]],
                    np.float32)
    t_rois, t_ids, _, _ = build_detection_targets(rois, class_ids, boxes, masks, config,
                                                  rng=np.random.default_rng(0))
    kept = {tuple(r) for r in t_rois[:4].tolist() if any(r)}
    assert kept == {(4.0, 4.0, 24.0, 24.0), (0.0, 40.0, 20.0, 64.0)}
    assert t_ids[:2].tolist() == [1, 0]


def test_skip_bad_images_in_the_pipeline_counts_a_vanished_image(tmp_path):
    from mrcnn.data.errors import SkippedImages
    from mrcnn.data.pipeline import data_generator

    gone = _write(tmp_path, "a", [_shape("cat", SQUARE)], image=_image(shape=(64, 64, 3)))
    _write(tmp_path, "b", [_shape("cat", SQUARE)], image=_image(shape=(64, 64, 3)))
    ds = LabelmeDataset()
    ds.load_labelme(str(tmp_path))
    ds.prepare()
    os.remove(tmp_path / "a.png")
    with pytest.raises(FileNotFoundError, match=re.escape(gone) + ".*does not exist"):
        ds.load_image(0)
    skipped = SkippedImages()
    batch = next(data_generator(ds, _CrowdConfig(), shuffle=False, on_error="skip",
                                skipped_images=skipped))
    assert skipped.total == 1 and skipped.counts == {0: 1}
    assert batch["input_gt_class_ids"][0, 0] == 1
