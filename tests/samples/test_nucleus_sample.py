"""Tests for samples/nucleus: the data set and its split, RLE / submission CSV, the
augmentation, the config and, on the real nuclei images (../shared/data/nuclei of
the clone), training, detection and evaluation with tiny settings."""

import os
import subprocess
import sys

import numpy as np
import pytest
import skimage.io

from locations import REPO_DIR as ROOT

from samples.nucleus import nucleus  # noqa: E402
from samples.nucleus.submission import (non_overlapping, read_submission, rle_decode,  # noqa: E402
                                        rle_encode, submission_rows, write_submission)

from mrcnn.structures.boxes import extract_bboxes  # noqa: E402

# pycocotools' decode trips a NumPy 2 deprecation warning; not ours to fix.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")

DATA = os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "nuclei"))
needs_data = pytest.mark.skipif(
    not nucleus.list_image_ids(DATA),
    reason=f"nuclei data missing: {DATA} holds no <image_id>/images/<image_id>.png folders "
           f"(the 45-image Data Science Bowl folder CI provides at ../shared/data/nuclei "
           f"next to the repository)")
RGBA_ID = "0114f484a16c152baa2d82fdd43740880a762c93f436c8988ac461c5c9dbe7d5"  # 256x256, 7 nuclei
CROWDED_ID = "432f367a4c5b5674de2e2977744d10289a064e5704b21af6607b4975be47c580"  # 329 nuclei

# Tiny model settings: seconds per step on a CPU.
TINY = dict(IMAGE_MIN_DIM=128, IMAGE_MAX_DIM=128, IMAGES_PER_GPU=2, STEPS_PER_EPOCH=2,
            VALIDATION_STEPS=1, TRAIN_ROIS_PER_IMAGE=32, RPN_TRAIN_ANCHORS_PER_IMAGE=64,
            PRE_NMS_LIMIT=512, POST_NMS_ROIS_TRAINING=128, POST_NMS_ROIS_INFERENCE=128,
            TOP_DOWN_PYRAMID_SIZE=32, FPN_CLASSIF_FC_LAYERS_SIZE=32, MASK_HEAD_CONV_CHANNELS=16,
            DETECTION_MAX_INSTANCES=32, MINI_MASK_SHAPE=(28, 28), SEED=0)
TINY_ARGS = [arg for name, value in TINY.items() if name != "SEED"
             for arg in ("--set", f"{name}={value}")]


# ----------------------------------------------------------------------------- RLE / CSV
def test_rle_follows_the_competition_format():
    mask = np.zeros((3, 4), bool)
    mask[0, 0] = mask[1, 0] = True     # pixels 1, 2 (column 0, top to bottom)
    mask[2, 1] = True                  # pixel 6 (column 1 starts at pixel 4)
    mask[:, 3] = True                  # pixels 10, 11, 12
    assert rle_encode(mask) == "1 2 6 1 10 3"
    assert rle_encode(np.zeros((3, 4), bool)) == ""
    assert rle_encode(np.ones((2, 2), bool)) == "1 4"
    np.testing.assert_array_equal(rle_decode("1 2 6 1 10 3", (3, 4)), mask)
    with pytest.raises(ValueError, match="outside"):
        rle_decode("11 3", (3, 4))


def test_rle_round_trips_random_masks():
    rng = np.random.default_rng(0)
    for shape in ((1, 1), (7, 5), (64, 33)):
        mask = rng.random(shape) < 0.4
        np.testing.assert_array_equal(rle_decode(rle_encode(mask), shape), mask)


def test_non_overlapping_gives_pixels_to_the_best_score(tmp_path):
    masks = np.zeros((6, 6, 3), bool)
    masks[0:4, 0:4, 0] = True          # low score
    masks[2:6, 2:6, 1] = True          # high score: keeps the shared pixels
    masks[2:4, 2:4, 2] = True          # inside mask 1: nothing left, dropped
    disjoint, keep = non_overlapping(masks, np.array([0.6, 0.9, 0.5]))
    assert keep.tolist() == [1, 0]
    assert disjoint[..., 0].sum() == 16 and disjoint[..., 1].sum() == 12
    assert disjoint.sum(axis=-1).max() == 1
    rows = submission_rows("img", masks, np.array([0.6, 0.9, 0.5])) + \
        submission_rows("empty", np.zeros((6, 6, 0), bool), np.zeros(0))
    path = write_submission(str(tmp_path / "sub.csv"), rows)
    assert open(path).read().splitlines()[0] == "ImageId,EncodedPixels"
    assert open(path).read().splitlines()[-1] == "empty,"
    back = read_submission(path)
    assert back["empty"] == [] and len(back["img"]) == 2
    np.testing.assert_array_equal(rle_decode(back["img"][0], (6, 6)), disjoint[..., 0])


