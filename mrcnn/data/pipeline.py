"""Training input pipeline: one image's ground truth, RPN targets, tf.data batches.

Per image (`load_image_gt`, NumPy): load image and masks from a `Dataset`, validate
them, resize/pad/crop per the config (`mrcnn.structures.images.resize_image`), apply
the user's augmentation (after resizing, so the shape is fixed; `mrcnn.data.augmentation`),
drop instances whose mask became empty, take boxes from the masks, and shrink masks
to mini-masks. `build_example` adds the molded image, the RPN targets
(`mrcnn.modeling.rpn.targets`), padding to ``MAX_GT_INSTANCES``, random RoIs if not USE_RPN_ROIS.

Batches (`build_training_dataset`, tf.data): image indices -> shuffle ->
parallel ``tf.numpy_function`` running `build_example` -> static shapes ->
batch -> prefetch. `data_generator` yields the same dicts from plain Python.

Element of a batch (dict keyed by the model's training input names):

==================== ======== =============================================
input_image          float32  ``[B, H, W, C]`` image - MEAN_PIXEL
input_image_meta     float32  ``[B, IMAGE_META_SIZE]`` (compose_image_meta)
input_rpn_match      int32    ``[B, A, 1]`` 1 / -1 / 0
input_rpn_bbox       float32  ``[B, RPN_TRAIN_ANCHORS_PER_IMAGE, 4]``
input_gt_class_ids   int32    ``[B, MAX_GT_INSTANCES]`` 0 = padding
input_gt_boxes       float32  ``[B, MAX_GT_INSTANCES, 4]`` pixels, y2/x2 exclusive
input_gt_masks       bool     ``[B, mh, mw, MAX_GT_INSTANCES]``
input_gt_keypoints   float32  ``[B, MAX_GT_INSTANCES, K, 3]`` (only with NUM_KEYPOINTS > 0;
                              `mrcnn.data.keypoint_inputs`)
input_rois           float32  ``[B, R, 4]`` pixels (only if USE_RPN_ROIS is False)
==================== ======== =============================================

``mh, mw`` is MINI_MASK_SHAPE with USE_MINI_MASK, else the image size. ``H, W``
and ``A`` are static for "square" and "crop"; "none" and "pad64" leave them
``None`` (the training graph needs one size: `Config.validate_for_training`).

Randomness: with ``seed`` given, element ``k`` of the stream draws from
``numpy.random.default_rng([seed, k])`` (crop position, anchor sampling,
random RoIs), so the stream is reproducible whatever the parallelism.

Bad images: ``on_error="raise"`` (default) stops the stream with an
`ImageLoadError` naming the image id and reference; ``on_error="skip"`` drops
the image, logs the first few and counts them in a `SkippedImages`
(`mrcnn.data.errors`). Skipped elements still use up their index ``k``, so a
seeded stream stays reproducible.
"""

import atexit
import logging
import threading
import time

import numpy as np

from mrcnn.structures.anchors import pixel_anchors_for_config
from mrcnn.data import keypoint_inputs
from mrcnn.structures.boxes import extract_bboxes
from mrcnn.data.errors import ON_ERROR_POLICIES, ImageLoadError, SkippedImages, \
    check_on_error as _check_on_error
from mrcnn.structures.image_meta import compose_image_meta
from mrcnn.structures.masks import minimize_mask, resize_mask
from mrcnn.structures.images import mold_image, resize_image
from mrcnn.modeling.roi_heads.sampling import build_detection_targets, generate_random_rois
from mrcnn.modeling.rpn.targets import build_rpn_targets

__all__ = ["load_image_gt", "build_example", "build_training_dataset", "data_generator",
           "input_signature", "pixel_anchors", "ImageLoadError", "INPUT_NAMES",
           "SkippedImages", "ON_ERROR_POLICIES"]

logger = logging.getLogger(__name__)

INPUT_NAMES = ("input_image", "input_image_meta", "input_rpn_match", "input_rpn_bbox",
               "input_gt_class_ids", "input_gt_boxes", "input_gt_masks")


