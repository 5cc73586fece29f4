"""Detections out to files: COCO JSON, pictures, videos.

    from mrcnn.inference.results import detect_folder_to_coco

    export = detect_folder_to_coco(model, "photos/", "out/coco_results.json",
                                   dataset_json="out/coco_dataset.json",
                                   class_names=["BG", "cat", "dog"], pictures_dir="out")

writes the detections of every image in ``photos/`` as COCO results, as a COCO
data set, and as one picture per image (``out/<stem>_detections.png``).

``model`` is anything with ``detect(images, verbose=0)`` returning
`mrcnn.model.MaskRCNN.detect`'s dicts (``rois`` ``[N, (y1, x1, y2, x2)]`` pixels,
y2/x2 exclusive; ``class_ids`` ``[N]``; ``scores`` ``[N]``; ``masks`` bool
``[H, W, N]``) and, optionally, ``config.BATCH_SIZE`` / ``config.NUM_CLASSES``.

The files
---------
*Results JSON* (``results_json``): the COCO results format, one dict per
detection, as `mrcnn.evaluation.coco.detections_to_coco` makes them::

    [{"image_id": 0, "category_id": 2, "bbox": [x, y, w, h], "score": 0.97,
      "segmentation": {"size": [H, W], "counts": "..."}}, ...]

``bbox`` is the detection's box: ``x = x1``, ``y = y1``, ``w = x2 - x1``,
``h = y2 - y1`` (pixels). ``segmentation`` is compressed RLE (exact); with
``polygons=True`` it is a list of polygons ``[[x1, y1, x2, y2, ...], ...]`` (see
`mask_to_polygons`), except for a detection whose mask is empty, which keeps
its (empty) RLE. pycocotools reads it with ``coco_gt.loadRes(results_json)``,
where ``coco_gt`` holds images with the same ids: ``COCO(dataset_json)`` below,
or ``mrcnn.evaluation.coco.build_coco_ground_truth(dataset)`` when the images
came from that `Dataset`. (For polygon results loadRes takes each
detection's area from its bbox: it only computes areas of RLE results.)

*Dataset JSON* (``dataset_json``, optional): a COCO instance-segmentation file of
the same detections, which `mrcnn.data.loaders.CocoDataset` loads::

    {"info": {"description", "image_dir"},
     "images": [{"id", "file_name", "height", "width"}, ...],
     "categories": [{"id", "name"}, ...],          # every class but the background
     "annotations": [{the result above, "id": 1.., "area": mask pixels, "iscrowd": 0}]}

``file_name`` is relative to ``info["image_dir"]`` (the images' common folder),
so ``CocoDataset().load_coco(dataset_json, info["image_dir"])`` gives, for each
image, ``load_mask`` = the detections' masks and class ids (empty masks are
skipped, with that loader's warning), and the raw annotations, ``bbox`` and
``score`` included, in ``image_info[i]["annotations"]``.

Ids. Images are numbered 0, 1, ... in the order given (a `Dataset`'s internal
ids); category ids are the class ids. A `Dataset` whose classes and images all
come from the source ``"coco"`` (`CocoDataset`'s default) keeps its original
COCO image and category ids instead, so the results load against its own
annotation file (the rule of `mrcnn.evaluation.coco`).

Keypoints: a result with ``"keypoints"`` (a model with ``NUM_KEYPOINTS`` > 0)
adds ``"keypoints": [x1, y1, s1, ...]`` to each detection, in COCO's frame:
COCO files store keypoints as pixel indices, the package in continuous pixels
(`mrcnn.structures.keypoints`), so ``COCO_KEYPOINT_SHIFT`` (0.5, what
`CocoDataset` adds when loading) is subtracted; ``s`` is the score. In the
dataset file the third value is the visibility (2 where the score is > 0,
else 0 with x = y = 0) and ``num_keypoints`` counts them.

The same for a video, frame by frame: `mrcnn.inference.video.detect_video`.
Every file is written atomically (a temporary file next to it, then
``os.replace``).
"""

