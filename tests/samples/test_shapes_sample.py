"""Tests for samples/shapes/shapes.py: the generated data set, the config and the CLI."""

import os
import subprocess
import sys

import numpy as np
import pytest

from locations import REPO_DIR as ROOT

from samples.shapes import shapes  # noqa: E402
from samples.shapes.backbone import STAGE_CHANNELS, light_backbone, light_backbone_shapes  # noqa: E402

from mrcnn.structures.boxes import extract_bboxes  # noqa: E402


@pytest.fixture(scope="module")
def dataset():
    return shapes.make_dataset(12, 64, seed=7)


def test_classes_and_image_count(dataset):
    assert dataset.class_names == ["BG", "square", "circle", "triangle"]
    assert dataset.num_images == 12


def test_masks_match_rendered_colours(dataset):
    for image_id in dataset.image_ids:
        image = dataset.load_image(image_id)
        masks, class_ids = dataset.load_mask(image_id)
        spec = dataset.image_reference(image_id)
        info = dataset.image_info[image_id]
        assert image.dtype == np.uint8 and image.shape == (64, 64, 3)
        assert masks.dtype == bool and masks.shape == (64, 64, len(spec))
        assert class_ids.dtype == np.int32
        assert [dataset.class_names[c] for c in class_ids] == [s[0] for s in spec]
        # Every pixel belongs to at most one instance and shows that shape's colour.
        assert masks.sum(axis=-1).max() <= 1
        for i, (_name, color, _dims) in enumerate(spec):
            assert masks[:, :, i].any()
            assert (image[masks[:, :, i]] == color).all()
        background = ~masks.any(axis=-1)
        assert (image[background] == info["bg_color"]).all()
        # Colours are distinct, so every instance is visible against its neighbours.
        colors = [info["bg_color"]] + [s[1] for s in spec]
        assert len(set(colors)) == len(colors)


def test_each_generated_shape_keeps_enough_visible_area(dataset):
    for image_id in dataset.image_ids:
        spec = dataset.image_reference(image_id)
        masks, _ = dataset.load_mask(image_id)
        for i, (name, _color, dims) in enumerate(spec):
            full = shapes.shape_mask(name, *dims, 64, 64)
            assert masks[:, :, i].sum() >= 0.4 * full.sum()
            assert not (masks[:, :, i] & ~full).any()


def test_boxes_inside_image_and_tight(dataset):
    for image_id in dataset.image_ids:
        masks, _ = dataset.load_mask(image_id)
        boxes = extract_bboxes(masks)
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 64).all()
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        for (y1, x1, y2, x2), i in zip(boxes, range(masks.shape[-1])):
            m = masks[:, :, i]
            assert m[y1].any() and m[y2 - 1].any() and m[:, x1].any() and m[:, x2 - 1].any()
            assert not m[:y1].any() and not m[y2:].any()


def test_occlusion_removes_hidden_pixels_and_drops_hidden_shapes():
    ds = shapes.ShapesDataset()
    ds.add_shape_classes()
    spec = [
        ("square", (255, 0, 0), (20, 20, 10)),   # partly covered by the circle
        ("square", (0, 255, 0), (45, 45, 3)),    # fully covered by the last square
        ("circle", (0, 0, 255), (20, 20, 5)),
        ("square", (255, 255, 0), (45, 45, 8)),
    ]
    ds.add_image("shapes", image_id=0, path=None, width=64, height=64, bg_color=(0, 0, 0),
                 shapes=spec)
    ds.prepare()
    masks, class_ids = ds.load_mask(0)
    assert list(class_ids) == [1, 2, 1]  # the hidden green square is dropped
    big_square = np.zeros((64, 64), dtype=bool)
    big_square[10:30, 10:30] = True
    circle = shapes.shape_mask("circle", 20, 20, 5, 64, 64)
    assert circle[20, 20] and circle[20, 24] and not circle[20, 25]
    assert (masks[:, :, 0] == (big_square & ~circle)).all()
    assert (masks[:, :, 1] == circle).all()
    assert masks[:, :, 2].sum() == 16 * 16
    image = ds.load_image(0)
    assert (image[20, 20] == (0, 0, 255)).all() and (image[12, 12] == (255, 0, 0)).all()
    assert (image[45, 45] == (255, 255, 0)).all()


