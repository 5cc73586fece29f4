"""The `Dataset` protocol: classes, images and how to load them.

Users subclass `Dataset` (also importable as ``mrcnn.utils.Dataset``), register
classes with `add_class` and images with `add_image`, override `load_mask`
(and optionally `load_image` / `image_reference`), then call `prepare()`:

    class ShapesDataset(Dataset):
        def load_shapes(self, count):
            self.add_class("shapes", 1, "square")
            for i in range(count):
                self.add_image("shapes", image_id=i, path=None, size=(64, 64))

        def load_mask(self, image_id):
            ...  # -> bool [H, W, N], int32 [N]

    ds = ShapesDataset()
    ds.load_shapes(10)
    ds.prepare()

Identifiers. Every class and image has an *internal* id: its index in
``class_info`` / ``image_info`` (class 0 is always the background "BG" of
source ""). The id it had in its original data set is its *source* id; the
pair is written ``"source.id"`` (e.g. ``"coco.18"``). Classes of different
sources keep separate internal ids even when their source ids coincide, so
several data sets can be merged into one `Dataset`.

Masks. `load_mask` returns ``(masks, class_ids)``: bool ``[H, W, N]``, one
channel per instance, and int32 ``[N]`` internal class ids. A negative class id
marks a *crowd* region (COCO ``iscrowd``), which training ignores.

Keypoints. `load_keypoints` returns float32 ``[N, K, 3]`` ``(x, y, v)`` aligned
with ``load_mask``'s instances (conventions: `mrcnn.structures.keypoints`);
``keypoint_names``, ``keypoint_skeleton`` and ``keypoint_class_sets`` describe them.
"""

import os
import warnings

import numpy as np

__all__ = ["Dataset", "DatasetNotPreparedError", "to_rgb_uint8"]

# Attributes created by `prepare()`; reading one earlier raises a clear error.
# ("image_ids" is a property: its AttributeError falls through to __getattr__.)
_PREPARED_ATTRIBUTES = frozenset({
    "num_classes", "class_ids", "class_names", "num_images", "_image_ids", "image_ids",
    "class_from_source_map", "image_from_source_map", "sources", "source_class_ids",
})


class DatasetNotPreparedError(AttributeError):
    """Raised when an attribute that `Dataset.prepare()` builds is read before it."""