# ----------------------------------------------------------------------------- data / split
def test_split_rule_is_stratified_and_deterministic():
    ids = [f"id{k:02d}" for k in range(23)]
    groups = {i: ("stained" if k % 4 == 0 else "fluorescence") for k, i in enumerate(ids)}
    train, val = nucleus.split_image_ids(list(reversed(ids)), groups)
    assert (train, val) == nucleus.split_image_ids(ids, groups)  # input order is irrelevant
    assert sorted(train + val) == ids and not set(train) & set(val)
    stained = sorted(i for i in ids if groups[i] == "stained")       # 6 ids
    fluorescence = sorted(i for i in ids if groups[i] == "fluorescence")  # 17 ids
    assert val == sorted(stained[0::5] + fluorescence[0::5])
    assert {groups[i] for i in val} == {groups[i] for i in train} == {"stained", "fluorescence"}


def _write_folder(root, images):
    """A Data Science Bowl style folder: {id: (image array, [mask arrays])}."""
    for image_id, (image, masks) in images.items():
        os.makedirs(root / image_id / "images")
        skimage.io.imsave(root / image_id / "images" / f"{image_id}.png", image,
                          check_contrast=False)
        if masks is not None:
            os.makedirs(root / image_id / "masks")
            for k, m in enumerate(masks):
                skimage.io.imsave(root / image_id / "masks" / f"{image_id}_{k}.png",
                                  (m * 255).astype(np.uint8), check_contrast=False)


def _square(shape, y, x, size):
    m = np.zeros(shape, bool)
    m[y:y + size, x:x + size] = True
    return m


def test_dataset_loads_rgba_grey_and_colour_and_nested_folders(tmp_path):
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., :3], rgba[..., 3] = 40, 255
    grey = np.full((16, 16), 90, np.uint8)
    colour = np.zeros((16, 16, 3), np.uint8)
    colour[..., 0] = 200
    root = tmp_path / "stage1_train"
    _write_folder(root, {
        "a": (rgba, [_square((20, 30), 2, 3, 5), _square((20, 30), 10, 12, 4),
                     np.zeros((20, 30), bool)]),   # an empty mask file: left out
        "b": (grey, [_square((16, 16), 1, 1, 3)]),
        "c": (colour, [_square((16, 16), 4, 4, 6)]),
        "d": (grey, None)})                           # no masks/ folder (a test image)
    (tmp_path / "README.md").write_text("not an image folder")
    dataset = nucleus.load_dataset(tmp_path, "all")  # finds stage1_train/ inside
    assert [info["id"] for info in dataset.image_info] == ["a", "b", "c", "d"]
    assert [info["group"] for info in dataset.image_info] == [
        "fluorescence", "fluorescence", "stained", "fluorescence"]
    image = dataset.load_image(0)
    assert image.shape == (20, 30, 3) and image.dtype == np.uint8 and (image == 40).all()
    assert dataset.load_image(1).shape == (16, 16, 3)
    masks, class_ids = dataset.load_mask(0)
    assert masks.shape == (20, 30, 2) and masks.dtype == bool and class_ids.tolist() == [1, 1]
    np.testing.assert_array_equal(masks[..., 1], _square((20, 30), 10, 12, 4))
    assert dataset.load_mask(0)[0].tobytes() == masks.tobytes()  # from the cache
    assert dataset.load_mask(3)[0].shape == (16, 16, 0)
    # The rule: per group, every 5th sorted id from the first -> val.
    assert [i["id"] for i in nucleus.load_dataset(tmp_path, "val").image_info] == ["a", "c"]
    train = nucleus.load_dataset(root, "train", val_ids=["b"])
    assert [i["id"] for i in train.image_info] == ["a", "c", "d"]
    with pytest.raises(ValueError, match="zzz"):
        nucleus.load_dataset(root, "val", val_ids=["b", "zzz"])
    with pytest.raises(FileNotFoundError, match="--dataset"):
        nucleus.load_dataset(tmp_path / "nothing", "train")
    ids_file = tmp_path / "val.txt"
    ids_file.write_text("# val images\nb\nc  # stained\n")
    assert nucleus.read_val_ids(str(ids_file)) == ["b", "c"]
    assert nucleus.read_val_ids("b, c") == ["b", "c"]


