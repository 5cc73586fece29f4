"""Keypoint geometry: the one home of keypoint conventions (NumPy).

Convention. Keypoints are float32 ``[N, K, 3]`` ``(x, y, v)``: ``N`` instances
(aligned with ``load_mask``'s channels), ``K`` keypoints each, ``x`` / ``y`` in
**continuous image pixels** and the COCO visibility ``v``: 0 = not labelled
(its ``x``, ``y`` are meaningless, 0 by convention), 1 = labelled but not
visible (occluded), 2 = visible. The frame is `mrcnn.structures.coords`': pixel
``(row r, column c)`` covers ``[c, c + 1) x [r, r + 1)``, so its centre is
``(c + 0.5, r + 0.5)``; a keypoint at ``x = 3.0`` lies on the border between
columns 2 and 3. COCO keypoint coordinates are continuous positions in this
same frame, as are labelme points. Detections use the same array with a score
in the third column: ``(x, y, score)``.

Transforms replay on keypoints what `mrcnn.structures.images.resize_image`
does to the pixels (its ``window, scale, padding, crop``), a horizontal flip
(``x -> width - x`` with a flip map swapping left / right keypoints), and the
inverse of the resize for detections (`unmold_keypoints`).

Heatmaps (the keypoint head, `mrcnn.modeling.roi_heads.keypoint_head`): a RoI
(pixel box ``y1, x1, y2, x2``, y2/x2 exclusive, ``w = x2 - x1``) is divided
into ``m x m`` cells; cell ``(i, j)`` covers ``[x1 + j w/m, x1 + (j+1) w/m) x
[y1 + i h/m, y1 + (i+1) h/m)``: the geometry of aligned RoIAlign, whose bin
``j`` samples the same interval around its centre ``x1 + (j + 0.5) w/m``.
`keypoint_targets` puts a keypoint in the cell containing it; `decode_heatmaps`
maps a cell back to its centre (plus a sub-cell offset).

Per-class keypoint sets: `keypoint_class_table` is the one rule saying which
of the ``K`` keypoints each class has (``Config.KEYPOINT_CLASSES``); both target
builders (NumPy here, TensorFlow in the head module) take its table, so classes
without keypoints get no valid target and no loss.
"""

import numpy as np

__all__ = [
    "COCO_PERSON_KEYPOINT_NAMES", "COCO_PERSON_FLIP_MAP", "COCO_PERSON_SKELETON",
    "COCO_PERSON_SIGMAS", "check_keypoints", "empty_keypoints", "resize_keypoints",
    "unmold_keypoints", "flip_permutation", "flip_keypoints_horizontal",
    "keypoint_indices", "keypoint_class_table", "keypoint_targets", "decode_heatmaps",
    "refine_peak_offsets", "oks", "oks_sigmas", "validate_keypoint_settings",
]

COCO_PERSON_KEYPOINT_NAMES = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip",
    "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle")
COCO_PERSON_FLIP_MAP = tuple((f"left_{p}", f"right_{p}") for p in (
    "eye", "ear", "shoulder", "elbow", "wrist", "hip", "knee", "ankle"))
# The person category's "skeleton" of the COCO files, 0-based (the files are 1-based).
COCO_PERSON_SKELETON = tuple((a - 1, b - 1) for a, b in (
    (16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7), (6, 8),
    (7, 9), (8, 10), (9, 11), (2, 3), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7)))
# Per-keypoint OKS constants of COCO's person keypoints (pycocotools' COCOeval).
COCO_PERSON_SIGMAS = (0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62,
                      1.07, 1.07, 0.87, 0.87, 0.89, 0.89)
COCO_PERSON_SIGMAS = tuple(s / 10.0 for s in COCO_PERSON_SIGMAS)


