"""Mask R-CNN configuration.

`Config` holds every hyper-parameter as a class attribute. Users subclass it and
override what they need; derived fields (``BATCH_SIZE``, ``IMAGE_SHAPE``,
``IMAGE_META_SIZE``) are computed in ``__init__`` and the whole configuration is
validated there, so a mistake surfaces as a ``ValueError`` naming the field
before any model is built.

Names and defaults follow the well-known Keras implementation so existing
subclasses keep working. Settings that implementation did not have are
documented below under "Additions".

Array-valued settings (``MEAN_PIXEL``, ``BBOX_STD_DEV``, ...) are copied onto the
instance in ``__init__``: an in-place change on one config never leaks into
another config or into a subclass.
"""

import copy
import difflib
import inspect
import math
import warnings

import numpy as np

from mrcnn.constants import LOSS_NAMES, RESIZE_MODES  # noqa: F401 (validated here)
from mrcnn.constants import ROI_POOLING_CHOICES as ROI_POOLING_METHODS
from mrcnn.constants import HEAD_ARCHITECTURES, ROI_ALIGN_AGGREGATIONS
from mrcnn.constants import LEARNING_RATE_SCHEDULES  # noqa: F401 (re-exported)
from mrcnn.config_checks import C4_DEFAULTS  # noqa: F401 (re-exported)
from mrcnn.config_checks import apply_c4_defaults, validate_c4, validate_schedule
from mrcnn.structures.image_meta import meta_size
from mrcnn.structures.keypoints import validate_keypoint_settings

OPTIMIZERS = ("SGD", "Adam", "AdamW")
MASK_LOSSES = ("sigmoid", "softmax")
# Named backbones (`Config.BACKBONE`), built by mrcnn.modeling.backbone
# (BACKBONE_SPECS there has one entry per name; tested).
BACKBONES = ("resnet50", "resnet101", "resnext50_32x4d", "resnext101_32x4d",
             "resnext101_64x4d", "resnext101_32x8d")


# Set by Config.__init__ (derived from the others), not by users.
DERIVED_SETTINGS = ("BATCH_SIZE", "IMAGE_SHAPE", "IMAGE_META_SIZE")


def _warn_unknown_settings(config):
    """Warn about upper-case attributes of a Config subclass that no part of the
    package reads (a typo such as ``IMAGE_MAX_DIMS``, or a setting of another
    version), naming the closest known setting."""
    known = {n for n in vars(Config) if n.isupper()} | set(DERIVED_SETTINGS)
    own = set(getattr(config, "USER_SETTINGS", ()) or ())
    for cls in type(config).__mro__:
        if cls is Config or not issubclass(cls, Config):
            continue
        for name in vars(cls):
            if not name.isupper() or name in known or name in own:
                continue
            close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]}?" if close else ""
            warnings.warn(f"{cls.__name__}.{name}: no part of mrcnn reads this setting{hint} "
                          "(list your own settings in USER_SETTINGS to silence this)",
                          UserWarning, stacklevel=3)


def built_pooling_method(config):
    """The pooling a model is BUILT with: ``config.ROI_POOLING_METHOD``, with
    "auto" meaning "roi_align" (an inference model may switch when it loads a
    weights file, see `mrcnn.engine.checkpoints`)."""
    method = config.ROI_POOLING_METHOD
    return "roi_align" if method == "auto" else method


