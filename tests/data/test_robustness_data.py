"""Robustness of the input side: skipping bad training images, fuzzing detect()."""

import logging

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from model_fixtures import RectanglesDataset, TinyConfig
from mrcnn.data import pipeline as data
from mrcnn import model as modellib


class OneImageConfig(TinyConfig):
    IMAGES_PER_GPU = 1


class BrokenRectangles(RectanglesDataset):
    """Rectangles where ``broken`` ids fail: a read error, or a mask of the wrong size."""

    def __init__(self, counts, broken, seed=0):
        super().__init__(counts, seed=seed)
        self.broken = dict(broken)

    def load_image(self, image_id):
        if self.broken.get(image_id) == "read":
            raise OSError(f"truncated file for image {image_id}")
        return super().load_image(image_id)

    def load_mask(self, image_id):
        masks, class_ids = super().load_mask(image_id)
        if self.broken.get(image_id) == "mask":
            masks = masks[:10]
        return masks, class_ids

    def image_reference(self, image_id):
        return f"disk://{image_id}.jpg"


def _ids(stream):
    return [int(i) for batch in stream for i in np.asarray(batch["input_image_meta"])[:, 0]]


def test_skip_drops_bad_images_counts_and_logs_them(caplog):
    dataset = BrokenRectangles([1, 2, 1, 3, 0], broken={1: "read", 3: "mask"})
    skipped = data.SkippedImages(log_limit=10)
    with caplog.at_level(logging.WARNING, logger="mrcnn.data.pipeline"):
        stream = data.build_training_dataset(dataset, OneImageConfig(), shuffle=False,
                                             repeat=False, seed=0, on_error="skip",
                                             skipped_images=skipped)
        assert _ids(stream) == [0, 2, 4]
    assert skipped.total == 2 and dict(skipped.counts) == {1: 1, 3: 1}
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "image id 1 (reference 'disk://1.jpg')" in text and "OSError" in text
    assert "image id 3 (reference 'disk://3.jpg')" in text and "mask size" in text
    # The kept examples are exactly those of the raising pipeline.
    good = BrokenRectangles([1, 2, 1, 3, 0], broken={})
    reference = list(data.build_training_dataset(good, OneImageConfig(), shuffle=False,
                                                 repeat=False, seed=0))
    kept = list(data.build_training_dataset(dataset, OneImageConfig(), shuffle=False,
                                            repeat=False, seed=0, on_error="skip"))
    np.testing.assert_array_equal(kept[1]["input_gt_boxes"], reference[2]["input_gt_boxes"])
    np.testing.assert_array_equal(kept[2]["input_image"], reference[4]["input_image"])


def test_skip_logs_only_the_first_few_and_counts_repeats(caplog):
    dataset = BrokenRectangles([1, 1, 1], broken={0: "read", 2: "read"})
    skipped = data.SkippedImages(log_limit=3)
    with caplog.at_level(logging.WARNING, logger="mrcnn.data.pipeline"):
        stream = data.build_training_dataset(dataset, OneImageConfig(), shuffle=False,
                                             repeat=True, seed=0, on_error="skip",
                                             skipped_images=skipped,
                                             num_parallel_calls=1)
        ids = _ids(stream.take(4))
    assert ids == [1, 1, 1, 1]
    assert skipped.counts[0] >= 4 and skipped.counts[2] >= 3 and skipped.total >= 7
    skip_lines = [r for r in caplog.records if r.getMessage().startswith("skipping")]
    assert len(skip_lines) == 3
    assert any("counted but not logged" in r.getMessage() for r in caplog.records)
    assert skipped.most_common(1) == [0]


def test_skip_raises_when_every_image_fails():
    dataset = BrokenRectangles([1, 1, 1], broken={0: "read", 1: "mask", 2: "read"})
    stream = data.build_training_dataset(dataset, OneImageConfig(), repeat=True,
                                         on_error="skip")
    with pytest.raises(Exception, match=r"all 3 images of the data set failed to load"):
        _ids(stream.take(2))
    gen = data.data_generator(dataset, OneImageConfig(), on_error="skip")
    with pytest.raises(data.ImageLoadError, match="all 3 images"):
        next(gen)


