"""The original Mask R-CNN's helpers: utils.batch_slice / mold_mask /
box_refinement_graph and modellib.detection_targets_graph /
refine_detections_graph / batch_pack_graph, and the old loss names (rpn_class_loss_graph,
smooth_l1_loss, ...), checked on hand-made values."""

import numpy as np
import pytest
import tensorflow as tf

from loss_reference import cross_entropy as _ce
from mrcnn import legacy_api, utils
from mrcnn import model as modellib
from mrcnn.structures.boxes import extract_bboxes
from mrcnn.config import Config
from mrcnn.inference.molding import mold_image_for_inference


def _config(**attrs):
    attrs.setdefault("NAME", "legacy")
    attrs.setdefault("NUM_CLASSES", 2)
    return type("LegacyTestConfig", (Config,), attrs)()


# --------------------------------------------------------------------------- re-exports

def test_reexports_are_the_same_objects():
    from mrcnn.structures import boxes_tf as graph_ops
    assert utils.batch_slice is legacy_api.batch_slice
    assert utils.mold_mask is legacy_api.mold_mask
    assert utils.box_refinement_graph is graph_ops.box_refinement_graph
    assert modellib.detection_targets_graph is legacy_api.detection_targets_graph
    assert modellib.refine_detections_graph is legacy_api.refine_detections_graph
    assert modellib.batch_pack_graph is legacy_api.batch_pack_graph
    assert "batch_slice" in dir(utils)
    with pytest.raises(AttributeError, match="no_such_helper"):
        utils.no_such_helper  # noqa: B018


def test_utils_import_stays_free_of_tensorflow():
    import subprocess
    import sys
    code = "import sys, mrcnn.utils; sys.exit(1 if 'tensorflow' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_box_refinement_graph_values():
    box = np.array([[0.0, 0.0, 2.0, 4.0]], np.float32)
    gt = np.array([[1.0, 0.0, 3.0, 8.0]], np.float32)   # moved down by h/2, twice as wide
    out = utils.box_refinement_graph(box, gt).numpy()
    np.testing.assert_allclose(out, [[0.5, 0.5, 0.0, np.log(2.0)]], atol=1e-6)


# --------------------------------------------------------------------------- batch_slice

def test_batch_slice_single_output():
    x = tf.constant(np.arange(12, dtype=np.float32).reshape(3, 4))
    out = utils.batch_slice(x, lambda row: tf.reduce_sum(row), 3)
    assert isinstance(out, tf.Tensor)
    np.testing.assert_allclose(out.numpy(), [6.0, 22.0, 38.0])


def test_batch_slice_several_inputs_and_outputs():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    k = np.array([1, 2, 3], np.int32)

    def fn(row, n):
        return row[:2] * tf.cast(n, tf.float32), tf.argmax(row)

    scaled, argmax = utils.batch_slice([tf.constant(x), tf.constant(k)], fn, 3,
                                       names=["scaled", "argmax"])
    np.testing.assert_allclose(scaled.numpy(), [[0, 1], [8, 10], [24, 27]])
    np.testing.assert_array_equal(argmax.numpy(), [3, 3, 3])


def test_batch_slice_only_first_batch_size_rows_and_in_tf_function():
    x = tf.constant(np.arange(8, dtype=np.float32).reshape(4, 2))

    @tf.function
    def run(t):
        return utils.batch_slice([t], lambda r: r * 2.0, 2, names=["doubled"])

    out = run(x)
    assert out.shape == (2, 2)
    np.testing.assert_allclose(out.numpy(), [[0, 2], [4, 6]])


def test_batch_slice_errors():
    with pytest.raises(ValueError, match="batch_size"):
        utils.batch_slice(tf.zeros([2, 2]), tf.reduce_sum, 0)
    with pytest.raises(ValueError, match="2 names for 1 outputs"):
        utils.batch_slice(tf.zeros([2, 2]), tf.reduce_sum, 2, names=["a", "b"])


# --------------------------------------------------------------------------- batch_pack_graph

