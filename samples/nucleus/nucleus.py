"""Mask R-CNN on cell nuclei: the 2018 Data Science Bowl images (real microscopy data).

Data layout (the Data Science Bowl's own; its ``stage1_train`` download has 670
images, the project's ``../shared/data/nuclei`` 45 of the stage-1 test set)::

    DIR/<image_id>/images/<image_id>.png   RGB, RGBA or grey uint8
    DIR/<image_id>/masks/*.png             one 0/255 mask per nucleus

``--dataset`` may also name a folder holding ``stage1_train/``.

Split (`split_image_ids`): the folder's image ids are sorted and put into two
groups, *stained* (colour: some pixel's channels differ, e.g. H&E tissue) and
*fluorescence* (grey: R = G = B everywhere); within each group the images at
positions 0, 5, 10, ... (every 5th, starting with the first) are ``val``, the
rest ``train``. So about 20 % go to val, both subsets hold stained images, and
any folder in this layout gets its split by the same rule. ``--val-ids`` gives
an explicit list instead (a file with one id per line, or ids separated by
commas).

Command line (``python samples/nucleus/nucleus.py -h`` lists every option)::

    python samples/nucleus/nucleus.py demo --dataset DIR      # train, evaluate, draw
    python samples/nucleus/nucleus.py train --dataset DIR --epochs 20
    python samples/nucleus/nucleus.py evaluate --dataset DIR --weights last
    python samples/nucleus/nucleus.py detect --dataset DIR --subset val --weights last
    python samples/nucleus/nucleus.py train --dataset DIR --eval-every 4   # + best checkpoint

``--eval-every N`` scores COCO mask / box AP on the val images (``--eval-images``, default
all) with the inference settings every N epochs while training, keeps the best weights as
``mask_rcnn_nucleus_best.h5`` and, with ``--early-stopping P``, stops a stage after P
evaluations without improvement (`mrcnn.engine.evaluation_callback`). pycocotools counts
at most 100 detections per image there (``evaluate`` counts up to 400), so on images with
more nuclei those APs are lower than ``evaluate``'s.

Any `NucleusConfig` setting can be overridden with ``--set NAME=VALUE``.
"""

import argparse
import os
import sys
import threading
import time

import numpy as np

ROOT_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
if ROOT_DIR not in sys.path:  # run from a clone without installing the package
    sys.path.insert(0, ROOT_DIR)

from mrcnn.config import BACKBONES as CONFIG_BACKBONES, Config  # noqa: E402
from mrcnn.data.dataset import Dataset, to_rgb_uint8  # noqa: E402
from samples.common import (add_config_options, config_from_args,  # noqa: E402
                            load_initial_weights, parse_sample_args, run_command)
from samples.nucleus.figures import draw_outlines, pick_shown, save_comparison  # noqa: E402
from samples.nucleus.submission import confident  # noqa: E402
from samples.shapes.backbone import light_backbone, light_backbone_shapes  # noqa: E402

DEFAULT_DATASET = os.path.join(ROOT_DIR, "..", "shared", "data", "nuclei")
DEFAULT_LOGS_DIR = os.path.join(ROOT_DIR, "logs")
SUBSETS = ("train", "val", "all")
VAL_EVERY = 5  # every 5th image of each group goes to val
GROUPS = ("stained", "fluorescence")
BACKBONES = ("light",) + CONFIG_BACKBONES


