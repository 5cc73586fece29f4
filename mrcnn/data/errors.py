"""Errors of the training input pipeline and the record of skipped images.

`ImageLoadError` names an image that could not be loaded; `SkippedImages`
counts (and logs the first few of) the images that a pipeline built with
``on_error="skip"`` dropped (see `mrcnn.data.pipeline.build_training_dataset`).
"""

import collections
import logging
import threading

__all__ = ["ImageLoadError", "SkippedImages", "ON_ERROR_POLICIES", "check_on_error"]

logger = logging.getLogger("mrcnn.data.pipeline")


class ImageLoadError(ValueError):
    """An image (or its annotations) could not be loaded or is invalid."""


ON_ERROR_POLICIES = ("raise", "skip")


def check_on_error(on_error):
    """ValueError unless ``on_error`` is one of ON_ERROR_POLICIES."""
    if on_error not in ON_ERROR_POLICIES:
        raise ValueError(f"on_error: expected one of {ON_ERROR_POLICIES}, got {on_error!r}")


class SkippedImages:
    """Thread-safe record of the images a pipeline dropped with ``on_error="skip"``.

    The first ``log_limit`` failures are logged (warning, naming the image id,
    its reference and the error); later ones are only counted. Share one
    instance between a pipeline and whatever reports it (e.g.
    `mrcnn.engine.callbacks.SkippedImagesReport`).

    Attributes:
        total: number of skipped loads so far (an image failing in two epochs
            counts twice).
        counts: ``collections.Counter`` image id -> times skipped.
    """

    def __init__(self, log_limit=10):
        self.log_limit = int(log_limit)
        self.counts = collections.Counter()
        self.total = 0
        self._lock = threading.Lock()

    def record(self, description, image_id, error):
        """Count one skipped load of ``image_id``; log it if under the limit."""
        with self._lock:
            self.total += 1
            self.counts[int(image_id)] += 1
            total = self.total
        if total <= self.log_limit:
            logger.warning("skipping %s (on_error='skip'): %s", description, error)
            if total == self.log_limit:
                logger.warning("%d images skipped; further skipped images are counted "
                               "but not logged", total)

    def most_common(self, n=5):
        """The ``n`` most often skipped image ids."""
        with self._lock:
            return [image_id for image_id, _ in self.counts.most_common(n)]
