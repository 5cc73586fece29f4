"""Tests for samples/custom/custom.py: the tutorial CustomDataset, its config and the CLI."""

import json
import os
import sys

import numpy as np
import pytest
import skimage.draw
import skimage.io

from locations import REPO_DIR as ROOT

from samples.custom import custom  # noqa: E402

import sample_cli  # noqa: E402
from sample_cli import TINY_SETTINGS  # noqa: E402

SCRIPT = os.path.join(ROOT, "samples", "custom", "custom.py")

# subset -> image name -> list of (class, shape, params); None = no mask folder.
SCENES = {
    "train": {"a": [("cat", "ellipse", (20, 22, 10, 14)),
                    ("dog", "poly", [(40, 36), (60, 44), (44, 60)])],
              "b": [("dog", "ellipse", (32, 32, 15, 12))],
              "c": None},
    "val": {"d": [("cat", "ellipse", (30, 20, 9, 12)), ("cat", "ellipse", (44, 48, 10, 8))]},
}


def shape_mask(kind, params, size=64):
    mask = np.zeros((size, size), bool)
    if kind == "ellipse":
        rr, cc = skimage.draw.ellipse(*params, shape=mask.shape)
    else:
        points = np.asarray(params, float)
        rr, cc = skimage.draw.polygon(points[:, 0], points[:, 1], shape=mask.shape)
    mask[rr, cc] = True
    return mask


def write_custom_data(root):
    """<root>/<subset>/images/<name>.png and masks/<name>/<class>_<k>.png (0/255 PNGs)."""
    rng = np.random.default_rng(3)
    for subset, images in SCENES.items():
        (root / subset / "images").mkdir(parents=True)
        for name, objects in images.items():
            pixels = rng.integers(0, 50, (64, 64, 3), dtype=np.uint8)
            if objects is not None:
                mask_dir = root / subset / "masks" / name
                mask_dir.mkdir(parents=True)
                for k, (cls, kind, params) in enumerate(objects):
                    mask = shape_mask(kind, params)
                    pixels[mask] = (230, 90, 30) if cls == "cat" else (30, 90, 230)
                    skimage.io.imsave(mask_dir / f"{cls}_{k}.png", mask.astype(np.uint8) * 255,
                                      check_contrast=False)
            skimage.io.imsave(root / subset / "images" / f"{name}.png", pixels,
                              check_contrast=False)
    return root


@pytest.fixture(scope="module")
def custom_dir(tmp_path_factory):
    return write_custom_data(tmp_path_factory.mktemp("custom"))


# ----------------------------------------------------------------------------- dataset
def test_dataset_protocol_two_classes(custom_dir):
    ds = custom.load_dataset(custom_dir, "train", ["cat", "dog"])
    assert ds.class_names == ["BG", "cat", "dog"]
    assert ds.num_images == 3
    assert [info["id"] for info in ds.image_info] == ["a", "b", "c"]
    assert ds.image_reference(0) == str(custom_dir / "train" / "images" / "a.png")
    for image_id, name in enumerate(["a", "b", "c"]):
        assert ds.load_image(image_id).shape == (64, 64, 3)
        masks, class_ids = ds.load_mask(image_id)
        objects = SCENES["train"][name] or []
        assert masks.dtype == bool and masks.shape == (64, 64, len(objects))
        assert class_ids.dtype == np.int32
        assert [ds.class_names[c] for c in class_ids] == [cls for cls, _, _ in objects]
        for k, (_, kind, params) in enumerate(objects):
            np.testing.assert_array_equal(masks[..., k], shape_mask(kind, params))


def test_single_class_accepts_any_mask_name(custom_dir):
    ds = custom.load_dataset(custom_dir, "train")  # default: one class "object"
    assert ds.class_names == ["BG", "object"]
    _, class_ids = ds.load_mask(0)
    np.testing.assert_array_equal(class_ids, [1, 1])