import contextlib
import dataclasses
import io
import itertools
import json
import os
import sys

import numpy as np

from mrcnn.data.dataset import Dataset
from mrcnn.evaluation.coco import CocoIds, detections_to_coco

__all__ = ["IMAGE_EXTENSIONS", "CocoExport", "CocoCollector", "list_images",
           "mask_to_polygons", "detect_folder_to_coco", "save_detections_png",
           "render_detections", "atomic_path", "temp_path", "remove_if_exists",
           "progress_bar", "check_class_names", "model_batch_size"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


# ----------------------------------------------------------------------------- files
_temp_counter = itertools.count()


def temp_path(path):
    """A fresh temporary path beside ``path`` with the same extension (writers that
    pick the format by the extension keep working); creates the folder."""
    directory, name = os.path.split(os.path.abspath(os.fspath(path)))
    os.makedirs(directory, exist_ok=True)
    stem, ext = os.path.splitext(name)
    return os.path.join(directory, f".{stem}.tmp-{os.getpid()}-{next(_temp_counter)}{ext}")


def remove_if_exists(path):
    """Remove a file, ignoring one that is not there (or cannot be removed)."""
    with contextlib.suppress(OSError):
        os.remove(path)


@contextlib.contextmanager
def atomic_path(path):
    """Yield a `temp_path`; on success it replaces ``path``, on any error it is
    removed and ``path`` is left as it was."""
    tmp = temp_path(path)
    try:
        yield tmp
        os.replace(tmp, os.fspath(path))
    except BaseException:
        remove_if_exists(tmp)
        raise


def _write_json(path, data):
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f)


