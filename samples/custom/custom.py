"""Tutorial: train Mask R-CNN on your own folder of images and instance masks.

This file is the smallest complete example of the `Dataset` protocol. Copy it,
change `CustomDataset.load_custom` to read your annotations, and train.

The `Dataset` protocol in five calls
------------------------------------
A data set tells the model which classes exist, which images exist, and how
to load an image's instance masks. You subclass `mrcnn.utils.Dataset` and:

1. ``add_class(source, class_id, class_name)`` - register each class once.
   ``source`` names your data set (any string without dots, here
   ``"custom"``); ``class_id`` is your own id, 1, 2, ... (0 is the background,
   added for you).
2. ``add_image(source, image_id, path, **extra)`` - register each image.
   ``image_id`` is your own id (a file name is fine); anything in ``extra``
   is kept in ``self.image_info[i]`` for your `load_mask` to use.
3. ``load_mask(image_id)`` - return ``(masks, class_ids)`` for one image:
   ``masks`` bool ``[height, width, N]`` (one channel per instance) and
   ``class_ids`` int32 ``[N]``. Here ``image_id`` is the *internal* id (the
   image's index in ``image_info``) and the class ids are *internal* ids too:
   turn your ids into them with ``self.map_source_class_id("custom.2")``.
4. ``image_reference(image_id)`` - a string that identifies the image to a
   human (its path); used in messages. Optional.
5. ``prepare()`` - call it once after adding everything; it builds the lookup
   tables (``class_names``, ``image_ids``, ``map_source_class_id``...).

`load_image` is inherited: it reads ``image_info[i]["path"]`` as RGB. Override
it only if your images are not files (generated, in a database, ...).

Data layout read here
---------------------
::

    DATASET/train/images/<name>.png            (.png .jpg .jpeg .bmp .tif)
    DATASET/train/masks/<name>/<class>_<k>.png  one binary PNG per instance
    DATASET/val/...                              the same for validation

A mask PNG is the size of its image; any non-zero pixel belongs to the
instance. ``<class>`` is one of ``--classes`` (default: a single class
``object``, and then any file name works). An image without a mask folder
has no instances (a pure background example).

Commands
--------
::

    python samples/custom/custom.py train --dataset DATASET --weights coco
    python samples/custom/custom.py train --dataset DATASET --weights none \\
        --classes cat,dog --epochs 20
    python samples/custom/custom.py detect --weights last --dataset DATASET --out results/
    python samples/custom/custom.py detect --weights last --image photo.jpg --out results/
    python samples/custom/custom.py detect --weights last --image photos/ --out results/
    python samples/custom/custom.py detect --weights last --video clip.mp4 --out results/

``detect`` writes ``<name>_detections.png`` per image, ``detections.json`` (boxes,
classes, scores) and the COCO files ``coco_results.json`` (for pycocotools'
``loadRes``) and ``coco_dataset.json`` (for `mrcnn.utils.CocoDataset`); for a
video, ``<name>_detections.avi`` and the same COCO files per video
(`samples.common.export_results`; ``--polygons`` for polygon segmentations).
"""

import argparse
import json
import os
import sys

import numpy as np

ROOT_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
if ROOT_DIR not in sys.path:  # run from a clone without installing the package
    sys.path.insert(0, ROOT_DIR)

from mrcnn.config import BACKBONES, Config  # noqa: E402
from mrcnn.utils import Dataset  # noqa: E402
from samples.common import (COCO_HEAD_LAYERS, COCO_WEIGHTS_NAME, COCO_WEIGHTS_URL,  # noqa: E402,F401
                            find_coco_weights, load_initial_weights,
                            config_from_args, parse_config_overrides,
                            add_export_options, export_results)

DEFAULT_LOGS_DIR = os.path.join(ROOT_DIR, "logs")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
SOURCE = "custom"  # the name of our data set in class_info / image_info


# ============================================================================ 1. the config
class CustomConfig(Config):
    """Settings for a small custom data set. Override what you need.

    NUM_CLASSES must be 1 (background) + your classes; `make_config` sets it
    from ``--classes``.
    """

    NAME = "custom"            # log folders are named custom<date>, checkpoints mask_rcnn_custom_*
    NUM_CLASSES = 1 + 1        # background + "object"
    IMAGES_PER_GPU = 1         # one image per step: fits most GPUs (and CPUs)
    STEPS_PER_EPOCH = 100
    VALIDATION_STEPS = 5
    IMAGE_MIN_DIM = 512        # images are scaled (and padded) to 512 x 512
    IMAGE_MAX_DIM = 512
    DETECTION_MIN_CONFIDENCE = 0.7


