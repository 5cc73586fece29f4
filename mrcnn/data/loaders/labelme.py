"""`LabelmeDataset`: labelme JSON files, one per image.

Usage::

    from mrcnn.data.loaders import LabelmeDataset
    ds = LabelmeDataset()
    ds.load_labelme("annotations/", class_names="class_names.txt")
    ds.prepare()

What a labelme file becomes:
  * ``polygon``, ``rectangle``, ``circle`` and ``mask`` shapes are instance masks.
    Shapes with the same ``label`` and the same non-null ``group_id`` are one
    instance (the union of their masks); a shape without ``group_id`` is one of its
    own. Instances keep the order of their first shape (labelme's instance order).
  * ``__ignore__`` shapes are crowd regions: `load_mask` gives them a negative class
    id (minus the source's first class id; only the sign matters), so no anchor or
    RoI overlapping them is a negative (`mrcnn.modeling.rpn.targets`,
    `mrcnn.modeling.roi_heads.sampling`). ``_background_`` shapes are not instances.
  * ``point`` shapes are kept in ``image_info[i]["points"]`` (dicts ``label``, ``x``,
    ``y``, ``group_id``, ``shape_index``), ``line`` / ``linestrip`` / ``points``
    shapes in ``image_info[i]["lines"]`` (``label``, ``shape_type``, ``points``
    ``[[x, y], ...]``, ``group_id``, ``shape_index``); never masks or classes.
  * Keypoints: `LabelmeDataset.load_keypoints` makes each ``point`` a keypoint
    (``v = 2``: labelme has no occlusion flag), named by its label in
    ``keypoint_names`` (``load_labelme(keypoint_names=...)``; default: the sorted
    point labels of all files), of one instance: the instance with the point's
    ``group_id`` when it has one; else the top-most (last drawn) instance whose
    mask holds the point's pixel; else the instance with a mask pixel centre
    nearest the point within `POINT_SNAP_DISTANCE` (2) pixels (a sharp vertex of a
    polygon's outline). ``__ignore__`` regions get none. A point with no such
    instance, an unknown name, or a second point of one name on an instance
    raises ValueError naming the file and shape.

Coordinates: labelme points are ``(x, y)`` pixels, x right, y down; pixel ``(row r,
column c)`` covers ``[c, c + 1) x [r, r + 1)`` (as in `mrcnn.structures.coords` and
labelme's canvas), so its centre is ``(c + 0.5, r + 0.5)``. A pixel is inside a
polygon, rectangle or circle when its centre is (``skimage.draw.polygon`` /
``skimage.draw.disk``; a rectangle's edges count as inside): pycocotools' polygon
rule. labelme's own PNG export (PIL, outline included) is about one boundary pixel
wider. A ``mask`` shape's PNG starts at pixel ``int(points[0])``, as in labelme.
Shapes are clipped to the image.

Image: the embedded base64 ``imageData`` when present (as in labelme), else the
file ``imagePath`` (relative to the JSON file); its size after EXIF orientation
must be ``imageHeight`` x ``imageWidth``.

Class names: the sorted labels of the area shapes (without ``__ignore__`` /
``_background_``), or ``class_names``: a list, or a text file with one name per line
(labelme's ``class_names.txt``; its ``_background_`` / ``__ignore__`` lines are
dropped). Their ids are 1, 2, ... in that order.

Bad input raises ValueError (FileNotFoundError for a missing file) naming the JSON
file and, for a shape, its index and label: not JSON, no ``shapes``, an unknown
shape type, malformed points, a polygon of fewer than 3 points, a rectangle /
circle that is not two distinct points, a shape covering no pixel, no area shape
at all, a label not in ``class_names``, a missing or unreadable image, an image of
another size than ``imageHeight`` / ``imageWidth``. With ``skip_bad=True`` such a
file is skipped: listed in ``dataset.skipped_files`` as ``(json path, message)``
and counted in one warning per `load_labelme` call. That is the load-time
counterpart of ``Config.SKIP_BAD_IMAGES``, with which ``MaskRCNN.train`` builds its
pipeline with ``on_error="skip"`` (`mrcnn.data.pipeline`): an image whose
`load_image` / `load_mask` raises during training (its file changed or vanished
since loading) is dropped and counted in a `mrcnn.data.errors.SkippedImages`, as
for the other loaders.
"""

