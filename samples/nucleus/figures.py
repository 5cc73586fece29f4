"""Pictures of the nucleus sample: mask outlines over an image, truth next to predictions."""

import os

import numpy as np

from samples.nucleus.submission import confident

__all__ = ["draw_outlines", "save_comparison", "pick_shown"]


def draw_outlines(image, masks, color):
    """``image`` (uint8 RGB) with the outline of each mask painted in ``color``."""
    from skimage.segmentation import find_boundaries

    out = np.array(image, dtype=np.uint8, copy=True)
    edges = np.zeros(out.shape[:2], dtype=bool)
    for k in range(masks.shape[-1]):
        rows = np.flatnonzero(masks[..., k].any(axis=1))
        cols = np.flatnonzero(masks[..., k].any(axis=0))
        if rows.size == 0:
            continue
        box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        # "inner" outlines stay inside the mask, so the box crop loses nothing.
        edges[box] |= find_boundaries(np.pad(masks[box + (k,)], 1), mode="inner")[1:-1, 1:-1]
    out[edges] = color
    return out


def save_comparison(dataset, image_ids, results, path, min_score=0.5):
    """PNG with one row per image: ground truth outlines (left, green) next to the
    predictions scoring >= ``min_score`` (right, yellow)."""
    from matplotlib.figure import Figure

    from mrcnn.evaluation.dsb import dsb_score

    rows = max(1, len(image_ids))
    fig = Figure(figsize=(12, 5.5 * rows))
    for row, (image_id, r) in enumerate(zip(image_ids, results)):
        image = dataset.load_image(image_id)
        gt = dataset.load_mask(image_id)[0]
        pred, _ = confident(r, min_score)
        name = str(dataset.image_info[image_id]["id"])[:8]
        for col, (masks, color, title) in enumerate((
                (gt, (0, 255, 0), f"{name} ({dataset.image_info[image_id]['group']}): "
                                  f"{gt.shape[-1]} nuclei"),
                (pred, (255, 255, 0), f"predicted: {pred.shape[-1]} (score >= {min_score}), "
                                      f"DSB score {dsb_score(gt, pred):.3f}"))):
            ax = fig.add_subplot(rows, 2, 2 * row + col + 1)
            ax.imshow(draw_outlines(image, masks, color))
            ax.set_title(title, fontsize=10)
            ax.axis("off")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=90)
    return path


def pick_shown(dataset, image_ids, count):
    """Up to ``count`` ids for the picture: a stained image first when there is one."""
    stained = [i for i in image_ids if dataset.image_info[i]["group"] == "stained"]
    rest = [i for i in image_ids if i not in stained[:1]]
    return (stained[:1] + rest)[:count]
