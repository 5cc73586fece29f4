"""Tiny keypoint configs, a rectangles data set with corner keypoints, and shared
keypoint models (built once per test session) for the keypoint wiring tests."""

import functools
import tempfile

import numpy as np

from model_fixtures import RectanglesDataset, TinyConfig

# The top corners' pixel centres: a horizontal flip swaps them.
CORNER_NAMES = ("top_left", "top_right")


class KeypointTinyConfig(TinyConfig):
    NAME = "tiny_keypoints"
    NUM_KEYPOINTS = 2
    KEYPOINT_NAMES = CORNER_NAMES
    KEYPOINT_FLIP_MAP = (CORNER_NAMES,)
    KEYPOINT_POOL_SIZE = 7
    KEYPOINT_HEATMAP_SIZE = 28
    KEYPOINT_HEAD_CONV = 2
    KEYPOINT_HEAD_CHANNELS = 16


class KeypointTinyInferenceConfig(KeypointTinyConfig):
    IMAGES_PER_GPU = 1
    DETECTION_MIN_CONFIDENCE = 0.0


def corner_keypoints(shapes):
    """float32 ``[N, 2, 3]``: each rectangle's top-left and top-right pixel centres, visible."""
    out = np.zeros((len(shapes), 2, 3), np.float32)
    for i, (_, (y1, x1, y2, x2)) in enumerate(shapes):
        out[i, 0] = (x1 + 0.5, y1 + 0.5, 2)
        out[i, 1] = (x2 - 0.5, y1 + 0.5, 2)
    return out


class CornerRectangles(RectanglesDataset):
    """`RectanglesDataset` with each rectangle's two top corners as keypoints."""

    keypoint_names = CORNER_NAMES

    def load_keypoints(self, image_id, num_keypoints=None):
        return corner_keypoints(self.image_info[image_id]["shapes"])


@functools.lru_cache(maxsize=None)
def keypoint_inference_model():
    """An inference MaskRCNN with a keypoint head whose heatmaps are uniform
    (``mrcnn_kp_deconv`` zeroed), so every keypoint decodes to the centre of its
    box's first heatmap cell, with score ``1 / m**2``; boxes come from random weights."""
    import keras

    from mrcnn import model as modellib

    keras.utils.set_random_seed(0)
    model = modellib.MaskRCNN("inference", KeypointTinyInferenceConfig(), tempfile.mkdtemp())
    deconv = model.keras_model.get_layer("mrcnn_kp_deconv")
    deconv.set_weights([np.zeros_like(w) for w in deconv.get_weights()])
    return model
