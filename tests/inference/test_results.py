"""Tests of mrcnn.inference.results: COCO results / data set files that load back with
pycocotools (loadRes) and with our CocoDataset, polygons, pictures, atomic writes."""

import contextlib
import io
import json
import os
import warnings

import numpy as np
import pytest
import skimage.draw
from scipy import ndimage
import skimage.io
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from detecting_model import CLASS_NAMES, RecordingModel, scene
from model_fixtures import RectanglesDataset
from mrcnn.data.loaders.coco import CocoDataset
from mrcnn.evaluation.coco import build_coco_ground_truth, make_coco
from mrcnn.inference.results import (atomic_path, detect_folder_to_coco, mask_to_polygons,
                                     render_detections, save_detections_png)
from mrcnn.visualization.instances import apply_mask, random_colors

SIZES = [(64, 64), (48, 80), (64, 64)]  # three images: one batch of 2, then one of 1


def write_images(folder):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, (h, w) in enumerate(SIZES):
        path = folder / f"img{k}.png"
        skimage.io.imsave(path, scene(k, h, w), check_contrast=False)
        paths.append(str(path))
    return paths


def quiet_coco(path):
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def load_res(coco, results):
    with contextlib.redirect_stdout(io.StringIO()):
        return coco.loadRes(results)


def load_dataset_json(path, image_dir):
    dataset = CocoDataset()
    dataset.load_coco(str(path), image_dir)
    dataset.prepare()
    return dataset


def xywh(roi):
    y1, x1, y2, x2 = (float(v) for v in roi)
    return [x1, y1, x2 - x1, y2 - y1]


