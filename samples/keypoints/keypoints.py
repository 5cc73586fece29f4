"""Keypoint R-CNN on a synthetic task: squares and triangles with named corners.

Every image is generated from a short list of shape specifications (the
pattern of `samples.shapes.shapes`, whose rendering it reuses), so the data
set needs no download. Classes and their keypoints (one keypoint set of 7
names, each class its own part of it: ``Config.KEYPOINT_CLASSES``):

* ``square`` (class 1): ``top_left``, ``top_right``, ``bottom_left``,
  ``bottom_right``: the centres of its corner pixels;
* ``triangle`` (class 2, apex up): ``apex``, ``base_left``, ``base_right``:
  the centres of its vertex pixels (its top pixel and the two ends of its
  bottom row).

"left" / "right" are the image's (smaller / larger x), so a horizontal flip
swaps them (`KEYPOINT_FLIP_MAP`). Ground truth is exact: a shape
``(center_y, center_x, size)`` covers known pixels (`samples.shapes.shapes.shape_mask`)
and its keypoints are known continuous positions (`shape_keypoints`). A
keypoint hidden by a later shape is labelled but not visible (``v = 1``).

Command line (``python samples/keypoints/keypoints.py -h`` for every option)::

    python samples/keypoints/keypoints.py demo        # train, evaluate, draw (make keypoints)
    python samples/keypoints/keypoints.py train --epochs 10
    python samples/keypoints/keypoints.py evaluate --weights last

``demo`` trains from scratch (training images of ``--seed``, validation loss on
``--seed + 1``), then evaluates on fresh images of ``--seed + 2``: COCO keypoint
AP by OKS (`mrcnn.evaluation.keypoints.evaluate_keypoints`, the sigmas of
`KeypointConfig`) and the mean pixel error of the visible keypoints of the
matched instances (`keypoint_pixel_errors`), and saves a picture (ground
truth next to predictions). Training flips half the images left-right
(albumentations ``HorizontalFlip``; ``--no-flip``): the flip map swaps the
left / right corners. Every `KeypointConfig` setting: ``--set NAME=VALUE``.
"""

import argparse
import os
import sys
import time

import numpy as np

ROOT_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
if ROOT_DIR not in sys.path:  # run from a clone without installing the package
    sys.path.insert(0, ROOT_DIR)

from mrcnn.utils import Dataset  # noqa: E402
from samples.common import (add_config_options, config_from_args, parse_sample_args,  # noqa: E402
                            run_command)
from samples.shapes.shapes import (ShapesConfig, render_image, shape_mask,  # noqa: E402
                                   visible_masks)

SHAPE_NAMES = ("square", "triangle")  # class ids 1, 2
DEFAULT_LOGS_DIR = os.path.join(ROOT_DIR, "logs")
KEYPOINT_NAMES = ("apex", "base_left", "base_right", "top_left", "top_right", "bottom_left",
                  "bottom_right")
KEYPOINT_FLIP_MAP = (("base_left", "base_right"), ("top_left", "top_right"),
                     ("bottom_left", "bottom_right"))
SHAPE_KEYPOINTS = {"square": ("top_left", "top_right", "bottom_left", "bottom_right"),
                   "triangle": ("apex", "base_left", "base_right")}
# Square, then triangle; skeleton: the outlines, as pairs of keypoint indices.
SKELETON = tuple((KEYPOINT_NAMES.index(a), KEYPOINT_NAMES.index(b)) for a, b in (
    ("top_left", "top_right"), ("top_right", "bottom_right"), ("bottom_right", "bottom_left"),
    ("bottom_left", "top_left"), ("apex", "base_left"), ("base_left", "base_right"),
    ("base_right", "apex")))


# The demo's schedule (`make keypoints`): epochs of STEPS_PER_EPOCH steps, the last
# ones at a tenth of the learning rate.
DEMO_EPOCHS = 20
DEMO_LR_DROP_EPOCHS = 4


