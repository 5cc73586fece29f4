"""Names the package uses in more than one place, defined once.

Plain tuples (no imports): `mrcnn.config` validates against them, the modules
that implement each choice check and document against them.
"""

# The losses, in the order they are reported: the five Mask R-CNN losses, then
# the keypoint loss (Keypoint R-CNN), which a model has, reports and weighs
# (`Config.LOSS_WEIGHTS`) only with `Config.NUM_KEYPOINTS` > 0
# (`mrcnn.engine.trainer.loss_names`).
KEYPOINT_LOSS_NAME = "mrcnn_keypoint_loss"
LOSS_NAMES = ("rpn_class_loss", "rpn_bbox_loss", "mrcnn_class_loss",
              "mrcnn_bbox_loss", "mrcnn_mask_loss", KEYPOINT_LOSS_NAME)

# `Config.IMAGE_RESIZE_MODE` / `mrcnn.structures.images.resize_image(mode=...)`.
RESIZE_MODES = ("none", "square", "pad64", "crop")

# RoI pooling a graph is built with (`mrcnn.modeling.roi_heads.poolers`), and
# the choices of `Config.ROI_POOLING_METHOD` ("auto": see `config.built_pooling_method`).
# "roi_pool" and "roi_warp" are the quantised baselines of the paper's Table 2c.
POOLING_METHODS = ("roi_align", "crop_and_resize", "roi_pool", "roi_warp")
ROI_POOLING_CHOICES = ("auto",) + POOLING_METHODS
# The pooling that reproduces the original implementation: its level rule
# (rounded) and its mask targets (crop_and_resize of normalised boxes). Every
# other method uses the FPN paper's level rule and RoIAligned mask targets.
LEGACY_POOLING_METHOD = "crop_and_resize"

# `Config.ROI_ALIGN_AGGREGATION` / `mrcnn.ops.roi_align(aggregation=...)`: how a
# RoIAlign (and RoIWarp) bin aggregates its bilinear samples.
ROI_ALIGN_AGGREGATIONS = ("avg", "max")

# `Config.HEAD_ARCHITECTURE`: "fpn" (feature pyramid, the released weights) or
# "c4" (the paper's Figure 4 left: RPN and RoI pooling on C4, res5 as the head).
HEAD_ARCHITECTURES = ("fpn", "c4")

# `Config.LEARNING_RATE_SCHEDULE` (`mrcnn.engine.schedules`).
LEARNING_RATE_SCHEDULES = ("constant", "step", "cosine")