def test_batch_pack_graph_values():
    x = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]], np.float32)
    out = modellib.batch_pack_graph(x, tf.constant([2, 0, 3]), 3)
    np.testing.assert_array_equal(out.numpy(), [1, 2, 7, 8, 9])
    # trailing dimensions are kept; num_rows < B ignores the later rows
    boxes = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    out = modellib.batch_pack_graph(boxes, [1, 3], 1)
    np.testing.assert_array_equal(out.numpy(), boxes[0, :1])
    out = modellib.batch_pack_graph(boxes, [1, 2], 2)
    np.testing.assert_array_equal(out.numpy(), np.concatenate([boxes[0, :1], boxes[1, :2]]))


# ---------------------------------------------------------------- refine_detections_graph

def test_refine_detections_graph_hand_made_case():
    config = _config(NUM_CLASSES=3, DETECTION_MIN_CONFIDENCE=0.5, DETECTION_MAX_INSTANCES=4,
                     DETECTION_NMS_THRESHOLD=0.3)
    rois = np.array([
        [0.10, 0.10, 0.30, 0.30],   # 0: class 1, 0.9               -> kept
        [0.11, 0.11, 0.31, 0.31],   # 1: class 1, 0.8, overlaps 0   -> NMS
        [0.12, 0.12, 0.32, 0.32],   # 2: class 2, 0.7 (other class) -> kept
        [0.50, 0.50, 0.70, 0.70],   # 3: background, 0.9            -> dropped
        [0.60, 0.60, 0.80, 0.80],   # 4: class 1, 0.4 < 0.5         -> dropped
        [0.00, 0.00, 0.00, 0.00],   # 5: padding row                -> dropped
        [0.50, 0.50, 0.90, 0.90],   # 6: class 2, 0.6, refined + clipped -> kept
    ], np.float32)
    probs = np.array([
        [0.05, 0.90, 0.05], [0.10, 0.80, 0.10], [0.10, 0.20, 0.70], [0.90, 0.05, 0.05],
        [0.30, 0.40, 0.30], [0.00, 0.95, 0.05], [0.20, 0.20, 0.60]], np.float32)
    deltas = np.zeros([7, 3, 4], np.float32)
    # row 6, class 2: dy = 0.5 * std 0.1 * h 0.4 = +0.02 (down); class 1 deltas unused
    deltas[6, 2] = [0.5, 0.0, 0.0, 0.0]
    deltas[6, 1] = [9.0, 9.0, 9.0, 9.0]
    window = np.array([0.0, 0.0, 0.9, 0.95], np.float32)

    det = modellib.refine_detections_graph(rois, probs, deltas, window, config).numpy()
    assert det.shape == (4, 6) and det.dtype == np.float32
    np.testing.assert_allclose(det, [
        [0.10, 0.10, 0.30, 0.30, 1, 0.9],
        [0.12, 0.12, 0.32, 0.32, 2, 0.7],
        [0.52, 0.50, 0.90, 0.90, 2, 0.6],      # y2 0.92 clipped to the window's 0.9
        [0, 0, 0, 0, 0, 0],
    ], atol=1e-5)


def test_refine_detections_graph_max_instances():
    config = _config(NUM_CLASSES=2, DETECTION_MIN_CONFIDENCE=0.1, DETECTION_MAX_INSTANCES=2)
    rois = np.array([[0.0, 0.0, 0.1, 0.1], [0.3, 0.3, 0.4, 0.4], [0.6, 0.6, 0.7, 0.7]],
                    np.float32)
    probs = np.array([[0.4, 0.6], [0.2, 0.8], [0.3, 0.7]], np.float32)
    det = legacy_api.refine_detections_graph(rois, probs, np.zeros([3, 2, 4], np.float32),
                                             np.array([0, 0, 1, 1], np.float32), config)
    np.testing.assert_allclose(det.numpy()[:, 5], [0.8, 0.7], atol=1e-6)
    np.testing.assert_allclose(det.numpy()[:, :4], rois[[1, 2]], atol=1e-6)


