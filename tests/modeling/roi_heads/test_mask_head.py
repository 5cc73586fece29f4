"""Tests of mrcnn.modeling.roi_heads.mask_head: crop_and_resize_mask, the graph mask targets
against it, and mrcnn_mask_loss."""

import numpy as np
import pytest

from mrcnn.modeling.roi_heads import mask_head
from mrcnn.modeling.roi_heads.mask_head import crop_and_resize_mask


# ----------------------------------------------------------------------- crop_and_resize_mask
def test_crop_and_resize_mask_identity_and_half():
    mask = np.zeros((20, 20), bool)
    mask[:, :10] = True
    np.testing.assert_array_equal(crop_and_resize_mask(mask, (0, 0, 20, 20), (20, 20)), mask)
    out = crop_and_resize_mask(mask, (0, 0, 20, 20), (28, 28))
    # Output column c samples x = (c + .5) * 20/28: columns 0..13 lie left of 10.
    expected = np.zeros((28, 28), np.float32)
    expected[:, :14] = 1
    np.testing.assert_array_equal(out, expected)
    # A box over the right half only sees zeros; a box outside the mask too.
    assert crop_and_resize_mask(mask, (0, 10, 20, 20), (7, 7)).sum() == 0
    assert crop_and_resize_mask(mask, (30, 30, 40, 40), (7, 7)).sum() == 0


def _jittered_case(seed, size=512, count=40):
    """One ~300 px gt ellipse, ``count`` RoIs jittered around its box (IoU >= 0.5)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] + 0.5
    mask = ((yy - 250.3) / 150.2) ** 2 + ((xx - 260.7) / 140.9) ** 2 <= 1
    from mrcnn.structures.boxes import compute_overlaps, extract_bboxes
    gt_box = extract_bboxes(mask[:, :, None]).astype(np.float64)
    rois = []
    while len(rois) < count:
        jitter = rng.normal(0, 12, 4)
        roi = np.clip(gt_box[0] + jitter, 0, size)
        if compute_overlaps(roi[None], gt_box)[0, 0] >= 0.6:
            rois.append(roi)
    return mask, gt_box, np.array(rois)


@pytest.mark.parametrize("use_mini_mask", [False, True])
def test_graph_and_numpy_mask_targets_agree(use_mini_mask):
    """The graph's RoIAlign targets (DetectionTargetLayer) and the NumPy twin
    (build_detection_targets' crop_and_resize_mask) on 40 jittered ~300 px RoIs."""
    from mrcnn.structures.coords import norm_boxes, norm_to_pixels
    from mrcnn.structures.masks import minimize_mask
    from mrcnn.modeling.roi_heads.sampling import DetectionTargetLayer

    size = 512
    mask, gt_box, rois = _jittered_case(3, size)
    stored = minimize_mask(gt_box.astype(int), mask[:, :, None], (56, 56)) if use_mini_mask \
        else mask[:, :, None]
    norm_rois = norm_boxes(rois, (size, size))
    layer = DetectionTargetLayer(len(rois), 1.0, (0.1, 0.1, 0.2, 0.2), (28, 28),
                                 use_mini_mask=use_mini_mask, image_shape=(size, size))
    out_rois, ids, _, targets = [np.asarray(o)[0] for o in layer(
        [norm_rois[None], np.array([[1]], "int32"), norm_boxes(gt_box, (size, size))[None],
         stored[None]])]
    assert (ids == 1).all()
    differing, worst = 0, 0
    for roi_norm, target in zip(out_rois, targets):
        roi = norm_to_pixels(roi_norm, (size, size))   # the pixel box the graph used
        if use_mini_mask:
            gy1, gx1, gy2, gx2 = gt_box[0]
            sy, sx = 56 / (gy2 - gy1), 56 / (gx2 - gx1)
            roi = ((roi[0] - gy1) * sy, (roi[1] - gx1) * sx, (roi[2] - gy1) * sy,
                   (roi[3] - gx1) * sx)
        expected = crop_and_resize_mask(stored[:, :, 0], roi, (28, 28))
        diff = (expected != target).sum()
        differing += diff > 0
        worst = max(worst, diff)
    # Identical here (compiled op and pure-TF path alike); the legacy graph targets
    # (crop_and_resize, rounded) differ from these on all 40 RoIs (median 31 of
    # 784 pixels: about a row and a column).
    assert worst == 0 and differing == 0, (worst, differing)


# ----------------------------------------------------------------------- mrcnn_mask_loss
def test_mrcnn_mask_loss_bce_on_gt_class_channel():
    target_ids = np.array([[1, 0]], "int32")
    target = np.zeros((1, 2, 2, 2), "float32")
    target[0, 0] = [[1, 0], [1, 1]]
    pred = np.full((1, 2, 2, 2, 3), 0.5, "float32")
    pred[0, 0, :, :, 1] = [[0.9, 0.2], [0.6, 1.0]]   # p = 1 is clipped to 1 - 1e-7
    pred[0, 0, :, :, 2] = 0.01                        # other class: ignored
    p = np.array([0.9, 0.2, 0.6, 1 - 1e-7])
    y = np.array([1, 0, 1, 1])
    expected = np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p)))
    got = float(mask_head.mrcnn_mask_loss(target, target_ids, pred))
    assert got == pytest.approx(expected, rel=1e-4)
    zero = mask_head.mrcnn_mask_loss(target, np.zeros_like(target_ids), pred)
    assert float(zero) == 0.0 and not np.isnan(float(zero))


