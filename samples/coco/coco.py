"""Mask R-CNN on MS COCO, or on any data set in COCO's JSON format: train and evaluate.

Data, either the COCO release layout (``--dataset DIR``, ``--year 2017``)::

    DIR/annotations/instances_train2017.json   DIR/train2017/*.jpg
    DIR/annotations/instances_val2017.json     DIR/val2017/*.jpg

or any COCO instance-segmentation JSON with its image folder::

    --train-json A.json --train-images A/ --val-json B.json --val-images B/

Nothing is downloaded: when a file is missing the command stops and says which
file to place where.

Command line (``python samples/coco/coco.py -h`` lists every option)::

    # train from ImageNet (or COCO / last / none / a .h5 path)
    python samples/coco/coco.py train --dataset DIR --weights imagenet
    # evaluate (bbox and segm, pycocotools) on the first 500 val images
    python samples/coco/coco.py evaluate --dataset DIR --weights coco --limit 500
    # only some classes (names or COCO category ids)
    python samples/coco/coco.py train --dataset DIR --weights coco --classes person,car

Training schedule (``--stage-epochs E1,E2,E3``, default 40,120,160; ``--epochs N``
stops the whole schedule at epoch N):

    1. heads (RPN, FPN, Mask R-CNN heads) up to epoch E1 at LEARNING_RATE
    2. ResNet stage 4 and up ("4+") up to epoch E2 at LEARNING_RATE
    3. all layers up to epoch E3 at LEARNING_RATE / 10

A resumed run (``--weights last``) skips the stages it has already passed.
Any `CocoConfig` setting can be overridden with ``--set NAME=VALUE``.

For old code this module keeps ``CocoConfig``, ``CocoDataset`` (with the legacy
``load_coco(dataset_dir, subset, year=...)``), ``build_coco_results`` and
``evaluate_coco(model, dataset, coco, eval_type, limit, image_ids)``.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

ROOT_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
if ROOT_DIR not in sys.path:  # run from a clone without installing the package
    sys.path.insert(0, ROOT_DIR)

from mrcnn.config import Config  # noqa: E402
from mrcnn.data.loaders.coco import CocoDataset, read_coco_json  # noqa: E402,F401
from samples.common import (COCO_HEAD_LAYERS, COCO_WEIGHTS_NAME, COCO_WEIGHTS_URL,  # noqa: E402,F401
                            find_coco_weights, load_initial_weights,
                            add_config_options, config_from_args,
                            parse_config_overrides, run_command)

DEFAULT_LOGS_DIR = os.path.join(ROOT_DIR, "logs")
DEFAULT_YEAR = "2017"
COCO_IMAGES_URL = "http://images.cocodataset.org/zips/{subset}{year}.zip"
COCO_ANNOTATIONS_URL = "http://images.cocodataset.org/annotations/annotations_trainval{year}.zip"
DEFAULT_STAGE_EPOCHS = (40, 120, 160)


class CommandLineError(ValueError):
    """Arguments that do not fit together or name something that does not exist."""


# ----------------------------------------------------------------------------- config
class CocoConfig(Config):
    """Training on MS COCO: 80 classes, two images per GPU."""

    NAME = "coco"
    IMAGES_PER_GPU = 2
    NUM_CLASSES = 1 + 80  # background + the 80 COCO categories


class CocoInferenceConfig(CocoConfig):
    """Evaluation: one image at a time, every detection kept (COCO AP ranks them all)."""

    GPU_COUNT = 1
    IMAGES_PER_GPU = 1
    DETECTION_MIN_CONFIDENCE = 0


# ----------------------------------------------------------------------------- data
def subset_paths(args, subset):
    """``(annotation JSON, image folder)`` of ``subset`` ("train" or "val") from the arguments.

    Explicit ``--<subset>-json`` / ``--<subset>-images`` win; otherwise the
    COCO release layout under ``--dataset`` with ``--year``.
    """
    json_path = getattr(args, f"{subset}_json")
    image_dir = getattr(args, f"{subset}_images")
    if json_path or image_dir:
        if not (json_path and image_dir):
            raise CommandLineError(f"pass both --{subset}-json and --{subset}-images")
        return json_path, image_dir
    if not args.dataset:
        raise CommandLineError(f"pass --dataset DIR (COCO release layout) or --{subset}-json and "
                         f"--{subset}-images")
    return (os.path.join(args.dataset, "annotations", f"instances_{subset}{args.year}.json"),
            os.path.join(args.dataset, f"{subset}{args.year}"))


def check_files(args, subsets):
    """Raise FileNotFoundError listing every missing annotation file / image folder.

    For the COCO release layout the message says which archive holds each
    missing piece and where to unzip it.
    """
    missing = []
    for subset in subsets:
        json_path, image_dir = subset_paths(args, subset)
        explicit = bool(getattr(args, f"{subset}_json"))
        annotations_zip = COCO_ANNOTATIONS_URL.format(year=args.year)
        images_zip = COCO_IMAGES_URL.format(subset=subset, year=args.year)
        if not os.path.isfile(json_path):
            source = "" if explicit else f" (in {annotations_zip}, unzipped into {args.dataset})"
            missing.append(f"annotation file {json_path}{source}")
        if not os.path.isdir(image_dir):
            source = "" if explicit else f" (unzip {images_zip} into {args.dataset})"
            missing.append(f"image folder {image_dir}/{source}")
    if missing:
        raise FileNotFoundError(
            "COCO data missing (nothing is downloaded; place these files, or pass "
            "--train-json/--train-images/--val-json/--val-images for another COCO-format "
            "data set):\n  " + "\n  ".join(missing))


def resolve_classes(spec, annotation_json):
    """COCO category ids named by ``--classes`` ("person,car" or "1,3"); None = all.

    Raises:
        CommandLineError (a ValueError): a name or id that is not a category
            of ``annotation_json`` (the message lists the known names).
    """
    if not spec:
        return None
    categories = read_coco_json(annotation_json)["categories"]
    by_name = {str(c["name"]): int(c["id"]) for c in categories}
    ids = {int(c["id"]) for c in categories}
    chosen = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        if item in by_name:
            chosen.append(by_name[item])
        elif item.isdigit() and int(item) in ids:
            chosen.append(int(item))
        else:
            raise CommandLineError(f"--classes: {item!r} is neither a category name nor an id of "
                             f"{annotation_json} (names: {', '.join(sorted(by_name))})")
    if not chosen:
        raise CommandLineError(f"--classes {spec!r} names no class")
    return sorted(set(chosen))


def load_subset(args, subset, class_ids=None):
    """A prepared `CocoDataset` of ``subset`` ("train" or "val").

    Raises:
        CommandLineError: the file has no image (with the chosen classes).
    """
    json_path, image_dir = subset_paths(args, subset)
    dataset = CocoDataset()
    dataset.load_coco(json_path, image_dir, class_ids=class_ids)
    dataset.prepare()
    if dataset.num_images == 0:
        raise CommandLineError(f"{json_path} has no images"
                               + (" with the chosen --classes" if class_ids else ""))
    return dataset


# ----------------------------------------------------------------------------- schedule
def training_schedule(learning_rate, stage_epochs=DEFAULT_STAGE_EPOCHS, epochs=None):
    """The stages of a training run as ``[(layers, end_epoch, learning_rate), ...]``.

    heads up to E1 at ``learning_rate``, "4+" up to E2 at ``learning_rate``,
    "all" up to E3 at ``learning_rate / 10``. ``epochs`` caps every end epoch;
    stages left with nothing to train are dropped.

    Raises:
        ValueError: stage epochs that are not three non-decreasing positive integers.
    """
    stage_epochs = [int(e) for e in stage_epochs]
    if len(stage_epochs) != 3 or stage_epochs[0] < 1 or \
            any(b < a for a, b in zip(stage_epochs, stage_epochs[1:])):
        raise ValueError(f"stage epochs must be three non-decreasing positive integers "
                         f"E1,E2,E3, got {stage_epochs}")
    stages = [("heads", stage_epochs[0], learning_rate),
              ("4+", stage_epochs[1], learning_rate),
              ("all", stage_epochs[2], learning_rate / 10)]
    schedule, reached = [], 0
    for layers, end, lr in stages:
        if epochs is not None:
            end = min(end, epochs)
        if end > reached:
            schedule.append((layers, end, lr))
            reached = end
    return schedule


# ------------------------------------------------------------------------- legacy evaluation API
def build_coco_results(dataset, image_ids, rois, class_ids, scores, masks):
    """COCO result dicts of one image's detections (legacy helper).

    ``image_ids`` is a list with the one internal image id the detections
    belong to (the old signature); see `mrcnn.evaluation.coco.detections_to_coco`.
    """
    from mrcnn.evaluation.coco import detections_to_coco

    image_id = image_ids[0] if np.ndim(image_ids) else image_ids
    return detections_to_coco(dataset, image_id, rois, class_ids, scores, masks)


def evaluate_coco(model, dataset, coco=None, eval_type="bbox", limit=0, image_ids=None):
    """Run ``model.detect`` on ``dataset`` and print/return the COCO metrics (legacy API).

    Args:
        model: an inference-mode `MaskRCNN`.
        dataset: a prepared `CocoDataset` (the ground truth comes from it;
            ``coco`` is accepted for the old signature and not needed).
        eval_type: ``"bbox"`` or ``"segm"`` (or a tuple of both).
        limit: evaluate the first ``limit`` images (0 = all).
        image_ids: internal image ids (default: all).

    Returns:
        ``{eval_type: {"AP", "AP50", ...}}`` as `mrcnn.evaluation.coco.evaluate_coco`.
    """
    from mrcnn.evaluation.coco import evaluate_coco as coco_metrics

    image_ids = list(dataset.image_ids if image_ids is None else image_ids)
    if limit:
        image_ids = image_ids[:limit]
    start = time.time()
    results = []
    batch = model.config.BATCH_SIZE
    for i in range(0, len(image_ids), batch):
        ids = image_ids[i:i + batch]
        images = [dataset.load_image(k) for k in ids]
        images += [images[-1]] * (batch - len(images))
        results.extend(model.detect(images, verbose=0)[:len(ids)])
    elapsed = time.time() - start
    print(f"Detection: {elapsed:.1f} s for {len(image_ids)} images "
          f"({elapsed / max(1, len(image_ids)):.2f} s per image)")
    eval_types = (eval_type,) if isinstance(eval_type, str) else tuple(eval_type)
    return coco_metrics(dataset, results, image_ids, eval_types=eval_types, verbose=True)


# ----------------------------------------------------------------------------- weights
# ----------------------------------------------------------------------------- CLI
def parse_overrides(items):
    """``--set NAME=VALUE`` items -> dict of `CocoConfig` settings."""
    return parse_config_overrides(items, CocoConfig)


def make_config(args, num_classes=None, inference=False):
    """`CocoConfig` (or the inference variant) with the command line's overrides."""
    base = CocoInferenceConfig if inference else CocoConfig
    extra = {"NUM_CLASSES": num_classes} if num_classes is not None else None
    return config_from_args(base, args, extra=extra, inference=inference)


