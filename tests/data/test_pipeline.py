"""Tests for mrcnn.data.pipeline: load_image_gt, build_example, tf.data pipeline, generator."""

import albumentations as A
import numpy as np
import pytest

from mrcnn.data import pipeline as data
from mrcnn.config import Config
from mrcnn.data.dataset import Dataset
from mrcnn.structures.image_meta import parse_image_meta

# Rectangles drawn per image: (y1, x1, y2, x2) pixels, exclusive end, class id.
RECTS = {
    0: [((4, 6, 20, 30), 1), ((30, 10, 60, 22), 2)],
    1: [((10, 40, 50, 60), 2)],
    2: [],
    3: [((0, 0, 64, 64), 1), ((5, 5, 9, 9), 1), ((40, 44, 48, 60), 2)],
}


class RectDataset(Dataset):
    """64x64 RGB images with filled rectangles (sources "toy" and "other")."""

    def __init__(self, overrides=None):
        super().__init__()
        self.overrides = overrides or {}
        self.add_class("toy", 1, "box")
        self.add_class("toy", 2, "bar")
        self.add_class("other", 1, "thing")
        for i in RECTS:
            self.add_image("toy", image_id=i, path=f"mem://rects/{i}.png")
        self.add_image("other", image_id=99, path="mem://other/99.png")
        self.prepare()

    def _rects(self, image_id):
        return RECTS.get(image_id, [((16, 16, 48, 48), 3)])

    def load_image(self, image_id):
        if "image" in self.overrides.get(image_id, {}):
            return self.overrides[image_id]["image"]
        image = np.full((64, 64, 3), 20, np.uint8)
        for k, ((y1, x1, y2, x2), _) in enumerate(self._rects(image_id)):
            image[y1:y2, x1:x2] = (60 * (k + 1), 100, 200)
        return image

    def load_mask(self, image_id):
        if "mask" in self.overrides.get(image_id, {}):
            return self.overrides[image_id]["mask"]
        rects = self._rects(image_id)
        masks = np.zeros((64, 64, len(rects)), bool)
        for k, ((y1, x1, y2, x2), _) in enumerate(rects):
            masks[y1:y2, x1:x2, k] = True
        return masks, np.array([c for _, c in rects], np.int32)


class ToyConfig(Config):
    NAME = "toy"
    NUM_CLASSES = 4           # BG, toy.1, toy.2, other.1
    IMAGES_PER_GPU = 2
    IMAGE_RESIZE_MODE = "square"
    IMAGE_MIN_DIM = 128       # 64 -> 128: scale 2, no padding
    IMAGE_MAX_DIM = 128
    RPN_ANCHOR_SCALES = (8, 16, 32, 64, 128)
    RPN_TRAIN_ANCHORS_PER_IMAGE = 32
    MINI_MASK_SHAPE = (16, 16)
    MAX_GT_INSTANCES = 5
    POST_NMS_ROIS_TRAINING = 50
    TRAIN_ROIS_PER_IMAGE = 10


def make_config(**overrides):
    return type("C", (ToyConfig,), overrides)()


def scaled(rect, factor=2, offset=(0, 0)):
    y1, x1, y2, x2 = rect
    oy, ox = offset
    return [y1 * factor + oy, x1 * factor + ox, y2 * factor + oy, x2 * factor + ox]


# ----------------------------------------------------------------------- load_image_gt
def test_load_image_gt_scale_boxes_minimasks_meta():
    dataset = RectDataset()
    image, meta, class_ids, bbox, mask = data.load_image_gt(dataset, make_config(), 0,
                                                            use_mini_mask=True)
    assert image.shape == (128, 128, 3) and image.dtype == np.uint8
    assert class_ids.dtype == np.int32 and class_ids.tolist() == [1, 2]
    assert bbox.dtype == np.int32
    assert bbox.tolist() == [scaled(r) for r, _ in RECTS[0]]
    assert mask.shape == (16, 16, 2) and mask.dtype == bool and mask.all()
    m = parse_image_meta(meta)
    assert m["image_id"] == 0
    assert m["original_image_shape"].tolist() == [64, 64, 3]
    assert m["image_shape"].tolist() == [128, 128, 3]
    assert m["window"].tolist() == [0, 0, 128, 128]
    assert m["scale"] == pytest.approx(2.0)
    assert m["active_class_ids"].tolist() == [1, 1, 1, 0]   # source "toy"
    assert meta.shape == (make_config().IMAGE_META_SIZE,)


