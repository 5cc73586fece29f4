"""Config: defaults, derived fields, validation, no shared mutable state."""

import numpy as np
import pytest

from mrcnn.config import Config


class TinyConfig(Config):
    NAME = "tiny"
    NUM_CLASSES = 3
    IMAGE_MIN_DIM = 64
    IMAGE_MAX_DIM = 128


def test_legacy_defaults_are_kept():
    c = TinyConfig()
    assert c.GPU_COUNT == 1 and c.IMAGES_PER_GPU == 2
    assert c.BACKBONE == "resnet101"
    assert c.BACKBONE_STRIDES == [4, 8, 16, 32, 64]
    assert c.RPN_ANCHOR_SCALES == (32, 64, 128, 256, 512)
    assert c.RPN_ANCHOR_RATIOS == [0.5, 1, 2]
    assert c.PRE_NMS_LIMIT == 6000
    assert c.POST_NMS_ROIS_TRAINING == 2000 and c.POST_NMS_ROIS_INFERENCE == 1000
    assert c.MINI_MASK_SHAPE == (56, 56) and c.MASK_SHAPE == [28, 28]
    assert c.TRAIN_ROIS_PER_IMAGE == 200 and c.ROI_POSITIVE_RATIO == 0.33
    np.testing.assert_allclose(c.MEAN_PIXEL, [123.7, 116.8, 103.9])
    np.testing.assert_allclose(c.BBOX_STD_DEV, [0.1, 0.1, 0.2, 0.2])
    assert c.DETECTION_MIN_CONFIDENCE == 0.7 and c.DETECTION_NMS_THRESHOLD == 0.3
    assert c.LEARNING_RATE == 0.001 and c.LEARNING_MOMENTUM == 0.9
    assert c.WEIGHT_DECAY == 0.0001 and c.GRADIENT_CLIP_NORM == 5.0
    assert c.TRAIN_BN is False and c.USE_RPN_ROIS is True
    assert set(c.LOSS_WEIGHTS) == {"rpn_class_loss", "rpn_bbox_loss", "mrcnn_class_loss",
                                   "mrcnn_bbox_loss", "mrcnn_mask_loss"}
    assert c.ROI_POOLING_METHOD == "auto"  # roi_align unless loaded weights say otherwise


def test_derived_fields():
    class C(TinyConfig):
        GPU_COUNT = 2
        IMAGES_PER_GPU = 3
    c = C()
    assert c.BATCH_SIZE == 6
    assert list(c.IMAGE_SHAPE) == [128, 128, 3]
    assert c.IMAGE_META_SIZE == 12 + 3

    class Crop(TinyConfig):
        IMAGE_RESIZE_MODE = "crop"
    assert list(Crop().IMAGE_SHAPE) == [64, 64, 3]

    class Gray(TinyConfig):
        IMAGE_CHANNEL_COUNT = 1
        MEAN_PIXEL = np.array([100.0])
    assert list(Gray().IMAGE_SHAPE) == [128, 128, 1]


@pytest.mark.parametrize("field, value, fragment", [
    ("IMAGE_MAX_DIM", 100, "multiple of 64"),
    ("NUM_CLASSES", 1, "NUM_CLASSES"),
    ("IMAGE_RESIZE_MODE", "stretch", "unknown mode 'stretch'"),
    ("BACKBONE", "vgg16", "unknown backbone"),
    ("MEAN_PIXEL", np.array([1.0, 2.0]), "MEAN_PIXEL"),
    ("IMAGES_PER_GPU", 0, "IMAGES_PER_GPU"),
    ("RPN_NMS_THRESHOLD", 1.5, "RPN_NMS_THRESHOLD"),
    ("MASK_SHAPE", [14, 14], "MASK_SHAPE"),
    ("LOSS_WEIGHTS", {"rpn_class_los": 1.0}, "rpn_class_los"),
    ("ROI_POOLING_METHOD", "roi_pooling", "ROI_POOLING_METHOD"),
    ("ROI_ALIGN_AGGREGATION", "sum", "ROI_ALIGN_AGGREGATION"),
    ("OPTIMIZER", "rmsprop", "OPTIMIZER"),
    ("RPN_ANCHOR_SCALES", (8, 16, 32), "one scale per FPN level"),
    ("RPN_HEAD_CHANNELS", 0, "RPN_HEAD_CHANNELS: expected a positive integer"),
])
def test_validation_names_the_field(field, value, fragment):
    cls = type("Bad", (TinyConfig,), {field: value})
    with pytest.raises(ValueError) as err:
        cls()
    assert field in str(err.value) or fragment in str(err.value)
    assert fragment in str(err.value)