import base64
import io
import os
import warnings

import numpy as np

from mrcnn.data.dataset import Dataset, to_rgb_uint8
from mrcnn.data.loaders.json_file import read_json_file

__all__ = ["LabelmeDataset", "shape_pixels", "read_class_names", "IGNORE_LABEL",
           "BACKGROUND_LABEL"]

IGNORE_LABEL = "__ignore__"
# Farthest (pixels) a point may lie from its instance's nearest mask pixel centre.
POINT_SNAP_DISTANCE = 2.0
BACKGROUND_LABEL = "_background_"
AREA_SHAPES = ("polygon", "rectangle", "circle", "mask")
LINE_SHAPES = ("line", "linestrip", "points")


def read_class_names(class_names):
    """Class names from a list or a text file (one per line), without
    ``_background_`` / ``__ignore__`` and empty lines."""
    if isinstance(class_names, (str, os.PathLike)):
        path = os.fspath(class_names)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"class_names file {path!r} does not exist")
        with open(path, "r", encoding="utf-8") as f:
            class_names = [line.strip() for line in f]
        where = f"class_names file {path!r}"
    else:
        class_names = [str(n).strip() for n in class_names]
        where = "class_names"
    names = [n for n in class_names if n and n not in (IGNORE_LABEL, BACKGROUND_LABEL)]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"{where}: duplicate names {duplicates}")
    if not names:
        raise ValueError(f"{where}: no class names (besides {BACKGROUND_LABEL!r} / "
                         f"{IGNORE_LABEL!r})")
    return names


def _decode_png(data, what):
    try:
        with _open_image(base64.b64decode(data), what) as im:
            return np.asarray(im)
    except Exception as exc:
        raise ValueError(f"{what} is not a base64-encoded image: {exc}") from exc


def shape_pixels(shape_type, points, height, width, mask=None):
    """``(rows, cols)`` int arrays of the pixels an area shape covers, clipped
    to the ``height`` x ``width`` image (see the module docstring).

    Args:
        shape_type: ``"polygon"``, ``"rectangle"``, ``"circle"`` or ``"mask"``.
        points: float ``[N, 2]`` labelme points ``(x, y)``.
        mask: for ``"mask"``: the shape's base64 PNG (``shape["mask"]``).
    """
    import skimage.draw

    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    xs, ys = points[:, 0], points[:, 1]
    if shape_type == "polygon":
        return skimage.draw.polygon(ys - 0.5, xs - 0.5, shape=(height, width))
    if shape_type == "rectangle":
        rows = np.arange(max(int(np.ceil(ys.min() - 0.5)), 0),
                         min(int(np.floor(ys.max() - 0.5)) + 1, height))
        cols = np.arange(max(int(np.ceil(xs.min() - 0.5)), 0),
                         min(int(np.floor(xs.max() - 0.5)) + 1, width))
        rr, cc = np.meshgrid(rows, cols, indexing="ij")
        return rr.ravel(), cc.ravel()
    if shape_type == "circle":
        radius = float(np.hypot(xs[1] - xs[0], ys[1] - ys[0]))
        return skimage.draw.disk((ys[0] - 0.5, xs[0] - 0.5), radius, shape=(height, width))
    if shape_type == "mask":
        plane = _decode_png(mask, "'mask'")
        if plane.ndim == 3:
            plane = plane.max(axis=-1)
        x1, y1 = points[0].astype(int)
        x2, y2 = points[1].astype(int)
        if plane.shape != (y2 - y1 + 1, x2 - x1 + 1):
            raise ValueError(f"'mask' is {plane.shape[1]}x{plane.shape[0]} (WxH) but its "
                             f"points span {x2 - x1 + 1}x{y2 - y1 + 1}")
        rr, cc = np.nonzero(plane)
        rr, cc = rr + y1, cc + x1
        keep = (rr >= 0) & (rr < height) & (cc >= 0) & (cc < width)
        return rr[keep], cc[keep]
    raise ValueError(f"not an area shape type: {shape_type!r}")