def list_images(folder):
    """Image files directly in ``folder`` (extensions `IMAGE_EXTENSIONS`, any case),
    sorted by name.

    Raises:
        FileNotFoundError: ``folder`` is not a folder, or holds no image file.
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder!r} is not a folder")
    paths = [os.path.join(folder, name) for name in sorted(os.listdir(folder))
             if name.lower().endswith(IMAGE_EXTENSIONS)
             and os.path.isfile(os.path.join(folder, name))]
    if not paths:
        raise FileNotFoundError(f"no image file ({', '.join(IMAGE_EXTENSIONS)}) in {folder!r}")
    return paths


class _ImageFiles(Dataset):
    """Image files as a prepared `Dataset` (no ground truth), classes from names."""

    def __init__(self, paths, class_names):
        super().__init__()
        for class_id, name in enumerate(class_names[1:], start=1):
            self.add_class("files", class_id, name)
        for k, path in enumerate(paths):
            self.add_image("files", image_id=k, path=path)
        self.prepare()


def _image_source(images, class_names, image_ids):
    """``(dataset, internal image ids, class names)`` for a Dataset, a folder, a file or
    a list of files."""
    if isinstance(images, Dataset):
        dataset = images
        names = class_names if class_names is not None else list(dataset.class_names)
        ids = list(dataset.image_ids if image_ids is None else image_ids)
        return dataset, [int(i) for i in ids], names
    if class_names is None:
        raise ValueError("detect_folder_to_coco: give class_names (a list indexed by class "
                         "id, 'BG' first), or pass a Dataset as images")
    if isinstance(images, (str, os.PathLike)):
        path = os.fspath(images)
        paths = list_images(path) if os.path.isdir(path) else [path]
    else:
        paths = [os.fspath(p) for p in images]
        if not paths:
            raise ValueError("detect_folder_to_coco: no images given")
    for path in paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"detect_folder_to_coco: image {path!r} does not exist")
    dataset = _ImageFiles(paths, list(class_names))
    ids = list(dataset.image_ids if image_ids is None else image_ids)
    return dataset, [int(i) for i in ids], list(class_names)


def check_class_names(names, model):
    """``names`` as strings, checked against ``model.config.NUM_CLASSES`` when there is one.

    Raises:
        ValueError: a count that differs (a name per class id, "BG" first).
    """
    num_classes = getattr(getattr(model, "config", None), "NUM_CLASSES", None)
    if num_classes is not None and len(names) != num_classes:
        raise ValueError(f"class_names has {len(names)} names but the model has NUM_CLASSES = "
                         f"{num_classes} (a name per class id, 'BG' first)")
    return [str(n) for n in names]


def model_batch_size(model, batch_size=None):
    """``batch_size``, else ``model.config.BATCH_SIZE``, else 1 (ValueError below 1)."""
    if batch_size is None:
        batch_size = getattr(getattr(model, "config", None), "BATCH_SIZE", 1) or 1
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return int(batch_size)


# ----------------------------------------------------------------------------- polygons
def mask_to_polygons(mask):
    """The outline of a bool ``[H, W]`` mask as COCO polygons.

    Contours at level 0.5 (`skimage.measure.find_contours`, the mask padded by
    one pixel so that every contour closes), in COCO pixel coordinates: pixel
    ``(row r, column c)`` covers ``x`` in ``[c, c + 1)`` and ``y`` in
    ``[r, r + 1)``, so a contour point ``(r, c)`` of the array is
    ``(x, y) = (c + 0.5, r + 0.5)``. Contours around holes are left out: COCO
    polygons are filled (overlapping ones merge), so a hole cannot be kept.
    Polygons with fewer than three distinct points or no area are dropped.

    pycocotools rasterises these polygons back to exactly the mask's pixels
    with its holes filled (a hole: background pixels not 8-connected to the
    outside), hence exactly the mask when it has no hole (tested on random
    shapes, speckle, single pixels and detections).

    Returns:
        list of flat lists ``[x1, y1, x2, y2, ...]`` (floats, the closing point
        not repeated); empty for an empty mask.
    """
    from skimage.measure import find_contours

    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask_to_polygons: expected a mask [H, W], got shape {mask.shape}")
    padded = np.pad(mask.astype(np.uint8), 1)
    polygons = []
    for contour in find_contours(padded, 0.5, positive_orientation="high"):
        xy = contour[:, ::-1] - 0.5  # (row, col) -> (x, y); undo the padding, pixel corners
        x, y = xy[:, 0], xy[:, 1]
        # Shoelace area: with positive_orientation="high" it is negative for the
        # outline of the mask's pixels and positive around a hole.
        area = 0.5 * float(np.sum(x[:-1] * y[1:] - x[1:] * y[:-1]))
        if np.allclose(xy[0], xy[-1]):
            xy = xy[:-1]
        if area >= 0 or len(np.unique(xy, axis=0)) < 3:
            continue
        polygons.append([float(v) for v in xy.ravel()])
    return polygons


def _with_polygons(result, mask):
    polygons = mask_to_polygons(mask)
    if polygons:
        result = dict(result, segmentation=polygons)
    return result


# ----------------------------------------------------------------------------- COCO
@dataclasses.dataclass
class CocoExport:
    """What `detect_folder_to_coco` wrote.

    Attributes:
        results_json, dataset_json: the paths written (dataset_json None if not asked).
        image_dir: the folder ``file_name`` is relative to.
        images: the ``"images"`` entries (``id``, ``file_name``, ``height``, ``width``).
        categories: the ``"categories"`` entries.
        detections: per image (same order), ``{"image_id", "rois" int32 [N, 4],
            "class_ids" int32 [N], "scores" float32 [N], "picture": PNG path or None}``.
        num_results: the number of result dicts written.
    """

    results_json: str
    dataset_json: object
    image_dir: str
    images: list
    categories: list
    detections: list
    num_results: int


def _file_names(dataset, image_ids):
    """``(common folder, [file name relative to it])``; references for images without a path."""
    paths = [dataset.image_info[i].get("path") for i in image_ids]
    files = [os.path.abspath(os.fspath(p)) for p in paths
             if isinstance(p, (str, os.PathLike)) and os.path.isfile(p)]
    image_dir = os.path.commonpath([os.path.dirname(p) for p in files]) if files else ""
    names = []
    for image_id, path in zip(image_ids, paths):
        if isinstance(path, (str, os.PathLike)) and os.path.isfile(path):
            names.append(os.path.relpath(os.path.abspath(os.fspath(path)), image_dir))
        else:
            names.append(dataset.image_reference(image_id) or f"image_{image_id}")
    return image_dir, names


def _picture_names(file_names):
    """``<stem>_detections.png`` per image; a name already taken gets ``_<k>`` after the stem."""
    taken, names = set(), []
    for name in file_names:
        stem = os.path.splitext(os.path.basename(name))[0] or "image"
        picture, k = f"{stem}_detections.png", 1
        while picture in taken:
            picture, k = f"{stem}_{k}_detections.png", k + 1
        taken.add(picture)
        names.append(picture)
    return names


def _check_result(result, image, where, num_classes):
    n = len(np.asarray(result["class_ids"]).reshape(-1))
    masks = np.asarray(result["masks"])
    if masks.ndim != 3 or masks.shape != image.shape[:2] + (n,):
        raise ValueError(f"{where}: detect() returned masks of shape {masks.shape}, expected "
                         f"{image.shape[:2] + (n,)} (bool [H, W, N])")
    class_ids = np.asarray(result["class_ids"]).reshape(-1)
    if n and (class_ids.min() < 1 or class_ids.max() >= num_classes):
        raise ValueError(f"{where}: class ids {sorted(set(class_ids.tolist()))} outside 1.."
                         f"{num_classes - 1} (class_names has {num_classes} names)")
    return masks.astype(bool)


def coco_keypoints(keypoints, count, where="detections"):
    """``detect()``'s keypoints ``[N, K, 3]`` ``(x, y, score)`` -> ``N`` COCO lists
    ``[x - 0.5, y - 0.5, score, ...]`` (`COCO_KEYPOINT_SHIFT`: COCO's pixel
    indices; the module docstring)."""
    from mrcnn.data.loaders.coco import COCO_KEYPOINT_SHIFT

    points = np.asarray(keypoints, dtype=np.float64)
    if points.ndim != 3 or points.shape[0] != count or points.shape[2] != 3:
        raise ValueError(f"{where}: detect() returned keypoints of shape {points.shape}, "
                         f"expected [{count}, K, 3] (x, y, score)")
    points = points.copy()
    points[..., :2] -= COCO_KEYPOINT_SHIFT
    return [[round(float(v), 3) for v in p.reshape(-1)] for p in points]


def _keypoint_names(model):
    """The model's keypoint names for the COCO categories (None without keypoints)."""
    config = getattr(model, "config", None)
    k = int(getattr(config, "NUM_KEYPOINTS", 0) or 0)
    if not k:
        return None
    return list(config.KEYPOINT_NAMES) or [str(i) for i in range(k)]


