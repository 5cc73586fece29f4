"""Tests for samples/balloon/balloon.py: color_splash, BalloonDataset, weights and the CLI."""

import json
import os
import sys

import numpy as np
import pytest
import skimage.draw
import skimage.io

from locations import REPO_DIR as ROOT

from samples.balloon import balloon  # noqa: E402

import sample_cli  # noqa: E402
from sample_cli import TINY_SETTINGS  # noqa: E402

SCRIPT = os.path.join(ROOT, "samples", "balloon", "balloon.py")

# Per image: ellipses (center_y, center_x, radius_y, radius_x).
SCENES = {
    "train": [[(20, 20, 10, 14), (44, 44, 12, 9)], [(32, 32, 16, 16)],
              [(15, 45, 8, 10), (45, 15, 9, 8), (40, 45, 7, 12)]],
    "val": [[(30, 34, 13, 11)], [(18, 20, 9, 9), (44, 40, 10, 14)]],
}


def ellipse_polygon(cy, cx, ry, rx, points=24):
    """Vertices (xs, ys) of a polygon inscribed in the ellipse, in pixels."""
    t = np.linspace(0, 2 * np.pi, points, endpoint=False)
    return (np.round(cx + rx * np.cos(t), 1).tolist(), np.round(cy + ry * np.sin(t), 1).tolist())


def ellipse_mask(cy, cx, ry, rx, shape=(64, 64)):
    mask = np.zeros(shape, bool)
    rr, cc = skimage.draw.ellipse(cy, cx, ry, rx, shape=shape)
    mask[rr, cc] = True
    return mask


def write_balloon_data(root):
    """The balloon layout: <root>/<subset>/via_region_data.json (VIA 1.x) + 64x64 PNGs."""
    rng = np.random.default_rng(0)
    for subset, scenes in SCENES.items():
        folder = root / subset
        folder.mkdir(parents=True)
        via = {}
        for i, ellipses in enumerate(scenes):
            image = rng.integers(0, 60, (64, 64, 3), dtype=np.uint8)
            regions = {}
            for k, (cy, cx, ry, rx) in enumerate(ellipses):
                image[ellipse_mask(cy, cx, ry, rx)] = (220, 40 + 60 * k, 40)
                xs, ys = ellipse_polygon(cy, cx, ry, rx)
                regions[str(k)] = {"shape_attributes": {"name": "polygon", "all_points_x": xs,
                                                        "all_points_y": ys},
                                   "region_attributes": {}}
            filename = f"{subset}_{i}.png"
            skimage.io.imsave(folder / filename, image, check_contrast=False)
            size = os.path.getsize(folder / filename)
            via[f"{filename}{size}"] = {"fileref": "", "size": size, "filename": filename,
                                        "base64_img_data": "", "file_attributes": {},
                                        "regions": regions}
        (folder / "via_region_data.json").write_text(json.dumps(via))
    return root


@pytest.fixture(scope="module")
def balloon_dir(tmp_path_factory):
    return write_balloon_data(tmp_path_factory.mktemp("balloon"))


# ----------------------------------------------------------------------------- color_splash
def test_color_splash_hand_computed():
    image = np.array([[[100, 50, 200], [10, 20, 30]],
                      [[255, 255, 255], [0, 0, 255]]], dtype=np.uint8)
    masks = np.zeros((2, 2, 2), bool)
    masks[0, 1, 0] = True   # instance 0 covers (0, 1)
    masks[1, 1, 1] = True   # instance 1 covers (1, 1)
    out = balloon.color_splash(image, masks)
    assert out.dtype == np.uint8 and out.shape == (2, 2, 3)
    # 0.2125*100 + 0.7154*50 + 0.0721*200 = 71.44 -> 71
    np.testing.assert_array_equal(out[0, 0], [71, 71, 71])
    # 0.2125 + 0.7154 + 0.0721 = 1.0 -> white stays 255
    np.testing.assert_array_equal(out[1, 0], [255, 255, 255])
    np.testing.assert_array_equal(out[0, 1], [10, 20, 30])
    np.testing.assert_array_equal(out[1, 1], [0, 0, 255])


