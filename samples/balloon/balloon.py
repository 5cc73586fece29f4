"""Mask R-CNN on the balloon data set: fine-tune on one class, then colour-splash.

The balloon data set (61 train + 13 val photos, polygons drawn with the VGG
Image Annotator) is the classic "train on your own data" example. This sample
fine-tunes the COCO weights on it and then makes a *colour splash*: the
balloons keep their colour and everything else turns grayscale.

Data layout (``balloon_dataset.zip`` of the matterport Mask_RCNN v2.1 release
unpacks to exactly this)::

    DIR/train/via_region_data.json  + the train images it names
    DIR/val/via_region_data.json    + the val images it names

Command line (``python samples/balloon/balloon.py -h`` lists every option)::

    # fine-tune the COCO weights (heads only) for 30 epochs
    python samples/balloon/balloon.py train --dataset DIR --weights coco
    # resume the newest run in --logs, or start from ImageNet / from scratch
    python samples/balloon/balloon.py train --dataset DIR --weights last
    python samples/balloon/balloon.py train --dataset DIR --weights imagenet
    python samples/balloon/balloon.py train --dataset DIR --weights none
    # colour splash of an image (PNG) or a video (AVI, needs OpenCV)
    python samples/balloon/balloon.py splash --weights last --image photo.jpg
    python samples/balloon/balloon.py splash --weights last --video clip.mp4

``--weights coco`` reads ``--coco-weights PATH`` or ``./mask_rcnn_coco.h5``;
nothing is downloaded. The class-specific layers (``mrcnn_class_logits``,
``mrcnn_bbox_fc``, ``mrcnn_bbox``, ``mrcnn_mask``) are not loaded from it,
since COCO has 81 classes and this data set 2.

Any `BalloonConfig` setting can be overridden with ``--set NAME=VALUE``
(repeatable, values parsed as Python literals), e.g.
``--set DETECTION_MIN_CONFIDENCE=0.8 --set "RPN_ANCHOR_SCALES=(8, 16, 32, 64, 128)"``.
"""

import argparse
import datetime
import os
import sys

import numpy as np

ROOT_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
if ROOT_DIR not in sys.path:  # run from a clone without installing the package
    sys.path.insert(0, ROOT_DIR)

from mrcnn.config import Config  # noqa: E402
from mrcnn.data.dataset import to_rgb_uint8  # noqa: E402
from mrcnn.data.loaders.via import ViaDataset  # noqa: E402
from samples.common import (COCO_HEAD_LAYERS, COCO_WEIGHTS_NAME, COCO_WEIGHTS_URL,  # noqa: E402,F401
                            find_coco_weights, load_initial_weights,
                            add_config_options, config_from_args,
                            parse_config_overrides, run_command)

DEFAULT_LOGS_DIR = os.path.join(ROOT_DIR, "logs")
BALLOON_DATA_URL = ("https://github.com/matterport/Mask_RCNN/releases/download/v2.1/"
                    "balloon_dataset.zip")
# ITU-R BT.709 luma weights (the ones skimage.color.rgb2gray uses).
LUMA_WEIGHTS = np.array([0.2125, 0.7154, 0.0721])


# ----------------------------------------------------------------------------- config
class BalloonConfig(Config):
    """Fine-tuning recipe for the balloon data set (one GPU, two images per batch)."""

    NAME = "balloon"
    IMAGES_PER_GPU = 2
    NUM_CLASSES = 1 + 1  # background + balloon
    STEPS_PER_EPOCH = 100
    # Skip detections below 90% confidence: the splash should show sure balloons only.
    DETECTION_MIN_CONFIDENCE = 0.9


class BalloonInferenceConfig(BalloonConfig):
    """One image at a time for the splash."""

    GPU_COUNT = 1
    IMAGES_PER_GPU = 1


# ----------------------------------------------------------------------------- data
class BalloonDataset(ViaDataset):
    """The balloon photos and their VIA polygons; one class, ``"balloon"``."""

    SUBSETS = ("train", "val")

    def load_balloon(self, dataset_dir, subset):
        """Add the images of ``<dataset_dir>/<subset>/via_region_data.json``.

        Args:
            dataset_dir: the folder holding ``train/`` and ``val/``.
            subset: ``"train"`` or ``"val"``.

        Raises:
            ValueError: an unknown subset.
            FileNotFoundError: the JSON file is missing (the message says where
                to get the data set and how to unpack it).
        """
        if subset not in self.SUBSETS:
            raise ValueError(f"load_balloon: subset must be one of {self.SUBSETS}, "
                             f"got {subset!r}")
        subset_dir = os.path.join(os.fspath(dataset_dir), subset)
        json_path = os.path.join(subset_dir, "via_region_data.json")
        if not os.path.isfile(json_path):
            raise FileNotFoundError(
                f"balloon data not found: {json_path!r} does not exist. Download "
                f"{BALLOON_DATA_URL} and unzip it so that <dataset>/{subset}/"
                f"via_region_data.json and the images it names are in {subset_dir!r} "
                f"(pass the folder holding train/ and val/ as --dataset).")
        # Every region is a balloon: no class attribute to read.
        self.load_via(json_path, subset_dir, class_attribute=None, class_names=["balloon"],
                      source="balloon")


