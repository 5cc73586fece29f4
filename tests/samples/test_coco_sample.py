"""Tests for samples/coco/coco.py: paths, classes, schedule, legacy evaluation and the CLI."""

import json
import os
import sys
import types

import numpy as np
import pytest
import skimage.draw
import skimage.io

from locations import REPO_DIR as ROOT

from samples.coco import coco  # noqa: E402

import sample_cli  # noqa: E402
from sample_cli import TINY_SETTINGS  # noqa: E402

SCRIPT = os.path.join(ROOT, "samples", "coco", "coco.py")
CATEGORIES = [{"id": 3, "name": "circle"}, {"id": 7, "name": "square"}]
# Per image: (category id, polygon [x1, y1, x2, y2, ...]) in pixels.
SCENES = {
    "train": [[(7, [8, 8, 30, 8, 30, 30, 8, 30]), (3, None)],
              [(3, None)],
              [(7, [34, 30, 60, 30, 60, 56, 34, 56])]],
    "val": [[(7, [10, 36, 28, 36, 28, 54, 10, 54]), (3, None)],
            [(3, None)]],
}
CIRCLE = (40, 42, 12)  # cy, cx, r of every "circle" instance


def circle_polygon(cy, cx, r, points=20):
    t = np.linspace(0, 2 * np.pi, points, endpoint=False)
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], -1).round(2).ravel().tolist()


def write_coco_data(root):
    """COCO release layout: annotations/instances_<subset>2017.json and <subset>2017/*.png."""
    (root / "annotations").mkdir(parents=True)
    ann_id = 1
    for subset, scenes in SCENES.items():
        folder = root / f"{subset}2017"
        folder.mkdir()
        images, annotations = [], []
        for i, objects in enumerate(scenes):
            image_id = 100 + i
            pixels = np.full((64, 64, 3), 30, np.uint8)
            for category, polygon in objects:
                polygon = polygon or circle_polygon(*CIRCLE)
                xs, ys = np.asarray(polygon[0::2]), np.asarray(polygon[1::2])
                rr, cc = skimage.draw.polygon(ys, xs, (64, 64))
                pixels[rr, cc] = (200, 60, 60) if category == 3 else (60, 200, 60)
                annotations.append({
                    "id": ann_id, "image_id": image_id, "category_id": category,
                    "segmentation": [polygon], "iscrowd": 0, "area": float(len(rr)),
                    "bbox": [float(xs.min()), float(ys.min()), float(np.ptp(xs)),
                             float(np.ptp(ys))]})
                ann_id += 1
            name = f"{subset}_{i}.png"
            skimage.io.imsave(folder / name, pixels, check_contrast=False)
            images.append({"id": image_id, "file_name": name, "height": 64, "width": 64})
        (root / "annotations" / f"instances_{subset}2017.json").write_text(json.dumps(
            {"images": images, "annotations": annotations, "categories": CATEGORIES}))
    return root


@pytest.fixture(scope="module")
def coco_dir(tmp_path_factory):
    return write_coco_data(tmp_path_factory.mktemp("coco"))


def parse(*argv):
    return coco.build_parser().parse_args(list(argv))


# ----------------------------------------------------------------------------- schedule
def test_training_schedule_three_stages():
    assert coco.training_schedule(0.01, (40, 120, 160)) == [
        ("heads", 40, 0.01), ("4+", 120, 0.01), ("all", 160, 0.001)]


def test_training_schedule_capped_and_equal_stages():
    assert coco.training_schedule(0.02, (2, 5, 9), epochs=1) == [("heads", 1, 0.02)]
    assert coco.training_schedule(0.02, (2, 5, 9), epochs=6) == [
        ("heads", 2, 0.02), ("4+", 5, 0.02), ("all", 6, 0.002)]
    # E2 == E1: the 4+ stage has nothing to train and is dropped.
    assert coco.training_schedule(0.1, (3, 3, 4)) == [("heads", 3, 0.1), ("all", 4, 0.01)]


@pytest.mark.parametrize("bad", [(0, 1, 2), (5, 4, 6), (1, 2)])
def test_training_schedule_rejects_bad_stages(bad):
    with pytest.raises(ValueError, match="stage epochs"):
        coco.training_schedule(0.01, bad)


# ----------------------------------------------------------------------------- paths / files
def test_subset_paths_release_layout_and_explicit():
    args = parse("train", "--dataset", "/data/coco", "--year", "2014")
    assert coco.subset_paths(args, "val") == (
        os.path.join("/data/coco", "annotations", "instances_val2014.json"),
        os.path.join("/data/coco", "val2014"))
    args = parse("train", "--train-json", "a.json", "--train-images", "imgs")
    assert coco.subset_paths(args, "train") == ("a.json", "imgs")
    with pytest.raises(ValueError, match="--val-json"):
        coco.subset_paths(parse("train", "--val-json", "b.json"), "val")
    with pytest.raises(ValueError, match="--dataset"):
        coco.subset_paths(parse("train"), "train")