def check_keypoints(keypoints, num_instances=None, num_keypoints=None, where="keypoints"):
    """float32 ``[N, K, 3]`` copy of ``keypoints``; ValueError naming ``where`` when
    the shape is not ``[N, K, 3]`` (with the given ``N`` / ``K``), a value is not
    finite or a visibility is not 0, 1 or 2."""
    array = np.asarray(keypoints, dtype=np.float32)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"{where}: expected keypoints [N, K, 3] (x, y, visibility), got "
                         f"shape {array.shape}")
    if num_instances is not None and array.shape[0] != num_instances:
        raise ValueError(f"{where}: {array.shape[0]} keypoint rows for {num_instances} "
                         f"instances (load_mask's channels)")
    if num_keypoints is not None and array.shape[1] != num_keypoints:
        raise ValueError(f"{where}: {array.shape[1]} keypoints per instance, expected "
                         f"{num_keypoints} (NUM_KEYPOINTS)")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{where}: keypoints must be finite")
    if not np.all(np.isin(array[..., 2], (0.0, 1.0, 2.0))):
        raise ValueError(f"{where}: visibility (the third column) must be 0, 1 or 2, got "
                         f"{sorted(set(np.unique(array[..., 2]).tolist()) - {0., 1., 2.})}")
    return array.copy()


def empty_keypoints(num_instances, num_keypoints):
    """float32 zeros ``[N, K, 3]``: every keypoint unlabelled."""
    return np.zeros((int(num_instances), int(num_keypoints), 3), dtype=np.float32)


def _drop(keypoints, drop):
    """Unlabel (``x = y = v = 0``) the keypoints where ``drop`` is True."""
    keypoints[drop] = 0.0
    return keypoints


def resize_keypoints(keypoints, image_shape, scale, padding, crop=None):
    """Move keypoints with the image through `resize_image`'s transform.

    `resize_image` resizes an ``h x w`` image to ``round(h * scale) x
    round(w * scale)`` with scikit-image, which maps output pixel centres
    ``i + 0.5`` to input positions ``(i + 0.5) * h / round(h * scale)``: in
    continuous coordinates a point moves by the factor actually applied per
    axis, ``round(w * scale) / w`` (not ``scale``). Then a crop shifts by
    ``-(crop x, crop y)`` and keypoints outside the ``[0, crop w) x [0, crop h)``
    crop become unlabelled (all three values 0); padding shifts by ``(left,
    top)``. Unlabelled keypoints stay zeros.

    Args:
        keypoints: ``[N, K, 3]`` in the original image's pixels.
        image_shape: ``(h, w[, c])`` of the original image.
        scale, padding, crop: as returned by `resize_image`.

    Returns:
        float32 ``[N, K, 3]`` in the resized image's pixels.
    """
    out = np.array(keypoints, dtype=np.float32, copy=True)
    h, w = int(image_shape[0]), int(image_shape[1])
    labelled = out[..., 2] > 0
    if scale != 1:
        fy, fx = round(h * scale) / h, round(w * scale) / w
        out[..., 0] *= fx
        out[..., 1] *= fy
    if crop is not None:
        y, x, ch, cw = (float(v) for v in crop)
        out[..., 0] -= x
        out[..., 1] -= y
        outside = (out[..., 0] < 0) | (out[..., 0] >= cw) | (out[..., 1] < 0) | (out[..., 1] >= ch)
        labelled &= ~outside
    top, left = float(padding[0][0]), float(padding[1][0])
    out[..., 0] += left
    out[..., 1] += top
    return _drop(out, ~labelled)


def unmold_keypoints(keypoints, original_shape, window):
    """Keypoints detected in the network's input image -> original image pixels.

    The inverse of `resize_keypoints` for the non-crop modes: the window
    ``(y1, x1, y2, x2)`` (pixels, exclusive end) is the resized image inside the
    padded one, so ``x_orig = (x - x1) * w / (x2 - x1)``, the same for y. The
    third column (score) is kept.

    Args:
        keypoints: ``[N, K, 3]`` ``(x, y, score)`` in input-image pixels.
        original_shape: ``(h, w[, c])`` of the original image.
        window: ``(y1, x1, y2, x2)`` from `resize_image`.

    Returns:
        float32 ``[N, K, 3]``.
    """
    out = np.array(keypoints, dtype=np.float32, copy=True)
    y1, x1, y2, x2 = (float(v) for v in window)
    h, w = float(original_shape[0]), float(original_shape[1])
    out[..., 0] = (out[..., 0] - x1) * (w / max(x2 - x1, 1e-6))
    out[..., 1] = (out[..., 1] - y1) * (h / max(y2 - y1, 1e-6))
    return out


