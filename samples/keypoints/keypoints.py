"""Keypoint R-CNN on a synthetic task: squares and triangles with named corners.

Every image is generated from a short list of shape specifications (the
pattern of `samples.shapes.shapes`, whose rendering it reuses), so the data
set needs no download. Classes and their keypoints (one keypoint set of 7
names, each class its own part of it: ``Config.KEYPOINT_CLASSES``):

* ``square`` (class 1): ``top_left``, ``top_right``, ``bottom_left``,
  ``bottom_right``: the centres of its corner pixels;
* ``triangle`` (class 2, apex up): ``apex``, ``base_left``, ``base_right``:
  the centres of its vertex pixels (its top pixel and the two ends of its
  bottom row).

"left" / "right" are the image's (smaller / larger x), so a horizontal flip
swaps them (`KEYPOINT_FLIP_MAP`). Ground truth is exact: a shape
``(center_y, center_x, size)`` covers known pixels (`samples.shapes.shapes.shape_mask`)
and its keypoints are known continuous positions (`shape_keypoints`). A
keypoint hidden by a later shape is labelled but not visible (``v = 1``).
The training command and ``make keypoints`` come with the model's keypoint
wiring.
"""

import os
import sys

import numpy as np

ROOT_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
if ROOT_DIR not in sys.path:  # run from a clone without installing the package
    sys.path.insert(0, ROOT_DIR)

from mrcnn.utils import Dataset  # noqa: E402
from samples.shapes.shapes import (ShapesConfig, render_image, shape_mask,  # noqa: E402
                                   visible_masks)

SHAPE_NAMES = ("square", "triangle")  # class ids 1, 2
KEYPOINT_NAMES = ("apex", "base_left", "base_right", "top_left", "top_right", "bottom_left",
                  "bottom_right")
KEYPOINT_FLIP_MAP = (("base_left", "base_right"), ("top_left", "top_right"),
                     ("bottom_left", "bottom_right"))
SHAPE_KEYPOINTS = {"square": ("top_left", "top_right", "bottom_left", "bottom_right"),
                   "triangle": ("apex", "base_left", "base_right")}
# Square, then triangle; skeleton: the outlines, as pairs of keypoint indices.
SKELETON = tuple((KEYPOINT_NAMES.index(a), KEYPOINT_NAMES.index(b)) for a, b in (
    ("top_left", "top_right"), ("top_right", "bottom_right"), ("bottom_right", "bottom_left"),
    ("bottom_left", "top_left"), ("apex", "base_left"), ("base_left", "base_right"),
    ("base_right", "apex")))


class KeypointConfig(ShapesConfig):
    """The shapes recipe (128x128 images, light backbone) with a keypoint head."""

    NAME = "keypoints"
    NUM_CLASSES = 1 + len(SHAPE_NAMES)
    NUM_KEYPOINTS = len(KEYPOINT_NAMES)
    KEYPOINT_NAMES = KEYPOINT_NAMES
    KEYPOINT_FLIP_MAP = KEYPOINT_FLIP_MAP
    KEYPOINT_CLASSES = {1 + SHAPE_NAMES.index(name): points
                        for name, points in SHAPE_KEYPOINTS.items()}
    # Shapes are 10..50 px: a 28x28 heatmap (7x7 pooling) is finer than a pixel
    # for most; a light head for the CPU.
    KEYPOINT_POOL_SIZE = 7
    KEYPOINT_HEATMAP_SIZE = 28
    KEYPOINT_HEAD_CONV = 4
    KEYPOINT_HEAD_CHANNELS = 64
    # Per-keypoint OKS sigmas: corners are sharp, as precise as COCO's eyes.
    KEYPOINT_OKS_SIGMAS = (0.025,) * len(KEYPOINT_NAMES)


class KeypointInferenceConfig(KeypointConfig):
    """One image per batch for detection."""

    GPU_COUNT = 1
    IMAGES_PER_GPU = 1


def shape_keypoints(name, center_y, center_x, size):
    """The keypoints of one shape: ``{keypoint name: (x, y)}`` in continuous pixels.

    A square covers rows ``cy - s .. cy + s - 1`` (and the same columns), so its
    corner pixels' centres are ``cx - s + 0.5`` .. ``cx + s - 0.5``; a
    triangle's vertices are the pixels ``(cy - s, cx)``, ``(cy + s, cx - s)``,
    ``(cy + s, cx + s)`` (scikit-image's polygon through pixel centres), whose
    centres are ``+ 0.5``.
    """
    cy, cx, s = float(center_y), float(center_x), float(size)
    if name == "square":
        return {"top_left": (cx - s + 0.5, cy - s + 0.5), "top_right": (cx + s - 0.5, cy - s + 0.5),
                "bottom_left": (cx - s + 0.5, cy + s - 0.5),
                "bottom_right": (cx + s - 0.5, cy + s - 0.5)}
    if name == "triangle":
        return {"apex": (cx + 0.5, cy - s + 0.5), "base_left": (cx - s + 0.5, cy + s + 0.5),
                "base_right": (cx + s + 0.5, cy + s + 0.5)}
    raise ValueError(f"shape_keypoints: unknown shape {name!r}; expected one of {SHAPE_NAMES}")


