"""What the samples' command lines share: ``--set`` overrides, initial weights, running
a command, writing detections out (COCO JSON, pictures, videos).

Each sample is run as a script from a clone (``python samples/<name>/<name>.py``)
and puts the repository root on ``sys.path``, so ``from samples.common import ...``
works without installing anything.
"""

import ast
import os
import sys
import time

from mrcnn.config import BACKBONES
from mrcnn.weights.download import COCO_MODEL_URL as COCO_WEIGHTS_URL
from mrcnn.weights.io import HEAD_LAYERS_FOR_NEW_CLASSES

COCO_WEIGHTS_NAME = "mask_rcnn_coco.h5"
COCO_NUM_CLASSES = 81
# Layers whose weight shapes depend on the class count: skipped when fine-tuning
# the COCO weights to another NUM_CLASSES.
COCO_HEAD_LAYERS = list(HEAD_LAYERS_FOR_NEW_CLASSES)


def parse_config_overrides(items, config_class):
    """``["NAME=VALUE", ...]`` -> ``{NAME: value}``.

    ``NAME`` must be an upper-case setting of ``config_class``; values are read
    as Python literals when possible (``0.002``, ``(8, 16)``, ``True``) and kept as
    strings otherwise (``resnet50``).

    Raises:
        ValueError: naming the item and what was expected.
    """
    overrides = {}
    for item in items or []:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not (sep and name.isupper() and hasattr(config_class, name)):
            raise ValueError(f"--set {item!r}: expected NAME=VALUE with NAME a Config "
                             f"setting (e.g. LEARNING_RATE=0.002)")
        try:
            overrides[name] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            overrides[name] = text
    return overrides


# Command-line options (argparse dests) that map onto Config settings.
_OPTION_FIELDS = (("steps_per_epoch", "STEPS_PER_EPOCH"),
                  ("validation_steps", "VALIDATION_STEPS"),
                  ("learning_rate", "LEARNING_RATE"),
                  ("images_per_gpu", "IMAGES_PER_GPU"),
                  ("backbone", "BACKBONE"))


def add_config_options(parser, config_name, backbones=BACKBONES,
                       backbone_help=None, seed=None, seed_help="random seed for training"):
    """Add the options `config_from_args` reads (``--steps-per-epoch``,
    ``--validation-steps``, ``--image-size``, ``--images-per-gpu``,
    ``--learning-rate``, ``--backbone``, ``--set``) and ``--seed`` to ``parser``;
    ``config_name`` names the sample's Config class in the help, ``backbones``
    the ``--backbone`` choices, ``seed`` the default seed."""
    parser.add_argument("--steps-per-epoch", type=int, default=None, help="STEPS_PER_EPOCH")
    parser.add_argument("--validation-steps", type=int, default=None, help="VALIDATION_STEPS")
    parser.add_argument("--image-size", type=int, default=None,
                        help="IMAGE_MIN_DIM = IMAGE_MAX_DIM (a multiple of 64)")
    parser.add_argument("--images-per-gpu", type=int, default=None, help="IMAGES_PER_GPU")
    parser.add_argument("--learning-rate", type=float, default=None, help="LEARNING_RATE")
    parser.add_argument("--backbone", default=None, choices=backbones, help=backbone_help)
    parser.add_argument("--seed", type=int, default=seed, help=seed_help)
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help=f"override a {config_name} setting")


def config_from_args(config_class, args, extra=None, inference=False):
    """An instance of a subclass of ``config_class`` with the command line applied.

    Applied in order: ``extra`` (settings the sample derives, e.g. NUM_CLASSES),
    ``--image-size`` (IMAGE_MIN_DIM and IMAGE_MAX_DIM), the options in
    `_OPTION_FIELDS` that the sample's parser has and the user gave, ``--set``
    items, and for ``inference`` one image per batch. The Config validates the
    result (ValueError naming the field).
    """
    attrs = dict(extra or {})
    size = getattr(args, "image_size", None)
    if size is not None:
        attrs.update(IMAGE_MIN_DIM=size, IMAGE_MAX_DIM=size)
    for option, field in _OPTION_FIELDS:
        if getattr(args, option, None) is not None:
            attrs[field] = getattr(args, option)
    attrs.update(parse_config_overrides(getattr(args, "set", None), config_class))
    if inference:
        attrs.update(GPU_COUNT=1, IMAGES_PER_GPU=1)
    return type(config_class.__name__, (config_class,), attrs)()


def find_coco_weights(coco_weights=None):
    """Path of the released COCO weights: ``coco_weights``, else ``./mask_rcnn_coco.h5``.

    Raises:
        FileNotFoundError: saying which file to download and where to put it.
    """
    path = coco_weights or os.path.join(os.getcwd(), COCO_WEIGHTS_NAME)
    if os.path.isfile(path):
        return path
    raise FileNotFoundError(
        f"COCO weights not found at {os.path.abspath(path)!r}. Download {COCO_WEIGHTS_NAME} "
        f"from the matterport Mask_RCNN v2.0 GitHub release ({COCO_WEIGHTS_URL}) and save it "
        f"there, or pass its location with --coco-weights PATH.")