def test_load_image_gt_padding_full_masks_and_other_source():
    config = make_config(IMAGE_MIN_DIM=0, USE_MINI_MASK=False)   # scale 1, pad 64 -> 128
    dataset = RectDataset()
    image, meta, class_ids, bbox, mask = data.load_image_gt(dataset, config, 1)
    assert bbox.tolist() == [scaled(RECTS[1][0][0], 1, (32, 32))]
    assert mask.shape == (128, 128, 1)
    expected = np.zeros((128, 128), bool)
    expected[42:82, 72:92] = True
    np.testing.assert_array_equal(mask[:, :, 0], expected)
    np.testing.assert_array_equal(image[:32], 0)                 # padding
    m = parse_image_meta(meta)
    assert m["window"].tolist() == [32, 32, 96, 96] and m["scale"] == pytest.approx(1)
    other = data.load_image_gt(dataset, config, 4)[1]
    assert parse_image_meta(other)["active_class_ids"].tolist() == [1, 0, 0, 1]
    # use_mini_mask overrides the config (old-API keyword).
    assert data.load_image_gt(dataset, config, 1, use_mini_mask=True)[4].shape == (16, 16, 1)


def test_zero_instances_and_empty_mask_conventions():
    config = make_config()
    image, meta, class_ids, bbox, mask = data.load_image_gt(RectDataset(), config, 2,
                                                            use_mini_mask=None)
    assert class_ids.shape == (0,) and bbox.shape == (0, 4) and mask.shape == (16, 16, 0)
    # The base Dataset's "no masks" value, bool [0, 0, 0], is accepted too.
    ds = RectDataset({0: {"mask": (np.empty([0, 0, 0], bool), np.empty([0], np.int32))}})
    assert data.load_image_gt(ds, config, 0)[2].shape == (0,)


def test_empty_instances_are_dropped():
    masks, ids = RectDataset().load_mask(0)
    masks = np.concatenate([masks, np.zeros((64, 64, 1), bool)], axis=-1)
    ds = RectDataset({0: {"mask": (masks, np.append(ids, 1))}})
    _, _, class_ids, bbox, _ = data.load_image_gt(ds, make_config(), 0)
    assert class_ids.tolist() == [1, 2] and len(bbox) == 2

    def erase_first(image, masks):   # augmentation that wipes instance 0
        masks = masks.copy()
        masks[:, :, 0] = False
        return image, masks

    _, _, class_ids, bbox, mask = data.load_image_gt(RectDataset(), make_config(), 0,
                                                     augmentation=erase_first)
    assert class_ids.tolist() == [2] and bbox.tolist() == [scaled(RECTS[0][1][0])]
    assert mask.shape == (128, 128, 1)


def test_load_image_gt_defaults_and_positional_order_are_the_originals():
    """The original's signature: (dataset, config, image_id, augment=False,
    augmentation=None, use_mini_mask=False): full-size masks by default, so
    evaluation loops written for it (compute_overlaps_masks against detect()'s
    full-size masks) work; the training pipeline asks for mini-masks itself."""
    config = make_config()                       # USE_MINI_MASK = True
    image, _, class_ids, bbox, mask = data.load_image_gt(RectDataset(), config, 0)
    assert mask.shape == image.shape[:2] + (2,)
    for i, (y1, x1, y2, x2) in enumerate(bbox):
        assert mask[y1:y2, x1:x2, i].all() and mask[:, :, i].sum() == (y2 - y1) * (x2 - x1)
    assert data.load_image_gt(RectDataset(), config, 0, use_mini_mask=None)[4].shape == \
        (16, 16, 2)
    # Positional augment=True: a left-right flip half of the time (seeded).
    flips = set()
    for seed in range(8):
        _, _, _, fbox, _ = data.load_image_gt(RectDataset(), config, 0, True,
                                              rng=np.random.default_rng(seed))
        flips.add(tuple(map(tuple, fbox.tolist())))
    mirrored = tuple((y1, 128 - x2, y2, 128 - x1) for y1, x1, y2, x2 in bbox.tolist())
    assert flips == {tuple(map(tuple, bbox.tolist())), mirrored}
    example = data.build_example(RectDataset(), config, 0, rng=np.random.default_rng(0))
    assert example["input_gt_masks"].shape[:2] == (16, 16)