def test_augmentation_moves_masks_with_the_image():
    rng = np.random.default_rng(1)
    image = rng.integers(20, 200, (32, 32, 3), dtype=np.uint8)
    masks = np.zeros((32, 32, 2), bool)
    masks[3:9, 4:20, 0] = True
    masks[20:30, 25:28, 1] = True
    image[masks[..., 0]] = 250  # marks instance 0 in the image
    augment = nucleus.NucleusAugmentation(seed=3, brightness=(1.0, 1.0))
    seen = set()
    for _ in range(100):
        out_image, out_masks = augment(image, masks)
        assert out_image.shape == image.shape and out_masks.shape == masks.shape
        assert (out_image[out_masks[..., 0]] == 250).all()
        assert out_masks.sum(axis=(0, 1)).tolist() == [96, 30]
        seen.add(out_masks[..., 0].tobytes())
    assert len(seen) == 8  # the 8 flips/rotations of the square all occur
    bright = nucleus.NucleusAugmentation(seed=0, brightness=(0.5, 0.5))(image, masks)[0]
    assert bright.dtype == np.uint8 and bright.max() == 125
    wide = np.zeros((16, 24, 3), np.uint8)  # not square: rotations by 180 degrees only
    for _ in range(10):
        assert augment(wide, np.zeros((16, 24, 1), bool))[0].shape == (16, 24, 3)


# ----------------------------------------------------------------------------- config / CLI
def test_configs_hold_a_crowded_image():
    train_config = nucleus.NucleusConfig()
    inference = nucleus.NucleusInferenceConfig()
    assert train_config.IMAGE_RESIZE_MODE == "crop" and list(train_config.IMAGE_SHAPE) == [
        256, 256, 3]
    assert inference.IMAGE_RESIZE_MODE == "pad64" and inference.BATCH_SIZE == 1
    for config in (train_config, inference):
        assert config.MAX_GT_INSTANCES >= 400 and config.DETECTION_MAX_INSTANCES >= 400
        assert config.RPN_ANCHOR_SCALES == (8, 16, 32, 64, 128)
        assert config.USE_MINI_MASK and tuple(config.MINI_MASK_SHAPE) == (56, 56)
    assert nucleus.coco_max_dets(inference) == (1, 10, 400)


def test_command_line_options_and_backbones():
    parser = nucleus.build_parser()
    args = parser.parse_args(["train", "--backbone", "resnet50", "--image-size", "128",
                              "--set", "TRAIN_ROIS_PER_IMAGE=64"])
    config = nucleus.make_config(args)
    assert config.BACKBONE == "resnet50" and config.COMPUTE_BACKBONE_SHAPE is None
    assert list(config.IMAGE_SHAPE) == [128, 128, 3] and config.TRAIN_ROIS_PER_IMAGE == 64
    assert config.SEED == 0
    light = nucleus.make_config(parser.parse_args(["evaluate", "--backbone", "light"]),
                                inference=True)
    assert callable(light.BACKBONE) and light.IMAGE_RESIZE_MODE == "pad64"
    with pytest.raises(SystemExit):
        nucleus.main(["demo", "--set", "NOT_A_SETTING=1"])


# ----------------------------------------------------------------------------- real data
@needs_data
def test_real_folder_split():
    train = nucleus.load_dataset(DATA, "train")
    val = nucleus.load_dataset(DATA, "val")
    train_ids = [i["id"] for i in train.image_info]
    val_ids = [i["id"] for i in val.image_info]
    assert len(train_ids) + len(val_ids) == len(nucleus.list_image_ids(DATA))
    assert not set(train_ids) & set(val_ids)
    assert 0.15 <= len(val_ids) / (len(train_ids) + len(val_ids)) <= 0.25
    for subset in (train, val):
        assert {i["group"] for i in subset.image_info} == {"stained", "fluorescence"}
    assert val_ids == [i["id"] for i in nucleus.load_dataset(DATA, "val").image_info]
    if len(train_ids) + len(val_ids) == 45:  # the project's folder: 35 / 10, 2 stained in val
        assert len(val_ids) == 10 and RGBA_ID in val_ids and CROWDED_ID in val_ids
        assert [i["group"] for i in val.image_info].count("stained") == 2


class _OracleModel:
    """detect() returns the ground truth (found by the image's bytes)."""

    def __init__(self, dataset):
        from samples.nucleus.nucleus import NucleusInferenceConfig
        self.config = NucleusInferenceConfig()
        self.dataset = dataset
        self.by_image = {dataset.load_image(i).tobytes(): i for i in dataset.image_ids}

    def detect(self, images, verbose=0):
        masks, class_ids = self.dataset.load_mask(self.by_image[images[0].tobytes()])
        return [{"rois": extract_bboxes(masks), "class_ids": class_ids, "masks": masks,
                 "scores": np.linspace(0.99, 0.6, len(class_ids)).astype(np.float32)}]