def _describe(dataset, image_id):
    """``image id 3 (reference '...')`` for error messages."""
    try:
        reference = dataset.image_reference(image_id)
    except Exception:  # a broken image_reference must not hide the real error
        reference = "?"
    return f"image id {image_id} (reference {reference!r})"


# --------------------------------------------------------------------------- one image
def _validate(dataset, config, image_id, image, mask, class_ids):
    where = _describe(dataset, image_id)
    image = np.asarray(image)
    channels = int(config.IMAGE_CHANNEL_COUNT)
    if image.ndim != 3 or image.shape[-1] != channels or min(image.shape[:2]) < 1:
        raise ImageLoadError(f"load_image_gt: {where}: load_image returned shape "
                             f"{image.shape}; expected [H, W, {channels}] "
                             f"(IMAGE_CHANNEL_COUNT)")
    if image.dtype != np.uint8:
        raise ImageLoadError(f"load_image_gt: {where}: load_image returned dtype "
                             f"{image.dtype}; expected uint8 (see dataset.to_rgb_uint8)")
    class_ids = np.asarray(class_ids).reshape(-1)
    if class_ids.size and not np.issubdtype(class_ids.dtype, np.integer):
        raise ImageLoadError(f"load_image_gt: {where}: class ids must be integers, got "
                             f"dtype {class_ids.dtype}")
    class_ids = class_ids.astype(np.int32)
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[-1] == 0 and class_ids.size == 0:
        mask = np.zeros(image.shape[:2] + (0,), dtype=bool)  # e.g. [0, 0, 0] "no masks"
    if mask.ndim != 3:
        raise ImageLoadError(f"load_image_gt: {where}: load_mask returned masks of shape "
                             f"{mask.shape}; expected [H, W, N]")
    if mask.shape[:2] != image.shape[:2]:
        raise ImageLoadError(f"load_image_gt: {where}: mask size {mask.shape[:2]} differs "
                             f"from image size {image.shape[:2]}")
    if mask.shape[-1] != class_ids.size:
        raise ImageLoadError(f"load_image_gt: {where}: {mask.shape[-1]} masks but "
                             f"{class_ids.size} class ids; expected one class id per mask")
    num_classes = int(config.NUM_CLASSES)
    bad = (class_ids == 0) | (class_ids >= num_classes) | (class_ids <= -num_classes)
    if bad.any():
        raise ImageLoadError(
            f"load_image_gt: {where}: class ids {sorted(set(class_ids[bad].tolist()))} out "
            f"of range; expected 1..{num_classes - 1} (NUM_CLASSES={num_classes}) or their "
            f"negatives for crowd regions (0 is the background)")
    return image, mask.astype(bool), class_ids