def test_albumentations_flip_mirrors_boxes_in_load_image_gt():
    _, _, _, bbox, _ = data.load_image_gt(RectDataset(), make_config(), 0,
                                          augmentation=A.HorizontalFlip(p=1.0))
    expected = [[y1, 128 - x2, y2, 128 - x1] for y1, x1, y2, x2 in
                (scaled(r) for r, _ in RECTS[0])]
    assert bbox.tolist() == expected


@pytest.mark.parametrize("override, message", [
    ({"mask": (np.ones((32, 32, 1), bool), np.array([1], np.int32))},
     r"mask size \(32, 32\) differs from image size \(64, 64\)"),
    ({"mask": (np.ones((64, 64, 2), bool), np.array([1], np.int32))},
     "2 masks but 1 class ids"),
    ({"mask": (np.ones((64, 64, 1), bool), np.array([4], np.int32))},
     r"class ids \[4\] out of range"),
    ({"mask": (np.ones((64, 64, 1), bool), np.array([0], np.int32))},
     r"class ids \[0\] out of range"),
    ({"image": np.zeros((64, 64), np.uint8)}, r"expected \[H, W, 3\]"),
    ({"image": np.zeros((64, 64, 3), np.float32)}, "expected uint8"),
])
def test_invalid_annotations_name_the_image(override, message):
    ds = RectDataset({1: override})
    with pytest.raises(ValueError, match=message) as info:
        data.load_image_gt(ds, make_config(), 1)
    assert "image id 1" in str(info.value) and "mem://rects/1.png" in str(info.value)


def test_crowd_ids_are_accepted_and_kept():
    masks, _ = RectDataset().load_mask(0)
    ds = RectDataset({0: {"mask": (masks, np.array([1, -2], np.int32))}})
    class_ids = data.load_image_gt(ds, make_config(), 0)[2]
    assert class_ids.tolist() == [1, -2]


# ----------------------------------------------------------------------- build_example
def test_build_example_padding_truncation_and_targets():
    config = make_config(MAX_GT_INSTANCES=2)
    example = data.build_example(RectDataset(), config, 3, rng=np.random.default_rng(0))
    signature = data.input_signature(config)
    assert set(example) == set(data.INPUT_NAMES)
    for name, (shape, dtype) in signature.items():
        assert example[name].shape == shape, name
        assert example[name].dtype == dtype, name
    assert example["input_gt_class_ids"].tolist() == [1, 1]        # first two of three
    np.testing.assert_array_equal(example["input_gt_boxes"],
                                  [scaled(r) for r, _ in RECTS[3][:2]])
    np.testing.assert_allclose(example["input_image"][12, 12] + config.MEAN_PIXEL,
                               [120, 100, 200], atol=1e-4)        # molded, inside rect 1
    match = example["input_rpn_match"][:, 0]
    assert np.sum(match == 1) >= 1 and np.sum(np.abs(match)) == 32

    padded = data.build_example(RectDataset(), config, 1, rng=np.random.default_rng(0))
    assert padded["input_gt_class_ids"].tolist() == [2, 0]
    np.testing.assert_array_equal(padded["input_gt_boxes"][1], 0)
    assert not padded["input_gt_masks"][:, :, 1].any()


def test_build_example_random_rois_and_detection_targets():
    config = make_config(USE_RPN_ROIS=False, MASK_POOL_SIZE=7, MASK_SHAPE=[14, 14])
    example = data.build_example(RectDataset(), config, 0, rng=np.random.default_rng(0),
                                 detection_targets=True)
    assert example["input_rois"].shape == (50, 4)
    assert example["target_class_ids"].shape == (10,)
    assert example["target_mask"].shape == (10, 14, 14, 4)
    assert set(example["target_class_ids"][example["target_class_ids"] > 0]) <= {1, 2}


# ----------------------------------------------------------------------- tf.data
def _take(stream, n):
    return [{k: v.numpy() for k, v in batch.items()} for batch in stream.take(n)]


