"""Mask R-CNN on a synthetic "shapes" data set: squares, circles and triangles.

Every image is generated from a short list of shape specifications, so the
data set needs no download and trains on a CPU in minutes. This is the sample
behind ``make demo``.

Command line (run ``python samples/shapes/shapes.py -h`` for every option)::

    python samples/shapes/shapes.py demo                 # train, evaluate, draw
    python samples/shapes/shapes.py train --epochs 4
    python samples/shapes/shapes.py evaluate --weights last
    python samples/shapes/shapes.py detect --weights last --out /tmp/shapes
    python samples/shapes/shapes.py train --eval-every 2 --early-stopping 3

While training, ``--eval-every N`` scores COCO mask / box AP on the first
``--eval-images`` held-out images every N epochs, keeps the best weights as
``mask_rcnn_shapes_best.h5`` and, with ``--early-stopping P``, stops a stage
after P evaluations without improvement (`mrcnn.engine.evaluation_callback`);
``demo`` evaluates every `DEMO_EVAL_EVERY` epochs unless told otherwise.

Every `ShapesConfig` setting can be overridden with ``--set NAME=VALUE``
(repeatable, values parsed as Python literals), e.g.
``--set TRAIN_ROIS_PER_IMAGE=64 --set LEARNING_RATE=0.002``.

Image specification (stored in ``image_info``): ``bg_color`` (r, g, b) and
``shapes``, a list of ``(name, (r, g, b), (center_y, center_x, size))`` in
drawing order; later shapes are drawn on top of earlier ones. ``size`` is the
half-side of a square, the radius of a circle, and the half-height /
half-base of a triangle (apex up), all in pixels.
"""

import argparse
import contextlib
import io
import os
import sys
import time

import numpy as np

ROOT_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
if ROOT_DIR not in sys.path:  # run from a clone without installing the package
    sys.path.insert(0, ROOT_DIR)

from mrcnn.structures.boxes import extract_bboxes  # noqa: E402
from mrcnn.config import Config  # noqa: E402

from mrcnn.utils import Dataset  # noqa: E402
from samples.common import (config_from_args, parse_config_overrides, parse_sample_args,  # noqa: E402
                            run_command)
from samples.shapes.backbone import light_backbone, light_backbone_shapes  # noqa: E402

SHAPE_NAMES = ("square", "circle", "triangle")  # class ids 1, 2, 3
DEMO_EVAL_EVERY = 2  # demo: evaluate while training every 2 epochs (--eval-every 0: off)
DEFAULT_LOGS_DIR = os.path.join(ROOT_DIR, "logs")


class ShapesConfig(Config):
    """A small recipe for training from scratch on a CPU (128x128 images, a light
    backbone: see `samples.shapes.backbone`; ``--backbone resnet50`` for the ResNet)."""

    NAME = "shapes"
    NUM_CLASSES = 1 + len(SHAPE_NAMES)  # background + square, circle, triangle

    GPU_COUNT = 1
    IMAGES_PER_GPU = 4

    # Square 128x128 images: generated at that size, so no resizing happens.
    IMAGE_RESIZE_MODE = "square"
    IMAGE_MIN_DIM = 128
    IMAGE_MAX_DIM = 128

    # A small residual CNN (strides 2..32) instead of a ResNet: flat-coloured
    # shapes need little capacity, and on a CPU the backbone's cost decides how
    # many steps fit into the demo's time.
    BACKBONE = staticmethod(light_backbone)
    COMPUTE_BACKBONE_SHAPE = staticmethod(light_backbone_shapes)
    # Shapes are 10..50 px across: small anchors, one size per FPN level.
    RPN_ANCHOR_SCALES = (8, 16, 32, 64, 128)
    TOP_DOWN_PYRAMID_SIZE = 128
    FPN_CLASSIF_FC_LAYERS_SIZE = 256

    # Few objects per image: few anchors, proposals and RoIs.
    RPN_TRAIN_ANCHORS_PER_IMAGE = 64
    PRE_NMS_LIMIT = 1000
    POST_NMS_ROIS_TRAINING = 200
    POST_NMS_ROIS_INFERENCE = 100
    TRAIN_ROIS_PER_IMAGE = 32
    MAX_GT_INSTANCES = 8
    DETECTION_MAX_INSTANCES = 10
    # Shapes are up to 50 px: 56x56 mini-masks keep their outlines (28x28 cost
    # mask AP, samples/shapes/README.md).
    MINI_MASK_SHAPE = (56, 56)

    # Training from scratch: let batch-norm learn its statistics.
    TRAIN_BN = True

    # Adam converges much faster than SGD from scratch; the command line runs
    # the last epochs at LEARNING_RATE / 10 (--lr-drop-epochs).
    OPTIMIZER = "Adam"
    LEARNING_RATE = 0.001
    STEPS_PER_EPOCH = 100
    VALIDATION_STEPS = 2

    # The mask head dominates a training step on a CPU; 64 channels are plenty
    # for flat-coloured shapes (256 in the paper).
    MASK_HEAD_CONV_CHANNELS = 64
    # Keep moderately confident detections (mAP ranks them by score).
    DETECTION_MIN_CONFIDENCE = 0.5


