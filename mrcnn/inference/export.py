"""Export an inference `MaskRCNN` as a TensorFlow SavedModel that does everything in-graph.

    from mrcnn.inference.export import export_saved_model
    export_saved_model(model, "exported/shapes")          # model: MaskRCNN("inference", ...)

    # later, in any process (no mrcnn import needed with the default roi_align="tf"):
    loaded = tf.saved_model.load("exported/shapes")
    r = loaded.detect(tf.constant(image_uint8))           # image: [H, W, 3] uint8, any H, W
    r["rois"], r["class_ids"], r["scores"], r["masks"]
    # or the signature (TF Serving): loaded.signatures["serving_default"](image=...)

The serving function takes ONE image per call, ``uint8 [H, W, 3]`` of any size
(a batch of one image per call keeps every size working; call it once per
image). Its outputs match `MaskRCNN.detect` for that image:

* ``rois`` int32 ``[N, 4]`` ``(y1, x1, y2, x2)`` pixels of the ORIGINAL image,
  y2/x2 exclusive;
* ``class_ids`` int32 ``[N]``; ``scores`` float32 ``[N]``;
* ``masks`` bool ``[H, W, N]`` full-size instance masks;
* ``keypoints`` float32 ``[N, K, 3]`` ``(x, y, score)`` ORIGINAL image pixels,
  only for a model with a keypoint head (``NUM_KEYPOINTS`` > 0).

Everything between is in the graph and mirrors the NumPy path of `detect`
(`mrcnn.inference.molding`, `mrcnn.structures.images`):

1. resize (IMAGE_RESIZE_MODE ``"square"``): the scale rules of
   `mrcnn.structures.images.resize_image` (``IMAGE_MIN_DIM``, ``IMAGE_MIN_SCALE``,
   ``IMAGE_MAX_DIM``), the resize of scikit-image (`resample_linear_graph`:
   bilinear, half-pixel centres, zero outside the image, no anti-aliasing;
   computed in float64, truncated to uint8 as the original's ``astype``), centred
   zero padding to ``[IMAGE_MAX_DIM, IMAGE_MAX_DIM]``;
2. mold (minus ``MEAN_PIXEL``), image meta, anchors (a constant: the molded
   shape is fixed in "square" mode);
3. the inference Keras graph (`mrcnn.modeling.assembly.build_inference_model`), batch 1;
4. unmold (`unmold_detections_graph`): boxes back to original pixels, empty
   boxes dropped, masks pasted with the same bilinear resize and the 0.5
   threshold of `mrcnn.structures.masks.unmold_mask` (`paste_masks_graph`).

Other resize modes (``"pad64"``, ``"none"``, ``"crop"``) give a molded shape
that depends on the image, so the anchors would have to be built in-graph:
not supported, `export_saved_model` raises ValueError for them.

RoIAlign and portability: by default (``roi_align="tf"``) the exported graph is
traced with the pure-TensorFlow RoIAlign (`mrcnn.ops.roi_align_tf`), so the
SavedModel uses stock TF ops only and loads with ``tf.saved_model.load`` in a
fresh process, without mrcnn. ``roi_align="compiled"`` traces it with the
compiled op (faster on CPU, see benchmarks/README.md); such a SavedModel holds
the custom op ``MrcnnRoiAlign``: call ``mrcnn.ops.compiled_roi_align()`` (or
`load_saved_model` here, which does it) before ``tf.saved_model.load``.
"""

import os

import numpy as np
import tensorflow as tf

from mrcnn.structures.anchors import get_anchors_for_config
from mrcnn.structures.coords import norm_boxes_graph, norm_to_pixels_graph, rebase_boxes_graph
from mrcnn.modeling.roi_heads.mask_head import class_masks_graph, paste_masks_graph
from mrcnn.structures.image_meta import compose_image_meta_graph
from mrcnn.structures.interpolation_tf import resize_taps_graph as linear_taps_graph

__all__ = ["export_saved_model", "load_saved_model", "build_serving_module",
           "resample_linear_graph", "resize_square_graph", "unmold_detections_graph",
           "unmold_keypoints_graph",
           "ROI_ALIGN_CHOICES", "SUPPORTED_RESIZE_MODES"]

ROI_ALIGN_CHOICES = ("tf", "compiled")
SUPPORTED_RESIZE_MODES = ("square",)
# Written next to the SavedModel so `load_saved_model` knows what to load first.
_CUSTOM_OP_MARKER = "mrcnn_custom_ops.txt"


# ----------------------------------------------------------------------------- resizing
def _half_pixel_coords(out_size, in_size, dtype):
    """Source positions of ``out_size`` half-pixel-centred samples over ``in_size``."""
    out_f = tf.cast(tf.range(out_size), dtype)
    scale = tf.cast(in_size, dtype) / tf.cast(out_size, dtype)
    return (out_f + 0.5) * scale - 0.5


