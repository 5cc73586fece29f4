"""`FolderDataset`: a folder of images with masks stored as image files.

Two layouts under ``root``:

``masks`` layout (one binary PNG per instance)::

    images/<name>.<ext>            # .png .jpg .jpeg .bmp .tif .tiff
    masks/<name>/<anything>.png    # any non-zero pixel belongs to the instance

  Class of a mask file: its stem ``<class_name>_<k>`` (e.g. ``cat_0.png``,
  ``traffic light_3.png``) names the class. With ``class_names=None`` the
  classes are the sorted prefixes if every mask file is named that way,
  otherwise all instances are of one class ``"object"``. With ``class_names``
  given the prefix must be one of them, unless ``class_names`` has a single
  entry, which then names every instance. An image without a mask folder has
  no instances.

``labels`` layout (one label image per image)::

    images/<name>.<ext>
    labels/<name>.png              # 0 = background; each other value = one instance

  ``label_classes`` maps a label value to a class name (a dict, or a callable
  ``value -> name``); a value it maps to None is ignored. Without it every
  instance is of the single class ``class_names[0]`` (default ``"object"``).
  16-bit label PNGs are fine.

Colour mask files count a pixel as set when any of its colour channels is
non-zero (an alpha channel is ignored). A mask whose size differs from its
image raises ValueError naming both files and both sizes.
"""

import os
import re
import warnings

import numpy as np

from mrcnn.data.dataset import Dataset