def test_mrcnn_mask_loss_from_logits_keeps_learning_when_confidently_wrong():
    target_ids = np.array([[1]], "int32")
    target = np.ones((1, 1, 2, 2), "float32")
    logits = np.zeros((1, 1, 2, 2, 2), "float32")
    logits[0, 0, :, :, 1] = [[2.0, -1.0], [-30.0, 0.0]]   # -30: confidently wrong
    z = np.array([2.0, -1.0, -30.0, 0.0])
    expected = np.mean(np.log1p(np.exp(-z)))
    got = float(mask_head.mrcnn_mask_loss(target, target_ids, logits, from_logits=True))
    assert got == pytest.approx(expected, rel=1e-5)
    import tensorflow as tf
    x = tf.Variable(logits)
    with tf.GradientTape() as tape:
        loss = mask_head.mrcnn_mask_loss(target, target_ids, x, from_logits=True)
    assert tape.gradient(loss, x).numpy()[0, 0, 1, 0, 1] == pytest.approx(-0.25, rel=1e-5)
    # From clipped probabilities the same pixel gets no gradient at all.
    p = tf.Variable(tf.sigmoid(logits))
    with tf.GradientTape() as tape:
        loss = mask_head.mrcnn_mask_loss(target, target_ids, p)
    assert tape.gradient(loss, p).numpy()[0, 0, 1, 0, 1] == 0.0


def _softmax_case():
    """One positive RoI of class 2 and one negative, 2x2 masks, 3 classes."""
    target_ids = np.array([[2, 0]], "int32")
    target = np.zeros((1, 2, 2, 2), "float32")
    target[0, 0] = [[1, 0], [1, 1]]
    logits = np.zeros((1, 2, 2, 2, 3), "float32")
    logits[0, 0] = [[[0.0, 0.0, 0.0], [1.0, -1.0, 2.0]],
                    [[0.5, 0.0, 3.0], [-2.0, 4.0, 1.0]]]
    logits[0, 1] = 7.0                              # negative RoI: ignored
    return target, target_ids, logits