def keypoint_indices(items, num_keypoints, names=(), where="keypoints"):
    """Keypoint names or indices -> list of int indices in ``[0, num_keypoints)``."""
    names = tuple(names or ())
    out = []
    for item in items:
        if isinstance(item, str):
            if item not in names:
                raise ValueError(f"{where}: unknown keypoint name {item!r} (KEYPOINT_NAMES: "
                                 f"{names or 'none given'})")
            out.append(names.index(item))
        elif isinstance(item, (int, np.integer)) and not isinstance(item, bool) \
                and 0 <= item < num_keypoints:
            out.append(int(item))
        else:
            raise ValueError(f"{where}: expected keypoint names or indices in [0, "
                             f"{num_keypoints}), got {item!r}")
    if len(set(out)) != len(out):
        raise ValueError(f"{where}: a keypoint is listed twice in {list(items)!r}")
    return out


def flip_permutation(flip_map, num_keypoints, names=()):
    """int ``[K]``: keypoint ``k`` of a flipped instance is keypoint ``perm[k]``
    of the original. ``flip_map``: pairs of names (with ``names``) or indices,
    each keypoint in at most one pair (``Config.KEYPOINT_FLIP_MAP``)."""
    perm = np.arange(int(num_keypoints))
    flat = []
    for pair in flip_map or ():
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"KEYPOINT_FLIP_MAP: expected pairs of keypoints, got {pair!r}")
        a, b = keypoint_indices(pair, num_keypoints, names, "KEYPOINT_FLIP_MAP")
        flat += [a, b]
        perm[a], perm[b] = b, a
    if len(set(flat)) != len(flat):
        raise ValueError(f"KEYPOINT_FLIP_MAP: a keypoint is in two pairs: {flip_map!r}")
    return perm


def flip_keypoints_horizontal(keypoints, width, permutation):
    """Keypoints of the image flipped left-right (``image[:, ::-1]``).

    Column ``c`` becomes ``width - 1 - c``; in the continuous frame ``x ->
    width - x`` (a pixel centre ``c + 0.5`` goes to ``width - 1 - c + 0.5``).
    Then the keypoints are reordered by ``permutation`` (`flip_permutation`):
    the left eye of the flipped person is the right eye of the original.
    Unlabelled keypoints stay zeros.
    """
    out = np.array(keypoints, dtype=np.float32, copy=True)
    labelled = out[..., 2] > 0
    out[..., 0] = np.where(labelled, float(width) - out[..., 0], 0.0)
    return out[:, np.asarray(permutation, dtype=np.int64)]


def keypoint_class_table(num_classes, num_keypoints, keypoint_classes=None, names=()):
    """Which keypoints each class has: bool ``[num_classes, K]`` (the one rule).

    ``keypoint_classes`` (``Config.KEYPOINT_CLASSES``): None gives every class
    but the background all ``K`` keypoints (one shared set, as in detectron2);
    a dict ``{class_id: keypoint names or indices}`` gives each listed class its
    set and the other classes none. Row 0 (background) is always False.
    """
    table = np.zeros((int(num_classes), int(num_keypoints)), dtype=bool)
    if keypoint_classes is None:
        table[1:] = True
        return table
    if not isinstance(keypoint_classes, dict):
        raise ValueError(f"KEYPOINT_CLASSES: expected None or a dict {{class id: keypoint "
                         f"names or indices}}, got {keypoint_classes!r}")
    for class_id, items in keypoint_classes.items():
        if isinstance(class_id, bool) or not isinstance(class_id, (int, np.integer)) \
                or not 1 <= class_id < num_classes:
            raise ValueError(f"KEYPOINT_CLASSES: class ids must be integers in [1, "
                             f"{num_classes}) (NUM_CLASSES), got {class_id!r}")
        if isinstance(items, str) or not hasattr(items, "__iter__"):
            raise ValueError(f"KEYPOINT_CLASSES[{class_id}]: expected a list of keypoint "
                             f"names or indices, got {items!r}")
        table[int(class_id), keypoint_indices(list(items), num_keypoints, names,
                                              f"KEYPOINT_CLASSES[{class_id}]")] = True
    return table