def _check_shape(shape, where):
    """``(label, shape_type, points [N, 2], group_id)`` of a valid shape dict."""
    if not isinstance(shape, dict):
        raise ValueError(f"{where}: a shape must be an object")
    label = shape.get("label")
    if not isinstance(label, str) or not label:
        raise ValueError(f"{where}: 'label' must be a non-empty string, got {label!r}")
    where = f"{where} (label {label!r})"
    shape_type = shape.get("shape_type") or "polygon"  # labelme's default
    if shape_type not in AREA_SHAPES + LINE_SHAPES + ("point",):
        raise ValueError(f"{where}: unknown shape_type {shape_type!r} (expected one of "
                         f"{AREA_SHAPES + LINE_SHAPES + ('point',)})")
    try:
        points = np.asarray(shape.get("points"), dtype=np.float64)
    except (TypeError, ValueError):
        points = None
    if points is None or points.ndim != 2 or points.shape[1] != 2 or points.shape[0] == 0 \
            or not np.all(np.isfinite(points)):
        raise ValueError(f"{where}: 'points' must be a non-empty list of finite [x, y] "
                         f"pairs, got {shape.get('points')!r}")
    n = points.shape[0]
    if shape_type == "polygon" and n < 3:
        raise ValueError(f"{where}: a polygon needs at least 3 points, got {n}")
    wanted = {"rectangle": 2, "circle": 2, "mask": 2, "line": 2, "point": 1}.get(shape_type, n)
    if n != wanted:
        raise ValueError(f"{where}: a {shape_type} needs exactly {wanted} points, got {n}")
    if shape_type in ("rectangle", "circle") and np.all(points[0] == points[1]):
        raise ValueError(f"{where}: a {shape_type} of zero size (both points {points[0]})")
    group_id = shape.get("group_id")
    if not (group_id is None or isinstance(group_id, (int, str))):
        raise ValueError(f"{where}: 'group_id' must be null, an integer or a string")
    return label, shape_type, points, group_id


def _open_image(source, where):
    """A PIL image (lazily loaded) from a path or bytes; ValueError naming ``where``."""
    from PIL import Image
    try:
        return Image.open(source if isinstance(source, str) else io.BytesIO(source))
    except Exception as exc:
        raise ValueError(f"{where}: cannot read the image: {exc}") from exc


def _locate_image(data, json_path, where):
    """``(kind, path, source, what)``: ``"imageData"`` (path None, source the bytes)
    or ``"file"`` (source the path); ``what`` names it for messages."""
    if data.get("imageData"):
        try:
            raw = base64.b64decode(data["imageData"], validate=True)
        except Exception as exc:
            raise ValueError(f"{where}: 'imageData' is not valid base64: {exc}") from exc
        return "imageData", None, raw, f"{where}: embedded imageData"
    image_path = data.get("imagePath")
    if not isinstance(image_path, str) or not image_path:
        raise ValueError(f"{where}: no 'imageData' and no 'imagePath'")
    path = os.path.join(os.path.dirname(json_path), image_path)
    if not os.path.exists(path) and "\\" in image_path:  # saved on Windows
        path = os.path.join(os.path.dirname(json_path), *image_path.split("\\"))
    if not os.path.exists(path):
        raise FileNotFoundError(f"{where}: image file {path!r} (imagePath {image_path!r}) "
                                f"does not exist and the file has no imageData")
    return "file", path, path, f"{where}: image {path!r}"


def _image_source(data, json_path, where):
    """``(kind, path, (height, width))`` of the image, checked against the file's size."""
    kind, path, source, what = _locate_image(data, json_path, where)
    with _open_image(source, what) as im:
        width, height = im.size
        if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # EXIF: rotated by 90 or 270
            width, height = height, width
    size = (height, width)
    expected = (data.get("imageHeight"), data.get("imageWidth"))
    if expected != (None, None) and tuple(expected) != size:
        raise ValueError(f"{what} is {size[1]}x{size[0]} (WxH) but the file says imageWidth "
                         f"x imageHeight = {expected[1]}x{expected[0]}")
    return kind, path, size


