"""Drawing detections, masks and boxes with matplotlib.

Every function here builds its own `matplotlib.figure.Figure` (never the global
``pyplot`` state), so it works headless (no display needed, nothing to close)
and in threads. A function either draws into the ``ax`` you pass and returns
None (as the original did; the figure is ``ax.figure``), or creates a new
figure and returns it. Save it with
``fig.savefig(path)`` or the ``save_path`` argument where there is one. Inside
a Jupyter notebook a figure the function created is also shown at once, as the
old ``plt.show()`` did (once, even when it is also the cell's result); see
`mrcnn.visualization.stats.NotebookFigure`.

Conventions:
    * Images are ``[H, W, 3]`` RGB, values 0..255 (any numeric dtype).
    * Boxes are ``(y1, x1, y2, x2)`` in **pixels**, y2/x2 **exclusive**: the
      box covers rows ``y1 .. y2-1`` and columns ``x1 .. x2-1``. Drawn outlines
      hug those pixels (the rectangle's edges lie on the pixel borders).
    * Instance masks are bool ``[H, W, N]``, one channel per instance.
    * Colours are RGB tuples of floats in [0, 1].

Statistics helpers (``display_table``, ``display_weight_stats``,
``plot_precision_recall``, ``plot_overlaps``) live in
`mrcnn.visualization.stats`; `mrcnn.visualize` re-exports both modules.
"""

import colorsys

import numpy as np
from matplotlib import patches
from matplotlib.lines import Line2D

from mrcnn.visualization.stats import new_figure, show_if_notebook

__all__ = [
    "random_colors", "apply_mask", "draw_box", "display_images", "display_instances",
    "display_top_masks", "draw_boxes", "draw_rois", "display_differences",
]

NO_INSTANCES_MESSAGE = "No instances to display"


# ----------------------------------------------------------------------------- colours
def random_colors(N, bright=True, seed=None):
    """``N`` visually distinct colours: hues evenly spaced around the HSV circle, shuffled.

    Args:
        N: number of colours (>= 0).
        bright: value (HSV brightness) 1.0 if True, else 0.7.
        seed: int for a reproducible order; None shuffles differently each call.

    Returns:
        list of ``N`` ``(r, g, b)`` float tuples in [0, 1].
    """
    N = int(N)
    if N < 0:
        raise ValueError(f"random_colors: N must be >= 0, got {N}")
    value = 1.0 if bright else 0.7
    colors = [colorsys.hsv_to_rgb(i / max(N, 1), 1.0, value) for i in range(N)]
    order = np.random.default_rng(seed).permutation(N)
    return [tuple(float(c) for c in colors[i]) for i in order]


def _check_color(color, name="color"):
    c = np.asarray(color, dtype=np.float64).ravel()
    if c.size < 3:
        raise ValueError(f"{name}: expected an RGB colour (3 values), got {color!r}")
    return c[:3]


# ----------------------------------------------------------------------------- pixels
def apply_mask(image, mask, color, alpha=0.5):
    """Blend ``color`` into ``image`` where ``mask`` is set.

    Inside the mask each channel becomes ``image * (1 - alpha) + alpha * color * 255``;
    outside it is unchanged.

    Args:
        image: ``[H, W, 3]`` array, values 0..255. Not modified.
        mask: ``[H, W]`` bool (or 0/1) array.
        color: RGB floats in [0, 1].
        alpha: opacity of the colour, in [0, 1].

    Returns:
        A new array of the image's dtype (integer dtypes are rounded to nearest
        and clipped to 0..255).
    """
    image = np.asarray(image)
    mask = np.asarray(mask)
    if image.ndim != 3 or image.shape[-1] < 3:
        raise ValueError(f"apply_mask: expected image [H, W, 3], got shape {image.shape}")
    if mask.shape != image.shape[:2]:
        raise ValueError(f"apply_mask: mask shape {mask.shape} does not match image "
                         f"shape {image.shape[:2]}")
    color = _check_color(color, "apply_mask: color")
    blended = image.astype(np.float64)
    where = mask.astype(bool)
    for c in range(3):
        channel = blended[:, :, c]
        channel[where] = channel[where] * (1.0 - alpha) + alpha * color[c] * 255.0
    if np.issubdtype(image.dtype, np.integer):
        return np.clip(np.rint(blended), 0, 255).astype(image.dtype)
    return blended.astype(image.dtype)