def test_data_generator_skip_and_unknown_policy():
    dataset = BrokenRectangles([1, 2, 1], broken={1: "mask"})
    skipped = data.SkippedImages()
    gen = data.data_generator(dataset, OneImageConfig(), shuffle=False, batch_size=2,
                              on_error="skip", skipped_images=skipped)
    assert np.asarray(next(gen)["input_image_meta"])[:, 0].tolist() == [0, 2]
    assert skipped.total == 1
    with pytest.raises(data.ImageLoadError, match="image id 1"):
        next(data.data_generator(dataset, OneImageConfig(), shuffle=False, batch_size=3))
    for bad in ("ignore", None):
        with pytest.raises(ValueError, match="on_error"):
            data.build_training_dataset(dataset, OneImageConfig(), on_error=bad)
        with pytest.raises(ValueError, match="on_error"):
            next(data.data_generator(dataset, OneImageConfig(), on_error=bad))


# --------------------------------------------------------------------------- detect() fuzz
class FuzzConfig(TinyConfig):
    IMAGES_PER_GPU = 1
    DETECTION_MIN_CONFIDENCE = 0.0   # keep some detections so masks are unmolded


@pytest.fixture(scope="module")
def inference_model(tmp_path_factory):
    return modellib.MaskRCNN("inference", FuzzConfig(), str(tmp_path_factory.mktemp("fuzz")))


DTYPES = [np.uint8, np.uint16, np.int32, np.float32, np.float64, np.bool_, np.complex64]


@st.composite
def images(draw):
    h = draw(st.integers(1, 80))
    w = draw(st.integers(1, 80))
    channels = draw(st.sampled_from([None, 1, 2, 3, 4, 5]))
    dtype = draw(st.sampled_from(DTYPES))
    shape = (h, w) if channels is None else (h, w, channels)
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 16)))
    if dtype == np.bool_:
        image = rng.random(shape) > 0.5
    elif np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.complexfloating):
        image = (rng.random(shape) * draw(st.sampled_from([1.0, 255.0]))).astype(dtype)
    else:
        image = rng.integers(0, 256 if dtype == np.uint8 else 1000, shape).astype(dtype)
    nan = draw(st.booleans()) and np.issubdtype(dtype, np.floating)
    if nan:
        image.flat[draw(st.integers(0, image.size - 1))] = np.nan
    return image, nan


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(case=images())
def test_detect_fuzz_valid_result_or_clear_error(inference_model, case):
    image, has_nan = case
    try:
        (result,) = inference_model.detect([image])
    except (ValueError, TypeError) as err:
        message = str(err)
        assert message.startswith("image 0"), message
        # Only images that are genuinely unusable may be refused.
        unusable = (has_nan or image.dtype.kind == "c" or
                    (image.ndim == 3 and image.shape[2] == 5))
        assert unusable, f"refused a usable image {image.shape} {image.dtype}: {message}"
        event("refused")
        return
    assert not has_nan and image.dtype.kind != "c"
    assert not (image.ndim == 3 and image.shape[2] == 5)
    h, w = image.shape[:2]
    n = result["rois"].shape[0]
    event("detections" if n else "no detections")
    assert result["masks"].shape == (h, w, n) and result["masks"].dtype == bool
    assert result["class_ids"].shape == (n,) and result["scores"].shape == (n,)
    if n:
        rois = result["rois"]
        assert (rois[:, 0] >= 0).all() and (rois[:, 2] <= h).all()
        assert (rois[:, 1] >= 0).all() and (rois[:, 3] <= w).all()
        assert np.isfinite(result["scores"]).all()
        assert set(result["class_ids"].tolist()) <= {1, 2}