def test_mrcnn_mask_loss_softmax_is_the_per_pixel_multinomial_cross_entropy():
    import tensorflow as tf
    from loss_reference import cross_entropy
    target, target_ids, logits = _softmax_case()
    z = logits[0, 0].reshape(4, 3)
    labels = [2, 0, 2, 2]                            # class 2 on the mask, background off it
    expected = np.mean([cross_entropy(row, label) for row, label in zip(z, labels)])
    # By hand, pixel (0, 0): logits all 0, -log(1/3) = log 3.
    assert cross_entropy(z[0], 2) == pytest.approx(np.log(3.0))
    got = float(mask_head.mrcnn_mask_loss(target, target_ids, logits, from_logits=True,
                                          mask_loss="softmax"))
    assert got == pytest.approx(expected, rel=1e-6)
    # The same from softmax probabilities (the inference layer's output).
    probs = tf.nn.softmax(logits, axis=-1)
    got = float(mask_head.mrcnn_mask_loss(target, target_ids, probs, mask_loss="softmax"))
    assert got == pytest.approx(expected, rel=1e-5)
    # It differs from the sigmoid loss on the same logits (channel 2 only).
    sig = float(mask_head.mrcnn_mask_loss(target, target_ids, logits, from_logits=True))
    y, zz = target[0, 0].ravel(), z[:, 2]
    assert sig == pytest.approx(np.mean(np.log1p(np.exp(-zz)) + (1 - y) * zz), rel=1e-6)
    assert abs(sig - expected) > 0.1
    # No positive: 0, not NaN.
    zero = mask_head.mrcnn_mask_loss(target, np.zeros_like(target_ids), logits,
                                     from_logits=True, mask_loss="softmax")
    assert float(zero) == 0.0
    with pytest.raises(ValueError, match="MASK_LOSS.*'multinomial'"):
        mask_head.mrcnn_mask_loss(target, target_ids, logits, mask_loss="multinomial")


def test_mrcnn_mask_loss_softmax_gradient_is_finite_and_couples_the_classes():
    import tensorflow as tf
    target, target_ids, logits = _softmax_case()
    logits[0, 0, 1, 1] = [-300.0, 300.0, -300.0]     # confidently wrong (label 2)
    x = tf.Variable(logits)
    with tf.GradientTape() as tape:
        loss = mask_head.mrcnn_mask_loss(target, target_ids, x, from_logits=True,
                                         mask_loss="softmax")
    grad = tape.gradient(loss, x).numpy()
    assert np.isfinite(float(loss)) and np.isfinite(grad).all()
    # d loss / d z = (softmax(z) - onehot(label)) / pixels, for every channel.
    z = logits[0, 0].reshape(4, 3).astype(np.float64)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    onehot = np.eye(3)[[2, 0, 2, 2]]
    np.testing.assert_allclose(grad[0, 0].reshape(4, 3), (p - onehot) / 4, atol=1e-6)
    assert grad[0, 0, 1, 1].tolist() == pytest.approx([0.0, 0.25, -0.25], abs=1e-6)
    assert not grad[0, 1].any()                      # the negative RoI gets none


def test_class_agnostic_mask_loss_uses_channel_0_for_every_class():
    target_ids = np.array([[1, 2, 0]], "int32")
    target = np.zeros((1, 3, 2, 2), "float32")
    target[0, 0] = [[1, 0], [0, 0]]
    target[0, 1] = [[1, 1], [0, 1]]
    logits = np.zeros((1, 3, 2, 2, 1), "float32")
    logits[0, 0, :, :, 0] = [[2.0, -1.0], [0.5, 0.0]]
    logits[0, 1, :, :, 0] = [[1.0, 3.0], [-2.0, -0.5]]
    z = logits[0, :2, :, :, 0].ravel().astype(np.float64)
    y = target[0, :2].ravel()
    expected = np.mean(np.log1p(np.exp(-z)) + (1 - y) * z)
    for kind in ("sigmoid", "softmax"):   # one channel: the two-way softmax is the sigmoid
        got = float(mask_head.mrcnn_mask_loss(target, target_ids, logits, from_logits=True,
                                              mask_loss=kind))
        assert got == pytest.approx(expected, rel=1e-6), kind


def test_class_masks_graph_takes_each_class_channel_or_channel_0():
    import tensorflow as tf
    from mrcnn.inference.molding import class_masks
    masks = np.random.default_rng(0).random((3, 4, 4, 3)).astype("float32")
    ids = np.array([2, 0, 1], "int32")
    got = mask_head.class_masks_graph(tf.constant(masks), tf.constant(ids)).numpy()
    np.testing.assert_array_equal(got, np.stack([masks[i, :, :, c] for i, c in enumerate(ids)]))
    np.testing.assert_array_equal(got, class_masks(masks, ids))      # the NumPy twin
    one = mask_head.class_masks_graph(tf.constant(masks[..., 1:2]), tf.constant(ids)).numpy()
    np.testing.assert_array_equal(one, masks[..., 1])