# ============================================================================ 2. the data set
class CustomDataset(Dataset):
    """Images with one binary mask PNG per instance (see the module docstring)."""

    def load_custom(self, dataset_dir, subset, class_names=("object",)):
        """Register the classes and the images of ``<dataset_dir>/<subset>``.

        Args:
            dataset_dir: the folder holding ``train/`` and ``val/``.
            subset: the sub-folder to read, e.g. ``"train"`` or ``"val"``.
            class_names: your classes; they get the ids 1, 2, ... in this order.

        Raises:
            FileNotFoundError: ``<dataset_dir>/<subset>/images`` does not exist.
        """
        from PIL import Image

        # Step 1: one add_class per class. Ids start at 1; 0 is the background.
        self.class_names_in_order = [str(name) for name in class_names]
        for class_id, name in enumerate(self.class_names_in_order, start=1):
            self.add_class(SOURCE, class_id, name)

        image_dir = os.path.join(os.fspath(dataset_dir), subset, "images")
        mask_root = os.path.join(os.fspath(dataset_dir), subset, "masks")
        if not os.path.isdir(image_dir):
            raise FileNotFoundError(f"load_custom: {image_dir!r} is not a folder; expected "
                                    f"<dataset>/{subset}/images/ and <dataset>/{subset}/masks/")

        # Step 2: one add_image per image. The extra keywords (width, height,
        # mask_paths) are stored in image_info for load_mask to use later.
        for filename in sorted(os.listdir(image_dir)):
            stem, extension = os.path.splitext(filename)
            if extension.lower() not in IMAGE_EXTENSIONS:
                continue
            image_path = os.path.join(image_dir, filename)
            with Image.open(image_path) as image:  # reads the header only
                width, height = image.size
            mask_dir = os.path.join(mask_root, stem)
            mask_paths = []
            if os.path.isdir(mask_dir):
                mask_paths = [os.path.join(mask_dir, f) for f in sorted(os.listdir(mask_dir))
                              if f.lower().endswith(".png")]
            self.add_image(SOURCE, image_id=stem, path=image_path, width=width,
                           height=height, mask_paths=mask_paths)

    def class_of_mask_file(self, mask_path):
        """Our class id (1, 2, ...) of a mask file named ``<class>_<k>.png``."""
        names = self.class_names_in_order
        if len(names) == 1:
            return 1  # a single class: any file name will do
        prefix = os.path.basename(mask_path).rsplit("_", 1)[0]
        if prefix not in names:
            raise ValueError(f"mask file {mask_path!r}: name it <class>_<k>.png with <class> "
                             f"one of {names}")
        return names.index(prefix) + 1

    def load_mask(self, image_id):
        """Step 3: bool masks ``[H, W, N]`` and int32 internal class ids ``[N]``."""
        import skimage.io

        info = self.image_info[image_id]
        if info["source"] != SOURCE:
            # An image some other loader added (after merging data sets).
            return super().load_mask(image_id)
        height, width = info["height"], info["width"]
        masks, class_ids = [], []
        for path in info["mask_paths"]:
            plane = skimage.io.imread(path)
            if plane.ndim == 3:                  # an RGB(A) mask: any colour counts
                plane = plane[..., :3].max(axis=-1)
            if plane.shape != (height, width):
                raise ValueError(f"mask {path!r} is {plane.shape} but its image "
                                 f"{info['path']!r} is {(height, width)} (height, width)")
            masks.append(plane != 0)
            # Our id (1, 2, ...) -> the internal id the model uses.
            class_ids.append(self.map_source_class_id(f"{SOURCE}.{self.class_of_mask_file(path)}"))
        if not masks:  # no instances: an empty [H, W, 0] stack
            return np.zeros((height, width, 0), bool), np.zeros((0,), np.int32)
        return np.stack(masks, axis=-1), np.asarray(class_ids, np.int32)

    def image_reference(self, image_id):
        """Step 4: the image's path, for messages."""
        return str(self.image_info[image_id]["path"])


def load_dataset(dataset_dir, subset, class_names=("object",)):
    """Step 5: build a data set and `prepare()` it."""
    dataset = CustomDataset()
    dataset.load_custom(dataset_dir, subset, class_names)
    dataset.prepare()
    return dataset


# ============================================================================ 3. the commands
def parse_overrides(items):
    """``--set NAME=VALUE`` items -> dict of `CustomConfig` settings."""
    return parse_config_overrides(items, CustomConfig)


def make_config(args, inference=False):
    """A `CustomConfig` with NUM_CLASSES from ``--classes`` and the command line's overrides
    (``inference``: one image at a time)."""
    extra = {"NUM_CLASSES": 1 + len(class_list(args.classes))}
    return config_from_args(CustomConfig, args, extra=extra, inference=inference)


