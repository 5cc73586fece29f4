"""Tests for mrcnn.data.loaders: COCO, VIA and folder data sets built in tmp_path."""

import json
import warnings

import numpy as np
import pytest
import skimage.io
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycocotools import mask as mask_utils

from mrcnn.data.loaders import CocoDataset, FolderDataset, ViaDataset

# pycocotools' decode trips a NumPy 2 deprecation warning; not ours to fix.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")

H, W = 32, 48


def _save_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    skimage.io.imsave(path, array, check_contrast=False)


def _image(seed=0, shape=(H, W, 3)):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _box_mask(y1, x1, y2, x2, shape=(H, W)):
    """bool mask with pixels [y1:y2, x1:x2] set (exclusive end)."""
    m = np.zeros(shape, dtype=bool)
    m[y1:y2, x1:x2] = True
    return m


def _column_major_counts(mask):
    """Uncompressed COCO RLE counts, written out by hand: alternating run
    lengths of 0s and 1s over the mask read column by column."""
    flat = mask.T.reshape(-1).astype(int)
    counts, current, run = [], 0, 0
    for v in flat:
        if v == current:
            run += 1
        else:
            counts.append(run)
            current, run = v, 1
    counts.append(run)
    return counts


# ---------------------------------------------------------------------- COCO
@pytest.fixture
def coco_files(tmp_path):
    image_dir = tmp_path / "images"
    for i in (1, 2, 3):
        _save_png(image_dir / f"im{i}.png", _image(i))
    rle_mask = _box_mask(2, 30, 6, 41)
    crowd_mask = _box_mask(20, 0, 32, 10)
    compressed = mask_utils.encode(np.asfortranarray(_box_mask(10, 20, 30, 22).astype(np.uint8)))
    data = {
        "images": [{"id": i, "file_name": f"im{i}.png", "height": H, "width": W}
                   for i in (1, 2, 3)],
        "categories": [{"id": 7, "name": "cat"}, {"id": 9, "name": "dog"},
                       {"id": 11, "name": "bird"}],
        "annotations": [
            # Polygon: rectangle x 5..15, y 4..12 -> pixels y 4..11, x 5..14.
            {"id": 100, "image_id": 1, "category_id": 7, "iscrowd": 0,
             "segmentation": [[5, 4, 15, 4, 15, 12, 5, 12]], "bbox": [5, 4, 10, 8], "area": 80},
            {"id": 101, "image_id": 1, "category_id": 9, "iscrowd": 0,
             "segmentation": {"size": [H, W], "counts": _column_major_counts(rle_mask)},
             "bbox": [30, 2, 11, 4], "area": 44},
            {"id": 102, "image_id": 1, "category_id": 7, "iscrowd": 1,
             "segmentation": {"size": [H, W], "counts": _column_major_counts(crowd_mask)},
             "bbox": [0, 20, 10, 12], "area": 120},
            {"id": 200, "image_id": 2, "category_id": 9, "iscrowd": 0,
             "segmentation": {"size": [H, W], "counts": compressed["counts"].decode()},
             "bbox": [20, 10, 2, 20], "area": 40},
            # Sub-pixel triangle: no pixel after rasterising -> skipped with a warning.
            {"id": 201, "image_id": 2, "category_id": 7, "iscrowd": 0,
             "segmentation": [[10, 10, 10.1, 10, 10, 10.1]], "bbox": [10, 10, 0.1, 0.1],
             "area": 0.005},
            # Four numbers are not a polygon (pycocotools would read them as a box).
            {"id": 300, "image_id": 3, "category_id": 7, "iscrowd": 0,
             "segmentation": [[1, 2, 3, 4]], "bbox": [1, 2, 2, 2], "area": 4},
        ],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    return path, image_dir, {"rle": rle_mask, "crowd": crowd_mask}


def test_coco_polygon_and_rle_and_crowd(coco_files):
    path, image_dir, expected = coco_files
    ds = CocoDataset()
    coco = ds.load_coco(path, image_dir, return_coco=True)
    ds.prepare()
    assert coco is not None and sorted(coco.imgs) == [1, 2, 3]
    assert ds.class_names == ["BG", "cat", "dog", "bird"]
    assert ds.num_images == 3
    assert [i["id"] for i in ds.image_info] == [1, 2, 3]
    assert ds.image_info[0]["width"] == W and ds.image_info[0]["height"] == H
    assert ds.image_reference(0) == str(image_dir / "im1.png")
    np.testing.assert_array_equal(ds.load_image(0), _image(1))

    masks, class_ids = ds.load_mask(0)
    assert masks.shape == (H, W, 3) and masks.dtype == bool and class_ids.dtype == np.int32
    # cat = internal 1, dog = internal 2; the crowd cat region is negative.
    np.testing.assert_array_equal(class_ids, [1, 2, -1])
    np.testing.assert_array_equal(masks[..., 0], _box_mask(4, 5, 12, 15))
    np.testing.assert_array_equal(masks[..., 1], expected["rle"])
    np.testing.assert_array_equal(masks[..., 2], expected["crowd"])

    with pytest.warns(UserWarning, match=r"image 2 .*annotation 201"):
        masks, class_ids = ds.load_mask(1)
    np.testing.assert_array_equal(class_ids, [2])
    np.testing.assert_array_equal(masks[..., 0], _box_mask(10, 20, 30, 22))

    with pytest.warns(UserWarning, match=r"image 3 .*annotation 300.*polygon 0"):
        masks, class_ids = ds.load_mask(2)  # no usable annotation
    assert masks.shape == (H, W, 0) and class_ids.shape == (0,)


def test_coco_legacy_directory_call(coco_files, tmp_path):
    path, image_dir, _ = coco_files
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "instances_minival2014.json").write_text(path.read_text())
    image_dir.rename(root / "val2014")
    ds = CocoDataset()
    ds.load_coco(str(root), "minival", year="2014")
    ds.prepare()
    assert ds.num_images == 3
    assert ds.image_reference(0) == str(root / "val2014" / "im1.png")
    assert ds.load_image(0).shape == (H, W, 3)