def load_image_gt(dataset, config, image_id, augment=False, augmentation=None,
                  use_mini_mask=False, rng=None, keypoints=False):
    """Load one image with its ground truth, resized for the network.

    Args:
        dataset: a prepared `Dataset`.
        config: a `Config` (IMAGE_RESIZE_MODE, IMAGE_MIN_DIM, IMAGE_MAX_DIM,
            IMAGE_MIN_SCALE, NUM_CLASSES, USE_MINI_MASK, MINI_MASK_SHAPE).
        image_id: internal image id.
        augment: the original's deprecated flag: True flips left-right with
            probability 0.5 (use ``augmentation``).
        augmentation: optional augmentation (`mrcnn.data.augmentation`), after resizing.
        use_mini_mask: False (the original's default): full-size masks, as
            evaluation wants; True: MINI_MASK_SHAPE mini-masks; None: follow
            ``config.USE_MINI_MASK`` (the training pipeline).
        rng: ``numpy.random.Generator`` for the "crop" resize mode (None:
            unseeded).
        keypoints: also return the instances' keypoints (``NUM_KEYPOINTS`` > 0).

    Returns:
        image: uint8 ``[h, w, C]`` resized (and padded / cropped).
        image_meta: float64 ``[IMAGE_META_SIZE]`` (``compose_image_meta``; its
            active_class_ids are 1 for the classes of the image's source).
        class_ids: int32 ``[N]`` (negative: crowd).
        bbox: int32 ``[N, 4]`` pixel boxes of the final masks, y2/x2 exclusive.
        mask: bool ``[mh, mw, N]`` mini-masks or ``[h, w, N]`` full masks.
        keypoints: (with ``keypoints=True``) float32 ``[N, K, 3]`` ``(x, y, v)``
            in the resized image's pixels (`mrcnn.data.keypoint_inputs`).

    Instances whose mask is empty after resizing, cropping or augmentation are
    dropped; zero instances is valid.

    Raises:
        ImageLoadError (a ValueError) naming the image id and its reference
        when the image or masks are malformed (wrong shape or dtype, mask size
        not the image size, mask/class-id count mismatch, class id out of range).
    """
    if rng is None:
        rng = np.random.default_rng()
    image = dataset.load_image(image_id)
    mask, class_ids = dataset.load_mask(image_id)
    image, mask, class_ids = _validate(dataset, config, image_id, image, mask, class_ids)
    original_shape = image.shape
    points = keypoint_inputs.load_keypoints(dataset, config, image_id, class_ids.size,
                                            _describe(dataset, image_id)) if keypoints else None

    image, window, scale, padding, crop = resize_image(
        image, min_dim=config.IMAGE_MIN_DIM, max_dim=config.IMAGE_MAX_DIM,
        min_scale=config.IMAGE_MIN_SCALE, mode=config.IMAGE_RESIZE_MODE, rng=rng)
    mask = resize_mask(mask, scale, padding, crop)
    points = keypoint_inputs.resize(points, original_shape, scale, padding, crop)

    if augment and rng.random() < 0.5:
        image, mask = np.fliplr(image).copy(), np.fliplr(mask).copy()
        points = keypoint_inputs.flip(points, config, image.shape[1])
    if augmentation is not None:
        image, mask, points = keypoint_inputs.augment(augmentation, image, mask, points, config)

    keep = mask.any(axis=(0, 1))
    mask = mask[:, :, keep]
    class_ids = class_ids[keep]
    points = keypoint_inputs.keep(points, keep)
    bbox = extract_bboxes(mask)

    active_class_ids = np.zeros(int(config.NUM_CLASSES), dtype=np.int32)
    source = dataset.image_info[image_id]["source"]
    active_class_ids[dataset.source_class_ids[source]] = 1

    if config.USE_MINI_MASK if use_mini_mask is None else use_mini_mask:
        mask = minimize_mask(bbox, mask, config.MINI_MASK_SHAPE)

    image_meta = compose_image_meta(image_id, original_shape, image.shape, window, scale,
                                    active_class_ids)
    if keypoints:
        return image, image_meta, class_ids, bbox, mask, points
    return image, image_meta, class_ids, bbox, mask


# --------------------------------------------------------------------------- anchors
# Pixel anchors ``[A, 4]`` for an input of ``image_shape`` (cached): the boxes and
# order of ``anchors.get_anchors_for_config`` (normalised there).
pixel_anchors = pixel_anchors_for_config


# --------------------------------------------------------------------------- one example
def _mask_shape(config, image_shape):
    if config.USE_MINI_MASK:
        return tuple(int(v) for v in config.MINI_MASK_SHAPE)
    return (image_shape[0], image_shape[1])


def _random_roi_count(config, random_rois):
    return int(config.POST_NMS_ROIS_TRAINING if random_rois is None else random_rois)


_truncation_logged = False