# ----------------------------------------------------------------------------- config
class NucleusConfig(Config):
    """Training from scratch on small, crowded objects (256 px random crops, batch 2)."""

    NAME = "nucleus"
    NUM_CLASSES = 1 + 1  # background + nucleus
    GPU_COUNT = 1
    IMAGES_PER_GPU = 2

    # Random 256x256 crops (images are 256x256 to 520x696; an image narrower
    # than 256 px is scaled up to 256 first, at training and inference alike).
    IMAGE_RESIZE_MODE = "crop"
    IMAGE_MIN_DIM = 256
    IMAGE_MAX_DIM = 256
    IMAGE_MIN_SCALE = 0
    # Mean over the pixels of the train split of the 45-image folder (the
    # fluorescence images are dark; stained tissue is bright).
    MEAN_PIXEL = np.array([71.6, 66.0, 67.9])

    # The shapes sample's small residual backbone (strides 2..32) keeps a CPU
    # step short; --backbone resnet50 / resnet101 for a GPU.
    BACKBONE = staticmethod(light_backbone)
    COMPUTE_BACKBONE_SHAPE = staticmethod(light_backbone_shapes)
    TOP_DOWN_PYRAMID_SIZE = 128
    FPN_CLASSIF_FC_LAYERS_SIZE = 256
    MASK_HEAD_CONV_CHANNELS = 64

    # Nuclei are 3..~100 px across (median 22): small anchors, one size per level.
    RPN_ANCHOR_SCALES = (8, 16, 32, 64, 128)
    RPN_ANCHOR_RATIOS = [0.5, 1, 2]
    RPN_TRAIN_ANCHORS_PER_IMAGE = 256
    # Crowded images: a loose proposal NMS keeps neighbours apart, and enough
    # proposals / RoIs / slots for 300+ instances per image.
    RPN_NMS_THRESHOLD = 0.9
    PRE_NMS_LIMIT = 6000
    POST_NMS_ROIS_TRAINING = 1000
    POST_NMS_ROIS_INFERENCE = 2000
    TRAIN_ROIS_PER_IMAGE = 256
    ROI_POSITIVE_RATIO = 0.33
    MAX_GT_INSTANCES = 400
    DETECTION_MAX_INSTANCES = 400
    DETECTION_MIN_CONFIDENCE = 0.5
    DETECTION_NMS_THRESHOLD = 0.3
    USE_MINI_MASK = True
    MINI_MASK_SHAPE = (56, 56)

    # From scratch: batch-norm learns its statistics; Adam (the last
    # --lr-drop-epochs epochs run at LEARNING_RATE / 10).
    TRAIN_BN = True
    OPTIMIZER = "Adam"
    LEARNING_RATE = 0.001
    STEPS_PER_EPOCH = 100
    VALIDATION_STEPS = 5


class NucleusInferenceConfig(NucleusConfig):
    """Whole images of any size, padded to multiples of 64; one image per batch.

    Detections down to 0.05 are kept for COCO AP (ranked by score); the
    Data Science Bowl score, the overlays and the submission CSV use those
    scoring at least ``--min-score`` (0.5)."""

    GPU_COUNT = 1
    IMAGES_PER_GPU = 1
    IMAGE_RESIZE_MODE = "pad64"
    RPN_NMS_THRESHOLD = 0.7
    DETECTION_MIN_CONFIDENCE = 0.05


# ----------------------------------------------------------------------------- data
def resolve_dataset_dir(dataset_dir):
    """The folder holding the image folders: ``dataset_dir`` itself, or its
    ``stage1_train/`` (a Data Science Bowl download).

    Raises:
        FileNotFoundError: saying what is missing and where to get it.
    """
    dataset_dir = os.fspath(dataset_dir)
    if list_image_ids(dataset_dir):
        return dataset_dir
    nested = os.path.join(dataset_dir, "stage1_train")
    if list_image_ids(nested):
        return nested
    raise FileNotFoundError(
        f"nuclei data not found: {os.path.abspath(dataset_dir)!r} holds no "
        f"<image_id>/images/<image_id>.png folders. Pass --dataset DIR: the project's "
        f"../shared/data/nuclei (45 images) or the Data Science Bowl 2018 stage1_train "
        f"folder (unzip stage1_train.zip; 670 images).")