def test_build_training_dataset_shapes_dtypes_and_determinism():
    import tensorflow as tf

    config = make_config()
    num_anchors = 3 * (32 * 32 + 16 * 16 + 8 * 8 + 4 * 4 + 2 * 2)
    expected = {
        "input_image": ((2, 128, 128, 3), tf.float32),
        "input_image_meta": ((2, 12 + 4), tf.float32),
        "input_rpn_match": ((2, num_anchors, 1), tf.int32),
        "input_rpn_bbox": ((2, 32, 4), tf.float32),
        "input_gt_class_ids": ((2, 5), tf.int32),
        "input_gt_boxes": ((2, 5, 4), tf.float32),
        "input_gt_masks": ((2, 16, 16, 5), tf.bool),
    }
    stream = data.build_training_dataset(RectDataset(), config, seed=7)
    assert set(stream.element_spec) == set(expected)
    for name, (shape, dtype) in expected.items():
        assert tuple(stream.element_spec[name].shape) == shape, name
        assert stream.element_spec[name].dtype == dtype, name
    first = _take(stream, 4)
    for batch in first:
        for name, (shape, dtype) in expected.items():
            assert batch[name].shape == shape
    second = _take(data.build_training_dataset(RectDataset(), config, seed=7), 4)
    for a, b in zip(first, second):
        for name in expected:
            np.testing.assert_array_equal(a[name], b[name])
    # An epoch (5 images, batches of 2, repeated) visits every image id.
    ids = [int(i) for batch in first for i in batch["input_image_meta"][:, 0]]
    assert sorted(ids[:5]) == [0, 1, 2, 3, 4]


def test_build_training_dataset_input_rois_and_no_repeat():
    config = make_config(USE_RPN_ROIS=False)
    stream = data.build_training_dataset(RectDataset(), config, shuffle=False,
                                         repeat=False, seed=1)
    batches = _take(stream, 10)
    assert len(batches) == 2                                  # 5 images -> 2 full batches
    assert batches[0]["input_rois"].shape == (2, 50, 4)
    assert batches[0]["input_image_meta"][:, 0].tolist() == [0, 1]   # in order


def test_build_training_dataset_error_names_the_image():
    ds = RectDataset({2: {"mask": (np.ones((8, 8, 1), bool), np.array([1]))}})
    stream = data.build_training_dataset(ds, make_config(), shuffle=False, repeat=False)
    with pytest.raises(Exception, match=r"image id 2 \(reference 'mem://rects/2.png'\)"):
        _take(stream, 3)
    with pytest.raises(ValueError, match="on_error"):
        data.build_training_dataset(ds, make_config(), on_error="ignore")


def test_no_augmentation_sources_skips_augmentation():
    def erase_all(image, masks):
        return image, np.zeros_like(masks)

    gen = data.data_generator(RectDataset(), make_config(), shuffle=False, batch_size=5,
                              augmentation=erase_all, no_augmentation_sources=["other"])
    ids = next(gen)["input_gt_class_ids"]
    np.testing.assert_array_equal(ids[:4], 0)          # "toy" images: all erased
    assert ids[4].tolist() == [3, 0, 0, 0, 0]          # "other" image: untouched


def test_data_generator_matches_signature_and_seed():
    config = make_config()
    gen = data.data_generator(RectDataset(), config, batch_size=2, seed=3)
    batch = next(gen)
    for name, (shape, dtype) in data.input_signature(config).items():
        assert batch[name].shape == (2,) + shape and batch[name].dtype == dtype
    again = next(data.data_generator(RectDataset(), config, batch_size=2, seed=3))
    for name in batch:
        np.testing.assert_array_equal(batch[name], again[name])


def test_pixel_anchors_match_the_model_anchors():
    from mrcnn.structures.anchors import get_anchors_for_config
    from mrcnn.structures.boxes import norm_boxes

    config = make_config()
    pixels = data.pixel_anchors(config, (128, 128, 3))
    np.testing.assert_allclose(norm_boxes(pixels, (128, 128)),
                               get_anchors_for_config(config, (128, 128, 3)), atol=1e-6)


def test_exit_guard_waits_for_running_calls_then_refuses_new_ones():
    import threading
    import time

    tracker = data._PythonCallTracker()
    finished = []

    def worker():
        with tracker:
            time.sleep(0.3)
            finished.append(time.monotonic())

    thread = threading.Thread(target=worker)
    thread.start()
    time.sleep(0.05)
    tracker.drain(timeout=10)
    assert finished   # drain returned only after the running call ended
    with pytest.raises(RuntimeError, match="shutting down"):
        with tracker:
            pass
    thread.join()