def test_config_checks_the_mask_head_settings():
    from model_fixtures import TinyConfig

    class Bad(TinyConfig):
        MASK_LOSS = "multinomial"

    class BadAgnostic(TinyConfig):
        CLASS_AGNOSTIC_MASK = "yes"

    with pytest.raises(ValueError, match=r"Bad\.MASK_LOSS: expected one of \('sigmoid', "
                                         r"'softmax'\), got 'multinomial'"):
        Bad()
    with pytest.raises(ValueError, match=r"BadAgnostic\.CLASS_AGNOSTIC_MASK: expected True"):
        BadAgnostic()
    assert TinyConfig().MASK_LOSS == "sigmoid" and TinyConfig().CLASS_AGNOSTIC_MASK is False


# ----------------------------------------------------------------- the variants in the model
MASK_VARIANTS = [("sigmoid", False), ("softmax", False), ("sigmoid", True), ("softmax", True)]


def _variant_config(mask_loss, class_agnostic, **extra):
    from model_fixtures import TinyConfig

    class VariantConfig(TinyConfig):
        # RoIs from the data pipeline (jittered gt boxes): positives for sure.
        USE_RPN_ROIS = False
        WEIGHT_DECAY = 0.0
        POST_NMS_ROIS_TRAINING = 64
        MASK_LOSS = mask_loss
        CLASS_AGNOSTIC_MASK = class_agnostic

    for name, value in extra.items():
        setattr(VariantConfig, name, value)
    return VariantConfig()


@pytest.mark.parametrize("mask_loss, class_agnostic", MASK_VARIANTS)
def test_each_mask_variant_trains_one_step_with_its_own_loss(mask_loss, class_agnostic,
                                                             tmp_path):
    import keras
    from model_fixtures import RectanglesDataset
    from mrcnn import model as modellib
    from mrcnn.data.pipeline import build_training_dataset

    keras.utils.set_random_seed(0)
    config = _variant_config(mask_loss, class_agnostic)
    model = modellib.MaskRCNN("training", config, str(tmp_path))
    km = model.keras_model
    channels = 1 if class_agnostic else config.NUM_CLASSES
    layer = km.get_layer("mrcnn_mask")
    assert tuple(layer.kernel.shape) == (1, 1, config.MASK_HEAD_CONV_CHANNELS, channels)
    assert layer.activation.__name__ == "linear"              # logits in training
    batch = next(iter(build_training_dataset(RectanglesDataset([2, 3], seed=0), config,
                                             shuffle=False, repeat=False, seed=0)))

    # The train step's mask loss is the configured kind on the graph's logits.
    inputs = km._ordered_inputs(batch)
    outputs = km(inputs, training=False)
    rows = outputs["mrcnn_mask_logits"].shape[1]
    assert outputs["mrcnn_mask_logits"].shape[-1] == channels
    losses = km.compute_mrcnn_losses(inputs, outputs)
    args = (outputs["target_mask"][:, :rows], outputs["target_class_ids"][:, :rows],
            outputs["mrcnn_mask_logits"])
    by_kind = {kind: float(mask_head.mrcnn_mask_loss(*args, from_logits=True, mask_loss=kind))
               for kind in ("sigmoid", "softmax")}
    assert float(losses["mrcnn_mask_loss"]) == pytest.approx(by_kind[mask_loss], rel=1e-6)
    if class_agnostic:
        assert by_kind["softmax"] == pytest.approx(by_kind["sigmoid"], rel=1e-6)
    else:
        assert abs(by_kind["softmax"] - by_kind["sigmoid"]) > 1e-3

    model.set_trainable("heads", verbose=0)
    model.compile(0.01, config.LEARNING_MOMENTUM)
    before = np.array(layer.kernel)
    logs = {k: float(v) for k, v in km.train_step(batch).items()}
    assert all(np.isfinite(v) for v in logs.values()), logs
    assert logs["mrcnn_mask_loss"] > 0
    after = np.array(layer.kernel)
    assert np.isfinite(after).all() and not np.array_equal(after, before)