class KeypointConfig(ShapesConfig):
    """The shapes recipe (128x128 images, light backbone) with a keypoint head."""

    NAME = "keypoints"
    NUM_CLASSES = 1 + len(SHAPE_NAMES)
    NUM_KEYPOINTS = len(KEYPOINT_NAMES)
    KEYPOINT_NAMES = KEYPOINT_NAMES
    KEYPOINT_FLIP_MAP = KEYPOINT_FLIP_MAP
    KEYPOINT_CLASSES = {1 + SHAPE_NAMES.index(name): points
                        for name, points in SHAPE_KEYPOINTS.items()}
    # Shapes are 20..50 px: the paper's 56x56 heatmaps (14x14 pooling) give cells
    # of 0.4..0.9 px (28x28 doubled the pixel error at the same step count:
    # 2.2 px against 1.5 px after 600 steps); a light head for the CPU.
    KEYPOINT_POOL_SIZE = 14
    KEYPOINT_HEATMAP_SIZE = 56
    KEYPOINT_HEAD_CONV = 4
    KEYPOINT_HEAD_CHANNELS = 64
    # Every keypoint here is a corner of its shape's box: a detected box a pixel
    # too tight would cut it off (the heatmap ends at the box). With the heatmaps
    # over the box scaled 1.25x (training and detection), seed 0 went from AP 0.509
    # (mean error 1.26 px; 56 % of the keypoints outside their detected box, 1.76 px
    # error there against 0.61 inside) to 0.845 (0.57 px) at 22 epochs; 20 epochs
    # (DEMO_EPOCHS, 13.9 min): AP 0.815 / 0.817 / 0.847 for seeds 0 / 1 / 2.
    KEYPOINT_ROI_EXPAND = 1.25
    # Per-keypoint OKS sigmas: corners are sharp, as precise as COCO's eyes.
    KEYPOINT_OKS_SIGMAS = (0.025,) * len(KEYPOINT_NAMES)


class KeypointInferenceConfig(KeypointConfig):
    """One image per batch for detection."""

    GPU_COUNT = 1
    IMAGES_PER_GPU = 1


def shape_keypoints(name, center_y, center_x, size):
    """The keypoints of one shape: ``{keypoint name: (x, y)}`` in continuous pixels.

    A square covers rows ``cy - s .. cy + s - 1`` (and the same columns), so its
    corner pixels' centres are ``cx - s + 0.5`` .. ``cx + s - 0.5``; a
    triangle's vertices are the pixels ``(cy - s, cx)``, ``(cy + s, cx - s)``,
    ``(cy + s, cx + s)`` (scikit-image's polygon through pixel centres), whose
    centres are ``+ 0.5``.
    """
    cy, cx, s = float(center_y), float(center_x), float(size)
    if name == "square":
        return {"top_left": (cx - s + 0.5, cy - s + 0.5), "top_right": (cx + s - 0.5, cy - s + 0.5),
                "bottom_left": (cx - s + 0.5, cy + s - 0.5),
                "bottom_right": (cx + s - 0.5, cy + s - 0.5)}
    if name == "triangle":
        return {"apex": (cx + 0.5, cy - s + 0.5), "base_left": (cx - s + 0.5, cy + s + 0.5),
                "base_right": (cx + s + 0.5, cy + s + 0.5)}
    raise ValueError(f"shape_keypoints: unknown shape {name!r}; expected one of {SHAPE_NAMES}")


