"""Keypoints in the training input pipeline (``Config.NUM_KEYPOINTS`` > 0).

`mrcnn.data.pipeline.load_image_gt` calls these beside the masks: the
dataset's keypoints (`Dataset.load_keypoints`, float32 ``[N, K, 3]`` ``(x, y,
v)`` in the original image's continuous pixels, `mrcnn.structures.keypoints`)
move with the image through the resize / pad / crop (`resize_keypoints`:
keypoints a crop leaves out become unlabelled), the pipeline's own flip and
the user's augmentation (`mrcnn.data.augmentation`; horizontal flips swap the
``KEYPOINT_FLIP_MAP`` pairs), and are dropped with their instance when its
mask comes out empty. They stay in input-image pixels: mini-masks do not touch
them. `build_example` pads them to ``[MAX_GT_INSTANCES, K, 3]`` beside the
boxes (input ``input_gt_keypoints``).
"""

import numpy as np

from mrcnn.data.augmentation import apply_augmentation
from mrcnn.data.errors import ImageLoadError
from mrcnn.structures.keypoints import (check_keypoints, flip_keypoints_horizontal,
                                        flip_permutation, resize_keypoints)

__all__ = ["INPUT_NAME", "wants_keypoints", "load_keypoints", "resize", "flip", "augment",
           "keep", "padded", "signature"]

INPUT_NAME = "input_gt_keypoints"


def wants_keypoints(config):
    """Whether the training inputs carry keypoints (``NUM_KEYPOINTS`` > 0)."""
    return int(getattr(config, "NUM_KEYPOINTS", 0) or 0) > 0


def _permutation(config):
    return flip_permutation(config.KEYPOINT_FLIP_MAP, config.NUM_KEYPOINTS,
                            config.KEYPOINT_NAMES)


def load_keypoints(dataset, config, image_id, num_instances, where):
    """``dataset.load_keypoints`` checked: float32 ``[N, K, 3]``, ``N`` the masks'
    count, ``K = NUM_KEYPOINTS``; ImageLoadError naming ``where`` (the image) otherwise."""
    k = int(config.NUM_KEYPOINTS)
    try:
        points = dataset.load_keypoints(image_id, k)
        return check_keypoints(points, num_instances=num_instances, num_keypoints=k,
                               where=f"load_image_gt: {where}: load_keypoints")
    except ImageLoadError:
        raise
    except ValueError as exc:
        raise ImageLoadError(str(exc)) from exc


def resize(keypoints, original_shape, scale, padding, crop):
    """`resize_keypoints` (None passes through)."""
    if keypoints is None:
        return None
    return resize_keypoints(keypoints, original_shape, scale, padding, crop)


def flip(keypoints, config, width):
    """Keypoints of the image flipped left-right (``np.fliplr``), left / right swapped."""
    if keypoints is None:
        return None
    return flip_keypoints_horizontal(keypoints, width, _permutation(config))


def augment(augmentation, image, masks, keypoints, config):
    """`apply_augmentation` with the keypoints when there are any:
    ``(image, masks, keypoints)``."""
    if keypoints is None:
        return apply_augmentation(augmentation, image, masks) + (None,)
    return apply_augmentation(augmentation, image, masks, keypoints=keypoints,
                              flip_permutation=_permutation(config))


def keep(keypoints, kept):
    """The rows of the instances kept (bool or index ``kept``); None passes through."""
    return None if keypoints is None else keypoints[kept]


def padded(keypoints, config):
    """float32 ``[MAX_GT_INSTANCES, K, 3]``: the first ``MAX_GT_INSTANCES``
    instances' keypoints (as the boxes are truncated), zeros below."""
    max_gt, k = int(config.MAX_GT_INSTANCES), int(config.NUM_KEYPOINTS)
    out = np.zeros((max_gt, k, 3), dtype=np.float32)
    n = min(max_gt, keypoints.shape[0])
    out[:n] = keypoints[:n]
    return out


def signature(config):
    """``{INPUT_NAME: (shape, dtype)}`` of one example (empty without keypoints)."""
    if not wants_keypoints(config):
        return {}
    return {INPUT_NAME: ((int(config.MAX_GT_INSTANCES), int(config.NUM_KEYPOINTS), 3),
                         np.float32)}