def list_image_ids(dataset_dir):
    """Sorted ids of the ``<id>/images/<id>.png`` folders in ``dataset_dir`` ([] if none)."""
    if not os.path.isdir(dataset_dir):
        return []
    return sorted(name for name in os.listdir(dataset_dir)
                  if os.path.isfile(os.path.join(dataset_dir, name, "images", name + ".png")))


def image_path(dataset_dir, image_id):
    return os.path.join(dataset_dir, image_id, "images", image_id + ".png")


_GROUPS = {}  # image path -> group, so train and val read each image once


def image_group(path):
    """``"stained"`` when some pixel's R, G, B differ, else ``"fluorescence"``."""
    import skimage.io

    if path in _GROUPS:
        return _GROUPS[path]
    rgb = to_rgb_uint8(skimage.io.imread(path))
    grey = np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2])
    _GROUPS[path] = "fluorescence" if grey else "stained"
    return _GROUPS[path]


def split_image_ids(image_ids, groups, every=VAL_EVERY):
    """The fixed split: ``(train_ids, val_ids)``.

    Within each group (``groups[id]``), ids sorted, the ids at positions
    ``0, every, 2 * every, ...`` are val. Both lists come back sorted.
    """
    val = set()
    for group in sorted(set(groups[i] for i in image_ids)):
        members = sorted(i for i in image_ids if groups[i] == group)
        val.update(members[::every])
    ids = sorted(image_ids)
    return [i for i in ids if i not in val], [i for i in ids if i in val]


def read_val_ids(text):
    """``--val-ids``: a file of ids (one per line; ``#`` starts a comment) or a
    comma-separated list."""
    if os.path.isfile(text):
        with open(text) as f:
            lines = [line.split("#")[0].strip() for line in f]
        return [line for line in lines if line]
    return [item.strip() for item in text.split(",") if item.strip()]


def _read_masks(mask_dir):
    """bool ``[H, W, N]`` of the PNGs in ``mask_dir`` (sorted names; empty ones left out),
    or None when there is none."""
    import skimage.io

    if not os.path.isdir(mask_dir):
        return None
    names = sorted(n for n in os.listdir(mask_dir) if n.lower().endswith(".png"))
    masks = []
    for name in names:
        m = skimage.io.imread(os.path.join(mask_dir, name))
        m = (m[..., 0] if m.ndim == 3 else m) > 0
        if m.any():
            masks.append(m)
    return np.stack(masks, axis=-1) if masks else None


class NucleusDataset(Dataset):
    """Nuclei images and their instance masks; one class, ``"nucleus"``.

    Masks are read once per image and kept in memory as box-sized crops
    (``cache_masks``), so a training step does not re-read hundreds of PNGs.
    """

    def __init__(self, class_map=None, cache_masks=True):
        super().__init__(class_map)
        self.cache_masks = cache_masks
        self._packed = {}

    def load_nucleus(self, dataset_dir, subset, val_ids=None, limit=None):
        """Add the images of one subset of ``dataset_dir``.

        Args:
            dataset_dir: a folder in the Data Science Bowl layout (or one
                holding ``stage1_train/``).
            subset: ``"train"``, ``"val"`` (the fixed split, see the module
                docstring) or ``"all"``.
            val_ids: explicit val image ids (the rest is train) instead of the rule.
            limit: keep only the first ``limit`` images of the subset (quick checks).

        Raises:
            ValueError: unknown subset or val ids not in the folder.
            FileNotFoundError: no images in the folder (the message says what to pass).
        """
        if subset not in SUBSETS:
            raise ValueError(f"load_nucleus: subset must be one of {SUBSETS}, got {subset!r}")
        dataset_dir = resolve_dataset_dir(dataset_dir)
        ids = list_image_ids(dataset_dir)
        groups = {i: image_group(image_path(dataset_dir, i)) for i in ids}
        if val_ids is not None:
            unknown = sorted(set(val_ids) - set(ids))
            if unknown:
                raise ValueError(f"load_nucleus: val ids not in {dataset_dir!r}: "
                                 f"{', '.join(unknown[:5])}" + (" ..." if len(unknown) > 5 else ""))
            val = sorted(set(val_ids))
            train = [i for i in ids if i not in set(val)]
        else:
            train, val = split_image_ids(ids, groups)
        chosen = {"train": train, "val": val, "all": ids}[subset]
        if limit is not None:
            chosen = chosen[:limit]
        self.add_class("nucleus", 1, "nucleus")
        for image_id in chosen:
            self.add_image("nucleus", image_id=image_id, path=image_path(dataset_dir, image_id),
                           mask_dir=os.path.join(dataset_dir, image_id, "masks"),
                           group=groups[image_id])

    def load_mask(self, image_id):
        """bool ``[H, W, N]`` masks and int32 ones ``[N]`` (N = 0 without a masks/ folder)."""
        packed = self._packed.get(image_id)
        if packed is None:
            info = self.image_info[image_id]
            masks = _read_masks(info["mask_dir"])
            if masks is None:
                height, width = self.load_image(image_id).shape[:2]
                masks = np.zeros((height, width, 0), dtype=bool)
            packed = _pack(masks)
            if self.cache_masks:
                self._packed[image_id] = packed
        masks = _unpack(packed)
        return masks, np.ones(masks.shape[-1], dtype=np.int32)

    def image_reference(self, image_id):
        return self.image_info[image_id]["id"]


