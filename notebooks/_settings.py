"""Settings shared by the notebooks in this folder: paths, the small-run switch, configs.

The notebooks run from ``notebooks/`` and import this module first. It puts the
repository root on ``sys.path`` (so ``mrcnn`` and ``samples.shapes.shapes``
import from a clone without installing) and reads three environment variables:

``MRCNN_NOTEBOOK_SMALL``
    ``1`` shrinks everything (64 px images, a handful of images, epochs of
    two steps, narrow FPN and heads, few RoIs) so a notebook runs top to
    bottom in well under a minute on a CPU. The tests (``tests/test_notebooks.py``) set
    it. Unset (or ``0``): real settings (128 px shapes, hundreds of images,
    several epochs of ``ShapesConfig.STEPS_PER_EPOCH`` steps).
``MRCNN_LOGS``
    Directory for training logs and checkpoints (default: ``logs/`` at the
    repository root, i.e. ``../logs`` seen from here).
``MRCNN_WEIGHTS``
    Weights file for the demo (default: ``mask_rcnn_coco.h5`` at the
    repository root, the released 81-class COCO model).
"""

import os
import sys

NOTEBOOK_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT_DIR = os.path.dirname(NOTEBOOK_DIR)
if ROOT_DIR not in sys.path:
    sys.path.insert(0, ROOT_DIR)

# Keep TensorFlow's C++ start-up chatter (info and warning lines) out of the
# notebooks' outputs; set TF_CPP_MIN_LOG_LEVEL=0 before starting to see it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _flag(name):
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


SMALL = _flag("MRCNN_NOTEBOOK_SMALL")
LOGS_DIR = os.path.abspath(os.environ.get("MRCNN_LOGS") or os.path.join(ROOT_DIR, "logs"))
WEIGHTS_PATH = os.path.abspath(os.environ.get("MRCNN_WEIGHTS")
                               or os.path.join(ROOT_DIR, "mask_rcnn_coco.h5"))

# Sizes of the runs: (small, real).
IMAGE_SIZE = 64 if SMALL else 128          # shapes images are square, IMAGE_SIZE px
TRAIN_COUNT = 4 if SMALL else 500          # training images
VAL_COUNT = 2 if SMALL else 50             # validation / evaluation images
EPOCHS_HEADS = 1                           # train heads up to this epoch ...
EPOCHS_ALL = 2 if SMALL else 6             # ... then all layers up to this one
TRAIN_SEED, VAL_SEED = 0, 1                # different seeds: disjoint image sets

# Shapes class names, indexed by class id (0 = background).
SHAPES_CLASS_NAMES = ["BG", "square", "circle", "triangle"]

# Overrides of ShapesConfig for MRCNN_NOTEBOOK_SMALL=1: tiny and fast, not accurate.
# The backbone stays the sample's own (ShapesConfig.BACKBONE).
SMALL_SHAPES_OVERRIDES = dict(
    IMAGES_PER_GPU=2,
    STEPS_PER_EPOCH=2,
    VALIDATION_STEPS=0,  # no validation pass: saves building the test function
    TOP_DOWN_PYRAMID_SIZE=64,
    FPN_CLASSIF_FC_LAYERS_SIZE=64,
    RPN_TRAIN_ANCHORS_PER_IMAGE=64,
    PRE_NMS_LIMIT=500,
    POST_NMS_ROIS_TRAINING=100,
    POST_NMS_ROIS_INFERENCE=50,
    TRAIN_ROIS_PER_IMAGE=16,
    MASK_POOL_SIZE=7,
    MASK_SHAPE=[14, 14],
    MINI_MASK_SHAPE=(28, 28),
    DETECTION_MAX_INSTANCES=10,
)


def shapes_config(inference=False):
    """A `samples.shapes.shapes.ShapesConfig` instance for the notebooks.

    Image size ``IMAGE_SIZE``; with ``SMALL`` also `SMALL_SHAPES_OVERRIDES`.
    ``inference=True`` gives batches of one image (``GPU_COUNT = IMAGES_PER_GPU
    = 1``). ``NAME`` stays ``"shapes"`` so ``MaskRCNN.find_last`` finds the
    checkpoints of either.
    """
    from samples.shapes.shapes import ShapesConfig

    attrs = dict(IMAGE_MIN_DIM=IMAGE_SIZE, IMAGE_MAX_DIM=IMAGE_SIZE)
    if SMALL:
        attrs.update(SMALL_SHAPES_OVERRIDES)
    if inference:
        attrs.update(GPU_COUNT=1, IMAGES_PER_GPU=1)
    name = "NotebookShapesInferenceConfig" if inference else "NotebookShapesConfig"
    return type(name, (ShapesConfig,), attrs)()


def shapes_dataset(count, seed):
    """A prepared `ShapesDataset` of ``count`` images of ``IMAGE_SIZE`` px from ``seed``."""
    from samples.shapes.shapes import ShapesDataset

    dataset = ShapesDataset()
    dataset.load_shapes(count, IMAGE_SIZE, IMAGE_SIZE, seed=seed)
    dataset.prepare()
    return dataset


def load_last_shapes_checkpoint(model):
    """Load ``model.find_last()`` into ``model``; return its path, or None if none exists.

    Prints which weights are used; with none it prints a warning that the
    weights are random (the outputs then only illustrate shapes and code paths).
    """
    try:
        path = model.find_last()
    except FileNotFoundError:
        print(f"WARNING: no shapes checkpoint under {model.model_dir!r} (run "
              f"train_shapes.ipynb first). The model keeps its RANDOM initial weights: "
              f"everything below shows the mechanics, not meaningful predictions.")
        return None
    model.load_weights(path, by_name=True)
    print(f"Loaded the latest shapes checkpoint: {path}")
    return path


# The 80 COCO categories in the order of the released mask_rcnn_coco.h5
# (class id = index; 0 is the background).
COCO_CLASS_NAMES = [
    "BG", "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck",
    "boat", "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird",
    "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe",
    "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard",
    "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl",
    "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza",
    "donut", "cake", "chair", "couch", "potted plant", "bed", "dining table", "toilet",
    "tv", "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave", "oven",
    "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
]


def coco_inference_config():
    """Config matching the released 81-class COCO weights, one image per batch.

    The released file was trained with the old pooling (one bilinear sample per
    bin, ``tf.image.crop_and_resize``). ``ROI_POOLING_METHOD`` is left at
    ``"auto"``: loading a file that records no pooling (the released weights)
    switches the inference model to ``crop_and_resize``, and one of our
    checkpoints (``MRCNN_WEIGHTS``) to the pooling it records. With ``SMALL``
    the images are resized to 256 px (fast, less accurate).
    """
    from mrcnn.config import Config

    attrs = dict(NAME="coco", NUM_CLASSES=len(COCO_CLASS_NAMES), GPU_COUNT=1,
                 IMAGES_PER_GPU=1, BACKBONE="resnet101")
    if SMALL:
        attrs.update(IMAGE_MIN_DIM=256, IMAGE_MAX_DIM=256)
    return type("CocoInferenceConfig", (Config,), attrs)()


def describe():
    """One line saying which settings are in effect."""
    mode = "SMALL (MRCNN_NOTEBOOK_SMALL=1)" if SMALL else "full"
    return (f"settings: {mode}; images {IMAGE_SIZE} px; logs in {LOGS_DIR}")