def test_missing_files_say_what_to_place_where(tmp_path, capsys):
    args = parse("evaluate", "--dataset", str(tmp_path))
    with pytest.raises(FileNotFoundError) as err:
        coco.check_files(args, ("train", "val"))
    message = str(err.value)
    for expected in (str(tmp_path / "annotations" / "instances_val2017.json"),
                     str(tmp_path / "annotations" / "instances_train2017.json"),
                     str(tmp_path / "train2017"), str(tmp_path / "val2017"),
                     "http://images.cocodataset.org/zips/val2017.zip",
                     "annotations_trainval2017.zip"):
        assert expected in message
    code = coco.main(["evaluate", "--dataset", str(tmp_path), "--logs", str(tmp_path / "logs")])
    assert code == 1
    err_text = capsys.readouterr().err
    assert "instances_val2017.json" in err_text and "train2017" not in err_text


def test_check_files_passes_on_complete_layout(coco_dir, tmp_path):
    args = parse("train", "--dataset", str(coco_dir))
    assert coco.check_files(args, ("train", "val")) is None   # nothing to report
    # What it checked: the release layout under --dataset, every piece in place.
    for subset in ("train", "val"):
        json_path, image_dir = coco.subset_paths(args, subset)
        assert json_path == str(coco_dir / "annotations" / f"instances_{subset}2017.json")
        assert image_dir == str(coco_dir / f"{subset}2017")
        assert os.path.isfile(json_path)
        assert len(os.listdir(image_dir)) == len(SCENES[subset])
    # The same layout less one annotation file fails, naming that file and only it.
    other = write_coco_data(tmp_path / "coco")
    missing = other / "annotations" / "instances_val2017.json"
    missing.unlink()
    args = parse("train", "--dataset", str(other))
    with pytest.raises(FileNotFoundError) as err:
        coco.check_files(args, ("train", "val"))
    message = str(err.value)
    assert f"annotation file {missing} (in " in message
    assert "instances_train2017.json" not in message and "image folder" not in message
    assert coco.check_files(args, ("train",)) is None   # the train subset is complete


# ----------------------------------------------------------------------------- classes / data
def test_resolve_classes(coco_dir):
    json_path = str(coco_dir / "annotations" / "instances_train2017.json")
    assert coco.resolve_classes(None, json_path) is None
    assert coco.resolve_classes("square", json_path) == [7]
    assert coco.resolve_classes("7, circle", json_path) == [3, 7]
    with pytest.raises(ValueError, match="triangle.*circle, square"):
        coco.resolve_classes("triangle", json_path)


def test_load_subset_all_and_some_classes(coco_dir):
    args = parse("train", "--dataset", str(coco_dir))
    full = coco.load_subset(args, "train")
    assert full.class_names == ["BG", "circle", "square"]
    assert full.num_images == 3
    masks, class_ids = full.load_mask(0)  # image 100: a square then a circle
    np.testing.assert_array_equal(class_ids, [2, 1])
    assert masks.shape == (64, 64, 2)
    # The square polygon (8, 8)-(30, 30): pixels rows/cols 8..30 (pycocotools fills
    # the polygon's interior, so the count is close to 22 x 22 = 484).
    ys, xs = np.nonzero(masks[..., 0])
    assert 8 <= ys.min() <= 9 and 29 <= ys.max() <= 30 and 8 <= xs.min() <= 9
    assert abs(masks[..., 0].sum() - 484) < 50

    only_squares = coco.load_subset(args, "train", class_ids=[7])
    assert only_squares.class_names == ["BG", "square"]
    assert only_squares.num_images == 2  # images 100 and 102 contain squares
    for image_id in only_squares.image_ids:
        _, ids = only_squares.load_mask(image_id)
        np.testing.assert_array_equal(ids, [1])


def test_load_subset_without_images_is_a_clear_error(tmp_path, coco_dir):
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"images": [], "annotations": [], "categories": CATEGORIES}))
    args = parse("evaluate", "--val-json", str(empty), "--val-images", str(tmp_path))
    with pytest.raises(ValueError, match="empty.json has no images"):
        coco.load_subset(args, "val")


