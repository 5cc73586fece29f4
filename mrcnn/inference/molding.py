"""Inference-side NumPy helpers: prepare images for the network and turn its
outputs back into per-image results in original-image coordinates.

No TensorFlow here; `mrcnn.model.MaskRCNN.detect` wires these around the graph.

Coordinate conventions:

* Network inputs ("molded" images) are ``[H', W', C]`` float32, the original
  image resized / padded per ``config.IMAGE_RESIZE_MODE`` minus
  ``config.MEAN_PIXEL``. ``window`` is ``(y1, x1, y2, x2)`` of the real image
  inside the molded one, pixels, y2/x2 exclusive.
* Detections are ``[N, 6]`` rows ``(y1, x1, y2, x2, class_id, score)`` with the
  box normalised to the molded image (``mrcnn.structures.boxes.norm_boxes`` convention);
  rows with ``class_id == 0`` are padding.
* Results are ``(y1, x1, y2, x2)`` int32 pixels of the ORIGINAL image, y2/x2
  exclusive.
* Keypoints (``NUM_KEYPOINTS`` > 0): the graph's ``mrcnn_keypoints`` ``[N, K,
  3]`` ``(x, y, score)`` in the molded image's continuous pixels; results
  ``(x, y, score)`` in the ORIGINAL image's (`mrcnn.structures.keypoints.unmold_keypoints`).
"""

import numpy as np

from mrcnn.structures.boxes import denorm_boxes, norm_boxes
from mrcnn.structures.image_meta import compose_image_meta
from mrcnn.structures.images import mold_image, resize_image
from mrcnn.structures.interpolation import paste_masks
from mrcnn.structures.keypoints import unmold_keypoints

__all__ = ["inference_resize_mode", "mold_image_for_inference", "mold_inputs",
           "class_masks", "unmold_detections", "unmold_result", "paste_masks",
           "group_by_shape"]


def inference_resize_mode(config):
    """``config.IMAGE_RESIZE_MODE`` as inference applies it: a random crop loses
    part of the image and cannot be mapped back to it, so "crop" pads to
    multiples of 64 ("pad64") instead."""
    mode = config.IMAGE_RESIZE_MODE
    return "pad64" if mode == "crop" else mode


def mold_image_for_inference(image, config, index=0):
    """Resize, pad and normalise one image for the network.

    Args:
        image: ``[H, W, C]`` array with ``C == config.IMAGE_CHANNEL_COUNT``
            (uint8 RGB for the usual configs).
        config: a `mrcnn.config.Config`.
        index: position of the image in the caller's list (error messages only).

    Returns:
        ``(molded_image float32 [H', W', C], image_meta float32 [IMAGE_META_SIZE],
        window int32 [4])``. The meta has image_id 0 and all classes inactive
        (``active_class_ids`` is only used by the training loss).
    """
    image = np.asarray(image)
    channels = config.IMAGE_CHANNEL_COUNT
    if image.ndim != 3 or image.shape[-1] != channels or min(image.shape[:2]) < 1:
        raise ValueError(
            f"image {index}: expected an array [height, width, {channels}] "
            f"(IMAGE_CHANNEL_COUNT={channels}), got shape {image.shape}; convert "
            f"grayscale/RGBA images first (e.g. mrcnn.data.dataset.to_rgb_uint8)")
    mode = inference_resize_mode(config)
    molded, window, scale, _, _ = resize_image(
        image, min_dim=config.IMAGE_MIN_DIM, min_scale=config.IMAGE_MIN_SCALE,
        max_dim=config.IMAGE_MAX_DIM, mode=mode)
    if molded.shape[0] % 64 or molded.shape[1] % 64:
        raise ValueError(
            f"image {index}: shape {molded.shape[:2]} after IMAGE_RESIZE_MODE "
            f"{mode!r} is not a multiple of 64 (the coarsest FPN stride); use "
            f"'square' or 'pad64', or pass images whose sides are multiples of 64")
    meta = compose_image_meta(0, image.shape, molded.shape, window, scale,
                              np.zeros([config.NUM_CLASSES], dtype=np.int32))
    return (mold_image(molded, config), meta.astype(np.float32),
            np.asarray(window, dtype=np.int32))


def mold_inputs(images, config):
    """Mold a list of images (see `mold_image_for_inference`).

    Returns:
        ``(molded_images, image_metas, windows)``. When every molded image has
        the same shape these are stacked arrays ``[N, H', W', C]``,
        ``[N, IMAGE_META_SIZE]`` and ``[N, 4]`` (the old API). Otherwise
        ``molded_images`` is a list of ``[H'_i, W'_i, C]`` arrays (metas and
        windows are still stacked).
    """
    if isinstance(images, np.ndarray) and images.ndim == 3:
        raise ValueError(f"mold_inputs: expected a LIST of images, got one array of shape "
                         f"{images.shape}; wrap it as [image]")
    molded, metas, windows = [], [], []
    for i, image in enumerate(images):
        m, meta, window = mold_image_for_inference(image, config, index=i)
        molded.append(m)
        metas.append(meta)
        windows.append(window)
    if not molded:
        raise ValueError("mold_inputs: got no images")
    if len({m.shape for m in molded}) == 1:
        molded = np.stack(molded)
    return molded, np.stack(metas), np.stack(windows)