class Dataset:
    """Base class for data sets (same protocol as the old ``utils.Dataset``).

    Attributes:
        class_info: list of ``{"source", "id", "name"}`` dicts; index = internal id.
        image_info: list of ``{"id", "source", "path", **kwargs}`` dicts;
            index = internal image id. Loaders store ``width`` / ``height``
            here when they know them.

    After `prepare()`:
        num_classes, class_ids (``np.arange(num_classes)``), class_names (the
        part of each name before the first comma), num_images, image_ids,
        class_from_source_map ``{"source.id": internal id}``,
        image_from_source_map ``{"source.id": internal image id}``, sources
        (sorted list), source_class_ids ``{source: [internal ids, incl. 0]}``.
    """

    # Keypoints (the loaders set them): the K names, the skeleton as pairs of
    # keypoint indices (for drawing) and, for classes with their own set,
    # ``{"source.id": [keypoint indices]}`` (see `keypoint_classes`).
    keypoint_names = ()
    keypoint_skeleton = ()
    keypoint_class_sets = None

    def __init__(self, class_map=None):
        # ``class_map`` is accepted for compatibility with the old API, which
        # also ignored it.
        self._image_ids = None
        self.image_info = []
        self.class_info = [{"source": "", "id": 0, "name": "BG"}]
        self.source_class_ids = {}
        self._prepared = False

    def __getattr__(self, name):
        # Only called when normal lookup fails.
        if name in _PREPARED_ATTRIBUTES:
            raise DatasetNotPreparedError(
                f"{type(self).__name__}.{name} is not available yet: call "
                f"dataset.prepare() after adding classes and images.")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # ------------------------------------------------------------------ building
    def add_class(self, source, class_id, class_name):
        """Register class ``class_id`` of ``source``. Re-adding it is a no-op."""
        if not isinstance(source, str) or "." in source:
            raise ValueError(f"add_class: source must be a string without dots, got {source!r}")
        for info in self.class_info:
            if info["source"] == source and info["id"] == class_id:
                return
        self.class_info.append({"source": source, "id": class_id, "name": class_name})

    def add_image(self, source, image_id, path, **kwargs):
        """Register an image. Extra keyword arguments are stored in its image_info."""
        if not isinstance(source, str) or "." in source:
            raise ValueError(f"add_image: source must be a string without dots, got {source!r}")
        info = {"id": image_id, "source": source, "path": path}
        info.update(kwargs)
        self.image_info.append(info)

    def append_data(self, class_info, image_info):
        """Merge in the classes and images of another data set's info lists."""
        for info in class_info:
            if info["source"] == "" and info["id"] == 0:
                continue
            self.add_class(info["source"], info["id"], info["name"])
        for info in image_info:
            extra = {k: v for k, v in info.items() if k not in ("id", "source", "path")}
            self.add_image(info["source"], info["id"], info["path"], **extra)

    def prepare(self, class_map=None):
        """Build the lookup tables. Call it after adding classes/images (again if you add more)."""
        def clean_name(name):
            return str(name).split(",")[0]

        self.num_classes = len(self.class_info)
        self.class_ids = np.arange(self.num_classes)
        self.class_names = [clean_name(c["name"]) for c in self.class_info]
        self.num_images = len(self.image_info)
        self._image_ids = np.arange(self.num_images)

        self.class_from_source_map = {
            f"{info['source']}.{info['id']}": i for i, info in enumerate(self.class_info)}
        self.image_from_source_map = {
            f"{info['source']}.{info['id']}": i for i, info in enumerate(self.image_info)}

        self.sources = sorted({c["source"] for c in self.class_info})
        self.source_class_ids = {
            source: [i for i, info in enumerate(self.class_info)
                     if i == 0 or info["source"] == source]
            for source in self.sources}
        self._prepared = True

    # ------------------------------------------------------------------ lookups
    @property
    def image_ids(self):
        """int array of internal image ids ``[num_images]`` (after `prepare()`)."""
        if self.__dict__.get("_image_ids") is None:
            raise DatasetNotPreparedError(
                f"{type(self).__name__}.image_ids is not available yet: call "
                f"dataset.prepare() after adding classes and images.")
        return self._image_ids

    def map_source_class_id(self, source_class_id):
        """``"source.id"`` -> internal class id (after `prepare()`)."""
        try:
            return self.class_from_source_map[source_class_id]
        except KeyError:
            raise KeyError(f"map_source_class_id: unknown class {source_class_id!r}; known: "
                           f"{sorted(self.class_from_source_map)}") from None

    def get_source_class_id(self, class_id, source):
        """Internal class id -> the class's id in ``source``."""
        info = self.class_info[class_id]
        if info["source"] != source:
            raise ValueError(f"get_source_class_id: class {class_id} ({info['name']!r}) "
                             f"belongs to source {info['source']!r}, not {source!r}")
        return info["id"]

    def image_reference(self, image_id):
        """A human-readable reference to the image (its path, or "" if it has none)."""
        path = self.image_info[image_id].get("path")
        return "" if path is None else str(path)

    def source_image_link(self, image_id):
        """The image's path (or URL) as registered with `add_image`."""
        return self.image_info[image_id]["path"]

    # ------------------------------------------------------------------ loading
    def load_image(self, image_id):
        """Read the image as RGB uint8 ``[H, W, 3]`` (see `to_rgb_uint8` for conversions).

        ``image_info[image_id]["path"]`` is a file path (or an http(s) URL,
        which ``skimage.io.imread`` fetches).

        Raises:
            FileNotFoundError: the file does not exist.
            ValueError: the file cannot be decoded or has an unsupported shape.
            Both messages name the file path and the image id.
        """
        import skimage.io

        info = self.image_info[image_id]
        path = info.get("path")
        where = f"image id {image_id} (source {info['source']!r}, source id {info['id']!r})"
        if path is None:
            raise ValueError(f"load_image: {where} has no path; override load_image() "
                             f"for generated images")
        is_url = isinstance(path, str) and path.startswith(("http://", "https://"))
        if not is_url and not os.path.exists(path):
            raise FileNotFoundError(f"load_image: file {path!r} of {where} does not exist")
        try:
            image = skimage.io.imread(path)
        except Exception as exc:  # decoders raise many types
            raise ValueError(f"load_image: cannot read file {path!r} of {where}: {exc}") from exc
        try:
            return to_rgb_uint8(image)
        except ValueError as exc:
            raise ValueError(f"load_image: file {path!r} of {where}: {exc}") from exc

    def load_mask(self, image_id):
        """Instance masks of an image. **Override this in your subclass.**

        Returns:
            masks: bool ``[H, W, N]``, one channel per instance.
            class_ids: int32 ``[N]`` internal class ids (negative = crowd region).

        The base implementation returns an empty ``bool [0, 0, 0]`` array and an
        empty int32 ``[0]`` array and warns that it was not overridden (as the
        old API did), so an image without annotations trains as background.
        """
        warnings.warn(f"{type(self).__name__}.load_mask() is not implemented: override "
                      f"load_mask(image_id) to return bool masks [H, W, N] and int32 class "
                      f"ids [N]; returning no instances.", UserWarning, stacklevel=2)
        return np.empty([0, 0, 0], dtype=bool), np.empty([0], dtype=np.int32)

    def load_keypoints(self, image_id, num_keypoints=None):
        """Keypoints of an image's instances, aligned with `load_mask`'s channels.

        Override it, or store them as ``image_info[image_id]["keypoints"]``
        (what this default returns). Without them every keypoint is unlabelled:
        zeros ``[N, K, 3]`` with ``N`` from `load_mask`.

        Args:
            num_keypoints: ``K`` (``Config.NUM_KEYPOINTS``); default
                ``len(self.keypoint_names)``.

        Returns:
            float32 ``[N, K, 3]`` ``(x, y, v)`` in image pixels, ``v`` 0 (not
            labelled), 1 (labelled, not visible), 2 (visible); see
            `mrcnn.structures.keypoints`.

        Raises:
            ValueError naming the image when the stored keypoints are not
            ``[N, K, 3]`` with valid visibilities.
        """
        from mrcnn.structures.keypoints import check_keypoints, empty_keypoints

        k = len(self.keypoint_names) if num_keypoints is None else int(num_keypoints)
        info = self.image_info[image_id]
        where = f"load_keypoints: image id {image_id} ({self.image_reference(image_id)!r})"
        if info.get("keypoints") is not None:
            return check_keypoints(info["keypoints"], num_keypoints=k, where=where)
        _, class_ids = self.load_mask(image_id)
        return empty_keypoints(len(np.asarray(class_ids).reshape(-1)), k)

    def keypoint_classes(self):
        """``{internal class id: keypoint indices}`` of the classes with their own
        keypoint set (``keypoint_class_sets``), for ``Config.KEYPOINT_CLASSES``;
        None when no class has one (every class then has all keypoints).
        After `prepare()`."""
        if not self.keypoint_class_sets:
            return None
        return {self.map_source_class_id(key): list(indices)
                for key, indices in self.keypoint_class_sets.items()
                if key in self.class_from_source_map}