@pytest.mark.parametrize("mask_loss, class_agnostic", MASK_VARIANTS[1:])
def test_inference_mask_output_per_variant(mask_loss, class_agnostic, tmp_path):
    import keras
    from mrcnn import model as modellib
    from mrcnn.inference.molding import class_masks, unmold_detections

    keras.utils.set_random_seed(1)
    config = _variant_config(mask_loss, class_agnostic, IMAGES_PER_GPU=1,
                             DETECTION_MIN_CONFIDENCE=0.0)
    model = modellib.MaskRCNN("inference", config, str(tmp_path))
    km = model.keras_model
    # Random weights: make background unlikely so that there are detections.
    km.get_layer("mrcnn_class_logits").bias.assign(np.array([-20.0, 0.0, 0.0], np.float32))
    image = np.random.default_rng(2).integers(0, 256, (48, 80, 3), dtype=np.uint8)
    out = model.run_graph([image], [("detections", "mrcnn_detection"),
                                    ("masks", km.outputs[3])])
    detections, masks = out["detections"][0], out["masks"][0]
    real = int((detections[:, 4] > 0).sum())
    assert real > 0
    channels = 1 if class_agnostic else config.NUM_CLASSES
    assert masks.shape == (config.DETECTION_MAX_INSTANCES, 14, 14, channels)
    if class_agnostic:       # a sigmoid (a softmax over one channel would be all 1)
        assert (masks >= 0).all() and (masks <= 1).all() and (masks[:real] < 1).any()
    else:                    # a softmax over the classes at each pixel
        np.testing.assert_allclose(masks[:real].sum(axis=-1), 1.0, rtol=1e-5)
    r = model.detect([image])[0]
    n = len(r["class_ids"])
    assert n > 0 and r["masks"].shape == (48, 80, n) and r["masks"].dtype == bool
    molded, _, windows = model.mold_inputs([image])
    _, _, _, expected = unmold_detections(detections, masks, image.shape, molded[0].shape,
                                          windows[0])
    np.testing.assert_array_equal(r["masks"], expected)
    # The pasted masks are each detection's class channel (channel 0 if agnostic).
    own = class_masks(masks[:real], detections[:real, 4].astype(int))
    if class_agnostic:
        np.testing.assert_array_equal(own, masks[:real, :, :, 0])
    else:
        assert not np.array_equal(own, masks[:real, :, :, 0])


@pytest.mark.slow
def test_released_coco_layout_into_a_class_agnostic_model(tmp_path):
    """The released file's mrcnn_mask (81 channels) does not fit one channel:
    a clear shape error naming the layer, and everything else loads with
    exclude=["mrcnn_mask"]."""
    import reference_h5
    from mrcnn import model as modellib
    from mrcnn.config import Config

    class CocoAgnostic(Config):
        NAME = "coco_agnostic"
        BACKBONE = "resnet101"
        NUM_CLASSES = 81
        IMAGE_MIN_DIM = 128
        IMAGE_MAX_DIM = 128
        IMAGES_PER_GPU = 1
        CLASS_AGNOSTIC_MASK = True

    path = str(tmp_path / "coco.h5")
    expected = reference_h5.write_reference_h5(reference_h5.reference_tsv("inference"), path)
    model = modellib.MaskRCNN("inference", CocoAgnostic(), str(tmp_path))
    assert tuple(model.keras_model.get_layer("mrcnn_mask").kernel.shape) == (1, 1, 256, 1)
    with pytest.raises(ValueError, match=r"layer 'mrcnn_mask' has shape \(1, 1, 256, 81\) "
                                         r"in the file but the model's layer 'mrcnn_mask' "
                                         r"expects \(1, 1, 256, 1\)"):
        model.load_weights(path, by_name=True)
    report = model.load_weights(path, by_name=True, exclude=["mrcnn_mask"])
    assert report.excluded == ["mrcnn_mask"] and report.not_in_file == []
    assert report.loaded == [n for n in expected if n not in ("anchors", "mrcnn_mask")]
    (_, _, fill), = [e for e in expected["mrcnn_mask_conv1"] if "kernel" in e[0]]
    assert np.all(np.asarray(model.keras_model.get_layer("mrcnn_mask_conv1").kernel) == fill)