__all__ = ["FolderDataset"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_CLASS_STEM = re.compile(r"^(.+)_(\d+)$")


def _read_plane(path):
    """Read a mask/label file as a 2-D integer array."""
    import skimage.io

    try:
        array = skimage.io.imread(path)
    except Exception as exc:
        raise ValueError(f"cannot read mask file {path!r}: {exc}") from exc
    if array.ndim == 3:
        if array.shape[-1] in (2, 4):
            array = array[..., :-1]  # drop alpha
        array = array.max(axis=-1)
    if array.ndim != 2:
        raise ValueError(f"mask file {path!r}: expected a 2-D image, got shape {array.shape}")
    return array


class FolderDataset(Dataset):
    """A `Dataset` read from an ``images/`` + ``masks/`` or ``labels/`` folder tree."""

    def __init__(self, class_map=None):
        super().__init__(class_map)
        self._folder_sources = set()

    def load_folder(self, root, class_names=None, layout="auto", label_classes=None,
                    source="folder"):
        """Add every image of ``root/images`` and its masks.

        Args:
            root: the folder holding ``images/`` and ``masks/`` or ``labels/``.
            class_names: see the module docstring; class ids are 1, 2, ... in
                this order.
            layout: ``"masks"``, ``"labels"`` or ``"auto"`` (whichever folder exists).
            label_classes: for the labels layout, dict or callable mapping a
                label value to a class name (None = ignore the value).
            source: source name of the classes and images.

        Raises:
            FileNotFoundError: ``root/images`` does not exist.
            ValueError: unknown layout, both or neither mask folder with
                ``"auto"``, a mask file of an unknown class.
        """
        from PIL import Image

        root = os.fspath(root)
        image_dir = os.path.join(root, "images")
        if not os.path.isdir(image_dir):
            raise FileNotFoundError(f"load_folder: {image_dir!r} is not a folder")
        if layout == "auto":
            has_masks = os.path.isdir(os.path.join(root, "masks"))
            has_labels = os.path.isdir(os.path.join(root, "labels"))
            if has_masks == has_labels:
                raise ValueError(f"load_folder: {root!r} must contain exactly one of 'masks/' "
                                 f"and 'labels/' for layout='auto' (found "
                                 f"{'both' if has_masks else 'neither'}); pass layout=")
            layout = "masks" if has_masks else "labels"
        if layout not in ("masks", "labels"):
            raise ValueError(f"load_folder: layout must be 'masks', 'labels' or 'auto', "
                             f"got {layout!r}")

        images = sorted(f for f in os.listdir(image_dir)
                        if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith("."))
        records = []
        for filename in images:
            name = os.path.splitext(filename)[0]
            image_path = os.path.join(image_dir, filename)
            try:
                with Image.open(image_path) as im:
                    width, height = im.size
            except Exception as exc:
                raise ValueError(f"load_folder: cannot read image {image_path!r}: {exc}") from exc
            record = {"name": name, "path": image_path, "width": width, "height": height}
            if layout == "masks":
                mask_dir = os.path.join(root, "masks", name)
                files = (sorted(f for f in os.listdir(mask_dir) if f.lower().endswith(".png"))
                         if os.path.isdir(mask_dir) else [])
                record["mask_files"] = [os.path.join(mask_dir, f) for f in files]
            else:
                label_path = os.path.join(root, "labels", name + ".png")
                record["label_file"] = label_path if os.path.exists(label_path) else None
            records.append(record)

        if layout == "masks":
            names = self._mask_classes(records, class_names)
        else:
            names = [str(n) for n in class_names] if class_names else None
            if names is None and callable(label_classes):
                raise ValueError("load_folder: with a callable label_classes, pass class_names "
                                 "(the names it can return)")
            if names is None:
                names = ["object"]
                if label_classes is not None and isinstance(label_classes, dict):
                    names = sorted({str(v) for v in label_classes.values() if v is not None})
        for i, name in enumerate(names, start=1):
            self.add_class(source, i, name)

        for record in records:
            extra = {k: v for k, v in record.items() if k not in ("name", "path")}
            self.add_image(source, image_id=record["name"], path=record["path"],
                           layout=layout, label_classes=label_classes, **extra)
        self._folder_sources.add(source)

    @staticmethod
    def _mask_classes(records, class_names):
        """Class names for the masks layout; stores each file's class in ``mask_classes``."""
        stems = [(r, os.path.splitext(os.path.basename(f))[0])
                 for r in records for f in r["mask_files"]]
        prefixes = [_CLASS_STEM.match(s) for _, s in stems]
        if class_names is None:
            if stems and all(prefixes):
                names = sorted({m.group(1) for m in prefixes})
            else:
                names = ["object"]
        else:
            names = [str(n) for n in class_names]
        for r in records:
            r["mask_classes"] = []
            for f in r["mask_files"]:
                match = _CLASS_STEM.match(os.path.splitext(os.path.basename(f))[0])
                prefix = match.group(1) if match else None
                if prefix in names:
                    r["mask_classes"].append(prefix)
                elif len(names) == 1:
                    r["mask_classes"].append(names[0])
                else:
                    raise ValueError(f"load_folder: cannot tell the class of mask file {f!r}: "
                                     f"name it '<class>_<k>.png' with <class> one of {names}")
        return names

    def image_reference(self, image_id):
        """The image's file path."""
        return str(self.image_info[image_id]["path"])

    def _class_id(self, source, name):
        for i, info in enumerate(self.class_info):
            if info["source"] == source and info["name"] == name:
                return i
        raise ValueError(f"unknown class {name!r} of source {source!r}")

    def _check_size(self, info, mask, mask_path):
        if mask.shape != (info["height"], info["width"]):
            raise ValueError(
                f"load_folder: mask {mask_path!r} is {mask.shape[1]}x{mask.shape[0]} (WxH) but "
                f"image {info['path']!r} is {info['width']}x{info['height']} (WxH)")

    def load_mask(self, image_id):
        """Instance masks: bool ``[H, W, N]`` and int32 class ids ``[N]`` (N may be 0)."""
        info = self.image_info[image_id]
        if info["source"] not in self._folder_sources or "layout" not in info:
            return super().load_mask(image_id)
        height, width = info["height"], info["width"]
        masks, class_ids = [], []
        if info["layout"] == "masks":
            for path, name in zip(info["mask_files"], info["mask_classes"]):
                plane = _read_plane(path)
                self._check_size(info, plane, path)
                if not plane.any():
                    warnings.warn(f"load_folder: mask {path!r} is empty; skipped", UserWarning,
                                  stacklevel=2)
                    continue
                masks.append(plane != 0)
                class_ids.append(self._class_id(info["source"], name))
        elif info["label_file"] is not None:
            path = info["label_file"]
            plane = _read_plane(path)
            self._check_size(info, plane, path)
            mapping = info["label_classes"]
            for value in np.unique(plane):
                if value == 0:
                    continue
                if mapping is None:
                    name = self.class_info[self.source_class_ids_for(info["source"])[0]]["name"]
                elif callable(mapping):
                    name = mapping(value.item())
                else:
                    if value.item() not in mapping:
                        raise ValueError(f"load_folder: label value {value.item()} in "
                                         f"{path!r} is not in label_classes")
                    name = mapping[value.item()]
                if name is None:
                    continue
                masks.append(plane == value)
                class_ids.append(self._class_id(info["source"], str(name)))
        if not masks:
            return np.zeros((height, width, 0), dtype=bool), np.zeros((0,), dtype=np.int32)
        return np.stack(masks, axis=-1), np.asarray(class_ids, dtype=np.int32)

    def source_class_ids_for(self, source):
        """Internal ids of ``source``'s classes (without background), in order."""
        return [i for i, c in enumerate(self.class_info) if c["source"] == source]