def draw_box(image, box, color):
    """Draw a 1-pixel-wide box outline into a copy of ``image``.

    Args:
        image: ``[H, W, C]`` array. Not modified.
        box: ``(y1, x1, y2, x2)`` pixels, y2/x2 exclusive; the outline is drawn
            on the box's border pixels (rows ``y1`` and ``y2-1``, columns ``x1``
            and ``x2-1``), clipped to the image.
        color: value written to the outline pixels, in the image's units
            (e.g. ``(255, 0, 0)`` for a uint8 RGB image).

    Returns:
        A new array like ``image`` with the outline drawn.
    """
    out = np.array(image, copy=True)
    if out.ndim < 2:
        raise ValueError(f"draw_box: expected an image [H, W(, C)], got shape {out.shape}")
    h, w = out.shape[:2]
    y1, x1, y2, x2 = (int(round(float(v))) for v in np.asarray(box).ravel()[:4])
    if y2 <= y1 or x2 <= x1:
        return out
    cy1, cx1, cy2, cx2 = max(y1, 0), max(x1, 0), min(y2, h), min(x2, w)
    if cy2 <= cy1 or cx2 <= cx1:
        return out
    if 0 <= y1 < h:
        out[y1, cx1:cx2] = color
    if 0 <= y2 - 1 < h:
        out[y2 - 1, cx1:cx2] = color
    if 0 <= x1 < w:
        out[cy1:cy2, x1] = color
    if 0 <= x2 - 1 < w:
        out[cy1:cy2, x2 - 1] = color
    return out


# ----------------------------------------------------------------------------- helpers
def _new_axes(figsize):
    fig = new_figure(figsize=figsize)
    return fig, fig.add_subplot(1, 1, 1)


def _box_rectangle(box, color, linestyle="dashed", linewidth=2, alpha=0.7):
    """A Rectangle patch whose edges hug the pixels of ``box`` (exclusive end)."""
    y1, x1, y2, x2 = (float(v) for v in box)
    return patches.Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, linewidth=linewidth,
                             alpha=alpha, linestyle=linestyle, edgecolor=color,
                             facecolor="none")


def _mask_outlines(mask, color):
    """Polygon patches tracing the outline of a bool ``[H, W]`` mask."""
    from skimage.measure import find_contours

    padded = np.pad(mask.astype(np.uint8), 1)
    polygons = []
    for contour in find_contours(padded, 0.5):
        xy = np.fliplr(contour) - 1  # (row, col) -> (x, y), undo the padding
        polygons.append(patches.Polygon(xy, facecolor="none", edgecolor=color))
    return polygons


def _frame_image(ax, height, width, title):
    ax.set_ylim(height - 0.5 + 10, -0.5 - 10)
    ax.set_xlim(-0.5 - 10, width - 0.5 + 10)
    ax.axis("off")
    ax.set_title(title)


def _as_image(image, name):
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(f"{name}: expected image [H, W, 3], got shape {image.shape}")
    return image


def _to_display_uint8(image):
    return np.clip(np.rint(np.asarray(image, dtype=np.float64)), 0, 255).astype(np.uint8)


def _finish(fig, save_path=None, created=True):
    """Save if asked; show figures this module created when running in Jupyter.

    Returns the figure it created, or None when the caller passed the ``ax``
    (as the original did): the caller owns that figure, and a returned figure
    would be shown a second time as the cell's value (pyplot's inline backend
    already shows the caller's figure).
    """
    if save_path is not None:
        fig.savefig(save_path, bbox_inches="tight")
    return show_if_notebook(fig) if created else None