def test_dataset_errors(tmp_path, custom_dir):
    ds = custom.load_dataset(custom_dir, "train", ["cat", "bird"])
    with pytest.raises(ValueError, match="dog_1.png.*cat', 'bird"):
        ds.load_mask(0)
    with pytest.raises(FileNotFoundError, match="images"):
        custom.load_dataset(tmp_path, "train")
    # A mask of the wrong size names the mask and the image.
    (tmp_path / "train" / "images").mkdir(parents=True)
    (tmp_path / "train" / "masks" / "x").mkdir(parents=True)
    skimage.io.imsave(tmp_path / "train" / "images" / "x.png", np.zeros((32, 48, 3), np.uint8),
                      check_contrast=False)
    skimage.io.imsave(tmp_path / "train" / "masks" / "x" / "m.png",
                      np.full((32, 32), 255, np.uint8), check_contrast=False)
    with pytest.raises(ValueError, match=r"m\.png.*x\.png"):
        custom.load_dataset(tmp_path, "train").load_mask(0)


# ----------------------------------------------------------------------------- config / CLI
def test_config_from_classes_and_overrides():
    args = custom.build_parser().parse_args(
        ["train", "--classes", "cat, dog", "--image-size", "128", "--steps-per-epoch", "4",
         "--set", "TRAIN_ROIS_PER_IMAGE=12"])
    config = custom.make_config(args)
    assert config.NAME == "custom" and config.NUM_CLASSES == 3
    assert config.IMAGE_SHAPE.tolist() == [128, 128, 3]
    assert config.STEPS_PER_EPOCH == 4 and config.TRAIN_ROIS_PER_IMAGE == 12
    assert custom.make_config(custom.build_parser().parse_args(["detect"]),
                              inference=True).NUM_CLASSES == 2


def test_missing_coco_weights_stop_before_building(tmp_path, custom_dir, capsys):
    code = custom.main(["train", "--dataset", str(custom_dir), "--weights", "coco",
                        "--coco-weights", str(tmp_path / "mask_rcnn_coco.h5"),
                        "--logs", str(tmp_path / "logs")])
    assert code == 1
    err = capsys.readouterr().err
    assert "mask_rcnn_coco.h5" in err and "v2.0" in err
    assert not (tmp_path / "logs").exists()


# ----------------------------------------------------------------------------- end to end
TINY = ["--image-size", "64", "--backbone", "resnet50", "--classes", "cat,dog",
        *TINY_SETTINGS, "--set", "DETECTION_MIN_CONFIDENCE=0.0"]


def run_cli(*args):
    return sample_cli.run_cli(SCRIPT, *args)


@pytest.mark.slow
def test_cli_train_then_detect(tmp_path, custom_dir):
    logs = tmp_path / "logs"
    run_cli("train", "--dataset", str(custom_dir), "--weights", "none", "--logs", str(logs),
            "--epochs", "1", "--steps-per-epoch", "2", "--validation-steps", "0", *TINY)
    runs = [d for d in logs.iterdir() if d.name.startswith("custom")]
    assert len(runs) == 1 and (runs[0] / "mask_rcnn_custom_0001.h5").is_file()

    out = tmp_path / "out"
    run_cli("detect", "--dataset", str(custom_dir), "--subset", "val", "--weights", "last",
            "--logs", str(logs), "--out", str(out), *TINY)
    assert (out / "d_detections.png").is_file()
    summary = json.loads((out / "detections.json").read_text())
    assert [entry["image"] for entry in summary] == ["d"]
    entry = summary[0]
    assert len(entry["rois"]) == len(entry["classes"]) == len(entry["scores"]) <= 8
    assert set(entry["classes"]) <= {"cat", "dog"}
    for y1, x1, y2, x2 in entry["rois"]:
        assert 0 <= y1 <= y2 <= 64 and 0 <= x1 <= x2 <= 64