def build_example(dataset, config, image_id, augmentation=None, rng=None,
                  random_rois=None, detection_targets=False):
    """Everything the training model needs for one image, as a dict of NumPy arrays.

    Args:
        dataset, config, image_id, augmentation: as in `load_image_gt`.
        rng: ``numpy.random.Generator`` (None: unseeded).
        random_rois: number of ``input_rois`` when ``config.USE_RPN_ROIS`` is
            False (None: ``POST_NMS_ROIS_TRAINING``).
        detection_targets: also add the NumPy head targets of
            `targets.build_detection_targets` (keys ``target_rois``,
            ``target_class_ids``, ``target_bbox``, ``target_mask``; debugging).

    Returns:
        dict keyed by the training input names (see module docstring), without
        the batch axis. gt arrays are padded with zeros (class 0) or truncated
        (the first MAX_GT_INSTANCES kept, logged once) to MAX_GT_INSTANCES.
    """
    global _truncation_logged
    if rng is None:
        rng = np.random.default_rng()
    image, meta, class_ids, boxes, masks, *points = load_image_gt(
        dataset, config, image_id, augmentation=augmentation,
        use_mini_mask=config.USE_MINI_MASK, rng=rng,
        keypoints=keypoint_inputs.wants_keypoints(config))
    anchors = pixel_anchors(config, image.shape)
    rpn_match, rpn_bbox = build_rpn_targets(anchors, class_ids, boxes, config, rng=rng)

    max_gt = int(config.MAX_GT_INSTANCES)
    n = class_ids.shape[0]
    if n > max_gt and not _truncation_logged:
        _truncation_logged = True
        logger.warning("%s has %d instances; keeping the first MAX_GT_INSTANCES=%d "
                       "(logged once)", _describe(dataset, image_id), n, max_gt)
    k = min(n, max_gt)
    gt_ids = np.zeros(max_gt, dtype=np.int32)
    gt_boxes = np.zeros((max_gt, 4), dtype=np.float32)
    gt_masks = np.zeros(masks.shape[:2] + (max_gt,), dtype=bool)
    gt_ids[:k] = class_ids[:k]
    gt_boxes[:k] = boxes[:k]
    gt_masks[:, :, :k] = masks[:, :, :k]

    example = {
        "input_image": mold_image(image, config).astype(np.float32),
        "input_image_meta": meta.astype(np.float32),
        "input_rpn_match": rpn_match[:, None].astype(np.int32),
        "input_rpn_bbox": rpn_bbox.astype(np.float32),
        "input_gt_class_ids": gt_ids,
        "input_gt_boxes": gt_boxes,
        "input_gt_masks": gt_masks,
    }
    if points:
        example[keypoint_inputs.INPUT_NAME] = keypoint_inputs.padded(points[0], config)
    if not config.USE_RPN_ROIS or detection_targets:
        rois = generate_random_rois(image.shape, _random_roi_count(config, random_rois),
                                    class_ids, boxes, rng=rng)
        if not config.USE_RPN_ROIS:
            example["input_rois"] = rois
        if detection_targets:
            t_rois, t_ids, t_bbox, t_mask = build_detection_targets(
                rois, class_ids, boxes, masks, config, rng=rng)
            example.update(target_rois=t_rois, target_class_ids=t_ids,
                           target_bbox=t_bbox, target_mask=t_mask)
    return example


def _build_example_or_raise(dataset, config, image_id, augmentation, rng, random_rois,
                            detection_targets=False):
    """`build_example`, with any failure re-raised as ImageLoadError naming the image."""
    try:
        return build_example(dataset, config, image_id, augmentation=augmentation, rng=rng,
                             random_rois=random_rois, detection_targets=detection_targets)
    except ImageLoadError:
        raise
    except Exception as exc:
        raise ImageLoadError(f"error while loading {_describe(dataset, image_id)}: "
                             f"{type(exc).__name__}: {exc}") from exc


def _augmentation_for(dataset, image_id, augmentation, no_augmentation_sources):
    if augmentation is None or not no_augmentation_sources:
        return augmentation
    source = dataset.image_info[image_id]["source"]
    return None if source in no_augmentation_sources else augmentation


def _is_loaded(example, ok):
    return ok


def _drop_flag(example, ok):
    return example