def group_by_shape(shapes, batch_size):
    """Split indices into batches of at most ``batch_size`` sharing one shape.

    Args:
        shapes: list of hashable shapes, one per image.
        batch_size: maximum batch length.

    Returns:
        list of index lists, covering every index once, in first-seen order of
        the shapes (indices ascending inside a batch).
    """
    by_shape = {}
    for i, shape in enumerate(shapes):
        by_shape.setdefault(tuple(shape), []).append(i)
    batches = []
    for indices in by_shape.values():
        for start in range(0, len(indices), batch_size):
            batches.append(indices[start:start + batch_size])
    return batches


def class_masks(mrcnn_mask, class_ids):
    """Each detection's own mask out of the mask head's per-channel output.

    Args:
        mrcnn_mask: ``[N, mh, mw, NC]`` mask probabilities: ``NC =
            NUM_CLASSES`` (class-specific head: sigmoid per class, or softmax
            over classes with ``MASK_LOSS = "softmax"``) or 1 (class-agnostic
            head, ``CLASS_AGNOSTIC_MASK``; NUM_CLASSES >= 2 always, so one
            channel means class-agnostic).
        class_ids: int ``[N]``, the detections' classes (``>= 1``).

    Returns:
        float ``[N, mh, mw]``: channel ``class_ids[i]`` of row ``i`` (with
        softmax, the probability that a pixel is of the detection's class), or
        channel 0 of every row for a one-channel output. The NumPy twin of
        `mrcnn.modeling.roi_heads.mask_head.class_masks_graph`.
    """
    mrcnn_mask = np.asarray(mrcnn_mask)
    class_ids = np.asarray(class_ids, dtype=np.int64).reshape(-1)
    if mrcnn_mask.ndim != 4 or mrcnn_mask.shape[0] != len(class_ids):
        raise ValueError(f"class_masks: expected masks [N, mh, mw, NC] with N = "
                         f"{len(class_ids)} (one per class id), got {mrcnn_mask.shape}")
    channels = class_ids if mrcnn_mask.shape[-1] > 1 else np.zeros_like(class_ids)
    return mrcnn_mask[np.arange(len(class_ids)), :, :, channels]


def unmold_detections(detections, mrcnn_mask, original_image_shape, image_shape,
                      window, keypoints=None):
    """Map one image's network outputs back to the original image.

    Args:
        detections: ``[N, 6]`` ``(y1, x1, y2, x2, class_id, score)``, boxes
            normalised to the molded image; rows with class_id 0 are padding.
        mrcnn_mask: ``[N, mh, mw, NC]`` mask probabilities; each detection
            takes its class's channel, or channel 0 when ``NC`` is 1 (a
            class-agnostic head; see `class_masks`).
        original_image_shape: ``(H, W, C)`` of the image before resizing.
        image_shape: ``(H', W', C)`` of the molded image.
        window: ``(y1, x1, y2, x2)`` pixels (y2/x2 exclusive) of the real image
            inside the molded image.
        keypoints: optional ``[N, K, 3]`` ``(x, y, score)`` molded-image pixels
            (the graph's ``mrcnn_keypoints``).

    Returns:
        ``(boxes int32 [n, 4], class_ids int32 [n], scores float32 [n],
        masks bool [H, W, n])``: boxes in original-image pixels, y2/x2
        exclusive; detections whose box has zero area there are dropped. With
        ``keypoints`` a fifth item: float32 ``[n, K, 3]`` in original-image pixels.
    """
    detections = np.asarray(detections)
    mrcnn_mask = np.asarray(mrcnn_mask)
    if detections.ndim != 2 or detections.shape[1] != 6:
        raise ValueError(f"unmold_detections: expected detections [N, 6], got "
                         f"{detections.shape}")
    keep = np.nonzero(detections[:, 4] > 0)[0]
    boxes = detections[keep, :4].astype(np.float64)
    class_ids = detections[keep, 4].astype(np.int32)
    scores = detections[keep, 5].astype(np.float32)
    masks = class_masks(mrcnn_mask[keep], class_ids) if len(keep) else \
        np.zeros((0,) + mrcnn_mask.shape[1:3], np.float32)

    # Window in normalised molded-image coordinates, then boxes relative to it
    # (0..1 spans the real image), then pixels of the original image.
    wy1, wx1, wy2, wx2 = norm_boxes(np.asarray(window, np.float64), image_shape[:2])
    scale = np.array([wy2 - wy1, wx2 - wx1, wy2 - wy1, wx2 - wx1], np.float64)
    scale[scale <= 0] = 1.0  # degenerate one-pixel window
    shift = np.array([wy1, wx1, wy1, wx1], np.float64)
    relative = (boxes - shift) / scale
    boxes = denorm_boxes(relative, original_image_shape[:2]).reshape(-1, 4)
    height, width = int(original_image_shape[0]), int(original_image_shape[1])
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, height)
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, width)

    nonempty = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    boxes, class_ids, scores, masks = (boxes[nonempty], class_ids[nonempty],
                                       scores[nonempty], masks[nonempty])

    boxes = boxes.astype(np.int32)
    pasted = paste_masks(masks, boxes, (height, width))
    if keypoints is None:
        return boxes, class_ids, scores, pasted
    points = np.asarray(keypoints, np.float32)[keep][nonempty]
    points = unmold_keypoints(points, original_image_shape, window).reshape(
        (len(boxes),) + np.shape(keypoints)[1:])
    return boxes, class_ids, scores, pasted, points