def resample_linear_graph(image, out_hw):
    """Bilinear resize of ``image [h, w, C]`` to ``out_hw`` (scikit-image's maths).

    Same result as ``skimage.transform.resize(image, out_hw, order=1,
    mode="constant", cval=0, anti_aliasing=False)`` (what
    `mrcnn.structures.images.resize` does): output pixel ``i`` samples the source at
    ``(i + 0.5) * h / out_h - 0.5``, linear interpolation, taps outside the
    image count as 0, and the result is clipped to the input's value range
    (``clip=True``). Separable: two gathers of two taps each, so the cost is
    proportional to the output size.

    Args:
        image: float ``[h, w, C]`` (float64 for results identical to
            scikit-image's up to rounding).
        out_hw: ``(out_h, out_w)`` int32 scalars/tensor.

    Returns:
        ``[out_h, out_w, C]`` of ``image.dtype``.
    """
    dtype = image.dtype
    out_h, out_w = out_hw[0], out_hw[1]
    in_h, in_w = tf.shape(image)[0], tf.shape(image)[1]
    y_lo, y_hi, wy_lo, wy_hi = linear_taps_graph(_half_pixel_coords(out_h, in_h, dtype), in_h)
    rows = (tf.gather(image, y_lo) * wy_lo[:, None, None]
            + tf.gather(image, y_hi) * wy_hi[:, None, None])             # [out_h, w, C]
    x_lo, x_hi, wx_lo, wx_hi = linear_taps_graph(_half_pixel_coords(out_w, in_w, dtype), in_w)
    out = (tf.gather(rows, x_lo, axis=1) * wx_lo[None, :, None]
           + tf.gather(rows, x_hi, axis=1) * wx_hi[None, :, None])
    # scikit-image's clip=True: the result stays in the input's value range
    # (edge pixels blended with the zeros outside are lifted back).
    return tf.clip_by_value(out, tf.reduce_min(image), tf.reduce_max(image))


def resize_square_graph(image, min_dim, max_dim, min_scale=0):
    """`mrcnn.structures.images.resize_image` with ``mode="square"``, in-graph.

    Args:
        image: uint8 ``[h, w, C]``.
        min_dim, max_dim, min_scale: python numbers (IMAGE_MIN_DIM,
            IMAGE_MAX_DIM, IMAGE_MIN_SCALE).

    Returns:
        ``(molded uint8 [max_dim, max_dim, C], window int32 [4], scale float64)``:
        window ``(y1, x1, y2, x2)`` of the scaled image inside the padded one,
        pixels, y2/x2 exclusive.
    """
    shape = tf.shape(image)
    h = tf.cast(shape[0], tf.float64)
    w = tf.cast(shape[1], tf.float64)
    scale = tf.constant(1.0, tf.float64)
    if min_dim:
        scale = tf.maximum(scale, float(min_dim) / tf.minimum(h, w))
    if min_scale:
        scale = tf.maximum(scale, float(min_scale))
    long_side = tf.maximum(h, w)
    scale = tf.where(tf.round(long_side * scale) > float(max_dim),
                     float(max_dim) / long_side, scale)
    new_h = tf.cast(tf.round(h * scale), tf.int32)
    new_w = tf.cast(tf.round(w * scale), tf.int32)
    resized = resample_linear_graph(tf.cast(image, tf.float64), tf.stack([new_h, new_w]))
    # Truncated back to uint8 like `mrcnn.structures.images.resize_image` (the original's astype).
    resized = tf.cast(tf.floor(tf.clip_by_value(resized, 0.0, 255.0)), tf.uint8)
    top = (max_dim - new_h) // 2
    left = (max_dim - new_w) // 2
    padded = tf.pad(resized, [[top, max_dim - new_h - top], [left, max_dim - new_w - left],
                              [0, 0]])
    padded = tf.ensure_shape(padded, [max_dim, max_dim, image.shape[-1]])
    window = tf.stack([top, left, top + new_h, left + new_w])
    return padded, window, scale


def unmold_keypoints_graph(keypoints, original_hw, window):
    """`mrcnn.structures.keypoints.unmold_keypoints` in-graph: ``[N, K, 3]``
    ``(x, y, score)`` molded-image pixels -> original-image pixels, ``x_orig =
    (x - wx1) * W / (wx2 - wx1)`` (the same for y), scores kept."""
    keypoints = tf.cast(keypoints, tf.float32)
    window = tf.cast(window, tf.float32)
    orig = tf.cast(original_hw, tf.float32)
    x = (keypoints[..., 0] - window[1]) * (orig[1] / tf.maximum(window[3] - window[1], 1e-6))
    y = (keypoints[..., 1] - window[0]) * (orig[0] / tf.maximum(window[2] - window[0], 1e-6))
    return tf.stack([x, y, keypoints[..., 2]], axis=-1)