def test_color_splash_without_instances_is_all_gray():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    out = balloon.color_splash(image, np.zeros((5, 7, 0), bool))
    expected = np.rint(image.astype(float) @ [0.2125, 0.7154, 0.0721])
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], expected)


def test_color_splash_2d_mask_float_image_and_alpha():
    image = np.zeros((3, 3, 4), np.float32)
    image[..., 0] = 1.0  # pure red, alpha ignored
    mask = np.zeros((3, 3), np.uint8)
    mask[1, 1] = 7
    out = balloon.color_splash(image, mask)
    assert out.dtype == np.float32 and out.shape == (3, 3, 3)
    np.testing.assert_allclose(out[1, 1], [1, 0, 0])
    np.testing.assert_allclose(out[0, 0], [0.2125] * 3, rtol=1e-6)


def test_color_splash_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="mask must be"):
        balloon.color_splash(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5, 1), bool))
    with pytest.raises(ValueError, match="image must be"):
        balloon.color_splash(np.zeros((4, 4, 2), np.uint8), np.zeros((4, 4, 1), bool))


# ----------------------------------------------------------------------------- dataset
def test_balloon_dataset_reads_via_polygons(balloon_dir):
    ds = balloon.load_dataset(balloon_dir, "train")
    assert ds.class_names == ["BG", "balloon"]
    assert ds.num_images == 3
    for image_id, ellipses in enumerate(SCENES["train"]):
        info = ds.image_info[image_id]
        assert ds.image_reference(image_id) == str(balloon_dir / "train" / f"train_{image_id}.png")
        assert (info["height"], info["width"]) == (64, 64)
        assert ds.load_image(image_id).shape == (64, 64, 3)
        masks, class_ids = ds.load_mask(image_id)
        assert masks.dtype == bool and masks.shape == (64, 64, len(ellipses))
        np.testing.assert_array_equal(class_ids, np.ones(len(ellipses), np.int32))
        for k, (cy, cx, ry, rx) in enumerate(ellipses):
            # A 24-gon inscribed in the ellipse: nearly the same pixels.
            truth = ellipse_mask(cy, cx, ry, rx)
            iou = (masks[..., k] & truth).sum() / (masks[..., k] | truth).sum()
            assert iou > 0.85, (image_id, k, iou)


def test_balloon_dataset_errors(tmp_path, balloon_dir):
    with pytest.raises(ValueError, match="subset must be one of"):
        balloon.BalloonDataset().load_balloon(balloon_dir, "test")
    with pytest.raises(FileNotFoundError, match="balloon_dataset.zip"):
        balloon.BalloonDataset().load_balloon(tmp_path, "train")


# ----------------------------------------------------------------------------- config / weights
def test_config_and_overrides():
    args = balloon.build_parser().parse_args(
        ["train", "--image-size", "128", "--steps-per-epoch", "3", "--backbone", "resnet50",
         "--set", "RPN_ANCHOR_SCALES=(8, 16, 32, 64, 128)", "--set", "TRAIN_ROIS_PER_IMAGE=16"])
    config = balloon.make_config(args)
    assert config.NAME == "balloon" and config.NUM_CLASSES == 2
    assert config.IMAGE_MAX_DIM == 128 and config.STEPS_PER_EPOCH == 3
    assert config.BACKBONE == "resnet50" and config.TRAIN_ROIS_PER_IMAGE == 16
    assert tuple(config.RPN_ANCHOR_SCALES) == (8, 16, 32, 64, 128)
    assert config.BATCH_SIZE == 2
    assert balloon.make_config(args, inference=True).BATCH_SIZE == 1
    with pytest.raises(ValueError, match="--set"):
        balloon.parse_overrides(["NOT_A_SETTING=1"])


def test_missing_coco_weights_names_the_file(tmp_path, balloon_dir, capsys):
    missing = tmp_path / "nowhere" / "mask_rcnn_coco.h5"
    with pytest.raises(FileNotFoundError) as err:
        balloon.find_coco_weights(str(missing))
    assert "mask_rcnn_coco.h5" in str(err.value) and "v2.0" in str(err.value)
    assert str(missing) in str(err.value)
    code = balloon.main(["train", "--dataset", str(balloon_dir), "--weights", "coco",
                         "--coco-weights", str(missing), "--logs", str(tmp_path / "logs")])
    assert code == 1
    assert "mask_rcnn_coco.h5" in capsys.readouterr().err
    assert not (tmp_path / "logs").exists()