def unmold_result(outputs, original_image_shape, image_shape, window):
    """One image's `detect` dict from its graph outputs.

    Args:
        outputs: ``(detections [D, 6], mrcnn_mask [D, mh, mw, NC])``, plus
            ``mrcnn_keypoints [D, K, 3]`` with a keypoint head.
        original_image_shape, image_shape, window: as `unmold_detections`.

    Returns:
        ``{"rois", "class_ids", "scores", "masks"}`` (`unmold_detections`),
        and ``"keypoints"`` float32 ``[N, K, 3]`` ``(x, y, score)`` in
        original-image pixels when the outputs have them.
    """
    keypoints = outputs[2] if len(outputs) > 2 else None
    values = unmold_detections(outputs[0], outputs[1], original_image_shape, image_shape,
                               window, keypoints=keypoints)
    return dict(zip(("rois", "class_ids", "scores", "masks", "keypoints"), values))


def _resolve_output(keras_model, mode, spec):
    if isinstance(spec, str):
        try:
            layer = keras_model.get_layer(spec)
        except ValueError as err:
            raise ValueError(f"run_graph: no layer named {spec!r} in the "
                             f"{mode} model") from err
        return layer.output
    return spec


def run_graph(model, images, outputs, image_metas=None):
    """Run an inference `MaskRCNN` up to intermediate tensors (old API).

    Args:
        model: a `mrcnn.model.MaskRCNN` in inference mode.
        images: list of images (molded here like `detect`; all must mold to
            one shape).
        outputs: list of ``(name, tensor-or-layer-name)`` pairs; tensors are
            Keras tensors of ``model.keras_model`` (e.g.
            ``model.keras_model.get_layer("ROI").output``).
        image_metas: optional metas to use instead of the molded ones.

    Returns:
        ``OrderedDict`` name -> numpy array (batch axis first; the heads'
        layers' outputs as ``[images, RoIs, ...]``); each is also
        printed with `mrcnn.visualization.log.log`.
    """
    import collections

    import keras
    import tensorflow as tf

    from mrcnn.modeling.layers import is_roi_wise
    from mrcnn.visualization.log import log

    names = [name for name, _ in outputs]
    tensors = [_resolve_output(model.keras_model, model.mode, spec) for _, spec in outputs]
    sub_model = keras.Model(model.keras_model.inputs, tensors)
    molded, metas, _ = mold_inputs(images, model.config)
    if isinstance(molded, list):
        raise ValueError("run_graph: images mold to different shapes "
                         f"{sorted({m.shape for m in molded})}; pass same-size images")
    if image_metas is not None:
        metas = np.asarray(image_metas, np.float32)
    anchors = model.get_anchors(molded.shape[1:3])
    anchors = np.broadcast_to(anchors, (len(molded),) + anchors.shape)
    values = sub_model([tf.constant(molded, tf.float32), tf.constant(metas, tf.float32),
                        tf.constant(np.ascontiguousarray(anchors), tf.float32)],
                       training=False)
    if len(tensors) == 1:
        values = [values]
    # The heads' layers run on RoIs merged into the batch axis: give their
    # outputs back per image, [images, RoIs, ...], as the original's did.
    roi_wise = [any(layer.output is t for layer in model.keras_model.layers
                    if is_roi_wise(layer)) for t in tensors]
    result = collections.OrderedDict()
    for name, value, per_roi in zip(names, values, roi_wise):
        value = np.asarray(value)
        result[name] = value.reshape((len(molded), -1) + value.shape[1:]) if per_roi else value
        log(name, result[name])
    return result
