"""Tests of the keypoint settings of mrcnn.config.Config (defaults and validation)."""

import numpy as np
import pytest

from mrcnn.config import Config
from mrcnn.modeling.roi_heads.keypoint_head import config_class_table


class KpConfig(Config):
    NAME = "kp"
    NUM_CLASSES = 3
    NUM_KEYPOINTS = 3
    KEYPOINT_NAMES = ("apex", "left", "right")
    KEYPOINT_FLIP_MAP = (("left", "right"),)


def make(**settings):
    return type("Custom", (KpConfig,), settings)()


def test_defaults_leave_keypoints_off():
    config = type("Plain", (Config,), {"NUM_CLASSES": 2})()
    assert config.NUM_KEYPOINTS == 0 and config.KEYPOINT_NAMES == ()
    assert (config.KEYPOINT_HEAD_CONV, config.KEYPOINT_HEAD_CHANNELS) == (8, 512)
    assert (config.KEYPOINT_POOL_SIZE, config.KEYPOINT_HEATMAP_SIZE) == (14, 56)
    assert config.KEYPOINT_LOSS_WEIGHT == 1.0 and config.KEYPOINT_OKS_SIGMAS is None
    assert config.KEYPOINT_CLASSES is None and config.KEYPOINT_FLIP_MAP == ()


def test_class_table_of_a_config():
    assert config_class_table(KpConfig()).tolist() == [[False] * 3, [True] * 3, [True] * 3]
    table = config_class_table(make(KEYPOINT_CLASSES={2: ("apex", 1)}))
    assert table.tolist() == [[False] * 3, [False] * 3, [True, True, False]]


def test_person_config_validates():
    from mrcnn.structures import keypoints as kp
    config = type("Person", (Config,), {
        "NUM_CLASSES": 2, "NUM_KEYPOINTS": 17,
        "KEYPOINT_NAMES": kp.COCO_PERSON_KEYPOINT_NAMES,
        "KEYPOINT_FLIP_MAP": kp.COCO_PERSON_FLIP_MAP})()
    perm = kp.flip_permutation(config.KEYPOINT_FLIP_MAP, 17, config.KEYPOINT_NAMES)
    assert perm[:5].tolist() == [0, 2, 1, 4, 3]


@pytest.mark.parametrize("settings, fragment", [
    ({"NUM_KEYPOINTS": -1}, r"Custom.NUM_KEYPOINTS: expected an integer >= 0"),
    ({"KEYPOINT_HEAD_CONV": 0}, r"Custom.KEYPOINT_HEAD_CONV: expected a positive integer"),
    ({"KEYPOINT_HEATMAP_SIZE": 28}, r"KEYPOINT_HEATMAP_SIZE: .* 4 x KEYPOINT_POOL_SIZE = 56"),
    ({"KEYPOINT_LOSS_WEIGHT": -1.0}, r"KEYPOINT_LOSS_WEIGHT: expected a number >= 0"),
    ({"KEYPOINT_ROI_EXPAND": 0.8}, r"Custom.KEYPOINT_ROI_EXPAND: expected a number >= 1"),
    ({"KEYPOINT_NAMES": ("a", "b")}, r"KEYPOINT_NAMES: 2 names for NUM_KEYPOINTS = 3"),
    ({"KEYPOINT_NAMES": ("a", "a", "b")}, r"KEYPOINT_NAMES: duplicate names"),
    ({"KEYPOINT_FLIP_MAP": (("left", "nose"),)},
     r"Custom.KEYPOINT_FLIP_MAP: unknown keypoint name 'nose'"),
    ({"KEYPOINT_FLIP_MAP": ((0, 1), (1, 2))}, r"KEYPOINT_FLIP_MAP: a keypoint is in two pairs"),
    ({"KEYPOINT_FLIP_MAP": ((0, 3),)}, r"KEYPOINT_FLIP_MAP: expected keypoint names or indices"),
    ({"KEYPOINT_CLASSES": {3: [0]}}, r"Custom.KEYPOINT_CLASSES: class ids must be integers"),
    ({"KEYPOINT_CLASSES": {1: ["ear"]}},
     r"Custom.KEYPOINT_CLASSES: KEYPOINT_CLASSES\[1\]: unknown keypoint name 'ear'"),
    ({"KEYPOINT_CLASSES": [1, 2]}, r"KEYPOINT_CLASSES: expected None or a dict"),
    ({"KEYPOINT_OKS_SIGMAS": (0.1, 0.2)}, r"KEYPOINT_OKS_SIGMAS: expected 3 positive values"),
])
def test_validation_names_the_field(settings, fragment):
    with pytest.raises(ValueError, match=fragment):
        make(**settings)


def test_oks_sigmas_given_are_accepted():
    config = make(KEYPOINT_OKS_SIGMAS=np.array([0.1, 0.2, 0.3]))
    assert list(config.KEYPOINT_OKS_SIGMAS) == [0.1, 0.2, 0.3]