def cmd_train(args):
    check_files(args, ("train", "val"))
    if args.weights == "coco":
        find_coco_weights(args.coco_weights)  # fail before the slow model build
    class_ids = resolve_classes(args.classes, subset_paths(args, "train")[0])
    train_set = load_subset(args, "train", class_ids)
    val_set = load_subset(args, "val", class_ids)
    config = make_config(args, num_classes=train_set.num_classes)
    config.display()
    schedule = training_schedule(config.LEARNING_RATE, args.stage_epochs, args.epochs)

    from mrcnn import model as modellib

    model = modellib.MaskRCNN(mode="training", config=config, model_dir=args.logs)
    load_initial_weights(model, args.weights, args.coco_weights)
    print(f"Training on {train_set.num_images} images, validating on {val_set.num_images}; "
          f"classes: {', '.join(train_set.class_names[1:])}")
    for layers, end_epoch, learning_rate in schedule:
        if end_epoch <= model.epoch:
            print(f"Skipping stage {layers!r} (ends at epoch {end_epoch}, model is at "
                  f"epoch {model.epoch})")
            continue
        print(f"Stage {layers!r}: up to epoch {end_epoch} at learning rate {learning_rate:g}")
        model.train(train_set, val_set, learning_rate=learning_rate, epochs=end_epoch,
                    layers=layers)
    print(f"Checkpoints in {model.log_dir}")


