"""Run-length encoding and the Data Science Bowl 2018 submission file.

The competition's format: one CSV row per nucleus, ``ImageId,EncodedPixels``,
where ``EncodedPixels`` is a space-separated list of ``start length`` pairs.
Pixels are numbered from 1, top to bottom and then left to right (column
after column: pixel 1 is row 0 / column 0, pixel 2 is row 1 / column 0), so
``"1 3 10 2"`` covers pixels 1, 2, 3, 10 and 11. Objects must not overlap:
`non_overlapping` gives every pixel to the best-scoring mask that claims it.
An image without any nucleus gets one row with an empty ``EncodedPixels``.
"""

import csv
import os

import numpy as np

__all__ = ["rle_encode", "rle_decode", "non_overlapping", "submission_rows",
           "write_submission", "read_submission", "confident", "CSV_HEADER"]

CSV_HEADER = ("ImageId", "EncodedPixels")


def rle_encode(mask):
    """bool ``[H, W]`` -> ``"start length start length ..."`` (1-based, column-major).

    An empty mask gives ``""``.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"rle_encode: expected one mask [H, W], got shape {mask.shape}")
    pixels = np.concatenate([[0], mask.astype(bool).ravel(order="F").astype(np.int8), [0]])
    changes = np.flatnonzero(pixels[1:] != pixels[:-1]) + 1  # 1-based starts and ends + 1
    changes[1::2] -= changes[::2]
    return " ".join(str(int(v)) for v in changes)


def rle_decode(rle, shape):
    """Inverse of `rle_encode`: ``"start length ..."`` -> bool ``[H, W]`` of ``shape``.

    Raises:
        ValueError: an odd number of values, or a run outside the image.
    """
    height, width = int(shape[0]), int(shape[1])
    values = [int(v) for v in str(rle).split()]
    if len(values) % 2:
        raise ValueError(f"rle_decode: expected start/length pairs, got {len(values)} values")
    flat = np.zeros(height * width, dtype=bool)
    for start, length in zip(values[::2], values[1::2]):
        if start < 1 or length < 0 or start - 1 + length > flat.size:
            raise ValueError(f"rle_decode: run ({start}, {length}) lies outside an image of "
                             f"{height}x{width} = {flat.size} pixels")
        flat[start - 1:start - 1 + length] = True
    return flat.reshape((width, height)).T


def non_overlapping(masks, scores):
    """Give each pixel to the highest-scoring mask that covers it.

    Args:
        masks: bool ``[H, W, N]``. scores: ``[N]``.

    Returns:
        ``(masks, keep)``: bool ``[H, W, K]`` disjoint masks in order of
        decreasing score, and the indices ``[K]`` of the input masks they came
        from (masks left with no pixel are dropped).
    """
    masks = np.asarray(masks, dtype=bool)
    scores = np.asarray(scores).reshape(-1)
    if masks.ndim != 3 or masks.shape[-1] != scores.shape[0]:
        raise ValueError(f"non_overlapping: expected masks [H, W, {scores.shape[0]}], got "
                         f"{masks.shape}")
    order = np.argsort(-scores, kind="stable")
    taken = np.zeros(masks.shape[:2], dtype=bool)
    out, keep = [], []
    for i in order:
        mask = masks[..., i] & ~taken
        if mask.any():
            out.append(mask)
            keep.append(int(i))
            taken |= mask
    stacked = (np.stack(out, axis=-1) if out
               else np.zeros(masks.shape[:2] + (0,), dtype=bool))
    return stacked, np.array(keep, dtype=np.int64)


def confident(result, min_score):
    """Masks and scores of the detections scoring >= ``min_score``, overlaps removed
    (each pixel to the best-scoring mask): what a submission holds."""
    keep = np.flatnonzero(result["scores"] >= min_score)
    masks, kept = non_overlapping(result["masks"][..., keep], result["scores"][keep])
    return masks, result["scores"][keep][kept]


def submission_rows(image_id, masks, scores):
    """``[(image_id, rle), ...]`` for one image's detections (overlaps removed);
    ``[(image_id, "")]`` when nothing is left."""
    disjoint, _ = non_overlapping(masks, scores)
    rows = [(image_id, rle_encode(disjoint[..., k])) for k in range(disjoint.shape[-1])]
    return rows or [(image_id, "")]


def write_submission(path, rows):
    """Write ``rows`` (from `submission_rows`) as the competition's CSV; returns ``path``."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(CSV_HEADER)
        writer.writerows(rows)
    return path


def read_submission(path):
    """``{image_id: [rle, ...]}`` of a submission CSV (empty rows give no entry in the list)."""
    out = {}
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if tuple(header or ()) != CSV_HEADER:
            raise ValueError(f"read_submission: {path!r} does not start with the header "
                             f"{','.join(CSV_HEADER)}")
        for image_id, rle in reader:
            out.setdefault(image_id, [])
            if rle.strip():
                out[image_id].append(rle.strip())
    return out