def _parse_file(json_path):
    """Everything `load_labelme` keeps of one labelme file (raises on bad input)."""
    where = f"labelme file {json_path!r}"
    try:
        data = read_json_file(json_path, "labelme file")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{where} is not a UTF-8 JSON file: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
        raise ValueError(f"{where}: not a labelme file (expected an object with a 'shapes' "
                         f"list)")
    if not data["shapes"]:
        raise ValueError(f"{where}: has no shapes")
    kind, image_path, (height, width) = _image_source(data, json_path, where)
    instances, by_key, points, lines = [], {}, [], []
    for index, shape in enumerate(data["shapes"]):
        shape_where = f"{where}, shape {index}"
        label, shape_type, xy, group_id = _check_shape(shape, shape_where)
        if shape_type == "point":
            points.append({"label": label, "x": float(xy[0, 0]), "y": float(xy[0, 1]),
                           "group_id": group_id, "shape_index": index})
            continue
        if shape_type in LINE_SHAPES:
            lines.append({"label": label, "shape_type": shape_type, "points": xy.tolist(),
                          "group_id": group_id, "shape_index": index})
            continue
        geometry = {"index": index, "shape_type": shape_type, "points": xy.tolist(),
                    "mask": shape.get("mask")}
        try:
            rr, _ = shape_pixels(shape_type, xy, height, width, geometry["mask"])
        except ValueError as exc:
            raise ValueError(f"{shape_where} (label {label!r}): {exc}") from exc
        if rr.size == 0:
            raise ValueError(f"{shape_where} (label {label!r}): the {shape_type} covers no "
                             f"pixel of the {width}x{height} (WxH) image")
        if label == BACKGROUND_LABEL:
            continue
        key = (label, group_id) if group_id is not None else (label, None, index)
        if key not in by_key:
            by_key[key] = {"label": label, "group_id": group_id, "shapes": []}
            instances.append(by_key[key])
        by_key[key]["shapes"].append(geometry)
    if not instances:
        raise ValueError(f"{where}: has no instance (no polygon, rectangle, circle or mask "
                         f"shape other than {BACKGROUND_LABEL!r})")
    flags = data.get("flags") if isinstance(data.get("flags"), dict) else {}
    return {"json_path": json_path, "image_source": kind, "image_path": image_path,
            "height": height, "width": width, "instances": instances, "points": points,
            "lines": lines, "flags": flags}


def _json_files(path):
    if isinstance(path, (list, tuple)):
        return [os.fspath(p) for p in path]
    path = os.fspath(path)
    if os.path.isdir(path):
        files = sorted(os.path.join(path, f) for f in os.listdir(path)
                       if f.lower().endswith(".json") and not f.startswith("."))
        if not files:
            raise FileNotFoundError(f"load_labelme: folder {path!r} has no .json files")
        return files
    return [path]