def _example_loader(dataset, config, image_ids, names, augmentation, no_augmentation_sources,
                    seed, random_rois, on_error, skipped):
    """``load(counter, position) -> tuple of arrays (+ ok flag with "skip")``.

    With ``on_error="skip"`` a failing image yields zero-filled placeholders
    and ``ok=False`` (filtered out downstream). When every distinct image of
    the data set has failed and none has ever loaded, ImageLoadError is raised
    so the stream cannot spin forever on a data set that is all bad.
    """
    unique_ids = len(set(int(i) for i in image_ids))
    state = {"any_loaded": False, "failed": set()}
    lock = threading.Lock()
    signature = input_signature(config, random_rois) if on_error == "skip" else None

    def placeholders():
        out = []
        for name in names:
            shape, dtype = signature[name]
            out.append(np.zeros(tuple(1 if d is None else d for d in shape), dtype))
        return out

    def load(counter, position):
        with _PYTHON_CALLS:
            image_id = int(image_ids[int(position)])
            aug = _augmentation_for(dataset, image_id, augmentation, no_augmentation_sources)
            try:
                example = _build_example_or_raise(dataset, config, image_id, aug,
                                                  _element_rng(seed, counter), random_rois)
            except ImageLoadError as exc:
                if on_error != "skip":
                    raise
                skipped.record(_describe(dataset, image_id), image_id, exc)
                with lock:
                    state["failed"].add(image_id)
                    all_bad = not state["any_loaded"] and len(state["failed"]) >= unique_ids
                if all_bad:
                    raise ImageLoadError(
                        f"on_error='skip': all {unique_ids} images of the data set failed "
                        f"to load, nothing to train on; last error: {exc}") from exc
                return tuple(placeholders()) + (np.False_,)
            if on_error == "skip":
                state["any_loaded"] = True
                return tuple(example[name] for name in names) + (np.True_,)
            return tuple(example[name] for name in names)

    return load


# --------------------------------------------------------------------------- tf.data
class _PythonCallTracker:
    """Counts pipeline calls running Python, and stops new ones at interpreter exit.

    A tf.data iterator still alive when Python exits (e.g. a module-level
    ``it = iter(dataset)``) is destroyed during finalisation, after its worker
    threads can no longer take the GIL; if one of them is inside a
    ``numpy_function`` call then, the process hangs. At exit (atexit runs
    before finalisation) we make new calls fail fast and wait for running ones
    to finish, so nothing is in flight when the iterator is destroyed.
    """

    def __init__(self):
        self.lock = threading.Lock()
        self.active = 0
        self.stopping = False

    def __enter__(self):
        with self.lock:
            if self.stopping:
                raise RuntimeError("mrcnn.data.pipeline: the Python interpreter is shutting down")
            self.active += 1

    def __exit__(self, *exc_info):
        with self.lock:
            self.active -= 1

    def drain(self, timeout=60.0):
        with self.lock:
            self.stopping = True
        deadline = time.monotonic() + timeout
        quiet_since = None
        while time.monotonic() < deadline:
            with self.lock:
                busy = self.active > 0
            if busy:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > 0.2:
                return
            time.sleep(0.01)  # releases the GIL so workers can finish


_PYTHON_CALLS = _PythonCallTracker()
atexit.register(_PYTHON_CALLS.drain)


def _fixed_image_shape(config):
    """Static ``(H, W)`` of resized images, or None when it varies per image."""
    if config.IMAGE_RESIZE_MODE in ("square", "crop"):
        return int(config.IMAGE_SHAPE[0]), int(config.IMAGE_SHAPE[1])
    return None