def to_rgb_uint8(image):
    """Convert an image array to RGB uint8 ``[H, W, 3]``.

    Channels: ``[H, W]`` and ``[H, W, 1]`` gray are repeated to 3 channels;
    ``[H, W, 2]`` (gray + alpha) keeps the gray channel; ``[H, W, 4]`` (RGBA)
    drops alpha. A 4-D array (multi-frame file) keeps its first frame.

    Values (a fixed rule per dtype, never per-image contrast stretching):
      * uint8: unchanged; bool: False/True -> 0/255.
      * other integer dtypes: scaled by the dtype's full range,
        ``round(v * 255 / iinfo.max)``, negatives clipped to 0
        (so a 16-bit 65535 becomes 255 and 257 becomes 1).
      * float: if all values lie in [0, 1] they are scaled by 255 (the
        scikit-image convention), otherwise they are taken as 0..255 values
        and clipped to that range; then rounded. NaN becomes 0.
    """
    image = np.asarray(image)
    if image.ndim == 4:
        image = image[0]
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 2, 3, 4):
        raise ValueError(f"expected an image [H, W], [H, W, 1|2|3|4], got shape {image.shape}")
    channels = image.shape[-1]
    if channels in (1, 2):
        image = np.repeat(image[..., :1], 3, axis=-1)
    elif channels == 4:
        image = image[..., :3]

    if image.dtype == np.uint8:
        return np.ascontiguousarray(image)
    if image.dtype == bool:
        return image.astype(np.uint8) * 255
    if np.issubdtype(image.dtype, np.integer):
        top = float(np.iinfo(image.dtype).max)
        scaled = np.clip(image.astype(np.float64), 0, None) * (255.0 / top)
        return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    if np.issubdtype(image.dtype, np.floating):
        values = np.nan_to_num(image.astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        if values.size and values.min() >= 0.0 and values.max() <= 1.0:
            values = values * 255.0
        return np.clip(np.rint(values), 0, 255).astype(np.uint8)
    raise ValueError(f"unsupported image dtype {image.dtype}")
