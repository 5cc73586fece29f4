"""Tests for samples/keypoints/keypoints.py: the generated keypoint data set, its config and
its command line (demo end to end with tiny settings, evaluate without a checkpoint)."""

import os
import subprocess
import sys

import numpy as np
import pytest

from mrcnn.structures import keypoints as kp
from mrcnn.structures.boxes import extract_bboxes
from samples.keypoints import keypoints as sample
from samples.shapes.shapes import shape_mask


@pytest.fixture(scope="module")
def dataset():
    return sample.make_dataset(20, 64, seed=3)


def test_classes_keypoints_and_config_agree(dataset):
    config = sample.KeypointConfig()
    assert dataset.class_names == ["BG", "square", "triangle"]
    assert dataset.keypoint_names == config.KEYPOINT_NAMES
    classes = dataset.keypoint_classes()
    assert classes == {1: [3, 4, 5, 6], 2: [0, 1, 2]}
    table = kp.keypoint_class_table(config.NUM_CLASSES, config.NUM_KEYPOINTS,
                                    config.KEYPOINT_CLASSES, config.KEYPOINT_NAMES)
    assert [np.flatnonzero(row).tolist() for row in table] == [[], [3, 4, 5, 6], [0, 1, 2]]
    assert sample.KeypointInferenceConfig().BATCH_SIZE == 1


def test_keypoints_are_the_shapes_exact_corners(dataset):
    occluded = 0
    for image_id in dataset.image_ids:
        masks, class_ids = dataset.load_mask(image_id)
        points = dataset.load_keypoints(image_id)
        spec = dataset.image_reference(image_id)
        assert points.shape == (masks.shape[-1], 7, 3) and points.dtype == np.float32
        for n, (name, _color, dims) in enumerate(spec):
            full = shape_mask(name, *dims, 64, 64)
            y1, x1, y2, x2 = extract_bboxes(full[:, :, None])[0]
            own = [sample.KEYPOINT_NAMES.index(p) for p in sample.SHAPE_KEYPOINTS[name]]
            others = sorted(set(range(7)) - set(own))
            assert not points[n, others].any()
            got = {sample.KEYPOINT_NAMES[j]: tuple(points[n, j, :2]) for j in own}
            if name == "square":
                assert got == {"top_left": (x1 + 0.5, y1 + 0.5), "top_right": (x2 - 0.5, y1 + 0.5),
                               "bottom_left": (x1 + 0.5, y2 - 0.5),
                               "bottom_right": (x2 - 0.5, y2 - 0.5)}
            else:
                top = np.flatnonzero(full[y1])
                bottom = np.flatnonzero(full[y2 - 1])
                assert top.tolist() == [int(got["apex"][0])] and got["apex"][1] == y1 + 0.5
                assert got["base_left"] == (bottom[0] + 0.5, y2 - 0.5)
                assert got["base_right"] == (bottom[-1] + 0.5, y2 - 0.5)
            for j in own:
                x, y, v = points[n, j]
                assert full[int(y), int(x)]                       # on the shape's own pixel
                assert v == (2 if masks[int(y), int(x), n] else 1)
                occluded += v == 1
    assert occluded > 0                                           # some corners are hidden


def test_flip_swaps_left_and_right_corners(dataset):
    config = sample.KeypointConfig()
    perm = kp.flip_permutation(config.KEYPOINT_FLIP_MAP, 7, config.KEYPOINT_NAMES)
    image_id = next(i for i in dataset.image_ids
                    if dataset.image_reference(i)[0][0] == "square")
    masks, _ = dataset.load_mask(image_id)
    flipped = kp.flip_keypoints_horizontal(dataset.load_keypoints(image_id), 64, perm)
    name, _c, dims = dataset.image_reference(image_id)[0]
    full = shape_mask(name, *dims, 64, 64)[:, ::-1]
    y1, x1, y2, x2 = extract_bboxes(full[:, :, None])[0]
    top_left = sample.KEYPOINT_NAMES.index("top_left")
    top_right = sample.KEYPOINT_NAMES.index("top_right")
    assert tuple(flipped[0, top_left, :2]) == (x1 + 0.5, y1 + 0.5)
    assert tuple(flipped[0, top_right, :2]) == (x2 - 0.5, y1 + 0.5)


def test_same_seed_same_images_and_bad_sizes():
    a, b = sample.make_dataset(3, 64, seed=1), sample.make_dataset(3, 64, seed=1)
    assert [a.image_reference(i) for i in a.image_ids] == \
        [b.image_reference(i) for i in b.image_ids]
    with pytest.raises(ValueError, match="at least 16x16"):
        sample.KeypointDataset().load_samples(2, 8, 8)


ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


@pytest.mark.slow
def test_demo_command_end_to_end(tmp_path):
    """`keypoints.py demo` with tiny settings trains (flips on), saves a checkpoint,
    evaluates keypoint AP and pixel errors and writes the picture (`make keypoints`, smaller)."""
    logs = tmp_path / "logs"
    cmd = [sys.executable, os.path.join(ROOT, "samples", "keypoints", "keypoints.py"), "demo",
           "--logs", str(logs), "--image-size", "64", "--train-count", "8", "--val-count", "4",
           "--eval-count", "3", "--epochs", "1", "--lr-drop-epochs", "0",
           "--steps-per-epoch", "2", "--validation-steps", "0", "--images-per-gpu", "2",
           "--show", "2"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(cmd, cwd=str(tmp_path), env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_dirs = [d for d in logs.iterdir() if d.name.startswith("keypoints")]
    assert len(run_dirs) == 1
    checkpoint = run_dirs[0] / "mask_rcnn_keypoints_0001.h5"
    png = run_dirs[0] / "keypoints_predictions.png"
    assert checkpoint.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"Checkpoint:  {checkpoint}" in proc.stdout
    assert "Keypoint AP (OKS, 3 images): AP" in proc.stdout
    assert "mrcnn_keypoint_loss" in proc.stdout and "total time" in proc.stdout


def test_evaluate_without_checkpoint_fails_cleanly(tmp_path, capsys):
    code = sample.main(["evaluate", "--logs", str(tmp_path), "--image-size", "64"])
    assert code == 1
    assert "find_last" in capsys.readouterr().err