class ShapesInferenceConfig(ShapesConfig):
    """One image per batch for detection."""

    GPU_COUNT = 1
    IMAGES_PER_GPU = 1


# ----------------------------------------------------------------------------- rendering
def shape_mask(name, center_y, center_x, size, height, width):
    """Pixels covered by one shape, as a bool ``[height, width]`` array.

    ``square``: rows ``cy-size .. cy+size-1`` x cols ``cx-size .. cx+size-1``;
    ``circle``: disk of radius ``size``; ``triangle``: apex ``(cy-size, cx)``,
    base corners ``(cy+size, cx-size)`` and ``(cy+size, cx+size)``.
    Parts outside the image are clipped.
    """
    import skimage.draw

    mask = np.zeros((height, width), dtype=bool)
    cy, cx, s = int(center_y), int(center_x), int(size)
    if name == "square":
        mask[max(cy - s, 0):max(cy + s, 0), max(cx - s, 0):max(cx + s, 0)] = True
        return mask
    if name == "circle":
        rows, cols = skimage.draw.disk((cy, cx), s, shape=(height, width))
    elif name == "triangle":
        rows, cols = skimage.draw.polygon([cy - s, cy + s, cy + s], [cx, cx - s, cx + s],
                                          (height, width))
    else:
        raise ValueError(f"shape_mask: unknown shape {name!r}; expected one of {SHAPE_NAMES}")
    mask[rows, cols] = True
    return mask


def visible_masks(shapes, height, width):
    """Masks of the visible part of each shape, drawn in order (later on top).

    Args:
        shapes: list of ``(name, color, (center_y, center_x, size))``.

    Returns:
        masks: bool ``[height, width, K]``, pixels covered by a later shape removed.
        kept: int ``[K]`` indices into ``shapes`` of the shapes with at least one
            visible pixel (fully occluded shapes are dropped).
    """
    full = [shape_mask(name, *dims, height, width) for name, _color, dims in shapes]
    visible = []
    covered_later = np.zeros((height, width), dtype=bool)
    for mask in reversed(full):
        visible.append(mask & ~covered_later)
        covered_later |= mask
    visible.reverse()
    kept = np.array([i for i, m in enumerate(visible) if m.any()], dtype=np.int64)
    masks = (np.stack([visible[i] for i in kept], axis=-1) if len(kept)
             else np.zeros((height, width, 0), dtype=bool))
    return masks, kept


def render_image(bg_color, shapes, height, width):
    """Draw the shapes in order on a plain background: uint8 ``[height, width, 3]``."""
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[:] = np.asarray(bg_color, dtype=np.uint8)
    for name, color, dims in shapes:
        image[shape_mask(name, *dims, height, width)] = np.asarray(color, dtype=np.uint8)
    return image


def _distinct_color(rng, others, min_l1=120, tries=50):
    """A random RGB colour whose L1 distance to every colour in ``others`` is >= min_l1."""
    color = rng.integers(0, 256, size=3)
    for _ in range(tries):
        if all(np.abs(color - np.asarray(o)).sum() >= min_l1 for o in others):
            break
        color = rng.integers(0, 256, size=3)
    return tuple(int(c) for c in color)


