"""A small Config shared by the tests of the NumPy RPN and detection targets."""

from mrcnn.config import Config


class TinyConfig(Config):
    NAME = "tiny"
    NUM_CLASSES = 3
    RPN_TRAIN_ANCHORS_PER_IMAGE = 8
    TRAIN_ROIS_PER_IMAGE = 6
    ROI_POSITIVE_RATIO = 0.5
    MASK_POOL_SIZE = 14
    MASK_SHAPE = [28, 28]
    USE_MINI_MASK = False


def cfg(**overrides):
    return type("C", (TinyConfig,), overrides)()