def keypoint_targets(rois, keypoints, heatmap_size, class_ids=None, class_table=None):
    """Heatmap targets of RoIs: the cell holding each keypoint (NumPy).

    Cell ``j`` of a RoI covers ``[x1 + j w/m, x1 + (j+1) w/m)`` (module
    docstring), so ``j = floor((x - x1) * m / w)``: the pooled feature of bin
    ``j`` (aligned RoIAlign) is computed from samples of that same interval,
    which makes the target cell and the features it is predicted from
    coincide. A keypoint on the left / top edge is in cell 0; on the right /
    bottom edge (``x == x2``) it is outside, as pixel boxes exclude that edge.

    Args:
        rois: ``[R, 4]`` pixel boxes ``(y1, x1, y2, x2)``, y2/x2 exclusive.
        keypoints: ``[R, K, 3]`` the matched gt keypoints ``(x, y, v)``.
        heatmap_size: ``m``.
        class_ids: optional int ``[R]`` the RoIs' classes; with ``class_table``
            (`keypoint_class_table`) a keypoint the class does not have is invalid.

    Returns:
        ``indices`` int32 ``[R, K]``: ``y_bin * m + x_bin`` (0 where invalid);
        ``valid`` bool ``[R, K]``: labelled (``v > 0``), inside the RoI (a RoI
        of zero width or height has none) and of the RoI's class.
    """
    m = int(heatmap_size)
    rois = np.asarray(rois, dtype=np.float32).reshape(-1, 4)
    keypoints = np.asarray(keypoints, dtype=np.float32).reshape(len(rois), -1, 3)
    y1, x1, y2, x2 = (rois[:, i:i + 1] for i in range(4))
    x, y, v = keypoints[..., 0], keypoints[..., 1], keypoints[..., 2]
    inside = (x >= x1) & (x < x2) & (y >= y1) & (y < y2)
    valid = (v > 0) & inside
    with np.errstate(divide="ignore", invalid="ignore"):
        col = np.floor((x - x1) * (np.float32(m) / (x2 - x1)))
        row = np.floor((y - y1) * (np.float32(m) / (y2 - y1)))
    col = np.clip(np.where(valid, col, 0), 0, m - 1).astype(np.int32)
    row = np.clip(np.where(valid, row, 0), 0, m - 1).astype(np.int32)
    if class_table is not None:
        if class_ids is None:
            raise ValueError("keypoint_targets: class_table needs the RoIs' class_ids")
        ids = np.asarray(class_ids, dtype=np.int64).reshape(-1)
        valid &= np.where((ids > 0)[:, None], np.asarray(class_table)[np.maximum(ids, 0)], False)
    return np.where(valid, row * m + col, 0).astype(np.int32), valid


def refine_peak_offsets(left, centre, right):
    """Sub-cell offset of a peak from its two neighbours: the vertex of the
    parabola through ``(-1, left), (0, centre), (1, right)``,
    ``(left - right) / (2 (left - 2 centre + right))``, clipped to
    ``[-0.5, 0.5]``; 0 where the curvature is not negative (flat or no peak).

    Fitted on logits: a Gaussian-shaped probability peak has logits that are a
    parabola, so the fit is exact for it.
    """
    left, centre, right = (np.asarray(a, dtype=np.float32) for a in (left, centre, right))
    curvature = left - 2.0 * centre + right
    with np.errstate(divide="ignore", invalid="ignore"):
        offset = np.where(curvature < 0, (left - right) / (2.0 * curvature), 0.0)
    return np.clip(offset, -0.5, 0.5).astype(np.float32)