def _annotation_keypoints(result):
    """The dataset file's ``keypoints`` (visibility 2 where scored, else all 0) and
    ``num_keypoints`` of one result; {} without keypoints."""
    if "keypoints" not in result:
        return {}
    points = np.asarray(result["keypoints"], dtype=np.float64).reshape(-1, 3)
    shown = points[:, 2] > 0
    points[:, 2] = np.where(shown, 2.0, 0.0)
    points[~shown] = 0.0
    return {"keypoints": [float(v) for v in points.reshape(-1)],
            "num_keypoints": int(shown.sum())}


class CocoCollector:
    """Builds the two COCO files of the module docstring, one image at a time
    (`detect_folder_to_coco` and `mrcnn.inference.video.detect_video` use it).

    Args:
        dataset: the `Dataset` whose ids `detections_to_coco` maps (internal
            ids, or the original ones of a pure ``"coco"`` data set); None for
            images of no data set (ids as given, category id = class id).
        class_names: indexed by class id, ``"BG"`` first.
        polygons: polygon segmentations instead of RLE.
        keypoint_names: the model's keypoint names (``KEYPOINT_NAMES``, or
            ``"0", "1", ...``), written into every category for keypoint results.
    """

    def __init__(self, dataset, class_names, polygons=False, keypoint_names=None):
        if dataset is None:  # images without a Dataset: internal ids, classes from the names
            dataset = _ImageFiles([], class_names)
        self.dataset, self.class_names, self.polygons = dataset, list(class_names), polygons
        self.keypoint_names = list(keypoint_names) if keypoint_names else None
        self._ids = CocoIds(dataset)
        self.images, self.results, self._areas, self.detections = [], [], [], []

    @property
    def categories(self):
        extra = {"keypoints": self.keypoint_names} if self.keypoint_names else {}
        return [{"id": self._ids.category(i), "name": self.class_names[i], **extra}
                for i in range(1, len(self.class_names))]

    def add(self, image_id, image, result, file_name, where, **extra):
        """Add one image (internal id ``image_id``, ``[H, W, 3]``) and its ``detect()``
        result; ``extra`` goes into its ``"images"`` entry. Returns the per-image
        record ``{"image_id", "rois", "class_ids", "scores"}`` (small arrays)."""
        masks = _check_result(result, image, where, len(self.class_names))
        coco_id = self._ids.image(image_id)
        self.images.append({"id": coco_id, "file_name": file_name,
                            "height": int(image.shape[0]), "width": int(image.shape[1]),
                            **extra})
        dets = detections_to_coco(self.dataset, image_id, result["rois"], result["class_ids"],
                                  result["scores"], masks)
        if result.get("keypoints") is not None:
            for det, points in zip(dets, coco_keypoints(result["keypoints"], len(dets), where)):
                det["keypoints"] = points
        for j, det in enumerate(dets):
            self.results.append(_with_polygons(det, masks[..., j]) if self.polygons else det)
            self._areas.append(int(masks[..., j].sum()))
        record = {"image_id": coco_id,
                  "rois": np.asarray(result["rois"], np.int32).reshape(-1, 4),
                  "class_ids": np.asarray(result["class_ids"], np.int32).reshape(-1),
                  "scores": np.asarray(result["scores"], np.float32).reshape(-1)}
        self.detections.append(record)
        return record

    def write(self, results_json=None, dataset_json=None, info=None):
        """Write the results list and / or the dataset-style file (None: skip), atomically."""
        if results_json is not None:
            _write_json(results_json, self.results)
        if dataset_json is not None:
            annotations = [dict(r, id=k, area=area, iscrowd=0, **_annotation_keypoints(r))
                           for k, (r, area) in enumerate(zip(self.results, self._areas), 1)]
            _write_json(dataset_json, {"info": dict(info or {}), "images": self.images,
                                       "categories": self.categories,
                                       "annotations": annotations})