def test_splash_of_missing_image_fails_fast(tmp_path, capsys):
    code = balloon.main(["splash", "--image", str(tmp_path / "nope.jpg"),
                         "--logs", str(tmp_path / "logs")])
    assert code == 1
    assert "nope.jpg" in capsys.readouterr().err


# ----------------------------------------------------------------------------- end to end
TINY = ["--image-size", "64", "--backbone", "resnet50", "--validation-steps", "0",
        *TINY_SETTINGS, "--set", "DETECTION_MIN_CONFIDENCE=0.0"]


def run_cli(*args):
    return sample_cli.run_cli(SCRIPT, *args)


@pytest.mark.slow
def test_cli_train_then_splash(tmp_path, balloon_dir):
    logs = tmp_path / "logs"
    run_cli("train", "--dataset", str(balloon_dir), "--weights", "none", "--logs", str(logs),
            "--epochs", "1", "--steps-per-epoch", "2", "--images-per-gpu", "1", *TINY)
    runs = [d for d in logs.iterdir() if d.name.startswith("balloon")]
    assert len(runs) == 1
    assert (runs[0] / "mask_rcnn_balloon_0001.h5").is_file()

    image_path = balloon_dir / "val" / "val_0.png"
    out = tmp_path / "splash.png"
    run_cli("splash", "--weights", "last", "--logs", str(logs), "--image", str(image_path),
            "--out", str(out), *TINY)
    image = skimage.io.imread(image_path)[..., :3]
    splash = skimage.io.imread(out)
    assert splash.shape == image.shape and splash.dtype == np.uint8
    # Every pixel is either the original colour (an instance) or its exact gray value.
    gray = balloon.color_splash(image, np.zeros((64, 64, 0), bool))
    assert np.all(np.all(splash == image, axis=-1) | np.all(splash == gray, axis=-1))


class LeftHalfModel:
    """A stand-in for MaskRCNN: one instance covering the left half of every frame."""

    def __init__(self):
        self.frames = 0

    def detect(self, images, verbose=0):
        (image,) = images
        self.frames += 1
        masks = np.zeros(image.shape[:2] + (1,), bool)
        masks[:, :image.shape[1] // 2, 0] = True
        return [{"rois": np.array([[0, 0, image.shape[0], image.shape[1] // 2]]),
                 "class_ids": np.array([1]), "scores": np.array([1.0]), "masks": masks}]


def test_splash_video_keeps_instance_colour_only(tmp_path):
    cv2 = pytest.importorskip("cv2")
    source = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(source), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 48))
    for _ in range(3):
        writer.write(np.full((48, 64, 3), (40, 60, 220), np.uint8))  # BGR: a red-ish frame
    writer.release()
    model = LeftHalfModel()
    out = tmp_path / "splash.avi"
    assert balloon.splash_video(model, str(source), str(out)) == 3
    assert model.frames == 3
    capture = cv2.VideoCapture(str(out))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame[..., ::-1].astype(int))  # back to RGB
    capture.release()
    assert len(frames) == 3
    for frame in frames:
        assert frame.shape == (48, 64, 3)
        left, right = frame[8:40, 4:28], frame[8:40, 36:60]  # away from the JPEG seam
        # Left: still colour (R >> B); right: gray (channels equal up to JPEG error),
        # at the luma of RGB (220, 60, 40) = 0.2125*220 + 0.7154*60 + 0.0721*40 = 92.5.
        assert np.all(left[..., 0] - left[..., 2] > 120)
        assert np.all(np.ptp(right, axis=-1) <= 8)
        assert abs(right.mean() - 92.5) < 6


def test_splash_video_missing_file(tmp_path):
    pytest.importorskip("cv2")
    with pytest.raises(FileNotFoundError, match="--video"):
        balloon.splash_video(LeftHalfModel(), str(tmp_path / "none.mp4"), str(tmp_path / "o.avi"))