def _pack(masks):
    """Masks -> (shape, boxes, crops): memory grows with the nuclei, not the image."""
    crops, boxes = [], []
    for k in range(masks.shape[-1]):
        rows = np.flatnonzero(masks[..., k].any(axis=1))
        cols = np.flatnonzero(masks[..., k].any(axis=0))
        y1, y2, x1, x2 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        boxes.append((y1, x1, y2, x2))
        crops.append(masks[y1:y2, x1:x2, k].copy())
    return masks.shape, boxes, crops


def _unpack(packed):
    shape, boxes, crops = packed
    masks = np.zeros(shape, dtype=bool)
    for k, ((y1, x1, y2, x2), crop) in enumerate(zip(boxes, crops)):
        masks[y1:y2, x1:x2, k] = crop
    return masks


def load_dataset(dataset_dir, subset, val_ids=None, limit=None):
    """A prepared `NucleusDataset` of one subset."""
    dataset = NucleusDataset()
    dataset.load_nucleus(dataset_dir, subset, val_ids=val_ids, limit=limit)
    dataset.prepare()
    return dataset


class NucleusAugmentation:
    """Random flips (left-right, up-down), 90-degree rotations (square images;
    180 degrees otherwise) and brightness (pixel values times a factor in
    ``brightness``), applied to the image and its masks alike.

    A callable ``f(image, masks) -> (image, masks)`` as `mrcnn.data.augmentation`
    accepts; thread-safe (the training pipeline runs it in parallel).
    """

    def __init__(self, seed=None, brightness=(0.8, 1.2)):
        self.brightness = tuple(brightness)
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()

    def __call__(self, image, masks):
        with self._lock:
            flip_lr, flip_ud = self._rng.random(2) < 0.5
            turns = int(self._rng.integers(4))
            gain = float(self._rng.uniform(*self.brightness))
        if image.shape[0] != image.shape[1]:
            turns = 2 * (turns % 2)
        if flip_lr:
            image, masks = image[:, ::-1], masks[:, ::-1]
        if flip_ud:
            image, masks = image[::-1], masks[::-1]
        if turns:
            image, masks = np.rot90(image, turns), np.rot90(masks, turns)
        if gain != 1.0:
            image = np.clip(np.rint(image.astype(np.float32) * gain), 0, 255).astype(image.dtype)
        return np.ascontiguousarray(image), np.ascontiguousarray(masks)