def test_shape_geometry():
    square = shapes.shape_mask("square", 10, 12, 4, 32, 32)
    assert square.sum() == 64 and square[6, 8] and square[13, 15] and not square[14, 15]
    triangle = shapes.shape_mask("triangle", 16, 16, 8, 32, 32)
    assert triangle[8, 16] and triangle[24, 8] and triangle[24, 24]
    assert not triangle[9, 9] and not triangle[9, 23]
    assert 100 < triangle.sum() < 160  # about base * height / 2 = 128
    with pytest.raises(ValueError, match="hexagon"):
        shapes.shape_mask("hexagon", 1, 1, 1, 8, 8)


def test_same_seed_same_images_other_seed_other_images():
    a = shapes.make_dataset(5, 64, seed=3)
    b = shapes.make_dataset(5, 64, seed=3)
    c = shapes.make_dataset(5, 64, seed=4)
    assert a.image_info == b.image_info
    for i in range(5):
        assert (a.load_image(i) == b.load_image(i)).all()
        assert (a.load_image(i) == a.load_image(i)).all()  # rendering is deterministic
    assert [x["shapes"] for x in a.image_info] != [x["shapes"] for x in c.image_info]


def test_load_shapes_rejects_bad_arguments():
    with pytest.raises(ValueError, match="16x16"):
        shapes.ShapesDataset().load_shapes(3, 8, 8)


# ----------------------------------------------------------------------------- config / CLI
def test_shapes_config_is_valid_and_small():
    config = shapes.ShapesConfig()
    assert config.NAME == "shapes" and config.NUM_CLASSES == 4
    assert list(config.IMAGE_SHAPE) == [128, 128, 3]
    assert config.BACKBONE is light_backbone
    assert tuple(config.RPN_ANCHOR_SCALES) == (8, 16, 32, 64, 128)


def test_light_backbone_strides_match_its_shape_function():
    import keras
    image = keras.Input((128, 96, 3))
    c1, c2, c3, c4, c5 = light_backbone(image, stage5=True, train_bn=True)
    assert [tuple(c.shape[1:3]) for c in (c1, c2, c3, c4, c5)] == [
        (64, 48), (32, 24), (16, 12), (8, 6), (4, 3)]
    assert [c.shape[-1] for c in (c1, c2, c3, c4, c5)] == list(STAGE_CHANNELS)
    # P2..P5 have the strides of C2..C5; P6 is P5 max-pooled by 2.
    assert light_backbone_shapes((128, 96, 3)) == [[32, 24], [16, 12], [8, 6], [4, 3], [2, 2]]
    assert light_backbone(image, stage5=False)[4] is None


def test_command_line_overrides_config():
    parser = shapes.build_parser()
    args = parser.parse_args(["train", "--image-size", "64", "--steps-per-epoch", "3",
                              "--set", "TRAIN_ROIS_PER_IMAGE=16", "--set",
                              "RPN_ANCHOR_SCALES=(4, 8, 16, 32, 64)", "--set",
                              "BACKBONE=resnet101"])
    config = shapes.make_config(args)
    assert list(config.IMAGE_SHAPE) == [64, 64, 3]
    assert config.STEPS_PER_EPOCH == 3 and config.TRAIN_ROIS_PER_IMAGE == 16
    assert config.RPN_ANCHOR_SCALES == (4, 8, 16, 32, 64)
    assert config.BACKBONE == "resnet101"
    inference = shapes.make_config(args, inference=True)
    assert inference.BATCH_SIZE == 1 and inference.TRAIN_ROIS_PER_IMAGE == 16
    assert type(shapes.ShapesConfig()).TRAIN_ROIS_PER_IMAGE == 32  # class untouched