def test_config_overrides_and_class_count():
    args = parse("train", "--image-size", "64", "--steps-per-epoch", "2",
                 "--set", "TRAIN_ROIS_PER_IMAGE=8", "--set", "RPN_ANCHOR_SCALES=(8,16,32,64,128)")
    config = coco.make_config(args, num_classes=3)
    assert config.NAME == "coco" and config.NUM_CLASSES == 3 and config.IMAGES_PER_GPU == 2
    assert config.IMAGE_SHAPE.tolist() == [64, 64, 3] and config.STEPS_PER_EPOCH == 2
    assert config.TRAIN_ROIS_PER_IMAGE == 8
    assert coco.make_config(parse("train")).NUM_CLASSES == 81
    inference = coco.make_config(args, num_classes=3, inference=True)
    assert inference.BATCH_SIZE == 1 and inference.DETECTION_MIN_CONFIDENCE == 0


# ----------------------------------------------------------------------------- legacy evaluation
class GroundTruthModel:
    """A stand-in for MaskRCNN whose detect() returns a data set's ground truth."""

    def __init__(self, dataset, batch_size=2):
        self.dataset = dataset
        self.config = types.SimpleNamespace(BATCH_SIZE=batch_size)
        self.calls = []

    def detect(self, images, verbose=0):
        assert len(images) == self.config.BATCH_SIZE
        results = []
        for image in images:
            image_id = next(i for i in self.dataset.image_ids
                            if np.array_equal(self.dataset.load_image(i), image))
            self.calls.append(image_id)
            masks, class_ids = self.dataset.load_mask(image_id)
            boxes = []
            for k in range(masks.shape[-1]):
                ys, xs = np.nonzero(masks[..., k])
                boxes.append([ys.min(), xs.min(), ys.max() + 1, xs.max() + 1])
            results.append({"rois": np.array(boxes, np.int32), "class_ids": class_ids,
                            "scores": np.ones(len(class_ids), np.float32), "masks": masks})
        return results


def test_legacy_evaluate_coco_perfect_detections(coco_dir):
    dataset = coco.load_subset(parse("train", "--dataset", str(coco_dir)), "train")
    model = GroundTruthModel(dataset)
    metrics = coco.evaluate_coco(model, dataset, None, eval_type=("bbox", "segm"), limit=3)
    assert metrics["bbox"]["AP"] == pytest.approx(1.0)
    assert metrics["segm"]["AP"] == pytest.approx(1.0)
    assert model.calls[:3] == [0, 1, 2]


def test_legacy_build_coco_results_uses_coco_ids(coco_dir):
    dataset = coco.load_subset(parse("train", "--dataset", str(coco_dir)), "train")
    masks = np.zeros((64, 64, 1), bool)
    masks[2:5, 3:9, 0] = True
    results = coco.build_coco_results(dataset, [1], np.array([[2, 3, 5, 9]]), np.array([2]),
                                      np.array([0.5]), masks)
    assert len(results) == 1
    r = results[0]
    assert r["image_id"] == 101 and r["category_id"] == 7  # COCO ids, not internal ones
    assert r["bbox"] == [3.0, 2.0, 6.0, 3.0] and r["score"] == 0.5


# ----------------------------------------------------------------------------- end to end
TINY = ["--image-size", "64", "--backbone", "resnet50", "--images-per-gpu", "1",
        *TINY_SETTINGS]


def run_cli(*args):
    return sample_cli.run_cli(SCRIPT, *args)


@pytest.mark.slow
def test_cli_train_then_evaluate(tmp_path, coco_dir):
    logs = tmp_path / "logs"
    run_cli("train", "--dataset", str(coco_dir), "--weights", "none", "--logs", str(logs),
            "--epochs", "1", "--steps-per-epoch", "2", "--validation-steps", "0", *TINY)
    runs = [d for d in logs.iterdir() if d.name.startswith("coco")]
    assert len(runs) == 1 and (runs[0] / "mask_rcnn_coco_0001.h5").is_file()

    out = tmp_path / "metrics.json"
    val_json = coco_dir / "annotations" / "instances_val2017.json"
    proc = run_cli("evaluate", "--val-json", str(val_json),
                   "--val-images", str(coco_dir / "val2017"), "--weights", "last",
                   "--logs", str(logs), "--limit", "2", "--out", str(out), *TINY)
    assert "COCO evaluation: segm" in proc.stdout
    report = json.loads(out.read_text())
    assert report["image_ids"] == [100, 101]
    assert report["weights"].endswith("mask_rcnn_coco_0001.h5")
    for kind in ("bbox", "segm"):
        assert set(report["coco"][kind]) >= {"AP", "AP50", "AP75", "AR100"}
        assert all(-1 <= v <= 1 for v in report["coco"][kind].values())
    assert 0 <= report["mAP50"] <= 1