def random_image_spec(rng, height, width, max_shapes=4, min_visible_fraction=0.4):
    """Random background colour and 1..max_shapes shapes for one image.

    Shapes lie fully inside the image, have colours distinct from the background
    and from each other, and a new shape is only accepted if every earlier shape
    keeps at least ``min_visible_fraction`` of its area visible (partial
    occlusion happens, hopeless occlusion does not).

    Returns:
        ``(bg_color, shapes)`` with plain Python ints.
    """
    side = min(height, width)
    size_low, size_high = max(3, side // 12), max(4, side // 5)
    bg_color = tuple(int(c) for c in rng.integers(0, 256, size=3))
    shapes, areas = [], []
    wanted = int(rng.integers(1, max_shapes + 1))
    for _ in range(wanted * 5):  # bounded number of attempts
        if len(shapes) == wanted:
            break
        name = SHAPE_NAMES[int(rng.integers(len(SHAPE_NAMES)))]
        size = int(rng.integers(size_low, size_high + 1))
        cy = int(rng.integers(size, height - size))
        cx = int(rng.integers(size, width - size))
        color = _distinct_color(rng, [bg_color] + [c for _n, c, _d in shapes])
        candidate = shapes + [(name, color, (cy, cx, size))]
        masks, kept = visible_masks(candidate, height, width)
        area = int(shape_mask(name, cy, cx, size, height, width).sum())
        if len(kept) != len(candidate):
            continue
        fractions = masks.sum(axis=(0, 1)) / np.array(areas + [area])
        if np.all(fractions >= min_visible_fraction):
            shapes, areas = candidate, areas + [area]
    return bg_color, shapes


# ----------------------------------------------------------------------------- dataset
class ShapesDataset(Dataset):
    """Generated images of squares, circles and triangles (source ``"shapes"``)."""

    def add_shape_classes(self):
        for class_id, name in enumerate(SHAPE_NAMES, start=1):
            self.add_class("shapes", class_id, name)

    def load_shapes(self, count, height, width, seed=None, max_shapes=4,
                    min_visible_fraction=0.4):
        """Register ``count`` random images of ``height`` x ``width`` pixels.

        The same ``seed`` gives the same images; different seeds give
        independent sets (use one for training, another for evaluation).
        """
        if count < 0 or height < 16 or width < 16:
            raise ValueError(f"load_shapes: expected count >= 0 and images of at least "
                             f"16x16 pixels, got count={count}, {height}x{width}")
        self.add_shape_classes()
        rng = np.random.default_rng(seed)
        for i in range(count):
            bg_color, shapes = random_image_spec(rng, height, width, max_shapes,
                                                 min_visible_fraction)
            self.add_image("shapes", image_id=i, path=None, width=width, height=height,
                           bg_color=bg_color, shapes=shapes)

    def load_image(self, image_id):
        """Render the image from its specification: uint8 ``[H, W, 3]``."""
        info = self.image_info[image_id]
        if info["source"] != "shapes":
            return super().load_image(image_id)
        return render_image(info["bg_color"], info["shapes"], info["height"], info["width"])

    def load_mask(self, image_id):
        """Visible part of each shape: bool ``[H, W, N]`` and int32 class ids ``[N]``."""
        info = self.image_info[image_id]
        if info["source"] != "shapes":
            return super().load_mask(image_id)
        masks, kept = visible_masks(info["shapes"], info["height"], info["width"])
        class_ids = np.array([self._class_id(info["shapes"][i][0]) for i in kept],
                             dtype=np.int32)
        return masks, class_ids

    def _class_id(self, name):
        for internal_id, c in enumerate(self.class_info):
            if c["source"] == "shapes" and c["name"] == name:
                return internal_id
        raise ValueError(f"ShapesDataset: class {name!r} not registered (call "
                         f"add_shape_classes() or load_shapes())")

    def image_reference(self, image_id):
        """The image's shape list ``[(name, color, (cy, cx, size)), ...]``."""
        info = self.image_info[image_id]
        if info["source"] != "shapes":
            return super().image_reference(image_id)
        return info["shapes"]


def make_dataset(count, size, seed):
    dataset = ShapesDataset()
    dataset.load_shapes(count, size, size, seed=seed)
    dataset.prepare()
    return dataset


# ----------------------------------------------------------------------------- config
def parse_overrides(items):
    """``--set NAME=VALUE`` items -> dict of `ShapesConfig` settings."""
    return parse_config_overrides(items, ShapesConfig)


def make_config(args, inference=False):
    """The `ShapesConfig` with the command line's overrides applied (validated)."""
    return config_from_args(ShapesConfig, args, inference=inference)


# ----------------------------------------------------------------------------- steps
def resolve_weights(model, weights):
    """``None`` -> None, ``"last"`` -> the model's newest checkpoint, else an existing path."""
    if weights is None:
        return None
    if weights == "last":
        return model.find_last()
    if not os.path.exists(weights):
        raise FileNotFoundError(f"--weights {weights!r}: no such file")
    return weights


def evaluation_settings(args):
    """``MaskRCNN.train(evaluation=...)`` from ``--eval-every`` (default: `DEMO_EVAL_EVERY`
    for ``demo``, off otherwise), ``--eval-images`` and ``--early-stopping``; None when off."""
    every = args.eval_every
    if every is None:
        every = DEMO_EVAL_EVERY if args.command == "demo" else 0
    if every <= 0:
        return None
    return {"every": every, "images": args.eval_images, "best_metric": "segm_AP",
            "early_stopping_patience": args.early_stopping}


def train(args, config):
    """Train on ``--train-count`` images (seed), validate on others (seed + 1).

    Returns the training `MaskRCNN` and the path of its last checkpoint (None
    on the non-chief workers of a multi-worker run: they write no files).
    """
    from mrcnn import model as modellib
    from mrcnn.engine.distribute import global_batch_size

    train_set = make_dataset(args.train_count, config.IMAGE_SHAPE[0], args.seed)
    val_set = make_dataset(args.val_count, config.IMAGE_SHAPE[0], args.seed + 1)
    model = modellib.MaskRCNN(mode="training", config=config, model_dir=args.logs)
    weights = resolve_weights(model, args.weights)
    if weights:
        print(f"Loading weights {weights}")
        model.load_weights(weights, by_name=True)
    batch = global_batch_size(config, model.strategy)
    print(f"Training on {train_set.num_images} images ({args.epochs} epochs of "
          f"{config.STEPS_PER_EPOCH} steps, batch {batch}), "
          f"validating on {val_set.num_images}")
    # The last --lr-drop-epochs epochs run at a tenth of the learning rate (after
    # an early stop, from the epoch it stopped at).
    drop_at = max(model.epoch, args.epochs - max(0, args.lr_drop_epochs))
    evaluation = evaluation_settings(args)
    if drop_at > model.epoch:
        model.train(train_set, val_set, learning_rate=config.LEARNING_RATE,
                    epochs=drop_at, layers=args.layers, evaluation=evaluation)
    if args.epochs > model.epoch:
        model.train(train_set, val_set, learning_rate=config.LEARNING_RATE / 10,
                    epochs=args.epochs, layers=args.layers, evaluation=evaluation)
    if not model.is_chief:
        return model, None
    checkpoint = model.checkpoint_path.format(epoch=model.epoch)
    if not os.path.exists(checkpoint):  # e.g. nothing left to train: epochs <= start
        checkpoint = model.find_last()
    return model, checkpoint


def load_inference_model(args, checkpoint=None):
    """An inference `MaskRCNN` (batch 1) with ``checkpoint`` or ``--weights`` (default last)."""
    from mrcnn import model as modellib

    config = make_config(args, inference=True)
    model = modellib.MaskRCNN(mode="inference", config=config, model_dir=args.logs)
    checkpoint = checkpoint or resolve_weights(model, args.weights or "last")
    print(f"Loading weights {checkpoint}")
    model.load_weights(checkpoint, by_name=True)
    return model, checkpoint


def detect_all(model, dataset, image_ids):
    """``model.detect`` on each image, one at a time: list of result dicts."""
    return [model.detect([dataset.load_image(i)], verbose=0)[0] for i in image_ids]


def evaluate(model, dataset, image_ids=None):
    """mAP@0.5 (mean of per-image `compute_ap`) and COCO metrics; also the results."""
    from mrcnn.evaluation.metrics import compute_ap, mask_area_ratios
    from mrcnn.evaluation.coco import evaluate_coco

    image_ids = list(dataset.image_ids if image_ids is None else image_ids)
    results = detect_all(model, dataset, image_ids)
    aps, ratios = [], []
    for image_id, r in zip(image_ids, results):
        gt_masks, gt_class_ids = dataset.load_mask(image_id)
        gt = (extract_bboxes(gt_masks), gt_class_ids, gt_masks)
        pred = (r["rois"], r["class_ids"], r["scores"], r["masks"])
        aps.append(compute_ap(*gt, *pred, iou_threshold=0.5)[0])
        ratios.extend(mask_area_ratios(*gt, *pred))
    coco = evaluate_coco(dataset, results, image_ids, verbose=False)
    return {"mAP50": float(np.mean(aps)) if aps else 0.0, "coco": coco,
            "area_ratio": float(np.median(ratios)) if ratios else float("nan"),
            "matched": len(ratios), "results": results, "image_ids": image_ids}


def save_comparison(dataset, image_ids, results, path):
    """PNG with one row per image: ground truth (left) next to predictions (right)."""
    from matplotlib.figure import Figure

    from mrcnn import visualize

    names = dataset.class_names
    palette = {1: (0.95, 0.3, 0.3), 2: (0.3, 0.5, 1.0), 3: (0.3, 0.9, 0.3)}
    rows = max(1, len(image_ids))
    fig = Figure(figsize=(8, 4 * rows))
    for row, (image_id, r) in enumerate(zip(image_ids, results)):
        image = dataset.load_image(image_id)
        gt_masks, gt_ids = dataset.load_mask(image_id)
        for col, (boxes, masks, ids, scores, title) in enumerate((
                (extract_bboxes(gt_masks), gt_masks, gt_ids, None, f"image {image_id}: truth"),
                (r["rois"], r["masks"], r["class_ids"], r["scores"], "predictions"))):
            ax = fig.add_subplot(rows, 2, 2 * row + col + 1)
            colors = [palette.get(int(c), (1.0, 1.0, 0.0)) for c in ids]
            with contextlib.redirect_stdout(io.StringIO()):  # "No instances" notes
                visualize.display_instances(image, boxes, masks, ids, names, scores=scores,
                                            title=title, ax=ax, colors=colors)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def print_metrics(metrics):
    print(f"mAP@0.5 (mean of per-image AP, {len(metrics['image_ids'])} images): "
          f"{metrics['mAP50']:.3f}")
    for kind, stats in metrics["coco"].items():
        print(f"COCO {kind:4s}: AP {stats['AP']:.3f}  AP50 {stats['AP50']:.3f}  "
              f"AP75 {stats['AP75']:.3f}")
    print(f"Mask area, predicted / true (median over {metrics['matched']} instances matched "
          f"at mask IoU 0.5): {metrics['area_ratio']:.3f}")


def output_dir(args, model):
    return args.out or getattr(model, "log_dir", None) or args.logs


# ----------------------------------------------------------------------------- commands
def cmd_train(args):
    config = make_config(args)
    config.display()
    _model, checkpoint = train(args, config)
    print(f"Checkpoint: {checkpoint}" if checkpoint else
          "Checkpoint: written by the chief worker (this is another worker)")


def cmd_evaluate(args):
    model, _checkpoint = load_inference_model(args)
    val_set = make_dataset(args.val_count, model.config.IMAGE_SHAPE[0], args.seed + 1)
    print_metrics(evaluate(model, val_set))


def cmd_detect(args):
    model, checkpoint = load_inference_model(args)
    out = args.out or os.path.dirname(os.path.abspath(checkpoint))
    val_set = make_dataset(args.show, model.config.IMAGE_SHAPE[0], args.seed + 1)
    ids = list(val_set.image_ids)
    path = save_comparison(val_set, ids, detect_all(model, val_set, ids),
                           os.path.join(out, "shapes_detections.png"))
    print(f"Detections: {path}")


def cmd_demo(args):
    start = args.start_time
    config = make_config(args)
    config.display()
    train_model, checkpoint = train(args, config)
    train_seconds = time.time() - start
    if checkpoint is None:  # a non-chief worker: the chief evaluates and draws
        print(f"Training took {train_seconds:.0f} s; the chief worker evaluates")
        return
    model, _ = load_inference_model(args, checkpoint)
    val_set = make_dataset(args.val_count, config.IMAGE_SHAPE[0], args.seed + 1)
    metrics = evaluate(model, val_set)
    shown = metrics["image_ids"][:args.show]
    png = save_comparison(val_set, shown, metrics["results"][:len(shown)],
                          os.path.join(output_dir(args, train_model), "shapes_predictions.png"))
    print("\n==== shapes demo ====")
    print(f"Checkpoint:  {checkpoint}")
    best = os.path.join(os.path.dirname(checkpoint), "mask_rcnn_shapes_best.h5")
    if os.path.exists(best):
        print(f"Best:        {best} (by mask AP on {args.eval_images} images while training)")
    print(f"Predictions: {png} (left: ground truth, right: predictions)")
    print_metrics(metrics)
    print(f"Training took {train_seconds:.0f} s; total time {time.time() - start:.0f} s")


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "detect": cmd_detect,
            "demo": cmd_demo}