def random_image_spec(rng, height, width, max_shapes=3, min_visible_fraction=0.5):
    """Random background and 1..max_shapes squares / triangles fully inside the
    image, colours distinct (L1 >= 120) from the background and each other,
    each earlier shape keeping ``min_visible_fraction`` of its area visible.

    Returns ``(bg_color, shapes)``, ``shapes`` as in `samples.shapes.shapes`.
    """
    side = min(height, width)
    size_low, size_high = max(3, side // 12), max(4, side // 5)

    def color(others):
        c = rng.integers(0, 256, size=3)
        for _ in range(50):
            if all(np.abs(c - np.asarray(o)).sum() >= 120 for o in others):
                break
            c = rng.integers(0, 256, size=3)
        return tuple(int(v) for v in c)

    bg_color = color([])
    shapes, areas = [], []
    wanted = int(rng.integers(1, max_shapes + 1))
    for _ in range(wanted * 5):
        if len(shapes) == wanted:
            break
        name = SHAPE_NAMES[int(rng.integers(len(SHAPE_NAMES)))]
        size = int(rng.integers(size_low, size_high + 1))
        cy = int(rng.integers(size, height - size))
        cx = int(rng.integers(size, width - size))
        candidate = shapes + [(name, color([bg_color] + [c for _, c, _ in shapes]),
                               (cy, cx, size))]
        masks, kept = visible_masks(candidate, height, width)
        area = int(shape_mask(name, cy, cx, size, height, width).sum())
        if len(kept) == len(candidate) and np.all(
                masks.sum(axis=(0, 1)) / np.array(areas + [area]) >= min_visible_fraction):
            shapes, areas = candidate, areas + [area]
    return bg_color, shapes


class KeypointDataset(Dataset):
    """Generated squares and triangles with their corner keypoints (source ``"keypoints"``)."""

    keypoint_names = KEYPOINT_NAMES
    keypoint_skeleton = SKELETON

    def load_samples(self, count, height, width, seed=None, max_shapes=3):
        """Register ``count`` random images of ``height`` x ``width`` pixels
        (the same ``seed``, the same images)."""
        if count < 0 or height < 16 or width < 16:
            raise ValueError(f"load_samples: expected count >= 0 and images of at least "
                             f"16x16 pixels, got count={count}, {height}x{width}")
        for class_id, name in enumerate(SHAPE_NAMES, start=1):
            self.add_class("keypoints", class_id, name)
        self.keypoint_class_sets = {
            f"keypoints.{1 + SHAPE_NAMES.index(name)}": [KEYPOINT_NAMES.index(p) for p in points]
            for name, points in SHAPE_KEYPOINTS.items()}
        rng = np.random.default_rng(seed)
        for i in range(count):
            bg_color, shapes = random_image_spec(rng, height, width, max_shapes)
            self.add_image("keypoints", image_id=i, path=None, width=width, height=height,
                           bg_color=bg_color, shapes=shapes)

    def load_image(self, image_id):
        """Render the image from its specification: uint8 ``[H, W, 3]``."""
        info = self.image_info[image_id]
        if info["source"] != "keypoints":
            return super().load_image(image_id)
        return render_image(info["bg_color"], info["shapes"], info["height"], info["width"])

    def load_mask(self, image_id):
        """Visible part of each shape: bool ``[H, W, N]``, int32 class ids ``[N]``."""
        info = self.image_info[image_id]
        if info["source"] != "keypoints":
            return super().load_mask(image_id)
        masks, kept = visible_masks(info["shapes"], info["height"], info["width"])
        class_ids = np.array([1 + SHAPE_NAMES.index(info["shapes"][i][0]) for i in kept],
                             dtype=np.int32)
        return masks, class_ids

    def load_keypoints(self, image_id, num_keypoints=None):
        """float32 ``[N, 7, 3]``: each shape's keypoints (`shape_keypoints`), ``v = 2``
        where the keypoint's pixel shows the shape, 1 where a later shape hides it,
        0 for the other class's keypoints."""
        info = self.image_info[image_id]
        if info["source"] != "keypoints":
            return super().load_keypoints(image_id, num_keypoints)
        masks, kept = visible_masks(info["shapes"], info["height"], info["width"])
        out = np.zeros((len(kept), len(KEYPOINT_NAMES), 3), dtype=np.float32)
        for n, i in enumerate(kept):
            name, _, dims = info["shapes"][i]
            for point, (x, y) in shape_keypoints(name, *dims).items():
                shown = masks[int(np.floor(y)), int(np.floor(x)), n]
                out[n, KEYPOINT_NAMES.index(point)] = (x, y, 2.0 if shown else 1.0)
        return out

    def image_reference(self, image_id):
        """The image's shape list ``[(name, color, (cy, cx, size)), ...]``."""
        info = self.image_info[image_id]
        if info["source"] != "keypoints":
            return super().image_reference(image_id)
        return info["shapes"]


def make_dataset(count, size, seed):
    """A prepared `KeypointDataset` of ``count`` ``size`` x ``size`` images."""
    dataset = KeypointDataset()
    dataset.load_samples(count, size, size, seed=seed)
    dataset.prepare()
    return dataset


# ----------------------------------------------------------------------------- steps
def make_config(args, inference=False):
    """`KeypointConfig` with the command line's overrides (validated)."""
    return config_from_args(KeypointConfig, args, inference=inference)


def _weights_path(model, weights):
    if weights == "last":
        return model.find_last()
    if not os.path.isfile(weights):
        raise FileNotFoundError(f"--weights {weights!r}: no such file")
    return weights


def train(args, config):
    """Train from scratch (or ``--weights``); returns ``(model, last checkpoint)``."""
    from mrcnn import model as modellib

    size = config.IMAGE_SHAPE[0]
    train_set = make_dataset(args.train_count, size, args.seed)
    val_set = make_dataset(args.val_count, size, args.seed + 1)
    model = modellib.MaskRCNN(mode="training", config=config, model_dir=args.logs)
    if args.weights:
        model.load_weights(_weights_path(model, args.weights), by_name=True)
    augmentation = None
    if args.flip:
        import albumentations

        augmentation = albumentations.HorizontalFlip(p=0.5)
    print(f"Training on {train_set.num_images} images ({args.epochs} epochs of "
          f"{config.STEPS_PER_EPOCH} steps, batch {config.BATCH_SIZE}), validating on "
          f"{val_set.num_images}")
    drop_at = max(model.epoch, args.epochs - max(0, args.lr_drop_epochs))
    for epochs, rate in ((drop_at, config.LEARNING_RATE),
                         (args.epochs, config.LEARNING_RATE / 10)):
        if epochs > model.epoch:
            model.train(train_set, val_set, learning_rate=rate, epochs=epochs,
                        layers="all", augmentation=augmentation)
    checkpoint = model.checkpoint_path.format(epoch=model.epoch)
    return model, checkpoint if os.path.exists(checkpoint) else model.find_last()


def load_inference_model(args, checkpoint=None):
    """An inference `MaskRCNN` with ``checkpoint`` (default ``--weights`` or the last one)."""
    from mrcnn import model as modellib

    model = modellib.MaskRCNN(mode="inference", config=make_config(args, inference=True),
                              model_dir=args.logs)
    checkpoint = checkpoint or _weights_path(model, args.weights or "last")
    print(f"Loading weights {checkpoint}")
    model.load_weights(checkpoint, by_name=True)
    return model, checkpoint


def evaluate(model, dataset):
    """Detect on every image; keypoint AP (OKS) and pixel errors, with the results."""
    from mrcnn.evaluation.keypoints import evaluate_keypoints, keypoint_pixel_errors

    image_ids = list(dataset.image_ids)
    results = [model.detect([dataset.load_image(i)])[0] for i in image_ids]
    stats = evaluate_keypoints(dataset, results, image_ids,
                               sigmas=model.config.KEYPOINT_OKS_SIGMAS, verbose=False)
    errors = keypoint_pixel_errors(dataset, results, image_ids)
    return {"keypoints": stats, "errors": errors, "results": results, "image_ids": image_ids}


def print_metrics(metrics):
    stats, errors = metrics["keypoints"], metrics["errors"]
    print(f"Keypoint AP (OKS, {len(metrics['image_ids'])} images): AP {stats['AP']:.3f}  "
          f"AP50 {stats['AP50']:.3f}  AP75 {stats['AP75']:.3f}  AR {stats['AR']:.3f}")
    e = errors["errors"]
    if e.size:
        print(f"Visible keypoints of the {errors['matched']} / {errors['instances']} instances "
              f"matched (mask IoU >= 0.5): mean pixel error {e.mean():.2f}, median "
              f"{np.median(e):.2f}, {np.mean(e <= 1.0):.1%} within 1 px ({e.size} keypoints)")
    else:
        print("No instance matched: no pixel error")


def save_comparison(dataset, image_ids, results, path, min_score=0.3):
    """PNG, one row per image: ground-truth keypoints (left) next to the detections'."""
    import contextlib
    import io

    from matplotlib.figure import Figure

    from mrcnn.structures.boxes import extract_bboxes
    from mrcnn.visualization.keypoints import display_keypoints

    rows = max(1, len(image_ids))
    fig = Figure(figsize=(8, 4 * rows))
    for row, (image_id, r) in enumerate(zip(image_ids, results)):
        image = dataset.load_image(image_id)
        masks, _ = dataset.load_mask(image_id)
        panels = ((extract_bboxes(masks), dataset.load_keypoints(image_id), True,
                   f"image {image_id}: truth"),
                  (r["rois"], r["keypoints"], False, "predictions"))
        for col, (boxes, points, visibility, title) in enumerate(panels):
            ax = fig.add_subplot(rows, 2, 2 * row + col + 1)
            with contextlib.redirect_stdout(io.StringIO()):
                display_keypoints(image, boxes, points, skeleton=SKELETON, visibility=visibility,
                                  min_score=min_score, title=title, ax=ax)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


# ----------------------------------------------------------------------------- commands
def cmd_train(args):
    config = make_config(args)
    config.display()
    _, checkpoint = train(args, config)
    print(f"Checkpoint: {checkpoint}")


def cmd_evaluate(args):
    model, _ = load_inference_model(args)
    print_metrics(evaluate(model, make_dataset(args.eval_count, model.config.IMAGE_SHAPE[0],
                                               args.seed + 2)))


def cmd_demo(args):
    start = args.start_time
    config = make_config(args)
    config.display()
    train_model, checkpoint = train(args, config)
    train_seconds = time.time() - start
    model, _ = load_inference_model(args, checkpoint)
    eval_set = make_dataset(args.eval_count, config.IMAGE_SHAPE[0], args.seed + 2)
    metrics = evaluate(model, eval_set)
    shown = metrics["image_ids"][:args.show]
    png = save_comparison(eval_set, shown, metrics["results"][:len(shown)],
                          os.path.join(args.out or train_model.log_dir,
                                       "keypoints_predictions.png"))
    print("\n==== keypoints demo ====")
    print(f"Checkpoint:  {checkpoint}")
    print(f"Predictions: {png} (left: ground truth, right: predictions)")
    print_metrics(metrics)
    print(f"Training took {train_seconds:.0f} s; total time {time.time() - start:.0f} s "
          f"(seed {args.seed})")


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "demo": cmd_demo}