class LabelmeDataset(Dataset):
    """A `Dataset` read from labelme JSON files (see the module docstring).

    Image info holds ``path`` (the image file, or the JSON file when the pixels
    come from ``imageData``), ``json_path``, ``image_source`` (``"file"`` or
    ``"imageData"``), ``width``, ``height``, ``instances``, ``points``,
    ``lines`` and the file's ``flags``.

    Attributes:
        skipped_files: ``(json path, message)`` of the files `load_labelme`
            skipped with ``skip_bad=True``.
    """

    def __init__(self, class_map=None):
        super().__init__(class_map)
        self._labelme_sources = set()
        self.skipped_files = []

    def load_labelme(self, path, class_names=None, source="labelme", skip_bad=False,
                     keypoint_names=None):
        """Add the images and shapes of labelme JSON files.

        Args:
            path: a folder (its ``*.json`` files, sorted, not recursive), one
                JSON file, or a list of JSON files.
            class_names: list of names, or a path of a text file with one name
                per line; default: the sorted labels found.
            source: source name of the classes and images.
            skip_bad: skip (and count in ``skipped_files``) the files with bad
                input instead of raising.
            keypoint_names: the point labels that are keypoints, in keypoint
                order (default: the sorted point labels found); sets
                ``keypoint_names``.

        Raises:
            FileNotFoundError / ValueError: bad input (module docstring);
            ValueError also when every file was skipped, or when ``source``
            already has other class names.
        """
        files = _json_files(path)
        names = None if class_names is None else read_class_names(class_names)
        records, skipped = [], []

        def bad(json_path, exc):
            if not skip_bad:
                raise exc
            skipped.append((json_path, str(exc)))

        for json_path in files:
            try:
                records.append(_parse_file(json_path))
            except (ValueError, OSError) as exc:
                bad(json_path, exc)
        if names is None:
            names = sorted({inst["label"] for r in records for inst in r["instances"]
                            if inst["label"] != IGNORE_LABEL})
        known, kept = set(names) | {IGNORE_LABEL}, []
        for r in records:
            unknown = [(g["index"], inst["label"]) for inst in r["instances"]
                       for g in inst["shapes"] if inst["label"] not in known]
            if unknown:
                bad(r["json_path"], ValueError(
                    f"labelme file {r['json_path']!r}, shape {unknown[0][0]}: label "
                    f"{unknown[0][1]!r} is not in class_names {names}"))
            else:
                kept.append(r)
        if skipped:
            self.skipped_files.extend(skipped)
            warnings.warn(f"load_labelme: skipped {len(skipped)} of {len(files)} files with "
                          f"bad input (skip_bad=True); first: {skipped[0][1]}", UserWarning,
                          stacklevel=2)
        if not kept:
            raise ValueError(f"load_labelme: none of the {len(files)} files could be loaded; "
                             f"first error: {skipped[0][1]}")
        if not names:
            raise ValueError(f"load_labelme: no class label in {path!r} (only "
                             f"{IGNORE_LABEL!r} shapes)")

        existing = [c["name"] for c in self.class_info if c["source"] == source]
        if existing and existing != names:
            raise ValueError(f"load_labelme: source {source!r} already has classes "
                             f"{existing}, not {names}; pass the same class_names or "
                             f"another source")
        for i, name in enumerate(names, start=1):
            self.add_class(source, i, name)
        if keypoint_names is None:
            keypoint_names = sorted({p["label"] for r in kept for p in r["points"]})
        if keypoint_names or not self.keypoint_names:
            self.keypoint_names = tuple(str(n) for n in keypoint_names)
        for r in kept:
            self.add_image(source, image_id=r["json_path"],
                           path=r["image_path"] or r["json_path"], **{
                               k: v for k, v in r.items() if k != "image_path"})
        self._labelme_sources.add(source)

    def image_reference(self, image_id):
        """The image's labelme JSON file."""
        info = self.image_info[image_id]
        return str(info.get("json_path", info.get("path")))

    def load_image(self, image_id):
        """The image as RGB uint8 ``[H, W, 3]`` (EXIF orientation applied).

        Raises ValueError / FileNotFoundError naming the JSON file when the
        image cannot be read or its size is not the file's.
        """
        info = self.image_info[image_id]
        if info["source"] not in self._labelme_sources or "json_path" not in info:
            return super().load_image(image_id)
        from PIL import ImageOps

        where = f"labelme file {info['json_path']!r}"
        source, what = info["path"], f"{where}: image {info['path']!r}"
        if info["image_source"] == "imageData":
            data = read_json_file(info["json_path"], "labelme file")
            _, _, source, what = _locate_image(data, info["json_path"], where)
        elif not os.path.exists(source):
            raise FileNotFoundError(f"{what} does not exist")
        with _open_image(source, what) as im:
            try:
                im = ImageOps.exif_transpose(im)
                if im.mode not in ("1", "L", "LA", "RGB", "RGBA", "I;16"):
                    im = im.convert("RGB")
                image = np.asarray(im)
            except Exception as exc:
                raise ValueError(f"{what}: cannot decode the image: {exc}") from exc
        if image.shape[:2] != (info["height"], info["width"]):
            raise ValueError(f"{what} is {image.shape[1]}x{image.shape[0]} (WxH), expected "
                             f"{info['width']}x{info['height']}")
        return to_rgb_uint8(image)

    def load_mask(self, image_id):
        """Instance masks: bool ``[H, W, N]`` and int32 class ids ``[N]``
        (negative for ``__ignore__`` regions), in the file's instance order."""
        info = self.image_info[image_id]
        if info["source"] not in self._labelme_sources or "instances" not in info:
            return super().load_mask(image_id)
        height, width = info["height"], info["width"]
        ids = {c["name"]: i for i, c in enumerate(self.class_info)
               if c["source"] == info["source"]}
        crowd_id = -min(ids.values())
        masks = np.zeros((height, width, len(info["instances"])), dtype=bool)
        class_ids = np.zeros(len(info["instances"]), dtype=np.int32)
        for k, inst in enumerate(info["instances"]):
            for g in inst["shapes"]:
                rr, cc = shape_pixels(g["shape_type"], g["points"], height, width, g["mask"])
                masks[rr, cc, k] = True
            class_ids[k] = crowd_id if inst["label"] == IGNORE_LABEL else ids[inst["label"]]
        return masks, class_ids

    def load_keypoints(self, image_id, num_keypoints=None):
        """The file's ``point`` shapes as keypoints of its instances: float32
        ``[N, K, 3]`` aligned with `load_mask` (assignment rule: module docstring)."""
        info = self.image_info[image_id]
        if info["source"] not in self._labelme_sources or "instances" not in info:
            return super().load_keypoints(image_id, num_keypoints)
        names = tuple(self.keypoint_names)
        k = len(names) if num_keypoints is None else int(num_keypoints)
        masks, class_ids = self.load_mask(image_id)
        out = np.zeros((masks.shape[-1], k, 3), dtype=np.float32)
        for point in info["points"]:
            where = (f"labelme file {info['json_path']!r}, shape {point['shape_index']} "
                     f"(point {point['label']!r})")
            if point["label"] not in names or names.index(point["label"]) >= k:
                raise ValueError(f"{where}: the label is not one of keypoint_names "
                                 f"{list(names[:k])}")
            j = names.index(point["label"])
            n = _point_owner(point, info["instances"], masks, class_ids, where)
            if out[n, j, 2] > 0:
                raise ValueError(f"{where}: instance {n} ({info['instances'][n]['label']!r}) "
                                 f"already has a point {point['label']!r}")
            out[n, j] = (point["x"], point["y"], 2.0)
        return out