# ---------------------------------------------------------------- detection_targets_graph

def test_detection_targets_graph_shapes_and_positive_rows():
    config = _config(NUM_CLASSES=4, TRAIN_ROIS_PER_IMAGE=8, ROI_POSITIVE_RATIO=0.25,
                     TRAIN_ROIS_ADD_GT_BOXES=False,
                     MASK_SHAPE=[4, 4], MASK_POOL_SIZE=2, USE_MINI_MASK=False)
    gt_box = [0.2, 0.2, 0.6, 0.6]
    proposals = np.array([
        gt_box,                       # positive, IoU 1: zero deltas
        [0.2, 0.2, 0.6, 0.7],         # positive, IoU 0.8
        [0.7, 0.7, 0.9, 0.9],         # negative
        [0.0, 0.0, 0.1, 0.1],         # negative
        [0, 0, 0, 0], [0, 0, 0, 0],   # padding
    ], np.float32)
    gt_class_ids = np.array([3, 0], np.int32)                 # second row is padding
    gt_boxes = np.array([gt_box, [0, 0, 0, 0]], np.float32)
    gt_masks = np.zeros([16, 16, 2], bool)
    gt_masks[3:10, 3:10, 0] = True                            # pixels 3..9 = 0.2..0.6 * 15

    tf.random.set_seed(0)
    rois, class_ids, deltas, masks = modellib.detection_targets_graph(
        proposals, gt_class_ids, gt_boxes, gt_masks, config)
    assert rois.shape == (8, 4) and class_ids.shape == (8,)
    assert deltas.shape == (8, 4) and masks.shape == (8, 4, 4)
    assert class_ids.dtype == tf.int32
    rois, class_ids, deltas, masks = (t.numpy() for t in (rois, class_ids, deltas, masks))

    # rows 0-1 positives (random order), 2-3 negatives, 4-7 zero padding
    np.testing.assert_array_equal(class_ids, [3, 3, 0, 0, 0, 0, 0, 0])
    exact = int(np.argmax(np.all(np.isclose(rois[:2], gt_box), axis=1)))
    wide = 1 - exact
    np.testing.assert_allclose(rois[exact], gt_box, atol=1e-6)
    np.testing.assert_allclose(rois[wide], proposals[1], atol=1e-6)
    np.testing.assert_allclose(deltas[exact], [0, 0, 0, 0], atol=1e-6)
    # wide box: dx = (0.4 - 0.45) / 0.5 = -0.1, log(dw) = log(0.8), divided by BBOX_STD_DEV
    np.testing.assert_allclose(deltas[wide], [0, -0.1 / 0.1, 0, np.log(0.8) / 0.2], atol=1e-5)
    np.testing.assert_array_equal(masks[exact], np.ones([4, 4]))
    # the wide RoI's last sample column (x = 10.5 px) lies right of the mask
    np.testing.assert_array_equal(masks[wide], np.tile([1, 1, 1, 0], [4, 1]))
    negatives = sorted(rois[2:4].tolist())
    np.testing.assert_allclose(negatives, [[0.0, 0.0, 0.1, 0.1], [0.7, 0.7, 0.9, 0.9]], atol=1e-6)
    assert not deltas[2:].any() and not masks[2:].any() and not rois[4:].any()


def test_detection_targets_graph_mini_masks():
    config = _config(NUM_CLASSES=2, TRAIN_ROIS_PER_IMAGE=4, ROI_POSITIVE_RATIO=0.5,
                     TRAIN_ROIS_ADD_GT_BOXES=False,
                     MASK_SHAPE=[4, 4], MASK_POOL_SIZE=2, USE_MINI_MASK=True,
                     MINI_MASK_SHAPE=(8, 8))
    gt_box = [0.1, 0.1, 0.5, 0.9]
    mini = np.zeros([8, 8, 1], bool)
    mini[:, :4, 0] = True                                      # left half of the gt box
    _, class_ids, deltas, masks = legacy_api.detection_targets_graph(
        np.array([gt_box], np.float32), np.array([1]), np.array([gt_box], np.float32),
        mini, config)
    np.testing.assert_array_equal(class_ids.numpy(), [1, 0, 0, 0])
    np.testing.assert_allclose(deltas.numpy()[0], 0, atol=1e-6)
    np.testing.assert_array_equal(masks.numpy()[0], np.tile([1, 1, 0, 0], [4, 1]))