# ----------------------------------------------------------------------------- model
def make_config(args, inference=False):
    """`NucleusConfig` (or `NucleusInferenceConfig`) with the command line applied."""
    extra = {}
    if getattr(args, "seed", None) is not None:
        extra["SEED"] = args.seed
    backbone = getattr(args, "backbone", None)
    if backbone in CONFIG_BACKBONES:
        extra.update(BACKBONE=backbone, COMPUTE_BACKBONE_SHAPE=None)
    elif backbone not in (None, "light"):
        raise ValueError(f"--backbone {backbone!r}: expected one of {BACKBONES}")
    plain = argparse.Namespace(**{**vars(args), "backbone": None})
    base = NucleusInferenceConfig if inference else NucleusConfig
    return config_from_args(base, plain, extra=extra, inference=inference)


def train(args, config, train_set, val_set):
    """Train all layers up to epoch ``--epochs``; the last ``--lr-drop-epochs``
    at a tenth of the learning rate. Returns the model and its last checkpoint."""
    from mrcnn import model as modellib

    model = modellib.MaskRCNN(mode="training", config=config, model_dir=args.logs)
    load_initial_weights(model, args.weights or "none")
    augmentation = None if args.no_augmentation else NucleusAugmentation(args.seed)
    print(f"Training on {train_set.num_images} images ({args.epochs} epochs of "
          f"{config.STEPS_PER_EPOCH} steps, batch {config.BATCH_SIZE}, "
          f"{config.IMAGE_MIN_DIM} px crops), validating on {val_set.num_images}")
    drop_at = max(model.epoch, args.epochs - max(0, args.lr_drop_epochs))
    evaluation = None
    if args.eval_every > 0:  # whole val images, as `evaluate` sees them (pad64, scores >= 0.05)
        evaluation = {"every": args.eval_every, "images": args.eval_images,
                      "best_metric": "segm_AP", "early_stopping_patience": args.early_stopping,
                      "inference_config": make_config(args, inference=True)}
    for lr, last in ((config.LEARNING_RATE, drop_at), (config.LEARNING_RATE / 10, args.epochs)):
        if last > model.epoch:
            model.train(train_set, val_set, learning_rate=lr, epochs=last,
                        layers=args.layers, augmentation=augmentation, evaluation=evaluation)
    checkpoint = model.checkpoint_path.format(epoch=model.epoch)
    if not os.path.exists(checkpoint):
        checkpoint = model.find_last()
    return model, checkpoint


def load_inference_model(args, checkpoint=None):
    """An inference `MaskRCNN` with ``checkpoint`` or ``--weights`` (default last)."""
    from mrcnn import model as modellib

    config = make_config(args, inference=True)
    model = modellib.MaskRCNN(mode="inference", config=config, model_dir=args.logs)
    if checkpoint:
        print(f"Loading weights {checkpoint}")
        model.load_weights(checkpoint, by_name=True)
    else:
        checkpoint = load_initial_weights(model, args.weights or "last")
    return model, checkpoint


def detect_all(model, dataset, image_ids):
    """``model.detect`` on each image, one at a time: list of result dicts."""
    return [model.detect([dataset.load_image(i)], verbose=0)[0] for i in image_ids]


def evaluate(model, dataset, image_ids=None, min_score=0.5):
    """COCO mask and box AP (at up to DETECTION_MAX_INSTANCES detections per image)
    and the Data Science Bowl score (detections >= ``min_score``, overlaps removed)."""
    from mrcnn.evaluation.dsb import dsb_score
    from mrcnn.evaluation.coco import evaluate_coco

    image_ids = list(dataset.image_ids if image_ids is None else image_ids)
    results = detect_all(model, dataset, image_ids)
    max_dets = coco_max_dets(model.config)
    coco = evaluate_coco(dataset, results, image_ids, eval_types=("segm", "bbox"),
                         verbose=False, max_dets=max_dets)
    dsb = [dsb_score(dataset.load_mask(i)[0], confident(r, min_score)[0])
           for i, r in zip(image_ids, results)]
    return {"coco": coco, "max_dets": max_dets[-1], "dsb": float(np.mean(dsb)) if dsb else 0.0,
            "dsb_per_image": dsb, "min_score": min_score, "results": results,
            "image_ids": image_ids}