def cmd_evaluate(args):
    check_files(args, ("val",))
    if args.weights == "coco":
        find_coco_weights(args.coco_weights)
    json_path = subset_paths(args, "val")[0]
    class_ids = resolve_classes(args.classes, json_path)
    val_set = load_subset(args, "val", class_ids)
    config = make_config(args, num_classes=val_set.num_classes, inference=True)

    from mrcnn import model as modellib
    from mrcnn.evaluation.coco import evaluate_model

    model = modellib.MaskRCNN(mode="inference", config=config, model_dir=args.logs)
    weights = load_initial_weights(model, args.weights or "last", args.coco_weights)
    limit = args.limit or None
    print(f"Evaluating {min(limit or val_set.num_images, val_set.num_images)} of "
          f"{val_set.num_images} images of {json_path}")
    start = time.time()
    metrics = evaluate_model(model, val_set, limit=limit, eval_types=("bbox", "segm"),
                             verbose=True)
    print(f"mAP@0.5 (mean of per-image AP): {metrics['mAP50']:.3f}; took "
          f"{time.time() - start:.1f} s")
    if args.out:
        report = {"weights": weights, "annotations": json_path,
                  "image_ids": [int(val_set.image_info[i]["id"]) for i in metrics["image_ids"]],
                  "mAP50": metrics["mAP50"], "coco": metrics["coco"]}
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
        print(f"Metrics saved to {args.out}")


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate}