def input_signature(config, random_rois=None):
    """Per-example ``{name: (shape, numpy dtype)}`` of the training inputs (no batch axis).

    ``None`` marks sizes that vary per image ("none" / "pad64" resize modes).
    """
    hw = _fixed_image_shape(config)
    if hw is None:
        image_shape = (None, None, int(config.IMAGE_CHANNEL_COUNT))
        num_anchors = None
        mask_hw = _mask_shape(config, (None, None))
    else:
        image_shape = hw + (int(config.IMAGE_CHANNEL_COUNT),)
        num_anchors = int(pixel_anchors(config, image_shape).shape[0])
        mask_hw = _mask_shape(config, hw)
    max_gt = int(config.MAX_GT_INSTANCES)
    signature = {
        "input_image": (image_shape, np.float32),
        "input_image_meta": ((int(config.IMAGE_META_SIZE),), np.float32),
        "input_rpn_match": ((num_anchors, 1), np.int32),
        "input_rpn_bbox": ((int(config.RPN_TRAIN_ANCHORS_PER_IMAGE), 4), np.float32),
        "input_gt_class_ids": ((max_gt,), np.int32),
        "input_gt_boxes": ((max_gt, 4), np.float32),
        "input_gt_masks": (mask_hw + (max_gt,), bool),
        **keypoint_inputs.signature(config),
    }
    if not config.USE_RPN_ROIS:
        signature["input_rois"] = ((_random_roi_count(config, random_rois), 4), np.float32)
    return signature


def _element_rng(seed, counter):
    if seed is None:
        return np.random.default_rng()
    return np.random.default_rng([int(seed), int(counter)])


def build_training_dataset(dataset, config, shuffle=True, augmentation=None,
                           no_augmentation_sources=None, repeat=True, seed=None,
                           num_parallel_calls=None, random_rois=None, on_error="raise",
                           skipped_images=None, batch_size=None, num_shards=1,
                           shard_index=0):
    """A ``tf.data.Dataset`` of training batches (dicts keyed by input names).

    Args:
        dataset: a prepared `Dataset` (needs at least BATCH_SIZE images).
        config: a `Config`; batches have ``config.BATCH_SIZE`` elements
            (``drop_remainder=True``).
        shuffle: shuffle the image order (reshuffled every epoch).
        augmentation: optional augmentation (see `mrcnn.data.augmentation`).
        no_augmentation_sources: sources whose images are never augmented.
        repeat: repeat forever (True) or stop after one pass.
        seed: int for a reproducible stream (shuffle order and every random
            choice of the pipeline itself; see module docstring), or None.
        num_parallel_calls: parallel map calls (None: ``tf.data.AUTOTUNE``).
        random_rois: count of ``input_rois`` when USE_RPN_ROIS is False (None:
            POST_NMS_ROIS_TRAINING).
        on_error: what a failing image (an exception while loading it or
            building its targets) does. "raise": the stream stops with an
            ImageLoadError naming the image id and reference. "skip": the image
            is dropped from the stream, counted in ``skipped_images`` and
            logged (the first few times); if every image of the data set fails
            (none ever loaded), ImageLoadError is raised instead of looping
            forever. Errors reach the caller through TensorFlow (e.g. as
            ``tf.errors.InvalidArgumentError``) with the message kept.
        skipped_images: a `SkippedImages` to count skipped images in (with
            "skip"; None creates a private one).
        batch_size: images per batch (None: ``config.BATCH_SIZE``).
        num_shards, shard_index: read only the images at positions ``shard_index
            + k * num_shards`` of ``image_ids`` (per worker, `mrcnn.engine.distribute`).

    Returns:
        ``tf.data.Dataset`` of dicts (see the module docstring for keys, shapes
        and dtypes), prefetched.
    """
    import tensorflow as tf

    _check_on_error(on_error)
    image_ids = np.asarray(dataset.image_ids)
    batch_size = int(config.BATCH_SIZE if batch_size is None else batch_size)
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"build_training_dataset: shard_index={shard_index} is not in "
                         f"[0, num_shards={num_shards})")
    shard_positions = np.arange(image_ids.size)[shard_index::num_shards]
    if shard_positions.size < batch_size:
        where = f" (shard {shard_index} of {num_shards}: {shard_positions.size} images)"
        raise ValueError(f"build_training_dataset: the dataset has {image_ids.size} images"
                         f"{where if num_shards > 1 else ''}, fewer than the batch size "
                         f"{batch_size}; no full batch can be made")
    if num_parallel_calls is None:
        num_parallel_calls = tf.data.AUTOTUNE
    signature = input_signature(config, random_rois)
    names = list(signature)

    if on_error == "skip" and skipped_images is None:
        skipped_images = SkippedImages()
    load = _example_loader(dataset, config, image_ids, names, augmentation,
                           no_augmentation_sources, seed, random_rois, on_error,
                           skipped_images)
    out_dtypes = [tf.as_dtype(signature[name][1]) for name in names]
    if on_error == "skip":
        out_dtypes.append(tf.bool)

    def to_dict(counter, position):
        outputs = tf.numpy_function(load, [counter, position], out_dtypes,
                                    stateful=seed is None)
        result = {}
        for name, tensor in zip(names, outputs):
            tensor.set_shape(signature[name][0])
            result[name] = tensor
        if on_error == "skip":
            outputs[-1].set_shape(())
            return result, outputs[-1]
        return result

    positions = tf.data.Dataset.from_tensor_slices(shard_positions.astype(np.int64))
    if shuffle:
        positions = positions.shuffle(shard_positions.size, seed=seed,
                                      reshuffle_each_iteration=True)
    if repeat:
        positions = positions.repeat()
    stream = positions.enumerate().map(to_dict, num_parallel_calls=num_parallel_calls,
                                       deterministic=True if seed is not None else None)
    if on_error == "skip":
        stream = stream.filter(_is_loaded).map(_drop_flag)
    return stream.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