def class_list(text):
    names = [n.strip() for n in (text or "object").split(",") if n.strip()]
    if not names:
        raise ValueError("--classes: give at least one class name")
    return names


def cmd_train(args):
    names = class_list(args.classes)
    train_set = load_dataset(args.dataset, "train", names)
    val_set = load_dataset(args.dataset, "val", names)
    if args.weights == "coco":
        find_coco_weights(args.coco_weights)  # fail now, not after building the model
    config = make_config(args)
    config.display()

    from mrcnn import model as modellib

    model = modellib.MaskRCNN(mode="training", config=config, model_dir=args.logs)
    load_initial_weights(model, args.weights, args.coco_weights)
    # From pretrained weights, train the heads; from nothing, train everything.
    layers = args.layers or ("all" if args.weights in ("none", "imagenet") else "heads")
    model.train(train_set, val_set, learning_rate=config.LEARNING_RATE,
                epochs=args.epochs, layers=layers)
    print(f"Checkpoints in {model.log_dir}")


def cmd_detect(args):
    from mrcnn import model as modellib

    names = ["BG"] + class_list(args.classes)
    if args.image or args.video:
        inputs = [path for path in (args.image, args.video) if path]
        for path in inputs:
            if not os.path.exists(path):  # fail before building the model
                raise FileNotFoundError(f"detect: {path!r} does not exist")
    elif args.dataset:
        inputs = load_dataset(args.dataset, args.subset, names[1:])
    else:
        raise SystemExit("detect needs --image PATH (a file or folder), --video PATH or "
                         "--dataset DIR")
    model = modellib.MaskRCNN(mode="inference", config=make_config(args, inference=True),
                              model_dir=args.logs)
    load_initial_weights(model, args.weights or "last", args.coco_weights)
    # <stem>_detections.png per image, COCO results / data set JSON (see samples.common).
    exported = export_results(model, inputs, args.out, names, polygons=args.polygons)
    summary = []
    if exported["images"] is not None:
        for image, found in zip(exported["images"].images, exported["images"].detections):
            name = os.path.splitext(os.path.basename(image["file_name"]))[0]
            summary.append({"image": name, "rois": found["rois"].tolist(),
                            "classes": [names[c] for c in found["class_ids"]],
                            "scores": [round(float(s), 4) for s in found["scores"]]})
            print(f"{name}: {len(found['class_ids'])} instance(s)")
        with open(os.path.join(args.out, "detections.json"), "w", encoding="utf-8") as f:
            f.write("[\n" + ",\n".join(json.dumps(entry) for entry in summary) + "\n]\n")
    for video in exported["videos"]:
        print(f"{video.frames} frames of {args.video}: {video.out_video}")
    print(f"Results in {args.out}")


def build_parser():
    parser = argparse.ArgumentParser(description="Train / run Mask R-CNN on a folder of "
                                                 "images with instance masks.")
    parser.add_argument("command", choices=("train", "detect"))
    parser.add_argument("--dataset", help="folder holding train/ and val/")
    parser.add_argument("--classes", default="object",
                        help="comma-separated class names (default: object)")
    parser.add_argument("--weights", default=None,
                        help="coco, last, imagenet, none or a .h5 path")
    parser.add_argument("--coco-weights", default=None,
                        help=f"COCO weights file (default ./{COCO_WEIGHTS_NAME})")
    parser.add_argument("--logs", default=DEFAULT_LOGS_DIR, help="logs and checkpoints folder")
    parser.add_argument("--epochs", type=int, default=20, help="train up to this epoch")
    parser.add_argument("--layers", default=None, help="heads, 3+, 4+, 5+ or all")
    parser.add_argument("--steps-per-epoch", type=int, default=None)
    parser.add_argument("--validation-steps", type=int, default=None)
    parser.add_argument("--image-size", type=int, default=None, help="a multiple of 64")
    parser.add_argument("--backbone", default=None, choices=BACKBONES)
    parser.add_argument("--image", help="detect: an image file or a folder of images")
    parser.add_argument("--subset", default="val", help="detect: sub-folder of --dataset")
    parser.add_argument("--out", default="detections", help="detect: output folder")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="override any CustomConfig setting")
    add_export_options(parser)  # --video, --polygons
    return parser


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "train" and not (args.dataset and args.weights):
        parser.error("train needs --dataset DIR and --weights (coco, last, imagenet, none, PATH)")
    try:
        make_config(args)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        {"train": cmd_train, "detect": cmd_detect}[args.command](args)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