def load_dataset(dataset_dir, subset):
    """A prepared `BalloonDataset` of one subset."""
    dataset = BalloonDataset()
    dataset.load_balloon(dataset_dir, subset)
    dataset.prepare()
    return dataset


# ----------------------------------------------------------------------------- splash
def _grayscale(rgb):
    """Luma of an ``[H, W, 3]`` image, ``[H, W]`` in the image's dtype (rounded for ints)."""
    gray = rgb.astype(np.float64) @ LUMA_WEIGHTS
    if np.issubdtype(rgb.dtype, np.integer):
        info = np.iinfo(rgb.dtype)
        gray = np.clip(np.rint(gray), info.min, info.max)
    return gray.astype(rgb.dtype)


def color_splash(image, mask):
    """Keep the colour of instance pixels and turn every other pixel gray.

    Args:
        image: ``[H, W, 3]`` RGB (an alpha channel ``[H, W, 4]`` is dropped; a
            ``[H, W]`` grayscale image is used as is), any numeric dtype.
        mask: ``[H, W, N]`` instance masks (``N`` may be 0) or one ``[H, W]``
            mask; non-zero = instance pixel.

    Returns:
        ``[H, W, 3]`` in the image's dtype: ``image`` where any instance covers
        the pixel, else the gray value ``0.2125 R + 0.7154 G + 0.0721 B``
        (rounded to the nearest integer for integer images) in all three
        channels.

    Raises:
        ValueError: the shapes are not as above or the mask's height/width
            differ from the image's.
    """
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        raise ValueError(f"color_splash: image must be [H, W, 3] RGB, got shape {image.shape}")
    rgb = image[..., :3]
    mask = np.asarray(mask)
    if mask.ndim == 2:
        mask = mask[..., np.newaxis]
    if mask.ndim != 3 or mask.shape[:2] != rgb.shape[:2]:
        raise ValueError(f"color_splash: mask must be [H, W, N] with H, W = "
                         f"{rgb.shape[0]}, {rgb.shape[1]} (the image's), got shape {mask.shape}")
    covered = (mask != 0).any(axis=-1)
    gray = _grayscale(rgb)
    return np.where(covered[..., np.newaxis], rgb, gray[..., np.newaxis]).astype(rgb.dtype)


def read_rgb(path):
    """An image file as RGB uint8 ``[H, W, 3]``."""
    import skimage.io

    if not os.path.isfile(path):
        raise FileNotFoundError(f"--image {path!r}: no such file")
    return to_rgb_uint8(skimage.io.imread(path))


def splash_image(model, image_path, out_path):
    """Detect balloons in one image file and save its colour splash as PNG; returns the path."""
    import skimage.io

    image = read_rgb(image_path)
    r = model.detect([image], verbose=0)[0]
    splash = color_splash(image, r["masks"])
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    skimage.io.imsave(out_path, splash, check_contrast=False)
    print(f"{len(r['class_ids'])} balloon(s) found in {image_path}")
    return out_path


def splash_video(model, video_path, out_path):
    """Colour-splash every frame of a video into an MJPG ``.avi``; returns the frame count.

    Needs OpenCV (``pip install opencv-python-headless``); raises RuntimeError
    with that advice if it is missing or cannot open the file.
    """
    try:
        import cv2
    except ImportError:
        raise RuntimeError("splash --video needs OpenCV to read and write video: "
                           "pip install opencv-python-headless (or use --image)") from None
    if not os.path.isfile(video_path):
        raise FileNotFoundError(f"--video {video_path!r}: no such file")
    capture = cv2.VideoCapture(video_path)
    if not capture.isOpened():
        raise RuntimeError(f"OpenCV cannot open the video {video_path!r} (is its codec "
                           f"supported by this OpenCV build?)")
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    writer, count = None, 0
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            rgb = frame[..., ::-1]  # OpenCV frames are BGR
            r = model.detect([rgb], verbose=0)[0]
            splash = color_splash(rgb, r["masks"])
            if writer is None:
                os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
                height, width = splash.shape[:2]
                writer = cv2.VideoWriter(out_path, cv2.VideoWriter_fourcc(*"MJPG"), fps,
                                         (width, height))
            writer.write(np.ascontiguousarray(splash[..., ::-1]))
            count += 1
    finally:
        capture.release()
        if writer is not None:
            writer.release()
    if count == 0:
        raise RuntimeError(f"no frame could be read from {video_path!r}")
    print(f"{count} frames splashed")
    return count