def build_parser():
    parser = argparse.ArgumentParser(
        description="Train and evaluate Keypoint R-CNN on generated squares and triangles.",
        epilog="Any KeypointConfig setting: --set NAME=VALUE (repeatable).")
    parser.add_argument("command", choices=sorted(COMMANDS),
                        help="demo = train from scratch, evaluate, save a PNG")
    parser.add_argument("--logs", default=DEFAULT_LOGS_DIR,
                        help="logs and checkpoints directory (default: %(default)s)")
    parser.add_argument("--weights", default=None,
                        help="'last' or a .h5 path (evaluate: default last; train: start from)")
    parser.add_argument("--train-count", type=int, default=2000, help="training images")
    parser.add_argument("--val-count", type=int, default=50, help="validation images (loss)")
    parser.add_argument("--eval-count", type=int, default=100,
                        help="fresh held-out images (seed + 2) for the evaluation")
    parser.add_argument("--epochs", type=int, default=DEMO_EPOCHS, help="epochs to train")
    parser.add_argument("--lr-drop-epochs", type=int, default=DEMO_LR_DROP_EPOCHS,
                        help="the last N epochs run at LEARNING_RATE / 10")
    parser.add_argument("--no-flip", dest="flip", action="store_false",
                        help="train without the random horizontal flips")
    parser.add_argument("--show", type=int, default=4, help="images drawn in the PNG")
    parser.add_argument("--out", default=None,
                        help="directory of the PNG (default: the run's log directory)")
    add_config_options(parser, "KeypointConfig", backbones=("resnet50", "resnet101"), seed=0,
                       seed_help="training images use SEED, validation SEED + 1, "
                                 "evaluation SEED + 2")
    return parser


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    args = parse_sample_args(build_parser(), argv, make_config)
    return run_command(COMMANDS, args,
                       seed=args.seed if args.command in ("train", "demo") else None)


if __name__ == "__main__":
    sys.exit(main())