def _point_owner(point, instances, masks, class_ids, where):
    """Index of the instance a point belongs to (module docstring's rule)."""
    height, width = masks.shape[:2]
    candidates = [n for n in range(len(instances)) if class_ids[n] > 0]
    if point["group_id"] is not None:
        candidates = [n for n in candidates if instances[n]["group_id"] == point["group_id"]]
        if not candidates:
            raise ValueError(f"{where}: no instance has group_id {point['group_id']!r}")
    row = min(max(int(np.floor(point["y"])), 0), height - 1)
    col = min(max(int(np.floor(point["x"])), 0), width - 1)
    holding = [n for n in candidates if masks[row, col, n]]
    if holding:
        return holding[-1]
    if len(candidates) == 1 and point["group_id"] is not None:
        return candidates[0]
    best, best_distance = None, POINT_SNAP_DISTANCE
    for n in candidates:
        rr, cc = np.nonzero(masks[:, :, n])
        if rr.size:
            distance = np.min(np.hypot(cc + 0.5 - point["x"], rr + 0.5 - point["y"]))
            if distance <= best_distance:
                best, best_distance = n, distance
    if best is None:
        raise ValueError(f"{where}: at ({point['x']}, {point['y']}) it lies on no instance's "
                         f"mask (nor within {POINT_SNAP_DISTANCE} px of one); give it its "
                         f"instance's group_id")
    return best
