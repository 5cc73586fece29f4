"""`ViaDataset`: VGG Image Annotator (VIA) JSON files.

Accepted layouts:
  * VIA 1.x export / VIA 2.x "export annotations as JSON":
    ``{key: {"filename": ..., "regions": {...} or [...], ...}, ...}``
  * VIA 2.x project file: ``{"_via_img_metadata": {key: {...}}, "_via_settings": ...}``

Region shapes (``shape_attributes["name"]``), coordinates in pixels with x to the
right and y down:
  * ``polygon`` (``all_points_x``, ``all_points_y``), ``rect`` (``x``, ``y``,
    ``width``, ``height``), ``circle`` (``cx``, ``cy``, ``r``), ``ellipse``
    (``cx``, ``cy``, ``rx``, ``ry``, optional ``theta`` in radians).
  * Other shapes (point, polyline) are skipped with a warning.

Shapes partly outside the image are clipped to it. Degenerate regions (a
polygon with fewer than 3 points or zero area, a zero-size rect/circle, or a
shape that covers no pixel) are skipped with a warning naming the image and the
region index. Malformed regions (x/y lists of different lengths, non-numeric
or non-finite coordinates) raise ValueError naming the image and region.
"""

import os
import warnings

import numpy as np

from mrcnn.data.dataset import Dataset
from mrcnn.data.loaders.json_file import read_json_file

__all__ = ["ViaDataset", "region_to_mask"]


def _via_entries(data, path):
    """The per-image entries of a VIA JSON document (any supported layout)."""
    if not isinstance(data, dict):
        raise ValueError(f"VIA file {path!r}: expected a JSON object at the top level, "
                         f"got {type(data).__name__}")
    if "_via_img_metadata" in data:
        data = data["_via_img_metadata"]
        if not isinstance(data, dict):
            raise ValueError(f"VIA file {path!r}: '_via_img_metadata' must be an object")
    entries = []
    for key, entry in data.items():
        if isinstance(key, str) and key.startswith("_via_"):
            continue  # other project-file sections (settings, attributes, ...)
        if not isinstance(entry, dict) or "filename" not in entry:
            raise ValueError(f"VIA file {path!r}: entry {key!r} is not an image record with "
                             f"a 'filename' (is this a VIA 1.x/2.x JSON file?)")
        regions = entry.get("regions", [])
        if isinstance(regions, dict):  # VIA 1.x: {"0": {...}, "1": {...}}
            regions = [regions[k] for k in sorted(regions, key=_region_sort_key)]
        if not isinstance(regions, list):
            raise ValueError(f"VIA file {path!r}: entry {key!r}: 'regions' must be a list or "
                             f"an object")
        entries.append((key, entry["filename"], regions))
    return entries


def _region_sort_key(key):
    return (0, int(key), "") if str(key).isdigit() else (1, 0, str(key))


def _numbers(values, name, where):
    if not isinstance(values, (list, tuple)):
        values = [values]
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {name} must be numbers, got {values!r}") from None
    if arr.ndim != 1 or not np.all(np.isfinite(arr)):
        raise ValueError(f"{where}: {name} must be finite numbers, got {values!r}")
    return arr


def region_to_mask(shape_attributes, height, width, where="region"):
    """Rasterise one VIA region to a bool ``[height, width]`` mask.

    Returns None (after a warning) for degenerate or unsupported shapes.
    Raises ValueError for malformed attributes.
    """
    import skimage.draw

    if not isinstance(shape_attributes, dict):
        raise ValueError(f"{where}: 'shape_attributes' must be an object")
    kind = shape_attributes.get("name")

    def attr(key, default=None):
        if key not in shape_attributes:
            if default is not None:
                return default
            raise ValueError(f"{where}: {kind} region lacks {key!r}")
        return _numbers(shape_attributes[key], key, where)[0]

    mask = np.zeros((height, width), dtype=bool)
    if kind in ("polygon", "polyline"):
        if kind == "polyline":
            warnings.warn(f"{where}: skipping a polyline region (not a closed shape)",
                          UserWarning, stacklevel=3)
            return None
        xs = _numbers(shape_attributes.get("all_points_x", []), "all_points_x", where)
        ys = _numbers(shape_attributes.get("all_points_y", []), "all_points_y", where)
        if xs.shape != ys.shape:
            raise ValueError(f"{where}: all_points_x has {xs.size} values but all_points_y "
                             f"has {ys.size}")
        area = 0.5 * abs(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1)))
        if xs.size < 3 or area == 0:
            warnings.warn(f"{where}: skipping a degenerate polygon ({xs.size} points, "
                          f"area {area:g})", UserWarning, stacklevel=3)
            return None
        rr, cc = skimage.draw.polygon(ys, xs, shape=(height, width))
    elif kind == "rect":
        x, y, w, h = attr("x"), attr("y"), attr("width"), attr("height")
        if w <= 0 or h <= 0:
            warnings.warn(f"{where}: skipping a rect of size {w:g}x{h:g}", UserWarning,
                          stacklevel=3)
            return None
        y1, x1 = max(int(round(y)), 0), max(int(round(x)), 0)
        y2, x2 = min(int(round(y + h)), height), min(int(round(x + w)), width)
        rr, cc = np.mgrid[y1:max(y2, y1), x1:max(x2, x1)].reshape(2, -1)
    elif kind in ("circle", "ellipse"):
        cx, cy = attr("cx"), attr("cy")
        if kind == "circle":
            rx = ry = attr("r")
            theta = 0.0
        else:
            rx, ry, theta = attr("rx"), attr("ry"), attr("theta", 0.0)
        if rx <= 0 or ry <= 0:
            warnings.warn(f"{where}: skipping a {kind} with a zero radius", UserWarning,
                          stacklevel=3)
            return None
        # skimage's rotation angle is counter-clockwise in (row, col) space,
        # VIA's theta is clockwise on screen: the same sense, opposite sign.
        rr, cc = skimage.draw.ellipse(cy, cx, ry, rx, shape=(height, width),
                                      rotation=-float(theta))
    else:
        warnings.warn(f"{where}: skipping a region of unsupported shape {kind!r}",
                      UserWarning, stacklevel=3)
        return None
    mask[rr, cc] = True
    if not mask.any():
        warnings.warn(f"{where}: skipping a {kind} that covers no pixel of the "
                      f"{height}x{width} image", UserWarning, stacklevel=3)
        return None
    return mask