def load_initial_weights(model, weights, coco_weights=None):
    """Load ``--weights`` into ``model``: ``coco``, ``last``, ``imagenet``, ``none`` or a path.

    The COCO file's class-specific layers (`COCO_HEAD_LAYERS`) are skipped when
    the model's NUM_CLASSES differs from COCO's 81.

    Returns:
        the path loaded, or None for ``none``.
    """
    from mrcnn.weights import imagenet

    if weights == "none":
        print("No initial weights (training from scratch)")
        return None
    if weights == "imagenet":
        path = model.get_imagenet_weights()  # says where to put the file if missing
        print(f"Loading ImageNet backbone weights {path}")
        imagenet.load_imagenet_backbone(model.keras_model, path)
        return path
    if weights == "last":
        path = model.find_last()
    elif weights == "coco":
        path = find_coco_weights(coco_weights)
    elif os.path.isfile(weights):
        path = weights
    else:
        raise FileNotFoundError(f"--weights {weights!r}: no such file (expected coco, last, "
                                f"imagenet, none or a .h5 path)")
    exclude = None
    if model.config.NUM_CLASSES != COCO_NUM_CLASSES and (
            weights == "coco" or os.path.basename(path) == COCO_WEIGHTS_NAME):
        exclude = COCO_HEAD_LAYERS
    print(f"Loading weights {path}" + (f" (without {', '.join(exclude)})" if exclude else ""))
    model.load_weights(path, by_name=True, exclude=exclude)
    return path


def parse_sample_args(parser, argv, *validators):
    """Parse a sample's command line the way every sample's ``main`` does:
    ``args.start_time`` is set, and each ``validator(args)`` (e.g. building the
    sample's Config) runs before anything heavy happens; a ValueError becomes
    the parser's usage error. Returns ``args``."""
    args = parser.parse_args(argv)
    args.start_time = time.time()
    try:
        for validate in validators:
            validate(args)
    except ValueError as exc:
        parser.error(str(exc))
    return args


def run_command(commands, args, seed=None, errors=((FileNotFoundError, 1),)):
    """Run ``commands[args.command](args)`` the way every sample's ``main`` does.

    ``seed`` (not None) first seeds Python, NumPy and TensorFlow
    (``keras.utils.set_random_seed``). An exception of a type listed in
    ``errors`` (``(type, exit code)`` pairs; e.g. a missing file or checkpoint,
    whose message says what to do) is printed as ``error: ...`` on stderr and
    its exit code returned; 0 on success.
    """
    if seed is not None:
        import keras
        keras.utils.set_random_seed(seed)
    try:
        commands[args.command](args)
    except tuple(kind for kind, _ in errors) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return next(code for kind, code in errors if isinstance(exc, kind))
    return 0


def add_export_options(parser):
    """Add ``--video PATH`` and ``--polygons``, the options of `export_results`
    a sample's ``detect`` command passes on."""
    parser.add_argument("--video", help="detect: a video; writes its frames with the "
                                        "detections drawn and COCO JSON of every frame")
    parser.add_argument("--polygons", action="store_true",
                        help="detect: COCO segmentations as polygons (default: RLE)")


def export_results(model, inputs, out_dir, class_names, polygons=False, pictures=True,
                   progress=True, batch_size=None):
    """Detect on images, folders of images and videos, and write the results into ``out_dir``.

    Args:
        model: an inference `MaskRCNN` (anything with ``detect``).
        inputs: a prepared `Dataset` (its images), or a path or list of paths:
            a folder (the images in it), a video (an extension in
            `mrcnn.inference.video.VIDEO_EXTENSIONS`) or an image file.
        out_dir: the output folder (created).
        class_names: indexed by class id, ``"BG"`` first.
        polygons: COCO polygon segmentations instead of RLE.
        pictures: draw each image's detections into ``<stem>_detections.png``.

    Writes (formats: `mrcnn.inference.results`):

    * for the images, all together: ``coco_results.json`` (pycocotools
      ``loadRes``), ``coco_dataset.json`` (`CocoDataset`), and a picture per image;
    * for each video: ``<stem>_detections.avi`` (``.gif`` for a GIF) with the
      detections drawn on every frame, ``<stem>_coco_results.json`` and
      ``<stem>_coco_dataset.json``.

    Returns:
        ``{"images": CocoExport or None, "videos": [VideoExport, ...]}``.

    Raises:
        FileNotFoundError: an input that does not exist (before anything runs).
    """
    from mrcnn.data.dataset import Dataset
    from mrcnn.inference.results import detect_folder_to_coco, list_images
    from mrcnn.inference.video import VIDEO_EXTENSIONS, detect_video

    out_dir = os.fspath(out_dir)
    images, videos = [], []
    if isinstance(inputs, Dataset):
        images = inputs
    else:
        for path in [inputs] if isinstance(inputs, (str, os.PathLike)) else inputs:
            path = os.fspath(path)
            if os.path.isdir(path):
                images.extend(list_images(path))
            elif not os.path.isfile(path):
                raise FileNotFoundError(f"{path!r}: no such image, folder or video")
            elif path.lower().endswith(VIDEO_EXTENSIONS):
                videos.append(path)
            else:
                images.append(path)
    exported = {"images": None, "videos": []}
    if isinstance(images, Dataset) or images:
        exported["images"] = detect_folder_to_coco(
            model, images, os.path.join(out_dir, "coco_results.json"),
            dataset_json=os.path.join(out_dir, "coco_dataset.json"),
            class_names=class_names, polygons=polygons, batch_size=batch_size,
            pictures_dir=out_dir if pictures else None, progress=progress)
    stems = set()
    for path in videos:
        base = stem = os.path.splitext(os.path.basename(path))[0]
        k = 1
        while stem in stems:  # two videos of the same name in different folders
            stem, k = f"{base}_{k}", k + 1
        stems.add(stem)
        ext = ".gif" if path.lower().endswith(".gif") else ".avi"
        exported["videos"].append(detect_video(
            model, path, os.path.join(out_dir, f"{stem}_detections{ext}"), class_names,
            results_json=os.path.join(out_dir, f"{stem}_coco_results.json"),
            dataset_json=os.path.join(out_dir, f"{stem}_coco_dataset.json"),
            polygons=polygons, batch_size=batch_size, progress=progress))
    return exported