# --------------------------------------------------------------------------- generator
def data_generator(dataset, config, shuffle=True, augment=False, augmentation=None,
                   random_rois=None, batch_size=1, detection_targets=False,
                   no_augmentation_sources=None, seed=None, on_error="raise",
                   skipped_images=None):
    """Plain-Python generator of training batches (old API; debugging).

    Yields forever dicts of NumPy arrays with the same keys, shapes and dtypes
    as `build_training_dataset` (batch axis ``batch_size``), built with the
    same per-image function. ``detection_targets=True`` adds the NumPy head
    targets (``target_rois``, ``target_class_ids``, ``target_bbox``,
    ``target_mask``). ``augment`` (the old flip flag) is not supported: pass an
    ``augmentation`` instead. With ``seed`` the stream is reproducible.
    ``on_error`` / ``skipped_images`` as in `build_training_dataset`.
    """
    if augment:
        raise ValueError("data_generator: augment=True (the old built-in flip) is not "
                         "supported; pass augmentation=... (e.g. an albumentations "
                         "HorizontalFlip) instead")
    _check_on_error(on_error)
    image_ids = np.asarray(dataset.image_ids)
    if image_ids.size == 0:
        raise ValueError("data_generator: the dataset has no images")
    if on_error == "skip" and skipped_images is None:
        skipped_images = SkippedImages()
    any_loaded = False
    order_rng = np.random.default_rng(seed)
    counter = 0
    batch = []
    while True:
        order = order_rng.permutation(image_ids) if shuffle else image_ids
        for image_id in order:
            image_id = int(image_id)
            aug = _augmentation_for(dataset, image_id, augmentation, no_augmentation_sources)
            rng = _element_rng(seed, counter)
            counter += 1
            try:
                example = _build_example_or_raise(dataset, config, image_id, aug, rng,
                                                  random_rois,
                                                  detection_targets=detection_targets)
            except ImageLoadError as exc:
                if on_error != "skip":
                    raise
                skipped_images.record(_describe(dataset, image_id), image_id, exc)
                continue
            any_loaded = True
            batch.append(example)
            if len(batch) == batch_size:
                yield {name: np.stack([e[name] for e in batch]) for name in batch[0]}
                batch = []
        if not any_loaded:
            raise ImageLoadError(f"data_generator: on_error='skip': all {image_ids.size} "
                                 f"images of the data set failed to load")