def test_coco_class_and_image_subsets(coco_files):
    path, image_dir, _ = coco_files
    ds = CocoDataset()
    ds.load_coco(path, image_dir, class_ids=[9])
    ds.prepare()
    assert ds.class_names == ["BG", "dog"]
    assert [i["id"] for i in ds.image_info] == [1, 2]  # images containing a dog
    masks, class_ids = ds.load_mask(0)
    np.testing.assert_array_equal(class_ids, [1])
    assert masks.shape == (H, W, 1)

    ds = CocoDataset()
    ds.load_coco(path, image_dir, image_ids=[2, 3])
    ds.prepare()
    assert [i["id"] for i in ds.image_info] == [2, 3]

    with pytest.raises(ValueError, match=r"category ids \[5\]"):
        CocoDataset().load_coco(path, image_dir, class_ids=[5])
    with pytest.raises(ValueError, match=r"image ids \[42\]"):
        CocoDataset().load_coco(path, image_dir, image_ids=[42])


def test_coco_two_sources_keep_separate_classes(coco_files):
    path, image_dir, _ = coco_files
    ds = CocoDataset()
    ds.load_coco(path, image_dir, class_ids=[7], source="coco")
    ds.load_coco(path, image_dir, class_ids=[7], source="other")
    ds.prepare()
    assert ds.map_source_class_id("coco.7") == 1 and ds.map_source_class_id("other.7") == 2
    _, ids_first = ds.load_mask(0)
    _, ids_second = ds.load_mask(ds.image_from_source_map["other.1"])
    np.testing.assert_array_equal(ids_first, [1, -1])
    np.testing.assert_array_equal(ids_second, [2, -2])