def unmold_detections_graph(detections, mrcnn_mask, original_hw, molded_hw, window,
                            keypoints=None):
    """`mrcnn.inference.molding.unmold_detections` in-graph (one image).

    Args:
        detections: ``[D, 6]`` ``(y1, x1, y2, x2, class_id, score)``, boxes
            normalised to the molded image; class_id 0 rows are padding.
        mrcnn_mask: ``[D, mh, mw, NC]`` mask probabilities: each detection
            takes its class's channel, or channel 0 when ``NC`` is 1 (a
            class-agnostic head; `class_masks_graph`).
        original_hw: int32 ``[2]`` original image ``(H, W)``.
        molded_hw: ``(H', W')`` of the molded image (python ints or int32).
        window: int32 ``[4]`` window of the image in the molded one (pixels,
            y2/x2 exclusive).
        keypoints: optional ``[D, K, 3]`` the graph's ``mrcnn_keypoints``.

    Returns:
        dict ``rois`` int32 ``[N, 4]`` (original pixels, y2/x2 exclusive),
        ``class_ids`` int32 ``[N]``, ``scores`` float32 ``[N]``, ``masks``
        bool ``[H, W, N]``; boxes with zero area in the original image are
        dropped. With ``keypoints``: ``keypoints`` float32 ``[N, K, 3]``
        (`unmold_keypoints_graph`).
    """
    f64 = tf.float64
    keep = tf.where(detections[:, 4] > 0)[:, 0]
    dets = tf.gather(detections, keep)
    class_ids = tf.cast(dets[:, 4], tf.int32)
    scores = tf.cast(dets[:, 5], tf.float32)
    masks = class_masks_graph(tf.gather(mrcnn_mask, keep), class_ids)

    # Window normalised to the molded image, boxes relative to it (0..1 spans the
    # real image), then pixels of the original image: as `unmold_detections`.
    window_norm = norm_boxes_graph(tf.cast(window, f64), tf.convert_to_tensor(molded_hw))
    relative = rebase_boxes_graph(tf.cast(dets[:, :4], f64), window_norm)
    orig = tf.cast(original_hw, f64)
    pixels = tf.round(norm_to_pixels_graph(relative, orig))
    upper = tf.stack([orig[0], orig[1]] * 2)
    boxes = tf.cast(tf.clip_by_value(pixels, 0.0, upper), tf.int32)

    nonempty = tf.where((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]))[:, 0]
    boxes = tf.gather(boxes, nonempty)
    full = paste_masks_graph(tf.gather(masks, nonempty), boxes, tf.cast(original_hw, tf.int32))
    result = {"rois": boxes, "class_ids": tf.gather(class_ids, nonempty),
              "scores": tf.gather(scores, nonempty),
              "masks": tf.transpose(full, [1, 2, 0])}
    if keypoints is not None:
        points = tf.gather(tf.gather(keypoints, keep), nonempty)
        result["keypoints"] = unmold_keypoints_graph(points, original_hw, window)
    return result


# ----------------------------------------------------------------------------- module
def _check_exportable(maskrcnn, roi_align):
    if getattr(maskrcnn, "mode", None) != "inference":
        raise ValueError("export_saved_model: needs a MaskRCNN built with mode='inference', "
                         f"got mode={getattr(maskrcnn, 'mode', None)!r}")
    config = maskrcnn.config
    if config.IMAGE_RESIZE_MODE not in SUPPORTED_RESIZE_MODES:
        raise ValueError(
            f"export_saved_model: IMAGE_RESIZE_MODE {config.IMAGE_RESIZE_MODE!r} is not "
            f"supported (the molded shape, hence the anchors, would depend on the image); "
            f"supported: {SUPPORTED_RESIZE_MODES}")
    if config.IMAGE_CHANNEL_COUNT != 3:
        raise ValueError("export_saved_model: only 3-channel (RGB) models can be exported, "
                         f"got IMAGE_CHANNEL_COUNT={config.IMAGE_CHANNEL_COUNT}")
    if roi_align not in ROI_ALIGN_CHOICES:
        raise ValueError(f"export_saved_model: roi_align must be one of {ROI_ALIGN_CHOICES}, "
                         f"got {roi_align!r}")