def _class_value(region_attributes, class_attribute, where):
    """The class name a region's attribute names, or None if it has none."""
    if not isinstance(region_attributes, dict):
        return None
    value = region_attributes.get(class_attribute)
    if isinstance(value, dict):  # checkbox attribute: {"option": true, ...}
        chosen = [k for k, v in value.items() if v]
        if len(chosen) > 1:
            raise ValueError(f"{where}: attribute {class_attribute!r} selects several classes "
                             f"{chosen}; one class per region is supported")
        value = chosen[0] if chosen else None
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return str(value).strip()


class ViaDataset(Dataset):
    """A `Dataset` read from a VGG Image Annotator JSON file.

    Image info holds ``path``, ``width``, ``height`` and the selected
    ``regions`` as ``(region index, shape_attributes, class name)``.
    """

    def __init__(self, class_map=None):
        super().__init__(class_map)
        self._via_sources = set()

    def load_via(self, json_path, image_dir, class_attribute=None, class_names=None,
                 source="via"):
        """Add the images and regions of a VIA JSON file.

        Args:
            json_path: the VIA JSON file (1.x export or 2.x project).
            image_dir: folder holding the images named by ``filename``.
            class_attribute: name of the region attribute holding the class
                name (e.g. ``"name"``). None: every region is of one class.
            class_names: class names in the order of their ids (1, 2, ...).
                With ``class_attribute``, regions of another class are skipped
                with a warning; default: the sorted names found in the file.
                Without it, ``class_names[0]`` names the single class
                (default ``"object"``).
            source: source name of the classes and images.

        Raises:
            FileNotFoundError: the JSON file or an image file does not exist.
            ValueError: malformed JSON (names the file, line and column) or
                entries; a region without the class attribute.
        """
        from PIL import Image

        path = os.fspath(json_path)
        data = read_json_file(path, "VIA file")
        entries = _via_entries(data, path)

        # Class names of every region (None when there is no class attribute).
        labelled = []
        for key, filename, regions in entries:
            items = []
            for index, region in enumerate(regions):
                where = f"VIA file {path!r}, image {filename!r}, region {index}"
                if not isinstance(region, dict):
                    raise ValueError(f"{where}: a region must be an object")
                name = None
                if class_attribute is not None:
                    name = _class_value(region.get("region_attributes"), class_attribute, where)
                    if name is None:
                        raise ValueError(f"{where}: region attribute {class_attribute!r} is "
                                         f"missing or empty")
                items.append((index, region.get("shape_attributes"), name))
            labelled.append((key, filename, items))

        if class_attribute is None:
            names = [class_names[0] if class_names else "object"]
        elif class_names is not None:
            names = [str(n) for n in class_names]
        else:
            names = sorted({name for _, _, items in labelled for _, _, name in items})
        for i, name in enumerate(names, start=1):
            self.add_class(source, i, name)

        unknown = set()
        for key, filename, items in labelled:
            image_path = os.path.join(os.fspath(image_dir), filename)
            if not os.path.exists(image_path):
                raise FileNotFoundError(f"VIA file {path!r}: image file {image_path!r} of "
                                        f"entry {key!r} does not exist")
            try:
                with Image.open(image_path) as im:
                    width, height = im.size
            except Exception as exc:
                raise ValueError(f"VIA file {path!r}: cannot read image {image_path!r} of "
                                 f"entry {key!r}: {exc}") from exc
            regions = []
            for index, shape, name in items:
                if class_attribute is None:
                    name = names[0]
                elif name not in names:
                    unknown.add(name)
                    continue
                regions.append((index, shape, name))
            self.add_image(source, image_id=key, path=image_path, width=width, height=height,
                           filename=filename, regions=regions)
        if unknown:
            warnings.warn(f"VIA file {path!r}: skipped regions of classes {sorted(unknown)} "
                          f"that are not in class_names {names}", UserWarning, stacklevel=2)
        self._via_sources.add(source)

    def image_reference(self, image_id):
        """The image's file path."""
        return str(self.image_info[image_id]["path"])

    def load_mask(self, image_id):
        """Masks of an image's regions: bool ``[H, W, N]`` and int32 class ids ``[N]``."""
        info = self.image_info[image_id]
        if info["source"] not in self._via_sources or "regions" not in info:
            return super().load_mask(image_id)
        height, width = info["height"], info["width"]
        masks, class_ids = [], []
        for index, shape, name in info["regions"]:
            where = f"image {info['filename']!r} ({info['path']}), region {index}"
            mask = region_to_mask(shape, height, width, where)
            if mask is None:
                continue
            masks.append(mask)
            class_ids.append(self._class_id(info["source"], name))
        if not masks:
            return np.zeros((height, width, 0), dtype=bool), np.zeros((0,), dtype=np.int32)
        return np.stack(masks, axis=-1), np.asarray(class_ids, dtype=np.int32)

    def _class_id(self, source, name):
        for i, info in enumerate(self.class_info):
            if info["source"] == source and info["name"] == name:
                return i
        raise ValueError(f"unknown class {name!r} of source {source!r}")