def random_image_spec(rng, height, width, max_shapes=3, min_visible_fraction=0.5):
    """Random background and 1..max_shapes squares / triangles fully inside the
    image, colours distinct (L1 >= 120) from the background and each other,
    each earlier shape keeping ``min_visible_fraction`` of its area visible.

    Returns ``(bg_color, shapes)``, ``shapes`` as in `samples.shapes.shapes`.
    """
    side = min(height, width)
    size_low, size_high = max(3, side // 12), max(4, side // 5)

    def color(others):
        c = rng.integers(0, 256, size=3)
        for _ in range(50):
            if all(np.abs(c - np.asarray(o)).sum() >= 120 for o in others):
                break
            c = rng.integers(0, 256, size=3)
        return tuple(int(v) for v in c)

    bg_color = color([])
    shapes, areas = [], []
    wanted = int(rng.integers(1, max_shapes + 1))
    for _ in range(wanted * 5):
        if len(shapes) == wanted:
            break
        name = SHAPE_NAMES[int(rng.integers(len(SHAPE_NAMES)))]
        size = int(rng.integers(size_low, size_high + 1))
        cy = int(rng.integers(size, height - size))
        cx = int(rng.integers(size, width - size))
        candidate = shapes + [(name, color([bg_color] + [c for _, c, _ in shapes]),
                               (cy, cx, size))]
        masks, kept = visible_masks(candidate, height, width)
        area = int(shape_mask(name, cy, cx, size, height, width).sum())
        if len(kept) == len(candidate) and np.all(
                masks.sum(axis=(0, 1)) / np.array(areas + [area]) >= min_visible_fraction):
            shapes, areas = candidate, areas + [area]
    return bg_color, shapes


class KeypointDataset(Dataset):
    """Generated squares and triangles with their corner keypoints (source ``"keypoints"``)."""

    keypoint_names = KEYPOINT_NAMES
    keypoint_skeleton = SKELETON

    def load_samples(self, count, height, width, seed=None, max_shapes=3):
        """Register ``count`` random images of ``height`` x ``width`` pixels
        (the same ``seed``, the same images)."""
        if count < 0 or height < 16 or width < 16:
            raise ValueError(f"load_samples: expected count >= 0 and images of at least "
                             f"16x16 pixels, got count={count}, {height}x{width}")
        for class_id, name in enumerate(SHAPE_NAMES, start=1):
            self.add_class("keypoints", class_id, name)
        self.keypoint_class_sets = {
            f"keypoints.{1 + SHAPE_NAMES.index(name)}": [KEYPOINT_NAMES.index(p) for p in points]
            for name, points in SHAPE_KEYPOINTS.items()}
        rng = np.random.default_rng(seed)
        for i in range(count):
            bg_color, shapes = random_image_spec(rng, height, width, max_shapes)
            self.add_image("keypoints", image_id=i, path=None, width=width, height=height,
                           bg_color=bg_color, shapes=shapes)

    def load_image(self, image_id):
        """Render the image from its specification: uint8 ``[H, W, 3]``."""
        info = self.image_info[image_id]
        if info["source"] != "keypoints":
            return super().load_image(image_id)
        return render_image(info["bg_color"], info["shapes"], info["height"], info["width"])

    def load_mask(self, image_id):
        """Visible part of each shape: bool ``[H, W, N]``, int32 class ids ``[N]``."""
        info = self.image_info[image_id]
        if info["source"] != "keypoints":
            return super().load_mask(image_id)
        masks, kept = visible_masks(info["shapes"], info["height"], info["width"])
        class_ids = np.array([1 + SHAPE_NAMES.index(info["shapes"][i][0]) for i in kept],
                             dtype=np.int32)
        return masks, class_ids

    def load_keypoints(self, image_id, num_keypoints=None):
        """float32 ``[N, 7, 3]``: each shape's keypoints (`shape_keypoints`), ``v = 2``
        where the keypoint's pixel shows the shape, 1 where a later shape hides it,
        0 for the other class's keypoints."""
        info = self.image_info[image_id]
        if info["source"] != "keypoints":
            return super().load_keypoints(image_id, num_keypoints)
        masks, kept = visible_masks(info["shapes"], info["height"], info["width"])
        out = np.zeros((len(kept), len(KEYPOINT_NAMES), 3), dtype=np.float32)
        for n, i in enumerate(kept):
            name, _, dims = info["shapes"][i]
            for point, (x, y) in shape_keypoints(name, *dims).items():
                shown = masks[int(np.floor(y)), int(np.floor(x)), n]
                out[n, KEYPOINT_NAMES.index(point)] = (x, y, 2.0 if shown else 1.0)
        return out

    def image_reference(self, image_id):
        """The image's shape list ``[(name, color, (cy, cx, size)), ...]``."""
        info = self.image_info[image_id]
        if info["source"] != "keypoints":
            return super().image_reference(image_id)
        return info["shapes"]


def make_dataset(count, size, seed):
    """A prepared `KeypointDataset` of ``count`` ``size`` x ``size`` images."""
    dataset = KeypointDataset()
    dataset.load_samples(count, size, size, seed=seed)
    dataset.prepare()
    return dataset