# --------------------------------------------------------------------------- mold_mask

def _bright_rectangle_image(h, w, box):
    y1, x1, y2, x2 = box
    image = np.full([h, w, 3], 20, np.uint8)
    image[y1:y2, x1:x2] = 240
    mask = np.zeros([h, w, 2], bool)
    mask[y1:y2, x1:x2, 0] = True
    mask[:5, :5, 1] = True                                     # a second, tiny instance
    return image, mask


@pytest.mark.parametrize("mode,min_dim,max_dim,expected_shape", [
    ("square", 128, 192, (192, 192)),     # scale down to the max side, pad to a square
    ("pad64", 128, 192, (256, 128)),      # scale up to the min side, pad to x64
    ("crop", 128, 192, (256, 128)),       # inference molds "crop" as "pad64"
    ("none", 128, 192, (128, 64)),
])
def test_mold_mask_lines_up_with_molded_image(mode, min_dim, max_dim, expected_shape):
    config = _config(IMAGE_RESIZE_MODE=mode, IMAGE_MIN_DIM=min_dim, IMAGE_MAX_DIM=max_dim)
    h, w = (128, 64) if mode == "none" else (100, 60)
    image, mask = _bright_rectangle_image(h, w, (20, 10, 70, 45))
    molded, _, window = mold_image_for_inference(image, config)
    molded_mask = utils.mold_mask(mask, config)

    assert molded_mask.dtype == bool
    assert molded_mask.shape == molded.shape[:2] + (2,) == expected_shape + (2,)
    bright = (molded + config.MEAN_PIXEL).mean(axis=-1) > 130
    agree = np.mean(bright == molded_mask[..., 0])
    assert agree > 0.995, agree
    # same bounding box, to within one pixel of resampling
    np.testing.assert_allclose(extract_bboxes(molded_mask[..., :1])[0],
                               extract_bboxes(bright[..., None])[0], atol=1)
    # nothing outside the image window (the padding)
    y1, x1, y2, x2 = window
    inside = np.zeros(molded.shape[:2], bool)
    inside[y1:y2, x1:x2] = True
    assert not molded_mask[~inside].any()
    assert molded_mask[y1, x1, 1]                              # tiny instance at the corner


def test_mold_mask_no_instances_and_bad_shape():
    config = _config(IMAGE_RESIZE_MODE="square", IMAGE_MIN_DIM=128, IMAGE_MAX_DIM=128)
    assert utils.mold_mask(np.zeros([50, 80, 0], bool), config).shape == (128, 128, 0)
    with pytest.raises(ValueError, match=r"\[H, W, N\]"):
        utils.mold_mask(np.zeros([50, 80], bool), config)


# --------------------------------------------------------------------------- loss names

def test_legacy_loss_names_are_the_same_maths():
    match = np.array([[[1], [-1]]], "int32")
    logits = np.array([[[0.0, 1.0], [2.0, 0.0]]], "float32")
    assert float(legacy_api.rpn_class_loss_graph(match, logits)) == pytest.approx(
        np.mean([_ce([0, 1], 1), _ce([2, 0], 0)]), rel=1e-5)
    pred = np.array([[[0.0, 0, 0, 2.0], [0, 0, 0, 0]]], "float32")
    target = np.zeros((1, 1, 4), "float32")
    assert float(legacy_api.rpn_bbox_loss_graph(None, target, match, pred)) == pytest.approx(1.5 / 4)
    np.testing.assert_allclose(np.asarray(legacy_api.smooth_l1_loss([0.0], [0.5])), [0.125])
