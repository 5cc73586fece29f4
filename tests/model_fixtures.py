"""Tiny configs and a synthetic rectangles data set for the model tests."""

import numpy as np

from mrcnn.config import Config
from mrcnn.data.dataset import Dataset

# Class 1 = red rectangles, class 2 = blue rectangles, on a grey background.
COLOURS = {1: (230, 40, 40), 2: (40, 40, 230)}


class TinyConfig(Config):
    NAME = "tiny"
    NUM_CLASSES = 3
    BACKBONE = "resnet50"
    IMAGES_PER_GPU = 2
    IMAGE_MIN_DIM = 64
    IMAGE_MAX_DIM = 64
    RPN_ANCHOR_SCALES = (8, 16, 32, 64, 128)
    RPN_TRAIN_ANCHORS_PER_IMAGE = 64
    PRE_NMS_LIMIT = 500
    POST_NMS_ROIS_TRAINING = 100
    POST_NMS_ROIS_INFERENCE = 100
    TRAIN_ROIS_PER_IMAGE = 32
    MAX_GT_INSTANCES = 4
    MINI_MASK_SHAPE = (28, 28)
    MASK_POOL_SIZE = 7
    MASK_SHAPE = [14, 14]
    TOP_DOWN_PYRAMID_SIZE = 64
    FPN_CLASSIF_FC_LAYERS_SIZE = 64
    DETECTION_MAX_INSTANCES = 20
    STEPS_PER_EPOCH = 2
    VALIDATION_STEPS = 1


class RectanglesDataset(Dataset):
    """Images with 0..3 filled, non-overlapping axis-aligned rectangles.

    ``counts``: number of rectangles per image (0 gives an image with no
    instances). Rectangles are drawn deterministically from ``seed``.
    """

    def __init__(self, counts, size=64, seed=0):
        super().__init__()
        self.add_class("rects", 1, "red")
        self.add_class("rects", 2, "blue")
        rng = np.random.default_rng(seed)
        for i, count in enumerate(counts):
            shapes = []
            for k in range(count):
                # Side 14..24 px, kept in one of 3 vertical bands -> no overlap.
                band = size // 3
                h, w = rng.integers(12, band + 1), rng.integers(14, size // 2)
                y = k * band + rng.integers(0, band - h + 1)
                x = rng.integers(0, size - w + 1)
                shapes.append((int(rng.integers(1, 3)), (int(y), int(x), int(y + h), int(x + w))))
            self.add_image("rects", image_id=i, path=None, size=size, shapes=shapes)
        self.prepare()

    def load_image(self, image_id):
        info = self.image_info[image_id]
        image = np.full((info["size"], info["size"], 3), 128, np.uint8)
        for class_id, (y1, x1, y2, x2) in info["shapes"]:
            image[y1:y2, x1:x2] = COLOURS[class_id]
        return image

    def load_mask(self, image_id):
        info = self.image_info[image_id]
        n = len(info["shapes"])
        masks = np.zeros((info["size"], info["size"], n), bool)
        for i, (_, (y1, x1, y2, x2)) in enumerate(info["shapes"]):
            masks[y1:y2, x1:x2, i] = True
        class_ids = np.array([c for c, _ in info["shapes"]], np.int32)
        return masks, class_ids