def test_coco_malformed_json_names_file_and_position(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{\n  "images": [],\n  "annotations": [,]\n}')
    with pytest.raises(ValueError) as info:
        CocoDataset().load_coco(path, tmp_path)
    message = str(info.value)
    assert "broken.json" in message and "line 3" in message and "column" in message

    path.write_text('{"images": []}')
    with pytest.raises(ValueError, match="annotations"):
        CocoDataset().load_coco(path, tmp_path)


def test_coco_missing_image_and_bad_rle_size(coco_files, tmp_path):
    path, image_dir, _ = coco_files
    (image_dir / "im3.png").unlink()
    ds = CocoDataset()
    ds.load_coco(path, image_dir)
    ds.prepare()
    with pytest.raises(FileNotFoundError) as info:
        ds.load_image(2)
    assert "im3.png" in str(info.value) and "source id 3" in str(info.value)

    data = json.loads(path.read_text())
    data["annotations"][1]["segmentation"]["size"] = [H, W + 1]
    bad = tmp_path / "bad_size.json"
    bad.write_text(json.dumps(data))
    ds = CocoDataset()
    ds.load_coco(bad, image_dir)
    ds.prepare()
    with pytest.raises(ValueError, match=r"annotation 101.*RLE size"):
        ds.load_mask(0)


# ---------------------------------------------------------------------- VIA
def _via_setup(tmp_path, regions_by_file, project=False, regions_as_dict=False):
    image_dir = tmp_path / "via_images"
    entries = {}
    for k, (filename, regions) in enumerate(regions_by_file.items()):
        _save_png(image_dir / filename, _image(k))
        if regions_as_dict:
            regions = {str(i): r for i, r in enumerate(regions)}
        entries[f"{filename}1234"] = {"filename": filename, "size": 1234, "regions": regions,
                                      "file_attributes": {}}
    data = {"_via_settings": {}, "_via_img_metadata": entries,
            "_via_attributes": {}} if project else entries
    path = tmp_path / "via.json"
    path.write_text(json.dumps(data))
    return path, image_dir


def _polygon(xs, ys, **attributes):
    return {"shape_attributes": {"name": "polygon", "all_points_x": xs, "all_points_y": ys},
            "region_attributes": attributes}


def test_via_1x_export_with_classes(tmp_path):
    regions = {
        "a.png": [_polygon([5, 15, 15, 5], [4, 4, 12, 12], name="balloon"),
                  _polygon([30, 40, 30], [2, 2, 20], name="kite")],
        "b.png": [_polygon([0, 3, 3, 0], [0, 0, 3, 3], name="balloon")],
    }
    path, image_dir = _via_setup(tmp_path, regions, regions_as_dict=True)
    ds = ViaDataset()
    ds.load_via(path, image_dir, class_attribute="name")
    ds.prepare()
    assert ds.class_names == ["BG", "balloon", "kite"]
    assert ds.num_images == 2
    assert ds.image_info[0]["height"] == H and ds.image_info[0]["width"] == W
    assert ds.image_reference(0) == str(image_dir / "a.png")
    masks, class_ids = ds.load_mask(0)
    assert masks.shape == (H, W, 2) and masks.dtype == bool
    np.testing.assert_array_equal(class_ids, [1, 2])
    # skimage.draw.polygon includes the boundary of an axis-aligned rectangle.
    np.testing.assert_array_equal(masks[..., 0], _box_mask(4, 5, 13, 16))
    # Triangle (30,2)-(40,2)-(30,20): pixel (row 3, col 31) inside, (row 19, col 39) outside.
    assert masks[3, 31, 1] and not masks[19, 39, 1]
    np.testing.assert_array_equal(ds.load_mask(1)[0][..., 0], _box_mask(0, 0, 4, 4))

    kites = ViaDataset()
    with pytest.warns(UserWarning, match=r"classes \['balloon'\]"):
        kites.load_via(path, image_dir, class_attribute="name", class_names=["kite"])
    kites.prepare()
    masks, class_ids = kites.load_mask(0)
    np.testing.assert_array_equal(class_ids, [1])
    assert masks[3, 31, 0] and not masks[5, 5, 0]
    assert kites.load_mask(1)[0].shape == (H, W, 0)


def test_via_2x_project_shapes_without_class_attribute(tmp_path):
    regions = {"c.png": [
        {"shape_attributes": {"name": "rect", "x": 2, "y": 3, "width": 10, "height": 5},
         "region_attributes": {}},
        {"shape_attributes": {"name": "circle", "cx": 30, "cy": 16, "r": 4},
         "region_attributes": {}},
        {"shape_attributes": {"name": "ellipse", "cx": 24, "cy": 16, "rx": 12, "ry": 2,
                              "theta": np.pi / 4}, "region_attributes": {}},
        {"shape_attributes": {"name": "point", "cx": 3, "cy": 3}, "region_attributes": {}},
        # Partly outside the image: clipped to rows 28..31, cols 40..47.
        _polygon([40, 60, 60, 40], [28, 28, 50, 50]),
    ]}
    path, image_dir = _via_setup(tmp_path, regions, project=True)
    ds = ViaDataset()
    ds.load_via(path, image_dir, class_names=["thing"])
    ds.prepare()
    assert ds.class_names == ["BG", "thing"]
    with pytest.warns(UserWarning, match=r"region 3.*point"):
        masks, class_ids = ds.load_mask(0)
    np.testing.assert_array_equal(class_ids, [1, 1, 1, 1])
    np.testing.assert_array_equal(masks[..., 0], _box_mask(3, 2, 8, 12))
    circle = masks[..., 1]
    assert circle[16, 30] and circle[16, 33] and not circle[16, 35] and not circle[12 - 1, 30]
    ellipse = masks[..., 2]
    # theta = 45 degrees clockwise on screen (y down): the long axis runs to the lower right.
    assert ellipse[16 + 6, 24 + 6] and ellipse[16 - 6, 24 - 6]
    assert not ellipse[16 - 6, 24 + 6] and not ellipse[16 + 6, 24 - 6]
    np.testing.assert_array_equal(masks[..., 3], _box_mask(28, 40, 32, 48))


def test_via_degenerate_and_malformed_regions(tmp_path):
    regions = {"d.png": [_polygon([1, 5], [1, 5]),                # two points
                         _polygon([1, 5, 9], [1, 5, 9]),          # collinear: zero area
                         _polygon([1, 9, 9], [1, 1, 9])]}
    path, image_dir = _via_setup(tmp_path, regions)
    ds = ViaDataset()
    ds.load_via(path, image_dir)
    ds.prepare()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        masks, class_ids = ds.load_mask(0)
    messages = [str(w.message) for w in caught]
    assert any("'d.png'" in m and "region 0" in m and "degenerate" in m for m in messages)
    assert any("'d.png'" in m and "region 1" in m and "degenerate" in m for m in messages)
    assert masks.shape == (H, W, 1) and class_ids.tolist() == [1]

    bad = {"e.png": [_polygon([1, 5, 9], [1, 5])]}
    path, image_dir = _via_setup(tmp_path / "bad", bad)
    ds = ViaDataset()
    ds.load_via(path, image_dir)
    ds.prepare()
    with pytest.raises(ValueError, match=r"'e.png'.*region 0.*all_points_y has 2"):
        ds.load_mask(0)

    unlabeled = {"f.png": [_polygon([1, 9, 9], [1, 1, 9])]}
    path, image_dir = _via_setup(tmp_path / "unlabeled", unlabeled)
    with pytest.raises(ValueError, match=r"'f.png'.*region 0.*'name'"):
        ViaDataset().load_via(path, image_dir, class_attribute="name")


def test_via_malformed_json_and_missing_image(tmp_path):
    path = tmp_path / "via_broken.json"
    path.write_text('{"a.png": {"filename": "a.png", "regions": [}')
    with pytest.raises(ValueError) as info:
        ViaDataset().load_via(path, tmp_path)
    assert "via_broken.json" in str(info.value) and "line 1" in str(info.value)

    path.write_text(json.dumps({"k": {"filename": "ghost.png", "regions": []}}))
    with pytest.raises(FileNotFoundError, match="ghost.png"):
        ViaDataset().load_via(path, tmp_path)


_coordinate = st.one_of(st.floats(-40, 90, allow_nan=False),
                        st.integers(-1000, 1000), st.just(float("nan")))


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(polygons=st.lists(st.tuples(st.lists(_coordinate, max_size=7),
                                   st.lists(_coordinate, max_size=7)), max_size=4))
def test_via_fuzz_random_polygons(tmp_path_factory, polygons):
    tmp_path = tmp_path_factory.mktemp("fuzz")
    regions = {"z.png": [_polygon(xs, ys) for xs, ys in polygons]}
    path, image_dir = _via_setup(tmp_path, regions)
    # json.dumps writes NaN as the non-standard token NaN, which json.load accepts.
    ds = ViaDataset()
    ds.load_via(path, image_dir)
    ds.prepare()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            masks, class_ids = ds.load_mask(0)
    except ValueError as exc:
        assert "'z.png'" in str(exc) and "region" in str(exc)
        return
    assert masks.dtype == bool and masks.ndim == 3 and masks.shape[:2] == (H, W)
    assert class_ids.dtype == np.int32 and class_ids.shape == (masks.shape[2],)
    assert masks.shape[2] <= len(polygons)
    assert all(masks[..., k].any() for k in range(masks.shape[2]))


# ---------------------------------------------------------------------- folder
def test_folder_masks_layout_with_class_prefixes(tmp_path):
    _save_png(tmp_path / "images" / "one.png", _image(1))
    _save_png(tmp_path / "images" / "two.jpg", _image(2))
    _save_png(tmp_path / "masks" / "one" / "cat_0.png", _box_mask(0, 0, 5, 5).astype(np.uint8) * 255)
    _save_png(tmp_path / "masks" / "one" / "dog_0.png", _box_mask(5, 5, 9, 20).astype(np.uint8))
    _save_png(tmp_path / "masks" / "one" / "cat_1.png", _box_mask(20, 30, 32, 48).astype(np.uint8) * 255)
    ds = FolderDataset()
    ds.load_folder(tmp_path)
    ds.prepare()
    assert ds.class_names == ["BG", "cat", "dog"]
    assert [i["id"] for i in ds.image_info] == ["one", "two"]
    assert ds.image_info[1]["width"] == W and ds.image_info[1]["height"] == H
    masks, class_ids = ds.load_mask(0)
    np.testing.assert_array_equal(class_ids, [1, 1, 2])  # sorted files: cat_0, cat_1, dog_0
    np.testing.assert_array_equal(masks[..., 0], _box_mask(0, 0, 5, 5))
    np.testing.assert_array_equal(masks[..., 1], _box_mask(20, 30, 32, 48))
    np.testing.assert_array_equal(masks[..., 2], _box_mask(5, 5, 9, 20))
    masks, class_ids = ds.load_mask(1)  # no mask folder
    assert masks.shape == (H, W, 0) and class_ids.shape == (0,)

    with pytest.raises(ValueError, match="bird"):
        FolderDataset().load_folder(tmp_path, class_names=["bird", "fish"])
    single = FolderDataset()
    single.load_folder(tmp_path, class_names=["animal"])
    single.prepare()
    np.testing.assert_array_equal(single.load_mask(0)[1], [1, 1, 1])


def test_folder_mask_size_mismatch_names_both_files(tmp_path):
    _save_png(tmp_path / "images" / "one.png", _image(1))
    _save_png(tmp_path / "masks" / "one" / "0.png", np.ones((H, W + 2), np.uint8))
    ds = FolderDataset()
    ds.load_folder(tmp_path)
    ds.prepare()
    with pytest.raises(ValueError) as info:
        ds.load_mask(0)
    message = str(info.value)
    assert "0.png" in message and "one.png" in message
    assert f"{W + 2}x{H}" in message and f"{W}x{H}" in message


def test_folder_labels_layout(tmp_path):
    _save_png(tmp_path / "images" / "one.png", _image(1))
    labels = np.zeros((H, W), np.uint16)
    labels[0:4, 0:4] = 1
    labels[10:12, 10:30] = 1000  # 16-bit value
    labels[20:30, 40:44] = 3
    _save_png(tmp_path / "labels" / "one.png", labels)

    ds = FolderDataset()
    ds.load_folder(tmp_path)
    ds.prepare()
    assert ds.class_names == ["BG", "object"]
    masks, class_ids = ds.load_mask(0)
    np.testing.assert_array_equal(class_ids, [1, 1, 1])
    np.testing.assert_array_equal(masks[..., 0], labels == 1)
    np.testing.assert_array_equal(masks[..., 1], labels == 3)
    np.testing.assert_array_equal(masks[..., 2], labels == 1000)

    mapped = FolderDataset()
    mapped.load_folder(tmp_path, layout="labels",
                       label_classes={1: "small", 3: "tall", 1000: None})
    mapped.prepare()
    assert mapped.class_names == ["BG", "small", "tall"]
    masks, class_ids = mapped.load_mask(0)
    np.testing.assert_array_equal(class_ids, [1, 2])
    np.testing.assert_array_equal(masks[..., 1], labels == 3)

    (tmp_path / "masks").mkdir()
    with pytest.raises(ValueError, match="both"):
        FolderDataset().load_folder(tmp_path)


_coco_annotation = st.fixed_dictionaries({
    "category_id": st.sampled_from([1, 2, 7]),  # 7 is not a declared category
    "iscrowd": st.sampled_from([0, 0, 1]),
    "segmentation": st.lists(st.lists(st.floats(-30, 80, allow_nan=False), max_size=10),
                             max_size=2),
})


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(annotations=st.lists(_coco_annotation, max_size=5))
def test_coco_fuzz_random_polygons_and_class_ids(tmp_path_factory, annotations):
    """Random (often degenerate, partly outside, unknown-class) polygon annotations
    give valid masks and class ids, or a ValueError naming the JSON file."""
    tmp_path = tmp_path_factory.mktemp("cocofuzz")
    _save_png(tmp_path / "images" / "z.png", _image(5))
    anns = [dict(a, id=k + 1, image_id=1, area=1.0, bbox=[0, 0, 1, 1])
            for k, a in enumerate(annotations)]
    path = tmp_path / "fuzz.json"
    path.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "z.png", "height": H, "width": W}],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
        "annotations": anns}))
    ds = CocoDataset()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds.load_coco(str(path), str(tmp_path / "images"))
            ds.prepare()
            masks, class_ids = ds.load_mask(0)
    except ValueError as exc:
        assert "fuzz.json" in str(exc) or "z.png" in str(exc)
        return
    assert masks.dtype == bool and masks.ndim == 3 and masks.shape[:2] == (H, W)
    assert class_ids.dtype == np.int32 and class_ids.shape == (masks.shape[2],)
    assert masks.shape[2] <= len(annotations)
    # Known classes only (crowd regions negative), and no empty instance masks.
    assert set(np.abs(class_ids).tolist()) <= {1, 2}
    assert all(masks[..., k].any() for k in range(masks.shape[2]))