def coco_max_dets(config):
    """pycocotools' maxDets: 1, 10 and as many as the model can return (>= 100)."""
    return (1, 10, max(100, int(config.DETECTION_MAX_INSTANCES)))


def print_metrics(metrics, dataset):
    n = len(metrics["image_ids"])
    groups = [dataset.image_info[i]["group"] for i in metrics["image_ids"]]
    print(f"Evaluated on {n} images ({groups.count('stained')} stained, "
          f"{groups.count('fluorescence')} fluorescence); COCO AP counts up to "
          f"{metrics['max_dets']} detections per image (pycocotools' default 100 would cap "
          f"images holding more nuclei)")
    for kind, stats in metrics["coco"].items():
        print(f"COCO {kind:4s}: AP {stats['AP']:.3f}  AP50 {stats['AP50']:.3f}  "
              f"AP75 {stats['AP75']:.3f}  AR@{metrics['max_dets']} "
              f"{stats['AR%d' % metrics['max_dets']]:.3f}")
    print(f"Data Science Bowl score (mean over images of the mean over IoU 0.50:0.95 of "
          f"TP/(TP+FP+FN); detections >= {metrics['min_score']}): {metrics['dsb']:.3f}")
    for group in GROUPS:
        scores = [s for s, g in zip(metrics["dsb_per_image"], groups) if g == group]
        if scores:
            print(f"  {group:12s} ({len(scores)} images): {np.mean(scores):.3f}")


# ----------------------------------------------------------------------------- commands
def _val_ids(args):
    return read_val_ids(args.val_ids) if args.val_ids else None


def cmd_train(args):
    config = make_config(args)
    config.display()
    train_set = load_dataset(args.dataset, "train", _val_ids(args), args.limit)
    val_set = load_dataset(args.dataset, "val", _val_ids(args), args.limit)
    _model, checkpoint = train(args, config, train_set, val_set)
    print(f"Checkpoint: {checkpoint}")


def cmd_evaluate(args):
    dataset = load_dataset(args.dataset, args.subset or "val", _val_ids(args), args.limit)
    model, _ = load_inference_model(args)
    metrics = evaluate(model, dataset, min_score=args.min_score)
    print_metrics(metrics, dataset)


def cmd_detect(args):
    import skimage.io

    from samples.nucleus.submission import submission_rows, write_submission

    dataset = load_dataset(args.dataset, args.subset or "val", _val_ids(args), args.limit)
    model, checkpoint = load_inference_model(args)
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(checkpoint)),
                                   f"detect_{time.strftime('%Y%m%dT%H%M%S')}")
    os.makedirs(out, exist_ok=True)
    rows = []
    for image_id in dataset.image_ids:
        source_id = dataset.image_info[image_id]["id"]
        image = dataset.load_image(image_id)
        r = model.detect([image], verbose=0)[0]
        masks, scores = confident(r, args.min_score)
        rows.extend(submission_rows(source_id, masks, scores))
        skimage.io.imsave(os.path.join(out, f"{source_id}.png"),
                          draw_outlines(image, masks, (255, 255, 0)), check_contrast=False)
        print(f"{source_id}: {masks.shape[-1]} nuclei")
    path = write_submission(os.path.join(out, "submission.csv"), rows)
    print(f"Overlays and {path} ({len(rows)} rows) in {out}")


