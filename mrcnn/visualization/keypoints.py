"""Drawing keypoints and skeletons with matplotlib (conventions of
`mrcnn.visualization.instances`: a figure of its own, or None when given ``ax``).

Keypoints are ``[N, K, 3]`` in the continuous pixel frame of
`mrcnn.structures.keypoints` (pixel ``c`` covers ``[c, c + 1)``). ``imshow``
puts pixel ``c``'s centre at data coordinate ``c``, so a keypoint at ``x`` is
drawn at ``x - 0.5``: a keypoint at a pixel's centre sits on that pixel.
"""

import numpy as np
from matplotlib.lines import Line2D

from mrcnn.visualization.instances import (_as_image, _box_rectangle, _finish, _frame_image,
                                           _new_axes, _to_display_uint8, random_colors)

__all__ = ["display_keypoints", "drawn_keypoints"]


def drawn_keypoints(keypoints, visibility=False, min_score=0.05):
    """bool ``[N, K]``: the keypoints `display_keypoints` draws.

    ``visibility=True`` (ground truth ``(x, y, v)``): ``v == 2``, the visible
    ones (not the unlabelled ``v = 0`` nor the occluded ``v = 1``); else
    (detections ``(x, y, score)``): ``score >= min_score``.
    """
    keypoints = np.asarray(keypoints, dtype=np.float64)
    if visibility:
        return keypoints[..., 2] == 2
    return keypoints[..., 2] >= min_score


def display_keypoints(image, boxes, keypoints, skeleton=None, visibility=False, min_score=0.05,
                      colors=None, title="", figsize=(16, 16), ax=None, show_bbox=True,
                      marker_size=6, save_path=None):
    """Draw keypoints (and skeleton lines between drawn ones) over an image.

    Args:
        image: ``[H, W, 3]`` RGB, values 0..255.
        boxes: ``[N, 4]`` pixel boxes (y1, x1, y2, x2), or None.
        keypoints: ``[N, K, 3]``: ``(x, y, v)`` with ``visibility=True``,
            else ``(x, y, score)`` (``detect()``'s ``"keypoints"``).
        skeleton: pairs of keypoint indices to join (e.g.
            ``dataset.keypoint_skeleton``); a line is drawn when both ends are.
        visibility, min_score: which keypoints are drawn (`drawn_keypoints`).
        colors: ``N`` RGB colours (default `random_colors`, seed 0).
        ax, figsize, title, save_path: as `display_instances`.
        show_bbox: draw the boxes (dashed).

    Every drawn keypoint is one marker (a `Line2D` with ``linestyle="none"``),
    every skeleton edge one `Line2D`.

    Returns:
        The Figure it created, or None when ``ax`` was given.
    """
    image = _as_image(image, "display_keypoints")
    keypoints = np.asarray(keypoints, dtype=np.float64)
    if keypoints.ndim != 3 or keypoints.shape[-1] != 3:
        raise ValueError(f"display_keypoints: keypoints must be [N, K, 3], got shape "
                         f"{keypoints.shape}")
    n, k = keypoints.shape[:2]
    if boxes is not None:
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if len(boxes) != n:
            raise ValueError(f"display_keypoints: {len(boxes)} boxes for {n} instances")
    if colors is not None and len(colors) != n:
        raise ValueError(f"display_keypoints: {len(colors)} colors for {n} instances")
    edges = [tuple(int(v) for v in e) for e in (skeleton or ())]
    for a, b in edges:
        if not (0 <= a < k and 0 <= b < k):
            raise ValueError(f"display_keypoints: skeleton edge ({a}, {b}) is not a pair of "
                             f"keypoint indices < {k}")
    created = ax is None
    if created:
        fig, ax = _new_axes(figsize)
    else:
        fig = ax.figure
    _frame_image(ax, image.shape[0], image.shape[1], title)
    colors = colors if colors is not None else random_colors(n, seed=0)
    drawn = drawn_keypoints(keypoints, visibility, min_score)
    for i in range(n):
        color = colors[i]
        if show_bbox and boxes is not None and np.any(boxes[i]):
            ax.add_patch(_box_rectangle(boxes[i], color))
        xs, ys = keypoints[i, :, 0] - 0.5, keypoints[i, :, 1] - 0.5
        for a, b in edges:
            if drawn[i, a] and drawn[i, b]:
                ax.add_line(Line2D([xs[a], xs[b]], [ys[a], ys[b]], color=color, linewidth=2,
                                   alpha=0.8))
        for j in np.flatnonzero(drawn[i]):
            ax.add_line(Line2D([xs[j]], [ys[j]], linestyle="none", marker="o",
                               markersize=marker_size, markerfacecolor=color,
                               markeredgecolor="k"))
    ax.imshow(_to_display_uint8(np.asarray(image)[:, :, :3]), interpolation="nearest")
    return _finish(fig, save_path, created)