def test_crop_mode_checks_min_dim():
    cls = type("BadCrop", (TinyConfig,), {"IMAGE_RESIZE_MODE": "crop", "IMAGE_MIN_DIM": 100})
    with pytest.raises(ValueError, match="IMAGE_MIN_DIM"):
        cls()


def test_callable_backbone_needs_shape_function():
    cls = type("CB", (TinyConfig,), {"BACKBONE": lambda *a: None})
    with pytest.raises(ValueError, match="COMPUTE_BACKBONE_SHAPE"):
        cls()


def test_arrays_are_not_shared_between_instances_or_subclasses():
    a, b = TinyConfig(), TinyConfig()
    a.MEAN_PIXEL[0] = 0.0
    a.LOSS_WEIGHTS["mrcnn_mask_loss"] = 5.0
    a.BACKBONE_STRIDES.append(128)
    assert b.MEAN_PIXEL[0] == pytest.approx(123.7)
    assert Config.MEAN_PIXEL[0] == pytest.approx(123.7)
    assert b.LOSS_WEIGHTS["mrcnn_mask_loss"] == 1.0
    assert Config.LOSS_WEIGHTS["mrcnn_mask_loss"] == 1.0
    assert b.BACKBONE_STRIDES == [4, 8, 16, 32, 64]


def test_to_dict_and_display(capsys):
    c = TinyConfig()
    d = c.to_dict()
    assert d["NAME"] == "tiny" and d["BATCH_SIZE"] == 2 and d["IMAGE_META_SIZE"] == 15
    assert all(k.isupper() for k in d)
    c.display()
    out = capsys.readouterr().out
    assert "NUM_CLASSES" in out and "IMAGE_META_SIZE" in out
    lines = [ln.split()[0] for ln in out.splitlines() if ln.strip() and ln[0].isupper()
             and ln.split()[0].isupper()]
    assert lines == sorted(lines)


def _my_backbone(input_image, stage5=True, train_bn=False):
    return ("called", input_image, stage5, train_bn)


def _my_shapes(image_shape):
    return [[image_shape[0] // s, image_shape[1] // s] for s in (4, 8, 16, 32, 64)]


def test_function_backbone_in_class_body_is_not_bound():
    class C(TinyConfig):
        BACKBONE = _my_backbone
        COMPUTE_BACKBONE_SHAPE = _my_shapes
    c = C()
    assert c.BACKBONE("img", stage5=True, train_bn=True) == ("called", "img", True, True)
    assert c.COMPUTE_BACKBONE_SHAPE((128, 128, 3))[0] == [32, 32]


@pytest.mark.parametrize("mode", ["pad64", "none"])
def test_training_rejects_resize_modes_with_a_size_per_image(mode, tmp_path):
    from mrcnn import model as modellib

    class Cfg(Config):
        NAME = "sizes"
        NUM_CLASSES = 2
        IMAGE_RESIZE_MODE = mode
        IMAGE_MIN_DIM = 64
        IMAGE_MAX_DIM = 64

    config = Cfg()                 # valid: inference works in these modes
    with pytest.raises(ValueError, match=r"IMAGE_RESIZE_MODE.*'square'.*'crop'"):
        config.validate_for_training()
    with pytest.raises(ValueError, match=f"{mode!r} gives each image its own size"):
        modellib.MaskRCNN("training", config, str(tmp_path))
    Cfg.IMAGE_RESIZE_MODE = "square"
    Cfg().validate_for_training()


def test_unknown_setting_warns_with_the_closest_known_one():
    class Typo(Config):
        NAME = "typo"
        NUM_CLASSES = 2
        IMAGE_MAX_DIMS = 512          # typo of IMAGE_MAX_DIM

    with pytest.warns(UserWarning, match=r"Typo\.IMAGE_MAX_DIMS: .*did you mean IMAGE_MAX_DIM\?"):
        Typo()


def test_known_and_declared_settings_do_not_warn():
    import warnings

    class Mine(Config):
        NAME = "mine"
        NUM_CLASSES = 2
        IMAGE_MAX_DIM = 1024
        MY_THRESHOLD = 0.3
        USER_SETTINGS = ("MY_THRESHOLD",)

    class Sub(Mine):
        STEPS_PER_EPOCH = 3

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Mine()
        Sub()