class Config:
    """Base configuration. Subclass it and override attributes.

    Image-related conventions used throughout the package: images are
    ``[H, W, C]``; boxes are ``(y1, x1, y2, x2)``.
    """

    # Name of the configuration; used in log-directory and checkpoint names.
    NAME = None

    # Number of GPUs (replicas) and images per GPU. BATCH_SIZE = product.
    # GPU_COUNT > 1 trains with tf.distribute.MirroredStrategy over that many
    # GPUs (see mrcnn.engine.distribute; TF_CONFIG selects multi-worker training).
    GPU_COUNT = 1
    IMAGES_PER_GPU = 2

    # Steps per epoch and validation steps at the end of each epoch.
    STEPS_PER_EPOCH = 1000
    VALIDATION_STEPS = 50

    # "resnet50", "resnet101" (the released weights' Caffe-style ResNet),
    # "resnext50_32x4d", "resnext101_32x4d", "resnext101_64x4d", "resnext101_32x8d"
    # (ResNeXt as torchvision builds it; see mrcnn.modeling.backbone), or a
    # callable ``f(input_image, stage5, train_bn)`` returning ``[C1, C2, C3, C4, C5]``.
    # A callable also needs COMPUTE_BACKBONE_SHAPE: ``f(image_shape) -> [[h, w], ...]``
    # per level.
    BACKBONE = "resnet101"
    COMPUTE_BACKBONE_SHAPE = None

    # The head (an addition): "fpn" (FPN P2..P6, the released weights) or "c4"
    # (the paper's Figure 4 left: the RPN and RoIAlign on the stride-16 C4 map,
    # res5 as the box head, masks from a 2x deconvolution of its output; see
    # mrcnn.modeling.roi_heads.c4). With "c4", C4_DEFAULTS (mrcnn.config_checks)
    # gives the paper's values to the settings a subclass does not set: one
    # stride [16], POOL_SIZE 14, 14x14 masks, 64 RoIs per image, 300 proposals
    # at test time; all RPN_ANCHOR_SCALES go on the one level (5 x 3 anchors).
    HEAD_ARCHITECTURE = "fpn"

    # Strides of the FPN levels P2..P6 relative to the input image ([16]: C4).
    BACKBONE_STRIDES = [4, 8, 16, 32, 64]

    # Width of the fully-connected layers of the classification head.
    FPN_CLASSIF_FC_LAYERS_SIZE = 1024

    # Channels of the top-down FPN layers.
    TOP_DOWN_PYRAMID_SIZE = 256

    # Number of classes including background.
    NUM_CLASSES = 1

    # Anchor side lengths in pixels, one per FPN level (P2..P6).
    RPN_ANCHOR_SCALES = (32, 64, 128, 256, 512)
    # Anchor width/height ratios.
    RPN_ANCHOR_RATIOS = [0.5, 1, 2]
    # Anchor stride in feature-map cells (1: an anchor at every cell).
    RPN_ANCHOR_STRIDE = 1
    # Channels of the RPN head's shared 3x3 convolution (an addition): 512 in
    # the released weights; 256 in the FPN paper's head (and detectron2's,
    # torchvision's), which halves the RPN's cost, the largest single part of
    # an FPN training step at 1024 px. Weights of the other width do not load
    # into rpn_model: exclude it (load_weights(..., exclude=["rpn_model"])).
    RPN_HEAD_CHANNELS = 512

    # IoU threshold of the NMS over RPN proposals.
    RPN_NMS_THRESHOLD = 0.7
    # Anchors sampled per image for the RPN loss.
    RPN_TRAIN_ANCHORS_PER_IMAGE = 256
    # Top anchors (by score) kept before NMS.
    PRE_NMS_LIMIT = 6000
    # Proposals kept after NMS.
    POST_NMS_ROIS_TRAINING = 2000
    POST_NMS_ROIS_INFERENCE = 1000

    # Store instance masks cropped to their box and resized to MINI_MASK_SHAPE.
    USE_MINI_MASK = True
    MINI_MASK_SHAPE = (56, 56)  # (height, width)

    # How images are resized for the network, see utils.resize_image:
    # "none", "square", "pad64" or "crop".
    IMAGE_RESIZE_MODE = "square"
    IMAGE_MIN_DIM = 800
    IMAGE_MAX_DIM = 1024
    # Minimum scale-up factor (0: none).
    IMAGE_MIN_SCALE = 0
    # Channels of the input image (3 for RGB).
    IMAGE_CHANNEL_COUNT = 3

    # Per-channel mean subtracted from the image (RGB).
    MEAN_PIXEL = np.array([123.7, 116.8, 103.9])

    # RoIs per image fed to the heads during training, and fraction positive.
    TRAIN_ROIS_PER_IMAGE = 200
    ROI_POSITIVE_RATIO = 0.33

    # Pooled sizes of the classification and mask heads.
    POOL_SIZE = 7
    MASK_POOL_SIZE = 14
    # Output mask size of the mask head (2 x MASK_POOL_SIZE).
    MASK_SHAPE = [28, 28]
    # Width of the mask head's convolutions (an addition; 256 as in the paper
    # and the released weights). On a CPU the mask head dominates a small
    # model's training step; fewer channels make it proportionally cheaper.
    MASK_HEAD_CONV_CHANNELS = 256
    # The mask head's output and loss (additions; the paper's Table 2b and its
    # class-agnostic variant; see mrcnn.modeling.roi_heads.mask_head). The
    # defaults are the paper's choice and the released weights' layout.
    # MASK_LOSS "sigmoid": an independent per-pixel sigmoid per class, the
    # binary cross-entropy on the RoI's ground-truth class channel only;
    # "softmax": a per-pixel softmax over the NUM_CLASSES channels and its
    # cross-entropy (the paper's "multinomial loss"), the target being the
    # RoI's class at its mask's pixels and background (class 0) elsewhere.
    MASK_LOSS = "sigmoid"
    # True: one mask per RoI whatever its class (the layer mrcnn_mask has 1
    # output channel instead of NUM_CLASSES; weights files with the released
    # layout then load with exclude=["mrcnn_mask"]). The one channel is the
    # logit of "object" against a background logit fixed at 0, whose two-way
    # softmax is the sigmoid: both MASK_LOSS values then compute the same.
    CLASS_AGNOSTIC_MASK = False

    # Keypoints (additions; Keypoint R-CNN, the paper's Section 5; see
    # mrcnn.structures.keypoints and mrcnn.modeling.roi_heads.keypoint_head).
    # NUM_KEYPOINTS 0: no keypoint head (the released weights' layout).
    # KEYPOINT_NAMES: one name per keypoint (optional); KEYPOINT_FLIP_MAP: pairs
    # (names or indices) swapped by a horizontal flip, e.g. the COCO person's
    # (("left_eye", "right_eye"), ...). KEYPOINT_CLASSES: None gives every class
    # the K keypoints; {class_id: [names or indices]} gives each listed class its
    # own set and the others none (their RoIs cost no keypoint loss).
    NUM_KEYPOINTS = 0
    KEYPOINT_NAMES = ()
    KEYPOINT_FLIP_MAP = ()
    KEYPOINT_CLASSES = None
    # The head: KEYPOINT_HEAD_CONV 3x3 convs of KEYPOINT_HEAD_CHANNELS on
    # KEYPOINT_POOL_SIZE RoIAligned features, then a deconvolution and 2x
    # bilinear upsampling to KEYPOINT_HEATMAP_SIZE (4 x the pool size).
    KEYPOINT_HEAD_CONV = 8
    KEYPOINT_HEAD_CHANNELS = 512
    KEYPOINT_POOL_SIZE = 14
    KEYPOINT_HEATMAP_SIZE = 56
    KEYPOINT_LOSS_WEIGHT = 1.0
    # The heatmaps cover each RoI scaled by this about its centre, in training
    # (features and targets) and detection (decoding); 1.0 is the paper's. Above
    # 1 for keypoints on an object's box edge (corners, extremities): a box a
    # pixel too tight would cut them off, as a heatmap cannot reach past its RoI.
    KEYPOINT_ROI_EXPAND = 1.0
    # Per-keypoint OKS sigmas of the keypoint AP; None: COCO's person sigmas
    # (K must be 17 then).
    KEYPOINT_OKS_SIGMAS = None

    # Maximum ground-truth instances used per image.
    MAX_GT_INSTANCES = 100

    # Standard deviations that normalise box-refinement targets.
    RPN_BBOX_STD_DEV = np.array([0.1, 0.1, 0.2, 0.2])
    BBOX_STD_DEV = np.array([0.1, 0.1, 0.2, 0.2])

    # Final detections per image, score threshold, and per-class NMS IoU.
    DETECTION_MAX_INSTANCES = 100
    DETECTION_MIN_CONFIDENCE = 0.7
    DETECTION_NMS_THRESHOLD = 0.3

    # SGD with momentum.
    LEARNING_RATE = 0.001
    LEARNING_MOMENTUM = 0.9
    # L2 weight decay on kernels (not on batch-norm gamma/beta).
    WEIGHT_DECAY = 0.0001

    # Optimizer (an addition): "SGD" (with LEARNING_MOMENTUM, the original
    # choice), "Adam", or "AdamW" (decoupled weight decay of WEIGHT_DECAY, and
    # no L2 term in the loss). Adam converges much faster when training from
    # scratch (see samples/shapes).
    OPTIMIZER = "SGD"

    # Learning-rate schedule (an addition; see mrcnn.engine.schedules). The
    # number given to train(learning_rate=...) is the peak rate; steps count
    # over the whole run (epoch * STEPS_PER_EPOCH + step), so the schedule
    # continues across train() calls and resumed runs. "constant" with
    # WARMUP_STEPS = 0 (the defaults) trains at that rate, as before; "step"
    # multiplies it by LEARNING_RATE_STEP_FACTOR after each epoch listed in
    # LEARNING_RATE_STEP_EPOCHS; "cosine" decays it along half a cosine to
    # LEARNING_RATE_COSINE_MIN_FACTOR x the peak at the end of epoch
    # LEARNING_RATE_COSINE_EPOCHS (flat after). A Keras LearningRateSchedule
    # passed to train() is used as given (these fields then stay at defaults).
    LEARNING_RATE_SCHEDULE = "constant"
    # Linear warm-up over the first WARMUP_STEPS steps (0: none), from
    # WARMUP_FACTOR x the rate to the full rate (in (0, 1]); it multiplies the
    # decay. It lets a larger rate start from random weights without diverging
    # (samples/shapes/README.md).
    WARMUP_STEPS = 0
    WARMUP_FACTOR = 0.001
    # "step": 1-based epoch numbers, increasing, after which the rate drops,
    # e.g. (11,) runs epochs 12 and up at LEARNING_RATE_STEP_FACTOR x the rate.
    LEARNING_RATE_STEP_EPOCHS = ()
    LEARNING_RATE_STEP_FACTOR = 0.1
    # "cosine": the length of the decay in epochs (required) and its final factor.
    LEARNING_RATE_COSINE_EPOCHS = None
    LEARNING_RATE_COSINE_MIN_FACTOR = 0.0

    # Weight of each loss in the total.
    LOSS_WEIGHTS = {
        "rpn_class_loss": 1.,
        "rpn_bbox_loss": 1.,
        "mrcnn_class_loss": 1.,
        "mrcnn_bbox_loss": 1.,
        "mrcnn_mask_loss": 1.,
    }

    # Train the heads on RPN proposals (True) or on RoIs given as input (False).
    USE_RPN_ROIS = True

    # ---- Head sampling (additions; see mrcnn.modeling.roi_heads.sampling) ----
    # Add the ground-truth boxes to the proposals the heads sample from, as
    # torchvision and detectron2 do (the original did not): the heads get
    # exact positives from the first step. On the shapes demo, 3 seeds: mask
    # AP 0.725 vs 0.697 without (samples/shapes/README.md).
    TRAIN_ROIS_ADD_GT_BOXES = True
    # False keeps ROI_POSITIVE_RATIO (1 positive : 2 negatives at 0.33) and
    # pads the rest of the TRAIN_ROIS_PER_IMAGE rows (padding rows count in no
    # loss); True fills every row with negatives when there are enough
    # (torchvision's sampler; on the shapes demo, one seed: mask AP within
    # the seed spread, masks 8 % too large).
    TRAIN_ROIS_FILL_NEGATIVES = False

    # Batch-norm layers: False freezes them (default, right for small batches),
    # True trains them, None follows the Keras training flag.
    TRAIN_BN = False

    # Gradient clipping by global norm.
    GRADIENT_CLIP_NORM = 5.0

    # ---- Additions (not in the original implementation) ----

    # How RoIs are pooled from the FPN levels: "roi_align" is true RoIAlign
    # (bilinear samples averaged in each bin, no quantisation); "crop_and_resize"
    # reproduces the old implementation (tf.image.crop_and_resize, one sample
    # per bin) for weights trained with it. "auto" builds with roi_align and,
    # in inference mode, load_weights() switches to the pooling the file was
    # trained with: our checkpoints record it, files without the record (the
    # released COCO weights) get crop_and_resize. A training model keeps
    # roi_align. An explicit method is always used (warned when it differs
    # from the file's record). "roi_pool" (Fast R-CNN's RoIPool: box and bins
    # quantised, max) and "roi_warp" (box quantised, then sampled as RoIAlign)
    # are the paper's Table 2c baselines (mrcnn.ops.quantized); they keep
    # RoIAlign's level rule and mask targets, only the features' pooling changes.
    ROI_POOLING_METHOD = "auto"
    # RoIAlign samples per bin along each axis (<= 0: adaptive,
    # ceil(roi_size / pooled_size)).
    ROI_ALIGN_SAMPLING_RATIO = 2
    # RoIAlign half-pixel alignment (True is the correct convention).
    ROI_ALIGN_ALIGNED = True
    # How a RoIAlign (and RoIWarp) bin aggregates its samples: "avg" (the
    # mean) or "max" (the paper: "aggregate the result (using max or
    # average)"; ties go to the first sample, see mrcnn.ops).
    ROI_ALIGN_AGGREGATION = "avg"

    # Training: an image whose loading or target building raises is dropped
    # (logged the first few times, counted per epoch as "skipped_images")
    # instead of stopping train(). A data set where every image fails still
    # raises.
    SKIP_BAD_IMAGES = False

    # Reproducible training: with an int SEED, train() seeds Python, NumPy,
    # TensorFlow and the data pipeline (shuffle order, per-image random
    # choices). DETERMINISTIC = True also enables TensorFlow's op determinism
    # (process-wide, slower; seed 0 when SEED is None); on a GPU the RoIAlign
    # gradient then runs through the pure-TF maths instead of the CUDA kernel,
    # which accumulates with atomicAdd (see mrcnn.ops._compiled). MaskRCNN()
    # seeds before building the graph, so the initial weights are reproducible too.
    SEED = None
    DETERMINISTIC = False

    # Mixed precision (see mrcnn.engine.precision): None keeps float32 everywhere;
    # "mixed_float16" computes convolutions in float16 with dynamic loss
    # scaling (GPUs with tensor cores); "mixed_bfloat16" in bfloat16 (TPUs,
    # Ampere+ GPUs, CPUs with AVX512_BF16/AMX). Variables, boxes, proposals,
    # NMS, targets and losses stay float32 either way. For bf16 inference only,
    # set it on the inference config alone: weights trained in float32 load
    # unchanged (benchmarks/bf16_agreement.py measures how close the
    # detections stay; figures in benchmarks/README.md).
    MIXED_PRECISION = None
    # XLA auto-clustering of the graph's compatible parts (see mrcnn.engine.xla):
    # process-wide; speeds up GPUs, not the CPU (measured).
    XLA = False
    # Fold each frozen batch norm (TRAIN_BN False) into the convolution before
    # it (kernel * gamma / sqrt(var + eps), bias (b - mean) * that + beta),
    # computed in the graph from the same variables on every call, so the
    # weights, their names and files stay unfolded (mrcnn.modeling.folding).
    # Removes a normalisation pass over every feature map; outputs agree with
    # the unfolded graph within float32 rounding. On the legacy crop_and_resize
    # path too, except RoIs reaching the image's right / bottom edge, whose
    # last sample flips with any rounding change (folding or not; see
    # mrcnn.modeling.folding). The training graph folds too: the gradients of
    # the kernel, bias, gamma and beta flow through the folded kernel and bias
    # (the same maths; 0.88-0.97x the float32 step time at 1024 px, best of
    # alternated runs). False
    # builds both graphs exactly as before.
    FOLD_BATCH_NORM = True

    # Your own settings in a subclass (read by your code, not the package):
    # name them here and no "unknown setting" warning is given for them.
    USER_SETTINGS = ()

    def __init__(self):
        _warn_unknown_settings(self)
        apply_c4_defaults(self)
        # Give the instance its own copies of mutable class-level values.
        for name in dir(self):
            if name.isupper():
                value = getattr(self, name)
                if isinstance(value, (np.ndarray, list, dict)):
                    setattr(self, name, copy.deepcopy(value))

        # A function assigned in a class body would become a bound method on the
        # instance; keep the plain function so it is called as f(input_image, ...).
        for name in ("BACKBONE", "COMPUTE_BACKBONE_SHAPE"):
            raw = inspect.getattr_static(self, name)
            if isinstance(raw, (staticmethod, classmethod)):
                raw = raw.__func__
            if inspect.isfunction(raw):
                setattr(self, name, raw)

        self.BATCH_SIZE = self.IMAGES_PER_GPU * self.GPU_COUNT

        if self.IMAGE_RESIZE_MODE == "crop":
            side = self.IMAGE_MIN_DIM
        else:
            side = self.IMAGE_MAX_DIM
        self.IMAGE_SHAPE = np.array([side, side, self.IMAGE_CHANNEL_COUNT])

        # image_id(1) + original_image_shape(3) + image_shape(3) + window(4)
        # + scale(1) + active_class_ids(NUM_CLASSES)
        self.IMAGE_META_SIZE = meta_size(self.NUM_CLASSES)

        self.validate()

    # ------------------------------------------------------------------
    def validate(self):
        """Raise ValueError naming the first invalid field."""
        def fail(field, msg):
            raise ValueError(f"{type(self).__name__}.{field}: {msg}")

        def positive_int(field):
            v = getattr(self, field)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                fail(field, f"expected a positive integer, got {v!r}")

        for field in ("GPU_COUNT", "IMAGES_PER_GPU", "STEPS_PER_EPOCH",
                      "NUM_CLASSES", "RPN_ANCHOR_STRIDE", "RPN_TRAIN_ANCHORS_PER_IMAGE",
                      "PRE_NMS_LIMIT", "POST_NMS_ROIS_TRAINING",
                      "POST_NMS_ROIS_INFERENCE", "TRAIN_ROIS_PER_IMAGE", "POOL_SIZE",
                      "MASK_POOL_SIZE", "MAX_GT_INSTANCES", "DETECTION_MAX_INSTANCES",
                      "IMAGE_CHANNEL_COUNT", "TOP_DOWN_PYRAMID_SIZE",
                      "FPN_CLASSIF_FC_LAYERS_SIZE", "MASK_HEAD_CONV_CHANNELS",
                      "RPN_HEAD_CHANNELS"):
            positive_int(field)
        if self.NUM_CLASSES < 2:
            fail("NUM_CLASSES", f"must be >= 2 (background plus at least one class), "
                 f"got {self.NUM_CLASSES}; set it in your Config subclass")
        if isinstance(self.VALIDATION_STEPS, bool) or not isinstance(
                self.VALIDATION_STEPS, (int, np.integer)) or self.VALIDATION_STEPS < 0:
            fail("VALIDATION_STEPS", f"expected an integer >= 0, got {self.VALIDATION_STEPS!r}")

        if self.IMAGE_RESIZE_MODE not in RESIZE_MODES:
            fail("IMAGE_RESIZE_MODE", f"unknown mode {self.IMAGE_RESIZE_MODE!r}; "
                 f"expected one of {RESIZE_MODES}")
        if self.IMAGE_RESIZE_MODE in ("square", "none", "pad64"):
            if not self.IMAGE_MAX_DIM or self.IMAGE_MAX_DIM % 64:
                fail("IMAGE_MAX_DIM", f"must be a positive multiple of 64 (2**6, the "
                     f"coarsest FPN stride) for mode {self.IMAGE_RESIZE_MODE!r}, "
                     f"got {self.IMAGE_MAX_DIM}")
        if self.IMAGE_RESIZE_MODE == "crop":
            if not self.IMAGE_MIN_DIM or self.IMAGE_MIN_DIM % 64:
                fail("IMAGE_MIN_DIM", f"must be a positive multiple of 64 for mode "
                     f"'crop', got {self.IMAGE_MIN_DIM}")
        if self.IMAGE_MIN_DIM and self.IMAGE_MAX_DIM and \
                self.IMAGE_RESIZE_MODE != "crop" and self.IMAGE_MIN_DIM > self.IMAGE_MAX_DIM:
            fail("IMAGE_MIN_DIM", f"({self.IMAGE_MIN_DIM}) exceeds IMAGE_MAX_DIM "
                 f"({self.IMAGE_MAX_DIM})")

        mean = np.asarray(self.MEAN_PIXEL)
        if mean.shape != (self.IMAGE_CHANNEL_COUNT,):
            fail("MEAN_PIXEL", f"expected {self.IMAGE_CHANNEL_COUNT} values (one per "
                 f"channel, IMAGE_CHANNEL_COUNT), got shape {mean.shape}")
        for field in ("RPN_BBOX_STD_DEV", "BBOX_STD_DEV"):
            v = np.asarray(getattr(self, field))
            if v.shape != (4,) or np.any(v <= 0):
                fail(field, f"expected 4 positive values, got {getattr(self, field)!r}")

        if isinstance(self.BACKBONE, str):
            if self.BACKBONE not in BACKBONES:
                fail("BACKBONE", f"unknown backbone {self.BACKBONE!r}; expected one of "
                     f"{', '.join(map(repr, BACKBONES))} or a callable")
        elif callable(self.BACKBONE):
            if self.COMPUTE_BACKBONE_SHAPE is None:
                fail("COMPUTE_BACKBONE_SHAPE", "a callable BACKBONE needs "
                     "COMPUTE_BACKBONE_SHAPE(image_shape) -> per-level [h, w]")
        else:
            fail("BACKBONE", f"expected a name or a callable, got {self.BACKBONE!r}")

        if self.HEAD_ARCHITECTURE not in HEAD_ARCHITECTURES:
            fail("HEAD_ARCHITECTURE", f"expected one of {HEAD_ARCHITECTURES}, got "
                 f"{self.HEAD_ARCHITECTURE!r}")
        if self.HEAD_ARCHITECTURE == "c4":
            validate_c4(self, fail)
        elif len(self.BACKBONE_STRIDES) != len(self.RPN_ANCHOR_SCALES):
            fail("RPN_ANCHOR_SCALES", f"needs one scale per FPN level: "
                 f"{len(self.BACKBONE_STRIDES)} strides, "
                 f"{len(self.RPN_ANCHOR_SCALES)} scales")
        if len(self.RPN_ANCHOR_RATIOS) < 1 or any(r <= 0 for r in self.RPN_ANCHOR_RATIOS):
            fail("RPN_ANCHOR_RATIOS", f"expected positive ratios, got {self.RPN_ANCHOR_RATIOS}")

        for field in ("RPN_NMS_THRESHOLD", "ROI_POSITIVE_RATIO",
                      "DETECTION_MIN_CONFIDENCE", "DETECTION_NMS_THRESHOLD"):
            v = getattr(self, field)
            if not 0 <= v <= 1:
                fail(field, f"expected a value in [0, 1], got {v}")
        if len(self.MINI_MASK_SHAPE) != 2 or min(self.MINI_MASK_SHAPE) < 1:
            fail("MINI_MASK_SHAPE", f"expected (height, width), got {self.MINI_MASK_SHAPE}")
        if self.HEAD_ARCHITECTURE == "fpn" and \
                list(self.MASK_SHAPE) != [2 * self.MASK_POOL_SIZE] * 2:
            fail("MASK_SHAPE", f"the mask head upsamples MASK_POOL_SIZE x2, so expected "
                 f"{[2 * self.MASK_POOL_SIZE] * 2}, got {list(self.MASK_SHAPE)}")

        unknown = set(self.LOSS_WEIGHTS) - set(LOSS_NAMES)
        if unknown:
            fail("LOSS_WEIGHTS", f"unknown loss names {sorted(unknown)}; expected "
                 f"keys from {LOSS_NAMES}")
        if self.ROI_POOLING_METHOD not in ROI_POOLING_METHODS:
            fail("ROI_POOLING_METHOD", f"expected one of {ROI_POOLING_METHODS}, got "
                 f"{self.ROI_POOLING_METHOD!r}")
        if self.ROI_ALIGN_AGGREGATION not in ROI_ALIGN_AGGREGATIONS:
            fail("ROI_ALIGN_AGGREGATION", f"expected one of {ROI_ALIGN_AGGREGATIONS}, got "
                 f"{self.ROI_ALIGN_AGGREGATION!r}")
        if self.LEARNING_RATE <= 0 or not math.isfinite(self.LEARNING_RATE):
            fail("LEARNING_RATE", f"expected a positive number, got {self.LEARNING_RATE}")
        if self.MASK_LOSS not in MASK_LOSSES:
            fail("MASK_LOSS", f"expected one of {MASK_LOSSES}, got {self.MASK_LOSS!r}")
        if not isinstance(self.CLASS_AGNOSTIC_MASK, (bool, np.bool_)):
            fail("CLASS_AGNOSTIC_MASK", f"expected True (one mask per RoI) or False (one "
                 f"per class), got {self.CLASS_AGNOSTIC_MASK!r}")
        for field in ("SKIP_BAD_IMAGES", "DETERMINISTIC", "XLA", "TRAIN_ROIS_ADD_GT_BOXES",
                      "TRAIN_ROIS_FILL_NEGATIVES", "FOLD_BATCH_NORM"):
            if not isinstance(getattr(self, field), (bool, np.bool_)):
                fail(field, f"expected True or False, got {getattr(self, field)!r}")
        if self.SEED is not None and (isinstance(self.SEED, bool) or not isinstance(
                self.SEED, (int, np.integer)) or self.SEED < 0):
            fail("SEED", f"expected None or an integer >= 0, got {self.SEED!r}")
        if self.OPTIMIZER not in OPTIMIZERS:
            fail("OPTIMIZER", f"expected one of {OPTIMIZERS}, got {self.OPTIMIZER!r}")
        validate_schedule(self, fail)
        validate_keypoint_settings(self, fail)
        if self.MIXED_PRECISION not in (None, False, "float32", "mixed_float16",
                                        "mixed_bfloat16"):
            fail("MIXED_PRECISION", f"expected None, 'mixed_float16' or 'mixed_bfloat16', "
                 f"got {self.MIXED_PRECISION!r}")
        if self.TRAIN_BN not in (True, False, None):
            fail("TRAIN_BN", f"expected True, False or None, got {self.TRAIN_BN!r}")

    def validate_for_training(self):
        """Raise ValueError when these settings cannot train (inference may still work).

        The training graph has one input size (``IMAGE_SHAPE``) and one constant
        set of anchors, so every training image must come out of the resize at
        that size: "square" (pads to IMAGE_MAX_DIM) and "crop" (random
        IMAGE_MIN_DIM crops) do; "pad64" and "none" give each image its own size.
        """
        if self.IMAGE_RESIZE_MODE in ("pad64", "none"):
            raise ValueError(
                f"{type(self).__name__}.IMAGE_RESIZE_MODE: {self.IMAGE_RESIZE_MODE!r} gives "
                f"each image its own size, but training needs one size (IMAGE_SHAPE "
                f"{list(self.IMAGE_SHAPE[:2])}, the anchors' size): train with 'square' "
                f"(resize and pad to IMAGE_MAX_DIM) or 'crop' (random IMAGE_MIN_DIM "
                f"crops); '{self.IMAGE_RESIZE_MODE}' works for inference")

    # ------------------------------------------------------------------
    def to_dict(self):
        """All upper-case settings (class and derived) as a plain dict."""
        return {name: getattr(self, name) for name in dir(self) if name.isupper()}

    def display(self):
        """Print every setting, one per line, sorted by name."""
        print("\nConfigurations:")
        for key, value in sorted(self.to_dict().items()):
            print(f"{key:30} {value}")
        print("\n")