def detect_folder_to_coco(model, images, results_json, dataset_json=None, class_names=None,
                          polygons=False, batch_size=None, pictures_dir=None, image_ids=None,
                          figsize=(8, 8), progress=False):
    """Run ``model.detect`` on images and write COCO files (module docstring: formats, ids).

    Args:
        model: ``detect(images, verbose=0)`` as `MaskRCNN.detect`.
        images: a folder (its `list_images`), an image file, a list of image
            files, or a prepared `Dataset` (its ``load_image``; ``image_ids``
            picks some of its internal ids).
        results_json: path of the results list (loadRes format).
        dataset_json: path of the dataset-style file (CocoDataset format), or None.
        class_names: names indexed by class id, ``"BG"`` first
            (``len == NUM_CLASSES``); default for a Dataset: its ``class_names``.
        polygons: polygon segmentations (`mask_to_polygons`) instead of RLE.
        batch_size: images per ``detect`` call (default ``model.config.BATCH_SIZE``).
        pictures_dir: if given, `save_detections_png` of every image there as
            ``<stem>_detections.png`` (``figsize`` inches).
        progress: show a progress bar (tqdm if installed) on stderr.

    Returns:
        `CocoExport`.

    Raises:
        FileNotFoundError: a missing image / folder, or a folder without images.
        ValueError: class_names missing or not matching the model, a result
            that does not fit its image; messages name the image.
    """
    dataset, ids, names = _image_source(images, class_names, image_ids)
    names = check_class_names(names, model)
    batch_size = model_batch_size(model, batch_size)
    collector = CocoCollector(dataset, names, polygons, keypoint_names=_keypoint_names(model))
    image_dir, file_names = _file_names(dataset, ids)
    pictures = _picture_names(file_names)
    bar = progress_bar(len(ids), "images", progress)
    try:
        for start in range(0, len(ids), batch_size):
            chunk = list(range(start, min(start + batch_size, len(ids))))
            loaded = [dataset.load_image(ids[k]) for k in chunk]
            outputs = model.detect(loaded, verbose=0)
            for k, image, r in zip(chunk, loaded, outputs):
                record = collector.add(ids[k], image, r, file_names[k],
                                       f"image {file_names[k]!r} (id {ids[k]})")
                record["picture"] = None
                if pictures_dir is not None:
                    record["picture"] = os.path.join(os.fspath(pictures_dir), pictures[k])
                    save_detections_png(image, r, names, record["picture"], figsize=figsize)
            bar.update(len(chunk))
    finally:
        bar.close()
    collector.write(results_json, dataset_json,
                    info={"description": "Mask R-CNN detections", "image_dir": image_dir})
    return CocoExport(results_json=os.fspath(results_json),
                      dataset_json=None if dataset_json is None else os.fspath(dataset_json),
                      image_dir=image_dir, images=collector.images,
                      categories=collector.categories, detections=collector.detections,
                      num_results=len(collector.results))