# ----------------------------------------------------------------------------- weights
# ----------------------------------------------------------------------------- CLI
def parse_overrides(items):
    """``--set NAME=VALUE`` items -> dict of `BalloonConfig` settings."""
    return parse_config_overrides(items, BalloonConfig)


def make_config(args, inference=False):
    """`BalloonConfig` (or its inference variant) with the command line's overrides."""
    base = BalloonInferenceConfig if inference else BalloonConfig
    return config_from_args(base, args, inference=inference)


def cmd_train(args):
    if not args.dataset:
        raise SystemExit("train needs --dataset DIR (the folder holding train/ and val/)")
    train_set = load_dataset(args.dataset, "train")
    val_set = load_dataset(args.dataset, "val")
    if args.weights == "coco":
        find_coco_weights(args.coco_weights)  # fail before the slow model build
    config = make_config(args)
    config.display()

    from mrcnn import model as modellib

    model = modellib.MaskRCNN(mode="training", config=config, model_dir=args.logs)
    load_initial_weights(model, args.weights, args.coco_weights)
    # Fine-tuning pretrained weights: the heads are enough on 61 images.
    # From scratch or from ImageNet the whole network has to learn.
    layers = args.layers or ("all" if args.weights in ("none", "imagenet") else "heads")
    print(f"Training {layers} on {train_set.num_images} images, validating on "
          f"{val_set.num_images}, up to epoch {args.epochs}")
    model.train(train_set, val_set, learning_rate=config.LEARNING_RATE,
                epochs=args.epochs, layers=layers)
    print(f"Checkpoints in {model.log_dir}")


def cmd_splash(args):
    if bool(args.image) == bool(args.video):
        raise SystemExit("splash needs exactly one of --image PATH or --video PATH")
    source = args.image or args.video
    if not os.path.isfile(source):  # fail before the slow model build
        raise FileNotFoundError(f"--{'image' if args.image else 'video'} {source!r}: no such file")
    if args.weights == "coco":
        find_coco_weights(args.coco_weights)
    config = make_config(args, inference=True)

    from mrcnn import model as modellib

    model = modellib.MaskRCNN(mode="inference", config=config, model_dir=args.logs)
    load_initial_weights(model, args.weights or "last", args.coco_weights)
    stamp = f"{datetime.datetime.now():%Y%m%dT%H%M%S}"
    if args.image:
        out = args.out or f"splash_{stamp}.png"
        splash_image(model, args.image, out)
    else:
        out = args.out or f"splash_{stamp}.avi"
        splash_video(model, args.video, out)
    print(f"Saved {out}")


COMMANDS = {"train": cmd_train, "splash": cmd_splash}


def build_parser():
    parser = argparse.ArgumentParser(
        description="Train Mask R-CNN to detect balloons, or colour-splash an image/video.",
        epilog="Any BalloonConfig setting: --set NAME=VALUE (repeatable).")
    parser.add_argument("command", choices=sorted(COMMANDS))
    parser.add_argument("--dataset", help="balloon data folder (holds train/ and val/)")
    parser.add_argument("--weights", default=None,
                        help="coco, last, imagenet, none or a .h5 path (train: required; "
                             "splash: default last)")
    parser.add_argument("--coco-weights", default=None,
                        help=f"the COCO weights file for --weights coco "
                             f"(default ./{COCO_WEIGHTS_NAME})")
    parser.add_argument("--logs", default=DEFAULT_LOGS_DIR,
                        help="logs and checkpoints directory (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=30, help="train up to this epoch")
    parser.add_argument("--image", help="splash: image to splash")
    parser.add_argument("--video", help="splash: video to splash (needs OpenCV)")
    parser.add_argument("--out", help="splash: output file (default splash_<time>.png/.avi)")
    parser.add_argument("--layers", default=None,
                        help="heads, 3+, 4+, 5+, all or a regex (default: heads from "
                             "pretrained weights, all from none/imagenet)")
    add_config_options(parser, "BalloonConfig")
    return parser


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "train" and not args.weights:
        parser.error("train needs --weights (coco, last, imagenet, none or a .h5 path)")
    try:
        make_config(args)  # validate the overrides before anything heavy happens
    except ValueError as exc:
        parser.error(str(exc))
    return run_command(COMMANDS, args, seed=args.seed,
                       errors=((FileNotFoundError, 1), (RuntimeError, 1)))


if __name__ == "__main__":
    sys.exit(main())
