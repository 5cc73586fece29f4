"""A tiny inference model with random weights that detects something in every image,
built once per test process and shared by the tests of the result exporters
(`mrcnn.inference.results`, `mrcnn.inference.video`, ``samples.common.export_results``)."""

import functools
import os
import tempfile

import numpy as np

from model_fixtures import COLOURS, TinyConfig

CLASS_NAMES = ["BG", "red", "blue"]


class DetectingConfig(TinyConfig):
    IMAGES_PER_GPU = 2            # batches of two: a last, partial batch gets tested too
    DETECTION_MIN_CONFIDENCE = 0.0
    DETECTION_MAX_INSTANCES = 6
    SEED = 1


@functools.lru_cache(maxsize=None)
def detecting_model():
    """The shared `MaskRCNN` ("inference", `DetectingConfig`); seeded random weights, with
    the background logit's bias at -20 so that every image gets detections."""
    import keras

    from mrcnn import model as modellib

    keras.utils.set_random_seed(0)
    model = modellib.MaskRCNN("inference", DetectingConfig(),
                              os.path.join(tempfile.gettempdir(), "mrcnn-tests-logs"))
    logits = model.keras_model.get_layer("mrcnn_class_logits")
    logits.bias.assign(np.array([-20.0, 0.0, 0.0], np.float32))
    return model


class RecordingModel:
    """Passes ``detect`` on to the shared model and keeps its inputs and outputs."""

    def __init__(self, model=None):
        self.model = model or detecting_model()
        self.config = self.model.config
        self.calls, self.images, self.results = [], [], []

    def detect(self, images, verbose=0):
        results = self.model.detect(images, verbose=verbose)
        self.calls.append(len(images))
        self.images.extend(np.array(image) for image in images)
        self.results.extend(results)
        return results


def scene(seed, height=64, width=64):
    """A grey image with a red and a blue rectangle (uint8 RGB)."""
    rng = np.random.default_rng(seed)
    image = np.full((height, width, 3), 128, np.uint8)
    for class_id in (1, 2):
        y, x = rng.integers(0, height - 20), rng.integers(0, width - 20)
        image[y:y + rng.integers(10, 20), x:x + rng.integers(10, 20)] = COLOURS[class_id]
    return image