# ----------------------------------------------------------------------------- pictures
def _draw(image, result, class_names, fig, ax, title=""):
    from mrcnn.visualization.instances import display_instances

    with contextlib.redirect_stdout(io.StringIO()):  # "No instances to display"
        display_instances(image, result["rois"], result["masks"], result["class_ids"],
                          class_names, result["scores"], title=title, ax=ax)
    return fig


def save_detections_png(image, result, class_names, path, figsize=(8, 8), title=""):
    """Draw one image's detections (`mrcnn.visualization.instances.display_instances`:
    masks, boxes, "class score" captions) and save the figure as a PNG, atomically.

    Args:
        image: ``[H, W, 3]`` RGB. result: a ``detect()`` dict. class_names:
        indexed by class id. path: the PNG to write. figsize: inches.

    Returns:
        ``path``.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    _draw(image, result, class_names, fig, fig.add_subplot(1, 1, 1), title)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    return os.fspath(path)


def render_detections(image, result, class_names):
    """The drawing of `save_detections_png` at the image's own size.

    Returns:
        uint8 ``[H, W, 3]``: the image with masks, boxes and captions drawn in,
        pixel for pixel aligned with ``image`` (for video frames).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    height, width = np.shape(image)[:2]
    dpi = 100
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    _draw(image, result, class_names, fig, ax)
    ax.set_xlim(-0.5, width - 0.5)  # no margin: one image pixel per output pixel
    ax.set_ylim(height - 0.5, -0.5)
    canvas.draw()
    return np.array(canvas.buffer_rgba())[:height, :width, :3]


# ----------------------------------------------------------------------------- progress
class _TextProgress:
    def __init__(self, total, desc):
        self.total, self.desc, self.n = total, desc, 0

    def update(self, n=1):
        self.n += n
        total = f"/{self.total}" if self.total else ""
        sys.stderr.write(f"\r{self.desc}: {self.n}{total}")
        sys.stderr.flush()

    def close(self):
        sys.stderr.write("\n")
        sys.stderr.flush()


class _NoProgress:
    def update(self, n=1):
        pass

    def close(self):
        pass


def progress_bar(total, desc, enabled=True):
    """A progress bar on stderr counting ``desc`` (e.g. "frames") up to ``total``
    (None: unknown): tqdm if installed, else a text counter; nothing if not
    ``enabled``. It has ``update(n)`` and ``close()``."""
    if not enabled:
        return _NoProgress()
    try:
        from tqdm import tqdm
    except ImportError:
        return _TextProgress(total, desc)
    return tqdm(total=total or None, desc=desc, unit=desc.split()[-1], file=sys.stderr)