def build_parser():
    parser = argparse.ArgumentParser(
        description="Train, evaluate and run Mask R-CNN on generated shapes.",
        epilog="Any ShapesConfig setting: --set NAME=VALUE (repeatable).")
    parser.add_argument("command", choices=sorted(COMMANDS),
                        help="demo = train from scratch, evaluate, save a PNG")
    parser.add_argument("--logs", default=DEFAULT_LOGS_DIR,
                        help="logs and checkpoints directory (default: %(default)s)")
    parser.add_argument("--weights", default=None,
                        help="'last' or a .h5 path (evaluate/detect default: last; "
                             "train: start from these weights)")
    parser.add_argument("--train-count", type=int, default=2000, help="training images")
    parser.add_argument("--val-count", type=int, default=100,
                        help="held-out images (validation loss and evaluation)")
    parser.add_argument("--epochs", type=int, default=14, help="epochs to train")
    parser.add_argument("--lr-drop-epochs", type=int, default=3,
                        help="the last N epochs run at LEARNING_RATE / 10")
    parser.add_argument("--steps-per-epoch", type=int, default=None,
                        help="STEPS_PER_EPOCH (default from ShapesConfig)")
    parser.add_argument("--validation-steps", type=int, default=None,
                        help="VALIDATION_STEPS (default from ShapesConfig)")
    parser.add_argument("--image-size", type=int, default=None,
                        help="image side in pixels, a multiple of 64 (default 128)")
    parser.add_argument("--images-per-gpu", type=int, default=None, help="batch size")
    parser.add_argument("--learning-rate", type=float, default=None, help="LEARNING_RATE")
    parser.add_argument("--backbone", default=None, choices=("resnet50", "resnet101"))
    parser.add_argument("--layers", default="all",
                        help="layers to train: all, heads, 3+, 4+, 5+ or a regex")
    parser.add_argument("--seed", type=int, default=0,
                        help="training images use SEED, evaluation images SEED+1")
    parser.add_argument("--show", type=int, default=4,
                        help="images drawn in the predictions PNG")
    parser.add_argument("--eval-every", type=int, default=None, metavar="N",
                        help="evaluate while training every N epochs, keep the best "
                             f"checkpoint (default: {DEMO_EVAL_EVERY} for demo, else 0 = off)")
    parser.add_argument("--eval-images", type=int, default=50,
                        help="held-out images scored by those evaluations")
    parser.add_argument("--early-stopping", type=int, default=None, metavar="P",
                        help="stop a stage after P evaluations without a better mask AP")
    parser.add_argument("--out", default=None,
                        help="directory for PNGs (default: the run's log directory)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="override a ShapesConfig setting")
    return parser


def main(argv=None):
    # Keep TensorFlow's C++ start-up chatter (info lines) out of the demo's output.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    args = parse_sample_args(build_parser(), argv, make_config)
    # FileNotFoundError: e.g. --weights last before any training.
    return run_command(COMMANDS, args,
                       seed=args.seed if args.command in ("train", "demo") else None)


if __name__ == "__main__":
    sys.exit(main())