class _ForcedRoiAlign:
    """Context: make `mrcnn.ops.roi_align` resolve to ``impl`` while tracing.

    Sets ``MRCNN_ROI_ALIGN_IMPL`` and resets the cached choice, then restores
    both: process-wide, so do not trace other models in other threads meanwhile.
    """

    def __init__(self, impl):
        self.impl = impl

    def __enter__(self):
        from mrcnn import ops
        self._ops = ops
        self._saved = os.environ.get(ops.IMPL_ENV)
        os.environ[ops.IMPL_ENV] = self.impl
        ops.reset_implementation()
        return self

    def __exit__(self, *exc):
        if self._saved is None:
            os.environ.pop(self._ops.IMPL_ENV, None)
        else:
            os.environ[self._ops.IMPL_ENV] = self._saved
        self._ops.reset_implementation()
        return False


def build_serving_module(maskrcnn, roi_align="tf"):
    """A ``tf.Module`` whose ``detect`` tf.function does in-graph detection.

    Args:
        maskrcnn: a `mrcnn.model.MaskRCNN` in inference mode (weights loaded).
        roi_align: ``"tf"`` (portable) or ``"compiled"`` (see module docstring).

    Returns:
        the module; ``module.detect(image uint8 [H, W, 3])`` returns the dict of
        the module docstring. Its concrete function is traced here, with the
        chosen RoIAlign implementation.
    """
    _check_exportable(maskrcnn, roi_align)
    config = maskrcnn.config
    keras_model = maskrcnn.keras_model
    side = int(config.IMAGE_MAX_DIM)
    anchors = np.asarray(get_anchors_for_config(config, (side, side)), np.float32)
    mean_pixel = np.asarray(config.MEAN_PIXEL, np.float32)
    num_classes = int(config.NUM_CLASSES)
    min_dim, min_scale = config.IMAGE_MIN_DIM, config.IMAGE_MIN_SCALE

    module = tf.Module()
    module.keras_model = keras_model

    @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8, name="image")])
    def detect(image):
        original_hw = tf.shape(image)[:2]
        molded, window, scale = resize_square_graph(image, min_dim, side, min_scale)
        molded = tf.cast(molded, tf.float32) - mean_pixel
        meta = compose_image_meta_graph(
            0, tf.concat([original_hw, [3]], axis=0), [side, side, 3], window, scale,
            tf.zeros([num_classes]))
        outputs = keras_model([molded[None], meta[None], tf.constant(anchors[None])],
                              training=False)
        keypoints = outputs["mrcnn_keypoints"][0] if "mrcnn_keypoints" in outputs else None
        return unmold_detections_graph(outputs["detections"][0], outputs["mrcnn_mask"][0],
                                       original_hw, (side, side), window, keypoints=keypoints)

    module.detect = detect
    with _ForcedRoiAlign(roi_align):
        module.detect.get_concrete_function()
    return module


def export_saved_model(maskrcnn, path, roi_align="tf"):
    """Write ``maskrcnn`` (inference mode) as a SavedModel at ``path``.

    Signature ``serving_default``: input ``image`` uint8 ``[H, W, 3]`` (one
    image, any size); outputs ``rois``, ``class_ids``, ``scores``, ``masks``
    (and ``keypoints`` with a keypoint head) as `MaskRCNN.detect` returns them
    for that image. The loaded object also
    has ``detect(image)``.

    Args:
        maskrcnn: `mrcnn.model.MaskRCNN` in inference mode.
        path: output directory (created; an existing SavedModel is overwritten).
        roi_align: ``"tf"`` (default; stock TF ops only, loads anywhere) or
            ``"compiled"`` (needs ``mrcnn.ops.compiled_roi_align()`` before
            loading; `load_saved_model` does that).

    Returns:
        ``path`` as a str.

    Raises:
        ValueError: training-mode model, IMAGE_RESIZE_MODE other than
            ``"square"``, IMAGE_CHANNEL_COUNT != 3, unknown ``roi_align``.
    """
    module = build_serving_module(maskrcnn, roi_align=roi_align)
    path = os.fspath(path)
    with _ForcedRoiAlign(roi_align):
        tf.saved_model.save(module, path,
                            signatures={"serving_default": module.detect.get_concrete_function()})
    marker = os.path.join(path, _CUSTOM_OP_MARKER)
    if roi_align == "compiled":
        with open(marker, "w", encoding="utf-8") as f:
            f.write("MrcnnRoiAlign\n")
    elif os.path.exists(marker):
        os.remove(marker)
    return path


def load_saved_model(path):
    """``tf.saved_model.load(path)``, loading the compiled RoIAlign op first if needed.

    For a SavedModel written with ``roi_align="compiled"`` the custom op library
    is loaded (built if needed) with `mrcnn.ops.compiled_roi_align`; a portable
    one (``roi_align="tf"``) needs nothing.
    """
    path = os.fspath(path)
    if os.path.exists(os.path.join(path, _CUSTOM_OP_MARKER)):
        from mrcnn.ops import compiled_roi_align
        compiled_roi_align()
    return tf.saved_model.load(path)
