"""The RoI pooling recorded with checkpoints and the rule for files without the
record (the released COCO weights were trained with crop_and_resize)."""

import warnings

import h5py
import numpy as np
import pytest

from model_fixtures import TinyConfig
from mrcnn.engine import checkpoints
from mrcnn.weights import io as weights
from mrcnn import model as modellib

POOLING_LAYERS = ("roi_align_classifier", "roi_align_mask")


class InferenceConfig(TinyConfig):
    IMAGES_PER_GPU = 1
    IMAGE_MAX_DIM = 128
    DETECTION_MIN_CONFIDENCE = 0.0  # random weights still detect something
    SEED = 1


def _config(method=None, base=InferenceConfig):
    attrs = {} if method is None else {"ROI_POOLING_METHOD": method}
    return type("C", (base,), attrs)()


def _methods(model):
    return [model.keras_model.get_layer(name).method for name in POOLING_LAYERS]


def _recorded(path):
    with h5py.File(path, "r") as f:
        value = f.attrs.get(checkpoints.POOLING_ATTR)
    return None if value is None else weights._decode(value)


def _images():
    rng = np.random.default_rng(5)
    return [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
            rng.integers(0, 256, (80, 120, 3), dtype=np.uint8)]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Checkpoints of one set of random weights: recording each pooling method,
    and without a record (legacy)."""
    folder = tmp_path_factory.mktemp("pooling")
    model = modellib.MaskRCNN("inference", InferenceConfig(), str(folder))
    out = {}
    for method in ("roi_align", "crop_and_resize", "roi_pool", "roi_warp"):
        checkpoints.set_pooling_method(model.keras_model, method)
        out[method] = model.save_weights(str(folder / f"{method}.h5"))
    out["legacy"] = model.save_weights(str(folder / "legacy.h5"))
    with h5py.File(out["legacy"], "a") as f:
        del f.attrs[checkpoints.POOLING_ATTR]
    return out


def test_config_auto_builds_roi_align_and_checkpoints_record_the_method(files, tmp_path):
    assert InferenceConfig().ROI_POOLING_METHOD == "auto"
    model = modellib.MaskRCNN("inference", InferenceConfig(), str(tmp_path))
    assert model.roi_pooling_method == "roi_align" and _methods(model) == ["roi_align"] * 2
    assert _recorded(model.save_weights(str(tmp_path / "a.h5"))) == "roi_align"
    explicit = modellib.MaskRCNN("training", _config("crop_and_resize", TinyConfig),
                                 str(tmp_path))
    assert explicit.roi_pooling_method == "crop_and_resize"
    assert _recorded(explicit.save_weights(str(tmp_path / "b.h5"))) == "crop_and_resize"
    assert _recorded(files["roi_align"]) == "roi_align"
    assert _recorded(files["crop_and_resize"]) == "crop_and_resize"
    assert _recorded(files["legacy"]) is None
    with pytest.raises(ValueError, match="ROI_POOLING_METHOD.*'auto'.*'roi_warp'"):
        _config("roi_align_v2")
    with pytest.raises(ValueError, match="ROI_ALIGN_AGGREGATION.*'avg', 'max'.*'mean'"):
        type("C", (InferenceConfig,), {"ROI_ALIGN_AGGREGATION": "mean"})()


def test_auto_inference_model_follows_the_file(files, tmp_path):
    model = modellib.MaskRCNN("inference", InferenceConfig(), str(tmp_path))
    images = _images()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # "auto" follows silently
        report = model.load_weights(files["roi_align"])
        assert report.roi_pooling_method == "roi_align"
        assert model.roi_pooling_method == "roi_align"
        aligned = model.detect(images)
        assert model._predict_functions
        # A legacy file (no record): the released weights' crop_and_resize.
        report = model.load_weights(files["legacy"], by_name=True)
    assert report.roi_pooling_method is None
    assert _methods(model) == ["crop_and_resize"] * 2
    assert model.roi_pooling_method == "crop_and_resize"
    assert not model._predict_functions  # detect() retraces with the new method
    cropped = model.detect(images)
    # The same weights pool differently: other boxes and masks (the random
    # weights' scores saturate at 1) ...
    assert any(a[key].shape != c[key].shape or not np.array_equal(a[key], c[key])
               for a, c in zip(aligned, cropped) for key in ("rois", "masks"))
    # ... exactly those of a model built with the explicit method.
    explicit = modellib.MaskRCNN("inference", _config("crop_and_resize"), str(tmp_path))
    explicit.load_weights(files["legacy"], by_name=True)
    assert explicit.roi_pooling_method == "crop_and_resize"
    for c, e in zip(cropped, explicit.detect(images)):
        for key in ("rois", "class_ids", "scores", "masks"):
            np.testing.assert_array_equal(c[key], e[key], err_msg=key)
    # A file recording roi_align switches back.
    model.load_weights(files["roi_align"])
    assert _methods(model) == ["roi_align"] * 2
    for a, b in zip(aligned, model.detect(images)):
        for key in ("rois", "class_ids", "scores", "masks"):
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    model.load_weights(files["crop_and_resize"])
    assert model.roi_pooling_method == "crop_and_resize"


def test_explicit_method_is_honoured_and_a_different_record_warned(files, tmp_path):
    model = modellib.MaskRCNN("inference", _config("roi_align"), str(tmp_path))
    with pytest.warns(UserWarning, match="has no record.*'crop_and_resize'.*'roi_align'"):
        model.load_weights(files["legacy"], by_name=True)
    assert _methods(model) == ["roi_align"] * 2
    with pytest.warns(UserWarning, match="records RoI pooling 'crop_and_resize'"):
        model.load_weights(files["crop_and_resize"])
    assert model.roi_pooling_method == "roi_align"
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        model.load_weights(files["roi_align"])
    assert model.roi_pooling_method == "roi_align"


def test_training_model_keeps_roi_align_and_says_so_for_legacy_files(files, tmp_path,
                                                                     capsys):
    model = modellib.MaskRCNN("training", _config(base=TinyConfig), str(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        report = model.load_weights(files["legacy"], by_name=True)
    assert report.roi_pooling_method is None
    assert _methods(model) == ["roi_align"] * 2 and model.roi_pooling_method == "roi_align"
    lines = [l for l in capsys.readouterr().out.splitlines() if "crop_and_resize" in l]
    assert len(lines) == 1 and "training continues with roi_align" in lines[0]
    model.load_weights(files["crop_and_resize"], by_name=True)  # recorded: no note
    assert model.roi_pooling_method == "roi_align"
    assert "crop_and_resize" not in capsys.readouterr().out


def test_resolve_pooling_method_rule():
    rule = checkpoints.resolve_pooling_method
    assert rule("inference", "auto", None, "f")[0] == "crop_and_resize"
    assert rule("inference", "auto", "roi_align", "f") == ("roi_align", None, None)
    assert rule("training", "auto", "crop_and_resize", "f") == ("roi_align", None, None)
    method, warning, note = rule("training", "auto", None, "f")
    assert method == "roi_align" and warning is None and "crop_and_resize" in note
    assert rule("training", "roi_align", None, "f") == ("roi_align", None, None)
    method, warning, _ = rule("training", "crop_and_resize", "roi_align", "f")
    assert method == "crop_and_resize" and "roi_align" in warning
    assert rule("inference", "crop_and_resize", None, "f") == ("crop_and_resize", None, None)


@pytest.mark.parametrize("method", ["roi_pool", "roi_warp"])
def test_quantised_methods_round_trip_through_checkpoints(files, tmp_path, method):
    """A file recording roi_pool / roi_warp switches an "auto" inference model to
    it (silently), which then detects exactly as a model built with it; a
    training model saves its method."""
    assert _recorded(files[method]) == method
    trained = modellib.MaskRCNN("training", _config(method, TinyConfig), str(tmp_path))
    assert _recorded(trained.save_weights(str(tmp_path / "t.h5"))) == method
    model = modellib.MaskRCNN("inference", InferenceConfig(), str(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        report = model.load_weights(files[method])
    assert report.roi_pooling_method == method and _methods(model) == [method] * 2
    images = _images()
    explicit = modellib.MaskRCNN("inference", _config(method), str(tmp_path))
    explicit.load_weights(files[method])
    for a, b in zip(model.detect(images), explicit.detect(images)):
        for key in ("rois", "class_ids", "scores", "masks"):
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    rule = checkpoints.resolve_pooling_method
    assert rule("inference", "auto", method, "f") == (method, None, None)
    assert rule("training", method, method, "f") == (method, None, None)
    assert "records RoI pooling" in rule("inference", "roi_align", method, "f")[1]