def _reflect(index, size):
    """Indices ``-1`` and ``size`` reflected to ``1`` and ``size - 2`` (clipped)."""
    index = np.where(index < 0, -index, index)
    index = np.where(index > size - 1, 2 * (size - 1) - index, index)
    return np.clip(index, 0, size - 1)


def decode_heatmaps(heatmaps, rois):
    """Keypoint heatmaps (logits) -> keypoints ``(x, y, score)`` in pixels (NumPy).

    Per RoI and keypoint: the arg-max cell ``(i, j)`` (ties: the first in
    row-major order), refined by `refine_peak_offsets` along each axis on the
    logits of its neighbours (an edge cell's missing neighbour mirrors the
    inner one: no offset, the heatmap says nothing past its edge), mapped to
    the cell's centre in the RoI, ``x = x1 + (j + 0.5 + dx) * w / m`` (the geometry of
    `keypoint_targets`). A parabola rather than detectron's resize of every
    heatmap to its box's size: same order of precision on a smooth peak at
    ``m x m`` cost, and static shapes in the graph twin. The score is the
    softmax probability of the arg-max cell over the ``m * m`` cells (in
    ``[0, 1]``, comparable between RoIs and keypoints; the head's loss is
    that softmax's cross-entropy).

    Args:
        heatmaps: ``[R, m, m, K]`` logits.
        rois: ``[R, 4]`` pixel boxes ``(y1, x1, y2, x2)``.

    Returns:
        float32 ``[R, K, 3]``.
    """
    maps = np.asarray(heatmaps, dtype=np.float32)
    r, mh, mw, k = maps.shape
    rois = np.asarray(rois, dtype=np.float32).reshape(r, 4)
    flat = np.transpose(maps, (0, 3, 1, 2)).reshape(r, k, mh * mw)
    best = np.argmax(flat, axis=-1)
    row, col = best // mw, best % mw
    peak = np.take_along_axis(flat, best[..., None], axis=-1)[..., 0]
    shifted = flat - peak[..., None]
    score = 1.0 / np.sum(np.exp(shifted), axis=-1)

    def at(rr, cc):
        # An edge cell's missing neighbour mirrors its inner one: no shift.
        rr, cc = _reflect(rr, mh), _reflect(cc, mw)
        return np.take_along_axis(flat, (rr * mw + cc)[..., None], axis=-1)[..., 0]

    dx = refine_peak_offsets(at(row, col - 1), peak, at(row, col + 1))
    dy = refine_peak_offsets(at(row - 1, col), peak, at(row + 1, col))
    y1, x1, y2, x2 = (rois[:, i:i + 1] for i in range(4))
    col, row = col.astype(np.float32), row.astype(np.float32)
    x = x1 + (col + np.float32(0.5) + dx) * (x2 - x1) / np.float32(mw)
    y = y1 + (row + np.float32(0.5) + dy) * (y2 - y1) / np.float32(mh)
    return np.stack([x, y, score], axis=-1).astype(np.float32)


def oks(gt, predicted, area, sigmas):
    """Object keypoint similarity of predictions with one gt instance (COCO's).

    ``exp(-d^2 / (2 s^2))`` averaged over the gt's labelled keypoints (``v >
    0``), with ``s^2 = area * (2 sigma)^2`` as in pycocotools (``area``: the
    instance's segment area in pixels, ``d``: the distance in pixels).

    Args:
        gt: ``[K, 3]``; predicted: ``[K, 3]`` or ``[M, K, 3]``; sigmas: ``[K]``.

    Returns:
        float or float ``[M]``; 0 when the gt has no labelled keypoint.
    """
    gt = np.asarray(gt, dtype=np.float64)
    pred = np.asarray(predicted, dtype=np.float64)
    variances = (2.0 * np.asarray(sigmas, dtype=np.float64)) ** 2
    d2 = (pred[..., 0] - gt[:, 0]) ** 2 + (pred[..., 1] - gt[:, 1]) ** 2
    e = d2 / variances / (float(area) + np.spacing(1)) / 2.0
    labelled = gt[:, 2] > 0
    if not labelled.any():
        return np.zeros(pred.shape[:-2]) if pred.ndim == 3 else 0.0
    return np.mean(np.exp(-e)[..., labelled], axis=-1)