def _stage_epochs(text):
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected E1,E2,E3 (integers), got {text!r}") from None


def build_parser():
    parser = argparse.ArgumentParser(
        description="Train or evaluate Mask R-CNN on COCO or another COCO-format data set.",
        epilog="Any CocoConfig setting: --set NAME=VALUE (repeatable).")
    parser.add_argument("command", choices=sorted(COMMANDS))
    parser.add_argument("--dataset", help="folder in the COCO release layout "
                                          "(annotations/, train<year>/, val<year>/)")
    parser.add_argument("--year", default=DEFAULT_YEAR, help="COCO release year (2014, 2017)")
    for subset in ("train", "val"):
        parser.add_argument(f"--{subset}-json", help=f"{subset} annotations (COCO JSON)")
        parser.add_argument(f"--{subset}-images", help=f"{subset} image folder")
    parser.add_argument("--classes", default=None,
                        help="comma-separated category names or ids to use (default: all)")
    parser.add_argument("--weights", default=None,
                        help="coco, last, imagenet, none or a .h5 path (train: required; "
                             "evaluate: default last)")
    parser.add_argument("--coco-weights", default=None,
                        help=f"the COCO weights file for --weights coco "
                             f"(default ./{COCO_WEIGHTS_NAME})")
    parser.add_argument("--logs", default=DEFAULT_LOGS_DIR,
                        help="logs and checkpoints directory (default: %(default)s)")
    parser.add_argument("--stage-epochs", type=_stage_epochs, default=list(DEFAULT_STAGE_EPOCHS),
                        help="end epochs of the heads, 4+ and all stages (default 40,120,160)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="stop the schedule at this epoch")
    parser.add_argument("--limit", type=int, default=500,
                        help="evaluate: number of images (0 = all; default 500)")
    parser.add_argument("--out", help="evaluate: write the metrics to this JSON file")
    add_config_options(parser, "CocoConfig")
    return parser


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "train" and not args.weights:
        parser.error("train needs --weights (coco, last, imagenet, none or a .h5 path)")
    try:
        make_config(args)
        training_schedule(1.0, args.stage_epochs, args.epochs)
    except ValueError as exc:
        parser.error(str(exc))
    return run_command(COMMANDS, args, seed=args.seed,
                       errors=((FileNotFoundError, 1), (CommandLineError, 2)))


if __name__ == "__main__":
    sys.exit(main())