@pytest.mark.parametrize("argv, message", [
    (["demo", "--set", "NOT_A_SETTING=1"], "NOT_A_SETTING"),
    (["demo", "--image-size", "100"], "IMAGE_MAX_DIM"),
])
def test_command_line_rejects_bad_settings(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        shapes.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


# ----------------------------------------------------------------------------- evaluation glue
class _OracleModel:
    """Stands in for MaskRCNN in inference mode: detects exactly the ground truth."""

    def __init__(self, dataset, drop_last=False):
        self.dataset, self.drop_last, self.calls = dataset, drop_last, 0
        self._by_image = {}
        for image_id in dataset.image_ids:
            key = dataset.load_image(image_id).tobytes()
            self._by_image[key] = image_id

    def detect(self, images, verbose=0):
        assert len(images) == 1
        self.calls += 1
        masks, class_ids = self.dataset.load_mask(self._by_image[images[0].tobytes()])
        if self.drop_last:
            masks, class_ids = masks[..., :-1], class_ids[:-1]
        return [{"rois": extract_bboxes(masks), "class_ids": class_ids,
                 "scores": np.linspace(0.99, 0.9, len(class_ids)), "masks": masks}]


def test_evaluate_perfect_detections_score_one(dataset):
    metrics = shapes.evaluate(_OracleModel(dataset), dataset)
    assert metrics["mAP50"] == pytest.approx(1.0)
    assert metrics["coco"]["bbox"]["AP"] == pytest.approx(1.0)
    assert metrics["coco"]["segm"]["AP"] == pytest.approx(1.0)
    assert len(metrics["results"]) == dataset.num_images


def test_evaluate_missing_detections_lower_the_map(dataset):
    metrics = shapes.evaluate(_OracleModel(dataset, drop_last=True), dataset)
    # Per image: AP = recall = (n - 1) / n with all kept detections correct.
    expected = np.mean([(len(dataset.image_reference(i)) - 1) / len(dataset.image_reference(i))
                        for i in dataset.image_ids])
    assert metrics["mAP50"] == pytest.approx(expected)


def test_save_comparison_writes_png(dataset, tmp_path):
    import skimage.io

    ids = [0, 1]
    results = [_OracleModel(dataset).detect([dataset.load_image(i)])[0] for i in ids]
    results[1] = {"rois": np.zeros((0, 4)), "class_ids": np.zeros(0, np.int32),
                  "scores": np.zeros(0), "masks": np.zeros((64, 64, 0), bool)}
    path = shapes.save_comparison(dataset, ids, results, str(tmp_path / "sub" / "cmp.png"))
    png = skimage.io.imread(path)
    assert png.shape[:2] == (800, 800)  # 8 x 4*rows inches at 100 dpi


# ----------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_demo_command_end_to_end(tmp_path):
    """`shapes.py demo` with tiny settings trains, saves a checkpoint, evaluates and
    writes the predictions PNG (the path `make demo` takes, only smaller)."""
    logs = tmp_path / "logs"
    cmd = [sys.executable, os.path.join(ROOT, "samples", "shapes", "shapes.py"), "demo",
           "--logs", str(logs), "--image-size", "64", "--train-count", "8",
           "--val-count", "4", "--epochs", "1", "--steps-per-epoch", "2",
           "--validation-steps", "0", "--images-per-gpu", "2", "--show", "2"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(cmd, cwd=str(tmp_path), env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_dirs = [d for d in logs.iterdir() if d.name.startswith("shapes")]
    assert len(run_dirs) == 1
    checkpoint = run_dirs[0] / "mask_rcnn_shapes_0001.h5"
    png = run_dirs[0] / "shapes_predictions.png"
    assert checkpoint.exists() and checkpoint.stat().st_size > 1_000_000
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"Checkpoint:  {checkpoint}" in proc.stdout
    assert f"Predictions: {png}" in proc.stdout
    assert "mAP@0.5 (mean of per-image AP, 4 images):" in proc.stdout
    assert "COCO bbox: AP" in proc.stdout and "total time" in proc.stdout


def test_evaluate_without_checkpoint_fails_cleanly(tmp_path, capsys):
    pytest.importorskip("mrcnn.model")
    code = shapes.main(["evaluate", "--logs", str(tmp_path), "--image-size", "64",
                        "--set", "BACKBONE='resnet50'"])
    assert code == 1
    assert "find_last" in capsys.readouterr().err