# ----------------------------------------------------------------------------- grids
def display_images(images, titles=None, cols=4, cmap=None, norm=None, interpolation=None):
    """Show images in a grid, ``cols`` per row, optional titles below each.

    Args:
        images: list of ``[H, W]`` or ``[H, W, 3]`` arrays. RGB images are shown
            as uint8 (values 0..255); 2-D arrays use ``cmap`` / ``norm``.
        titles: optional list of strings, one per image.

    Returns:
        The Figure.
    """
    images = list(images)
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"display_images: {len(titles)} titles for {len(images)} images")
    titles = titles if titles is not None else [""] * len(images)
    cols = max(1, int(cols))
    rows = max(1, -(-len(images) // cols))
    fig = new_figure(figsize=(14, 14 * rows / cols))
    for i, (image, title) in enumerate(zip(images, titles)):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
        image = np.asarray(image)
        if image.ndim == 3:
            image = _to_display_uint8(image)
        ax.imshow(image, cmap=cmap, norm=norm, interpolation=interpolation)
    return _finish(fig)


def display_top_masks(image, mask, class_ids, class_names, limit=4):
    """Show the image and, for up to ``limit`` classes with the largest mask area,
    the union of that class's instance masks (each instance a different shade).

    Args:
        image: ``[H, W, 3]``; mask: bool ``[H, W, N]``; class_ids: int ``[N]``;
        class_names: list indexed by class id.

    Returns:
        The Figure.
    """
    image = _as_image(image, "display_top_masks")
    mask = np.asarray(mask)
    class_ids = np.asarray(class_ids).astype(np.int64).ravel()
    if mask.ndim != 3 or mask.shape[-1] != class_ids.shape[0]:
        raise ValueError(f"display_top_masks: mask {mask.shape} must be [H, W, N] with N = "
                         f"{class_ids.shape[0]} class ids")
    panels = [image]
    titles = [f"H x W={image.shape[0]}x{image.shape[1]}"]
    unique = np.unique(class_ids)
    areas = [mask[:, :, class_ids == c].sum() for c in unique]
    order = [unique[i] for i in np.argsort(areas)[::-1] if areas[i] > 0]
    for class_id in order[:limit]:
        class_masks = mask[:, :, class_ids == class_id].astype(np.int64)
        shades = np.arange(1, class_masks.shape[-1] + 1)
        panels.append((class_masks * shades).max(axis=-1))
        name = class_names[class_id] if 0 <= class_id < len(class_names) else str(class_id)
        titles.append(str(name))
    while len(panels) < limit + 1:  # keep the grid layout fixed
        panels.append(np.zeros(image.shape[:2]))
        titles.append("-")
    return display_images(panels, titles=titles, cols=limit + 1, cmap="Blues_r")


# ----------------------------------------------------------------------------- instances
def display_instances(image, boxes, masks, class_ids, class_names, scores=None, title="",
                      figsize=(16, 16), ax=None, show_mask=True, show_bbox=True,
                      colors=None, captions=None, save_path=None):
    """Draw instances (masks, boxes, captions) over an image.

    Args:
        image: ``[H, W, 3]`` RGB, values 0..255.
        boxes: ``[N, 4]`` pixel boxes ``(y1, x1, y2, x2)``, y2/x2 exclusive.
        masks: bool ``[H, W, N]`` (or None to draw boxes only).
        class_ids: int ``[N]``; class_names: list indexed by class id.
        scores: optional ``[N]`` confidences, shown in the default captions.
        title: axes title.
        figsize: size of the new figure when ``ax`` is None.
        ax: draw into this Axes instead of a new figure.
        show_mask / show_bbox: draw the filled masks (alpha 0.5, plus outline) / boxes.
        colors: optional list of ``N`` RGB colours; default: `random_colors` (seed 0).
        captions: optional list of ``N`` strings replacing "class score".
        save_path: if given, the figure is saved there.

    With ``N == 0`` the image is drawn alone and "No instances to display" is
    printed and shown in the title.

    Returns:
        The Figure it created, or None when ``ax`` was given (it is ``ax.figure``).
    """
    image = _as_image(image, "display_instances")
    boxes = np.zeros((0, 4)) if boxes is None else np.asarray(boxes, dtype=np.float64)
    if boxes.ndim == 1 and boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    class_ids = np.asarray(class_ids if class_ids is not None else []).astype(np.int64).ravel()
    n = boxes.shape[0]
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"display_instances: boxes must be [N, 4] (y1, x1, y2, x2), got "
                         f"shape {boxes.shape}")
    if class_ids.shape[0] != n:
        raise ValueError(f"display_instances: {n} boxes but {class_ids.shape[0]} class_ids")
    if masks is not None:
        masks = np.asarray(masks)
        if masks.ndim != 3 or masks.shape[-1] != n or masks.shape[:2] != image.shape[:2]:
            raise ValueError(f"display_instances: masks must be [H, W, N] = "
                             f"[{image.shape[0]}, {image.shape[1]}, {n}], got {masks.shape}")
    for arg_name, values in (("scores", scores), ("colors", colors), ("captions", captions)):
        if values is not None and len(values) != n:
            raise ValueError(f"display_instances: {arg_name} has {len(values)} entries for "
                             f"{n} instances")

    created = ax is None
    if created:
        fig, ax = _new_axes(figsize)
    else:
        fig = ax.figure
    height, width = image.shape[:2]
    if n == 0:
        print(NO_INSTANCES_MESSAGE)
        title = f"{title} ({NO_INSTANCES_MESSAGE})" if title else NO_INSTANCES_MESSAGE
    _frame_image(ax, height, width, title)

    colors = colors if colors is not None else random_colors(n, seed=0)
    shown = np.asarray(image, dtype=np.float64)[:, :, :3]
    for i in range(n):
        color = colors[i]
        box = boxes[i]
        if not np.any(box):  # an all-zero box marks a dropped / padded instance
            continue
        if show_bbox:
            ax.add_patch(_box_rectangle(box, color))
        if captions is not None:
            caption = captions[i]
        else:
            class_id = int(class_ids[i])
            label = class_names[class_id] if 0 <= class_id < len(class_names) else str(class_id)
            caption = f"{label} {float(scores[i]):.3f}" if scores is not None else str(label)
        if caption:
            ax.text(box[1], box[0] + 8, caption, color="w", size=11, backgroundcolor="none")
        if masks is not None and show_mask:
            mask = masks[:, :, i].astype(bool)
            shown = apply_mask(shown, mask, color)
            for polygon in _mask_outlines(mask, color):
                ax.add_patch(polygon)
    ax.imshow(_to_display_uint8(shown), interpolation="nearest")
    return _finish(fig, save_path, created)


def display_differences(image, gt_box, gt_class_id, gt_mask, pred_box, pred_class_id,
                        pred_score, pred_mask, class_names, title="", ax=None,
                        show_mask=True, show_box=True, iou_threshold=0.5,
                        score_threshold=0.5):
    """Ground truth (green) and predictions (red) on one image.

    Predictions are matched to ground truth with `mrcnn.evaluation.metrics.compute_matches`
    (IoU of masks >= ``iou_threshold``, same class). Predictions scoring below
    ``score_threshold`` and all-zero (padding) boxes are not drawn. Each
    prediction's caption is ``"score / IoU"`` (IoU with its match, or its best
    IoU if unmatched). Arguments as in `display_instances`: boxes
    ``[N, 4]`` pixels with exclusive y2/x2, masks bool ``[H, W, N]``.

    Returns:
        The Figure it created, or None when ``ax`` was given (it is ``ax.figure``).
    """
    from mrcnn.evaluation.metrics import compute_matches  # lazy: keeps this module light

    image = _as_image(image, "display_differences")
    height, width = image.shape[:2]
    gt_box = np.asarray(gt_box, dtype=np.float64).reshape(-1, 4)
    pred_box = np.asarray(pred_box, dtype=np.float64).reshape(-1, 4)
    gt_class_id = np.asarray(gt_class_id).astype(np.int64).ravel()
    pred_class_id = np.asarray(pred_class_id).astype(np.int64).ravel()
    pred_score = np.asarray(pred_score, dtype=np.float64).ravel()
    gt_mask = np.asarray(gt_mask, dtype=bool).reshape(height, width, len(gt_box))
    pred_mask = np.asarray(pred_mask, dtype=bool).reshape(height, width, len(pred_box))
    # compute_matches drops all-zero (padding) boxes and low scores and reports
    # predictions in decreasing-score order; do the same here so indices agree.
    keep_gt = np.any(gt_box != 0, axis=1)
    gt_box, gt_class_id, gt_mask = gt_box[keep_gt], gt_class_id[keep_gt], gt_mask[..., keep_gt]
    order = np.argsort(-pred_score, kind="stable")
    order = order[np.any(pred_box[order] != 0, axis=1) & (pred_score[order] >= score_threshold)]
    pred_box, pred_class_id = pred_box[order], pred_class_id[order]
    pred_score, pred_mask = pred_score[order], pred_mask[..., order]
    _gt_match, pred_match, overlaps = compute_matches(
        gt_box, gt_class_id, gt_mask, pred_box, pred_class_id, pred_score, pred_mask,
        iou_threshold=iou_threshold, score_threshold=score_threshold)
    overlaps = np.asarray(overlaps).reshape(len(pred_box), len(gt_box))
    n_gt, n_pred = len(gt_box), len(pred_box)
    colors = [(0.0, 1.0, 0.0)] * n_gt + [(1.0, 0.0, 0.0)] * n_pred
    captions = [""] * n_gt
    for i in range(n_pred):
        j = int(pred_match[i])
        if j > -1:
            iou = overlaps[i, j]
        else:
            iou = overlaps[i].max() if n_gt else 0.0
        captions.append(f"{pred_score[i]:.2f} / {iou:.2f}")
    masks = np.concatenate([gt_mask, pred_mask], axis=-1)
    return display_instances(
        image, np.concatenate([gt_box, pred_box]), masks,
        np.concatenate([gt_class_id, pred_class_id]), class_names,
        scores=np.concatenate([np.zeros(n_gt), pred_score]), title=title, ax=ax,
        show_mask=show_mask, show_bbox=show_box, colors=colors, captions=captions)


# ----------------------------------------------------------------------------- boxes / RoIs
def draw_boxes(image, boxes=None, refined_boxes=None, masks=None, captions=None,
               visibilities=None, title="", ax=None):
    """Draw boxes, optionally their refined versions, masks and captions.

    Args:
        image: ``[H, W, 3]`` RGB, values 0..255.
        boxes: ``[N, 4]`` pixel boxes ``(y1, x1, y2, x2)``, y2/x2 exclusive
            (e.g. anchors or proposals before refinement).
        refined_boxes: ``[N, 4]`` the same boxes after refinement; drawn solid,
            with a line joining each box's top-left corner to its refinement.
        masks: bool ``[H, W, N]``.
        captions: ``N`` strings, written at each (refined) box.
        visibilities: ``N`` values in {0, 1, 2}: 0 hidden, 1 faint and dotted
            (default), 2 bold and solid.
        title: axes title; ax: draw into this Axes.

    Returns:
        The Figure it created, or None when ``ax`` was given (it is ``ax.figure``).
    """
    image = _as_image(image, "draw_boxes")
    if boxes is None and refined_boxes is None:
        raise ValueError("draw_boxes: give boxes, refined_boxes or both")
    boxes = None if boxes is None else np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    refined = (None if refined_boxes is None
               else np.asarray(refined_boxes, dtype=np.float64).reshape(-1, 4))
    n = boxes.shape[0] if boxes is not None else refined.shape[0]
    if boxes is not None and refined is not None and refined.shape[0] != n:
        raise ValueError(f"draw_boxes: {n} boxes but {refined.shape[0]} refined_boxes")
    if masks is not None:
        masks = np.asarray(masks)
        if masks.ndim != 3 or masks.shape[-1] != n:
            raise ValueError(f"draw_boxes: masks must be [H, W, {n}], got {masks.shape}")
    if captions is not None and len(captions) != n:
        raise ValueError(f"draw_boxes: {len(captions)} captions for {n} boxes")
    if visibilities is not None and len(visibilities) != n:
        raise ValueError(f"draw_boxes: {len(visibilities)} visibilities for {n} boxes")

    created = ax is None
    if created:
        fig, ax = _new_axes((12, 12))
    else:
        fig = ax.figure
    _frame_image(ax, image.shape[0], image.shape[1], title)
    colors = random_colors(n, seed=0)
    shown = np.asarray(image, dtype=np.float64)[:, :, :3]
    for i in range(n):
        visibility = 1 if visibilities is None else int(visibilities[i])
        if visibility == 0:
            continue
        color = colors[i]
        style, alpha = ("dotted", 0.5) if visibility == 1 else ("solid", 1.0)
        if boxes is not None and np.any(boxes[i]):
            ax.add_patch(_box_rectangle(boxes[i], color, linestyle=style, alpha=alpha,
                                        linewidth=2 if visibility == 2 else 1))
        if refined is not None and np.any(refined[i]):
            ax.add_patch(_box_rectangle(refined[i], color, linestyle="solid", alpha=1.0))
            if boxes is not None:
                ax.add_line(Line2D([boxes[i, 1] - 0.5, refined[i, 1] - 0.5],
                                   [boxes[i, 0] - 0.5, refined[i, 0] - 0.5], color=color))
        if captions is not None:
            y1, x1 = (refined[i] if refined is not None else boxes[i])[:2]
            ax.text(x1, y1, captions[i], size=11, verticalalignment="top", color="w",
                    backgroundcolor="none",
                    bbox={"facecolor": color, "alpha": 0.5, "pad": 2, "edgecolor": "none"})
        if masks is not None:
            mask = masks[:, :, i].astype(bool)
            shown = apply_mask(shown, mask, color)
            for polygon in _mask_outlines(mask, color):
                ax.add_patch(polygon)
    ax.imshow(_to_display_uint8(shown), interpolation="nearest")
    return _finish(fig, created=created)


def draw_rois(image, rois, refined_rois, mask, class_ids, class_names, limit=10):
    """Draw a sample of training RoIs: the RoI (dashed), its refinement (solid) and,
    for positive RoIs, the target mask pasted into the refined box.

    Args:
        image: ``[H, W, 3]``.
        rois: ``[R, 4]`` pixel boxes ``(y1, x1, y2, x2)``, y2/x2 exclusive.
        refined_rois: ``[R, 4]`` the RoIs after applying the predicted/target deltas.
        mask: ``[R, mh, mw]`` per-RoI masks (probabilities or bool) in RoI
            coordinates, as produced by the mask head / DetectionTargetLayer.
        class_ids: int ``[R]`` (0 = background / negative RoI).
        class_names: list indexed by class id.
        limit: at most this many RoIs are drawn: positives first (in order),
            then negatives, so the selection is reproducible.

    Prints the counts of positive and negative RoIs and returns the Figure.
    """
    from mrcnn.inference.molding import class_masks
    from mrcnn.structures.masks import unmold_mask

    image = _as_image(image, "draw_rois")
    rois = np.asarray(rois, dtype=np.float64).reshape(-1, 4)
    refined_rois = np.asarray(refined_rois, dtype=np.float64).reshape(-1, 4)
    class_ids = np.asarray(class_ids).astype(np.int64).ravel()
    mask = np.asarray(mask)
    r = rois.shape[0]
    if refined_rois.shape[0] != r or class_ids.shape[0] != r or mask.shape[0] != r:
        raise ValueError(f"draw_rois: rois {rois.shape}, refined_rois {refined_rois.shape}, "
                         f"mask {mask.shape} and class_ids {class_ids.shape} must all have "
                         f"{r} entries")
    positive = np.flatnonzero(class_ids > 0)
    negative = np.flatnonzero(class_ids <= 0)
    ids = np.concatenate([positive, negative])[:max(0, int(limit))]

    fig, ax = _new_axes((12, 12))
    _frame_image(ax, image.shape[0], image.shape[1],
                 f"Showing {len(ids)} of {r} RoIs (positives first)")
    colors = random_colors(len(ids), seed=0)
    shown = np.asarray(image, dtype=np.float64)[:, :, :3]
    for color, i in zip(colors, ids):
        class_id = int(class_ids[i])
        ax.add_patch(_box_rectangle(rois[i], "gray" if class_id else color,
                                    linestyle="dashed", linewidth=2))
        if class_id:
            ax.add_patch(_box_rectangle(refined_rois[i], color, linestyle="solid"))
            ax.add_line(Line2D([rois[i, 1] - 0.5, refined_rois[i, 1] - 0.5],
                               [rois[i, 0] - 0.5, refined_rois[i, 0] - 0.5], color=color))
            name = class_names[class_id] if class_id < len(class_names) else str(class_id)
            ax.text(refined_rois[i, 1], refined_rois[i, 0] + 8, str(name), color="w",
                    size=11, backgroundcolor="none")
            m = mask[i]
            if m.ndim == 3:  # [mh, mw, NC] head output: the RoI's class (or the one channel)
                m = class_masks(m[None], [class_id])[0]
            full = unmold_mask(m.astype(np.float32), rois[i], image.shape)
            shown = apply_mask(shown, full, color)
    ax.imshow(_to_display_uint8(shown), interpolation="nearest")
    print(f"Positive ROIs: {len(positive)}")
    print(f"Negative ROIs: {len(negative)}")
    print(f"Positive Ratio: {len(positive) / max(r, 1):.2f}")
    return _finish(fig)