@needs_data
def test_evaluate_counts_every_nucleus_of_a_crowded_image(capsys):
    dataset = nucleus.load_dataset(DATA, "val", val_ids=[CROWDED_ID, RGBA_ID])
    metrics = nucleus.evaluate(_OracleModel(dataset), dataset)
    assert metrics["max_dets"] == 400 and metrics["dsb"] == 1.0
    assert metrics["coco"]["segm"]["AP"] == pytest.approx(1.0)  # at maxDets 100: 0.32
    assert metrics["coco"]["segm"]["AR400"] == pytest.approx(1.0)
    nucleus.print_metrics(metrics, dataset)
    out = capsys.readouterr().out
    assert "up to 400 detections per image" in out and "Data Science Bowl score" in out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained for a few steps on two images: (history, checkpoint, logs)."""
    import keras

    from mrcnn import model as modellib

    keras.utils.set_random_seed(0)
    logs = tmp_path_factory.mktemp("nucleus_logs")
    config = type("TinyNucleusConfig", (nucleus.NucleusConfig,), TINY)()
    train_set = nucleus.load_dataset(DATA, "train", limit=2)
    val_set = nucleus.load_dataset(DATA, "val", limit=2)
    model = modellib.MaskRCNN(mode="training", config=config, model_dir=str(logs))
    history = model.train(train_set, val_set, learning_rate=1e-3, epochs=1, layers="all",
                          augmentation=nucleus.NucleusAugmentation(seed=0), verbose=0)
    return history, model.find_last(), str(logs)


@needs_data
def test_a_few_training_steps_give_finite_losses(trained):
    history, checkpoint, _logs = trained
    for name in ("loss", "rpn_class_loss", "rpn_bbox_loss", "mrcnn_class_loss",
                 "mrcnn_bbox_loss", "mrcnn_mask_loss", "val_loss"):
        assert np.isfinite(history.history[name]).all(), name
    assert os.path.isfile(checkpoint)


def _inference_model(checkpoint, logs):
    args = nucleus.build_parser().parse_args(["evaluate", "--logs", logs] + TINY_ARGS)
    model, _ = nucleus.load_inference_model(args, checkpoint)
    return model


@needs_data
def test_detect_on_an_rgba_image_returns_masks_of_its_size(trained, tmp_path):
    _history, checkpoint, logs = trained
    model = _inference_model(checkpoint, logs)
    raw = skimage.io.imread(nucleus.image_path(DATA, RGBA_ID))
    assert raw.shape == (256, 256, 4)
    r = model.detect([raw], verbose=0)[0]
    n = len(r["scores"])
    assert r["masks"].shape == (256, 256, n) and r["masks"].dtype == bool
    assert r["rois"].shape == (n, 4) and (r["class_ids"] == 1).all()


@needs_data
def test_evaluate_end_to_end_on_two_images(trained, tmp_path, capsys):
    _history, checkpoint, logs = trained
    model = _inference_model(checkpoint, logs)
    dataset = nucleus.load_dataset(DATA, "val", limit=2)
    metrics = nucleus.evaluate(model, dataset, min_score=0.0)
    assert len(metrics["dsb_per_image"]) == 2 and 0.0 <= metrics["dsb"] <= 1.0
    for kind in ("segm", "bbox"):
        recall = f"AR{metrics['max_dets']}"  # maxDets: the tiny model's 32 slots -> 100
        assert set(metrics["coco"][kind]) >= {"AP", "AP50", "AP75", recall}
        assert -1.0 <= metrics["coco"][kind]["AP"] <= 1.0
    nucleus.print_metrics(metrics, dataset)
    assert "COCO segm: AP" in capsys.readouterr().out
    shown = nucleus.pick_shown(dataset, metrics["image_ids"], 2)
    assert dataset.image_info[shown[0]]["group"] == "stained"
    png = nucleus.save_comparison(dataset, shown, [metrics["results"][i] for i in shown],
                                  str(tmp_path / "cmp.png"))
    assert skimage.io.imread(png).ndim == 3


@needs_data
@pytest.mark.slow
def test_detect_command_writes_overlays_and_the_submission(trained, tmp_path):
    _history, checkpoint, logs = trained
    out = tmp_path / "detect"
    cmd = [sys.executable, os.path.join(ROOT, "samples", "nucleus", "nucleus.py"), "detect",
           "--dataset", DATA, "--val-ids", RGBA_ID, "--weights", checkpoint,
           "--logs", logs, "--out", str(out), "--min-score", "0"] + TINY_ARGS
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    overlay = skimage.io.imread(out / f"{RGBA_ID}.png")
    assert overlay.shape[:2] == (256, 256)
    rows = read_submission(out / "submission.csv")
    assert list(rows) == [RGBA_ID]
    masks = [rle_decode(rle, (256, 256)) for rle in rows[RGBA_ID]]
    assert sum(m.astype(int) for m in masks).max() <= 1 if masks else True  # disjoint