def cmd_demo(args):
    start = time.time()
    config = make_config(args)
    config.display()
    train_set = load_dataset(args.dataset, "train", _val_ids(args), args.limit)
    val_set = load_dataset(args.dataset, "val", _val_ids(args), args.limit)
    train_model, checkpoint = train(args, config, train_set, val_set)
    train_seconds = time.time() - start
    model, _ = load_inference_model(args, checkpoint)
    metrics = evaluate(model, val_set, min_score=args.min_score)
    shown = pick_shown(val_set, metrics["image_ids"], args.show)
    results = [metrics["results"][metrics["image_ids"].index(i)] for i in shown]
    png = save_comparison(val_set, shown, results, os.path.join(
        args.out or train_model.log_dir, "nucleus_predictions.png"), args.min_score)
    print("\n==== nucleus demo ====")
    print(f"Checkpoint:  {checkpoint}")
    print(f"Predictions: {png} (left: ground truth, right: predictions)")
    print_metrics(metrics, val_set)
    print(f"Training took {train_seconds:.0f} s; total time {time.time() - start:.0f} s")


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "detect": cmd_detect,
            "demo": cmd_demo}


def build_parser():
    parser = argparse.ArgumentParser(
        description="Train, evaluate and run Mask R-CNN on cell nuclei (Data Science Bowl 2018).",
        epilog="Any NucleusConfig setting: --set NAME=VALUE (repeatable).")
    parser.add_argument("command", choices=sorted(COMMANDS),
                        help="demo = train from scratch, evaluate on val, save a PNG")
    parser.add_argument("--dataset", default=DEFAULT_DATASET,
                        help="folder of <image_id>/images, <image_id>/masks (or holding "
                             "stage1_train/); default: ../shared/data/nuclei of the clone")
    parser.add_argument("--val-ids", default=None,
                        help="explicit val ids: a file (one per line) or id,id,...")
    parser.add_argument("--subset", default=None, choices=SUBSETS,
                        help="evaluate / detect: images to use (default val)")
    parser.add_argument("--limit", type=int, default=None,
                        help="use only the first N images of each subset")
    parser.add_argument("--logs", default=DEFAULT_LOGS_DIR,
                        help="logs and checkpoints directory (default: %(default)s)")
    parser.add_argument("--weights", default=None,
                        help="none, last, imagenet or a .h5 path (train default: none = "
                             "from scratch; evaluate/detect default: last)")
    parser.add_argument("--epochs", type=int, default=20, help="train up to this epoch")
    parser.add_argument("--lr-drop-epochs", type=int, default=4,
                        help="the last N epochs run at LEARNING_RATE / 10")
    parser.add_argument("--layers", default="all", help="all, heads, 3+, 4+, 5+ or a regex")
    parser.add_argument("--no-augmentation", action="store_true",
                        help="train without flips, rotations and brightness changes")
    parser.add_argument("--eval-every", type=int, default=0, metavar="N",
                        help="evaluate on val every N epochs while training and keep the best "
                             "checkpoint (default 0: off)")
    parser.add_argument("--eval-images", type=int, default=None,
                        help="val images those evaluations score (default: all)")
    parser.add_argument("--early-stopping", type=int, default=None, metavar="P",
                        help="stop a stage after P evaluations without a better mask AP")
    add_config_options(parser, "NucleusConfig", backbones=BACKBONES,
                       backbone_help="light (default, samples/shapes/backbone.py), resnet50, "
                                     "resnet101", seed=0,
                       seed_help="seeds the weights, the data pipeline and the augmentation")
    parser.add_argument("--min-score", type=float, default=0.5,
                        help="detections kept for the DSB score, overlays and CSV")
    parser.add_argument("--show", type=int, default=3, help="demo: images in the PNG")
    parser.add_argument("--out", default=None,
                        help="demo / detect: output directory (default: the run's log dir)")
    return parser


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    args = parse_sample_args(build_parser(), argv, make_config,
                             lambda a: make_config(a, inference=True))
    # No data, no checkpoint: FileNotFoundError, whose message says what to do.
    return run_command(COMMANDS, args, seed=args.seed)


if __name__ == "__main__":
    sys.exit(main())