@pytest.fixture(scope="module")
def folder_export(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    paths = write_images(root / "images")
    model = RecordingModel()
    export = detect_folder_to_coco(model, root / "images", root / "out" / "coco_results.json",
                                   dataset_json=root / "out" / "coco_dataset.json",
                                   class_names=CLASS_NAMES, pictures_dir=root / "out")
    return root, paths, model, export


# ----------------------------------------------------------------------------- RLE
def test_folder_export_files_and_summary(folder_export):
    root, paths, model, export = folder_export
    assert model.calls == [2, 1]             # BATCH_SIZE images per detect() call
    counts = [len(r["class_ids"]) for r in model.results]
    assert min(counts) > 0
    assert export.num_results == sum(counts)
    assert sorted(os.listdir(root / "out")) == sorted(
        ["coco_results.json", "coco_dataset.json", "img0_detections.png",
         "img1_detections.png", "img2_detections.png"])    # no temporary file left
    assert export.image_dir == str(root / "images")
    assert export.images == [{"id": k, "file_name": f"img{k}.png", "height": h, "width": w}
                             for k, (h, w) in enumerate(SIZES)]
    assert export.categories == [{"id": 1, "name": "red"}, {"id": 2, "name": "blue"}]
    for k, (record, r) in enumerate(zip(export.detections, model.results)):
        np.testing.assert_array_equal(record["rois"], r["rois"])
        np.testing.assert_array_equal(record["class_ids"], r["class_ids"])
        np.testing.assert_array_equal(record["scores"], r["scores"])
        picture = skimage.io.imread(record["picture"])
        assert record["picture"] == str(root / "out" / f"img{k}_detections.png")
        assert picture.ndim == 3 and picture.shape[0] > 100     # an 8-inch figure
    np.testing.assert_array_equal(model.images[1], skimage.io.imread(paths[1]))


def test_results_json_loads_with_pycocotools_exactly(folder_export):
    root, _, model, _ = folder_export
    results = json.loads((root / "out" / "coco_results.json").read_text())
    assert isinstance(results, list)
    gt = quiet_coco(root / "out" / "coco_dataset.json")   # the images / categories it names
    dt = load_res(gt, str(root / "out" / "coco_results.json"))
    assert sorted(dt.getImgIds()) == [0, 1, 2]
    assert {c["name"] for c in dt.loadCats(dt.getCatIds())} == {"red", "blue"}
    for image_id, r in enumerate(model.results):
        anns = dt.loadAnns(dt.getAnnIds(imgIds=[image_id]))
        assert len(anns) == len(r["class_ids"])
        for k, ann in enumerate(anns):
            np.testing.assert_array_equal(dt.annToMask(ann).astype(bool), r["masks"][..., k])
            assert ann["bbox"] == xywh(r["rois"][k])
            assert ann["category_id"] == int(r["class_ids"][k])
            assert np.float32(ann["score"]) == r["scores"][k]
            assert set(ann["segmentation"]) == {"size", "counts"}   # compressed RLE


def test_dataset_input_loads_against_build_coco_ground_truth(tmp_path):
    # Images of a Dataset (generated, no files): the results' ids are those of
    # build_coco_ground_truth on the same data set, so loadRes takes them.
    dataset = RectanglesDataset([2, 1, 3])
    model = RecordingModel()
    export = detect_folder_to_coco(model, dataset, tmp_path / "res.json", image_ids=[2, 0])
    assert [e["id"] for e in export.images] == [2, 0]
    assert [e["file_name"] for e in export.images] == ["image_2", "image_0"]
    assert export.image_dir == ""
    gt = build_coco_ground_truth(dataset, [2, 0])
    dt = load_res(gt, str(tmp_path / "res.json"))
    for image_id, r in zip([2, 0], model.results):
        anns = dt.loadAnns(dt.getAnnIds(imgIds=[image_id]))
        assert [a["bbox"] for a in anns] == [xywh(b) for b in r["rois"]]
        for k, ann in enumerate(anns):
            np.testing.assert_array_equal(dt.annToMask(ann).astype(bool), r["masks"][..., k])


def test_dataset_json_loads_with_coco_dataset_exactly(folder_export):
    root, paths, model, _ = folder_export
    info = json.loads((root / "out" / "coco_dataset.json").read_text())["info"]
    dataset = load_dataset_json(root / "out" / "coco_dataset.json", info["image_dir"])
    assert dataset.class_names == CLASS_NAMES
    assert dataset.num_images == 3
    for image_id, r in enumerate(model.results):
        assert dataset.image_reference(image_id) == paths[image_id]
        np.testing.assert_array_equal(dataset.load_image(image_id), model.images[image_id])
        keep = r["masks"].any(axis=(0, 1))   # the loader skips empty masks (with a warning)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            masks, class_ids = dataset.load_mask(image_id)
        np.testing.assert_array_equal(masks, r["masks"][..., keep])
        np.testing.assert_array_equal(class_ids, r["class_ids"][keep])
        anns = dataset.image_info[image_id]["annotations"]
        assert [a["bbox"] for a in anns] == [xywh(b) for b in r["rois"]]
        assert [np.float32(a["score"]) for a in anns] == list(r["scores"])
        assert [a["area"] for a in anns] == r["masks"].sum(axis=(0, 1)).tolist()


# ----------------------------------------------------------------------------- polygons
def random_masks(rng, count=120, shape=(40, 56)):
    for t in range(count):
        mask = np.zeros(shape, bool)
        kind = t % 4
        if kind == 0:
            rr, cc = skimage.draw.ellipse(rng.integers(8, 32), rng.integers(8, 48),
                                          rng.integers(2, 16), rng.integers(2, 16), shape=shape)
            mask[rr, cc] = True
        elif kind == 1:  # rectangles touching the border
            y, x = rng.integers(0, shape[0] - 1), rng.integers(0, shape[1] - 1)
            mask[y:y + rng.integers(1, 20), x:x + rng.integers(1, 20)] = True
        elif kind == 2:  # speckle: single pixels, diagonal neighbours
            mask = rng.random(shape) < 0.08
        else:            # a single pixel and a border strip
            mask[rng.integers(0, shape[0]), rng.integers(0, shape[1])] = True
            mask[rng.integers(0, shape[0]):, :3] = True
        yield mask


def rasterise(polygons, shape):
    rles = mask_utils.frPyObjects(polygons, *shape)
    return mask_utils.decode(mask_utils.merge(rles)).astype(bool)


def filled(mask):
    """``mask`` with its holes filled: background regions not 8-connected to the outside."""
    return ndimage.binary_fill_holes(mask, structure=np.ones((3, 3)))


def test_mask_to_polygons_rasterises_back_exactly():
    rng = np.random.default_rng(0)
    for mask in random_masks(rng):
        polygons = mask_to_polygons(mask)
        assert all(len(p) >= 6 and len(p) % 2 == 0 for p in polygons)
        np.testing.assert_array_equal(rasterise(polygons, mask.shape), filled(mask))


def test_mask_to_polygons_hand_values_and_holes():
    one = np.zeros((5, 6), bool)
    one[2, 3] = True
    (diamond,) = mask_to_polygons(one)
    # Pixel (row 2, column 3) is the square x in [3, 4), y in [2, 3); its contour
    # passes through the midpoints of its sides.
    assert sorted(zip(diamond[0::2], diamond[1::2])) == [(3.0, 2.5), (3.5, 2.0), (3.5, 3.0),
                                                         (4.0, 2.5)]
    assert mask_to_polygons(np.zeros((4, 4), bool)) == []
    ring = np.zeros((12, 12), bool)
    ring[2:10, 2:10] = True
    ring[4:8, 4:8] = False
    (outer,) = mask_to_polygons(ring)          # the hole's contour is left out ...
    filled = ring.copy()
    filled[4:8, 4:8] = True
    np.testing.assert_array_equal(rasterise([outer], ring.shape), filled)   # ... so it fills
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        mask_to_polygons(np.zeros((4, 4, 1), bool))


def test_polygon_export_round_trips(tmp_path, folder_export):
    _, paths, _, _ = folder_export
    model = RecordingModel()
    export = detect_folder_to_coco(model, paths, tmp_path / "res.json",
                                   dataset_json=tmp_path / "data.json",
                                   class_names=CLASS_NAMES, polygons=True, batch_size=3)
    assert model.calls == [3]
    assert export.dataset_json == str(tmp_path / "data.json")
    assert sorted(os.listdir(tmp_path)) == ["data.json", "res.json"]   # no pictures asked
    results = json.loads((tmp_path / "res.json").read_text())
    masks = [m for r in model.results for m in np.moveaxis(r["masks"], -1, 0)]
    assert len(results) == len(masks)
    for result, mask in zip(results, masks):
        if mask.any():
            assert isinstance(result["segmentation"], list)
            assert all(len(p) >= 6 and len(p) % 2 == 0 for p in result["segmentation"])
        else:
            assert set(result["segmentation"]) == {"size", "counts"}   # empty: RLE kept
    gt = quiet_coco(tmp_path / "data.json")
    dt = load_res(gt, str(tmp_path / "res.json"))
    ious = []
    for image_id, r in enumerate(model.results):
        anns = dt.loadAnns(dt.getAnnIds(imgIds=[image_id]))
        for k, ann in enumerate(anns):
            got, want = dt.annToMask(ann).astype(bool), r["masks"][..., k]
            np.testing.assert_array_equal(got, filled(want))   # exact, holes filled
            ious.append((got & want).sum() / max((got | want).sum(), 1))
            assert ann["bbox"] == xywh(r["rois"][k])
    # The random-weight masks have holes: IoU with the mask measured 0.934 at the
    # least (holes only); the masks without holes come back exactly.
    assert min(ious) > 0.9 and max(ious) == 1.0
    dataset = load_dataset_json(tmp_path / "data.json", export.image_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for image_id, r in enumerate(model.results):
            keep = r["masks"].any(axis=(0, 1))
            masks, class_ids = dataset.load_mask(image_id)
            want = np.stack([filled(m) for m in np.moveaxis(r["masks"][..., keep], -1, 0)], -1)
            np.testing.assert_array_equal(masks, want)
            np.testing.assert_array_equal(class_ids, r["class_ids"][keep])


def test_same_names_in_two_folders(tmp_path):
    paths = [write_images(tmp_path / folder)[0] for folder in ("a", "b")]
    export = detect_folder_to_coco(RecordingModel(), paths, tmp_path / "out" / "r.json",
                                   class_names=CLASS_NAMES, pictures_dir=tmp_path / "out")
    assert export.image_dir == str(tmp_path)
    assert [e["file_name"] for e in export.images] == ["a/img0.png", "b/img0.png"]
    assert [os.path.basename(d["picture"]) for d in export.detections] == [
        "img0_detections.png", "img0_1_detections.png"]
    assert sorted(os.listdir(tmp_path / "out")) == ["img0_1_detections.png",
                                                    "img0_detections.png", "r.json"]


# ----------------------------------------------------------------------------- COCO ids
def test_coco_dataset_input_keeps_its_coco_ids(tmp_path, folder_export):
    _, paths, _, _ = folder_export
    original = {"images": [{"id": 101, "file_name": "img0.png", "height": 64, "width": 64},
                           {"id": 205, "file_name": "img1.png", "height": 48, "width": 80}],
                "categories": [{"id": 7, "name": "red"}, {"id": 3, "name": "blue"}],
                "annotations": []}
    (tmp_path / "original.json").write_text(json.dumps(original))
    dataset = load_dataset_json(tmp_path / "original.json", os.path.dirname(paths[0]))
    assert dataset.class_names == ["BG", "blue", "red"]      # sorted by category id
    model = RecordingModel()
    export = detect_folder_to_coco(model, dataset, tmp_path / "res.json")
    results = json.loads((tmp_path / "res.json").read_text())
    assert [e["id"] for e in export.images] == [101, 205]
    assert export.categories == [{"id": 3, "name": "blue"}, {"id": 7, "name": "red"}]
    expected = [(image_id, {1: 3, 2: 7}[int(c)])
                for image_id, r in zip([101, 205], model.results) for c in r["class_ids"]]
    assert [(r["image_id"], r["category_id"]) for r in results] == expected
    dt = load_res(make_coco(original), str(tmp_path / "res.json"))   # the original file
    assert len(dt.getAnnIds(imgIds=[205])) == len(model.results[1]["class_ids"])


# ----------------------------------------------------------------------------- errors
def test_bad_input_errors(tmp_path, folder_export):
    _, paths, _, _ = folder_export
    model = RecordingModel()
    with pytest.raises(ValueError, match="class_names"):
        detect_folder_to_coco(model, paths, tmp_path / "r.json")
    with pytest.raises(ValueError, match="NUM_CLASSES = 3"):
        detect_folder_to_coco(model, paths, tmp_path / "r.json", class_names=["BG", "red"])
    with pytest.raises(FileNotFoundError, match="nope.png"):
        detect_folder_to_coco(model, [paths[0], str(tmp_path / "nope.png")],
                              tmp_path / "r.json", class_names=CLASS_NAMES)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no image file"):
        detect_folder_to_coco(model, tmp_path / "empty", tmp_path / "r.json",
                              class_names=CLASS_NAMES)
    assert model.calls == []


def test_failed_export_leaves_the_old_file_and_no_temporary(tmp_path, folder_export):
    _, paths, _, _ = folder_export
    (tmp_path / "broken.png").write_bytes(b"not a png")
    (tmp_path / "r.json").write_text("old")
    with pytest.raises(ValueError, match="broken.png"):
        detect_folder_to_coco(RecordingModel(), [paths[0], str(tmp_path / "broken.png")],
                              tmp_path / "r.json", class_names=CLASS_NAMES, batch_size=1)
    assert (tmp_path / "r.json").read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["broken.png", "r.json"]


def test_atomic_path_replaces_only_on_success(tmp_path):
    target = tmp_path / "a.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            assert os.path.dirname(tmp) == str(tmp_path) and tmp.endswith(".json")
            with open(tmp, "w") as f:
                f.write("half")
            raise RuntimeError("stop")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["a.json"]
    with atomic_path(target) as tmp:
        with open(tmp, "w") as f:
            f.write("new")
    assert target.read_text() == "new" and os.listdir(tmp_path) == ["a.json"]


# ----------------------------------------------------------------------------- pictures
def one_instance(height=64, width=96):
    image = np.full((height, width, 3), 128, np.uint8)
    masks = np.zeros((height, width, 1), bool)
    masks[10:60, 10:50, 0] = True
    return image, {"rois": np.array([[10, 10, 60, 50]], np.int32),
                   "class_ids": np.array([1], np.int32),
                   "scores": np.array([0.9], np.float32), "masks": masks}


def test_render_detections_blends_the_mask_pixel_for_pixel():
    image, result = one_instance()
    out = render_detections(image, result, CLASS_NAMES)
    assert out.shape == image.shape and out.dtype == np.uint8
    expected = apply_mask(image, result["masks"][..., 0], random_colors(1, seed=0)[0])
    # Inside the mask, away from its outline, the box and the caption: the blend.
    np.testing.assert_array_equal(out[35:55, 20:45], expected[35:55, 20:45])
    assert not np.array_equal(expected[35:55, 20:45], image[35:55, 20:45])
    # Outside the box (and below its caption, which runs past it): untouched.
    np.testing.assert_array_equal(out[25:, 55:], image[25:, 55:])
    assert (out[:25, 55:] != 128).any()       # the caption "red 0.900"


def test_save_detections_png_is_atomic(tmp_path):
    image, result = one_instance()
    path = save_detections_png(image, result, CLASS_NAMES, tmp_path / "x.png", figsize=(3, 2))
    picture = skimage.io.imread(path)
    assert path == str(tmp_path / "x.png") and os.listdir(tmp_path) == ["x.png"]
    assert picture.dtype == np.uint8 and picture.shape[-1] in (3, 4)
    assert 100 < picture.shape[0] < 250 and 200 < picture.shape[1] < 350  # ~3 x 2 inches


def test_keypoint_results_are_shifted_to_coco_and_load_back(tmp_path):
    from mrcnn.inference.results import CocoCollector

    image = np.zeros((32, 40, 3), np.uint8)
    masks = np.zeros((32, 40, 1), bool)
    masks[2:20, 1:30, 0] = True
    result = {"rois": np.array([[2, 1, 20, 30]]), "class_ids": np.array([1]),
              "scores": np.array([0.9], np.float32), "masks": masks,
              "keypoints": np.array([[[3.0, 4.5, 0.8], [10.5, 6.0, 0.0]]], np.float32)}
    collector = CocoCollector(None, ["BG", "red", "blue"], keypoint_names=["a", "b"])
    collector.add(0, image, result, "x.png", "image 0")
    collector.write(tmp_path / "results.json", tmp_path / "dataset.json")
    results = json.loads((tmp_path / "results.json").read_text())
    # COCO stores pixel indices: continuous x - 0.5 (COCO_KEYPOINT_SHIFT), then the score.
    assert results[0]["keypoints"] == [2.5, 4.0, 0.8, 10.0, 5.5, 0.0]
    data = json.loads((tmp_path / "dataset.json").read_text())
    assert data["categories"][0]["keypoints"] == ["a", "b"]
    assert data["annotations"][0]["keypoints"] == [2.5, 4.0, 2.0, 0.0, 0.0, 0.0]
    assert data["annotations"][0]["num_keypoints"] == 1
    loaded = CocoDataset()
    loaded.load_coco(str(tmp_path / "dataset.json"), str(tmp_path))
    loaded.prepare()
    np.testing.assert_allclose(loaded.load_keypoints(0), [[[3.0, 4.5, 2.0], [0.0, 0.0, 0.0]]])