def oks_sigmas(num_keypoints, sigmas=None):
    """The OKS sigmas: ``sigmas`` (``Config.KEYPOINT_OKS_SIGMAS``) if given,
    else COCO's person sigmas when ``K == 17``; float64 ``[K]``."""
    if sigmas is None:
        if int(num_keypoints) != len(COCO_PERSON_SIGMAS):
            raise ValueError(f"KEYPOINT_OKS_SIGMAS: needed for {num_keypoints} keypoints (the "
                             f"COCO person sigmas fit 17); give one sigma per keypoint")
        sigmas = COCO_PERSON_SIGMAS
    sigmas = np.asarray(sigmas, dtype=np.float64).reshape(-1)
    if sigmas.shape != (int(num_keypoints),) or not np.all(sigmas > 0):
        raise ValueError(f"KEYPOINT_OKS_SIGMAS: expected {num_keypoints} positive values, got "
                         f"{sigmas.tolist()}")
    return sigmas


def validate_keypoint_settings(config, fail):
    """Check a Config's keypoint settings; ``fail(field, message)`` raises."""
    k = config.NUM_KEYPOINTS
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        fail("NUM_KEYPOINTS", f"expected an integer >= 0 (0: no keypoint head), got {k!r}")
    for field in ("KEYPOINT_HEAD_CONV", "KEYPOINT_HEAD_CHANNELS", "KEYPOINT_POOL_SIZE",
                  "KEYPOINT_HEATMAP_SIZE"):
        v = getattr(config, field)
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            fail(field, f"expected a positive integer, got {v!r}")
    if config.KEYPOINT_HEATMAP_SIZE != 4 * config.KEYPOINT_POOL_SIZE:
        fail("KEYPOINT_HEATMAP_SIZE", f"the head's deconvolution and 2x upsampling give 4 x "
             f"KEYPOINT_POOL_SIZE = {4 * config.KEYPOINT_POOL_SIZE}, got "
             f"{config.KEYPOINT_HEATMAP_SIZE}")
    e = config.KEYPOINT_ROI_EXPAND
    if isinstance(e, bool) or not isinstance(e, (int, float, np.integer, np.floating)) \
            or not np.isfinite(e) or e < 1:
        fail("KEYPOINT_ROI_EXPAND", f"expected a number >= 1 (1: the RoI itself), got {e!r}")
    w = config.KEYPOINT_LOSS_WEIGHT
    if isinstance(w, bool) or not isinstance(w, (int, float, np.integer, np.floating)) \
            or not np.isfinite(w) or w < 0:
        fail("KEYPOINT_LOSS_WEIGHT", f"expected a number >= 0, got {w!r}")
    names = config.KEYPOINT_NAMES
    if not isinstance(names, (tuple, list)) or not all(isinstance(n, str) and n for n in names):
        fail("KEYPOINT_NAMES", f"expected a tuple of names, got {names!r}")
    if names and len(names) != k:
        fail("KEYPOINT_NAMES", f"{len(names)} names for NUM_KEYPOINTS = {k}")
    if len(set(names)) != len(names):
        fail("KEYPOINT_NAMES", f"duplicate names in {tuple(names)!r}")
    for field, check in (
            ("KEYPOINT_FLIP_MAP", lambda: flip_permutation(config.KEYPOINT_FLIP_MAP, k, names)),
            ("KEYPOINT_CLASSES", lambda: keypoint_class_table(
                config.NUM_CLASSES, k, config.KEYPOINT_CLASSES, names)),
            ("KEYPOINT_OKS_SIGMAS", lambda: config.KEYPOINT_OKS_SIGMAS is None or oks_sigmas(
                k, config.KEYPOINT_OKS_SIGMAS))):
        try:
            check()
        except ValueError as exc:
            message = str(exc)
            fail(field, message[len(field) + 2:] if message.startswith(field + ": ") else message)
