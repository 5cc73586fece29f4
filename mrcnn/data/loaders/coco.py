"""`CocoDataset`: any COCO instance-segmentation JSON file.

Segmentations may be polygons (list of ``[x1, y1, x2, y2, ...]``), uncompressed
RLE (``{"size": [h, w], "counts": [int, ...]}``) or compressed RLE
(``{"size": [h, w], "counts": "string"}``); all are rasterised with
``pycocotools.mask``.

Crowd annotations (``"iscrowd": 1``) are returned by `load_mask` with a
**negative** class id (``-internal_id``), the legacy convention: training treats
them as regions to ignore rather than as objects.

Keypoints (COCO person keypoints files): a category's ``keypoints`` names and
``skeleton`` (1-based pairs) become ``keypoint_names`` (the union over the
loaded categories, in order of appearance) and ``keypoint_skeleton`` (0-based);
a category listing names gets its own set in ``keypoint_class_sets``. An
annotation's ``keypoints`` ``[x1, y1, v1, ...]`` (one triple per name of its
category) become its row of `load_keypoints`; ``num_keypoints`` is not needed
(it is the count of ``v > 0``). COCO's keypoint coordinates are integers, pixel
indices: like detectron2, the loader adds `COCO_KEYPOINT_SHIFT` (0.5) to put
them at the pixel's centre in the continuous frame of
`mrcnn.structures.keypoints`; subtract it to write COCO keypoint results.
"""

import os
import warnings

import numpy as np

from mrcnn.data.dataset import Dataset
from mrcnn.data.loaders.json_file import read_json_file

__all__ = ["CocoDataset", "read_coco_json", "legacy_coco_paths", "COCO_KEYPOINT_SHIFT"]

# COCO keypoints are pixel indices; + 0.5 is the pixel's centre (module docstring).
COCO_KEYPOINT_SHIFT = 0.5


def read_coco_json(annotation_json):
    """Read a COCO annotation file into a dict.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not valid JSON (message names the file, line and
            column) or lacks the ``images`` / ``annotations`` / ``categories`` lists.
    """
    path = os.fspath(annotation_json)
    data = read_json_file(path, "COCO annotation file")
    if not isinstance(data, dict):
        raise ValueError(f"COCO annotation file {path!r}: expected a JSON object at the top "
                         f"level, got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise ValueError(f"COCO annotation file {path!r}: missing or invalid {key!r} list "
                             f"(an instance-segmentation file needs images, annotations and "
                             f"categories)")
    return data


class CocoDataset(Dataset):
    """A `Dataset` read from a COCO instance-segmentation JSON file.

    Image info holds ``path``, ``width``, ``height`` and the image's
    ``annotations`` (the raw COCO dicts of the selected categories).
    """

    def __init__(self, class_map=None):
        super().__init__(class_map)
        self._coco_sources = set()

    def load_coco(self, annotation_json, image_dir, class_ids=None, image_ids=None,
                  source="coco", return_coco=False, *, year=None, class_map=None,
                  auto_download=False):
        """Add the images and classes of a COCO annotation file.

        Legacy form: ``load_coco(dataset_dir, subset, year="2014")`` (the old
        COCO sample's call, used when ``annotation_json`` is a folder or
        ``year`` is given) reads ``<dataset_dir>/annotations/instances_<subset><year>.json``
        with images in ``<dataset_dir>/<subset><year>`` (``val<year>`` for the
        ``minival`` / ``valminusminival`` subsets). ``class_map`` is ignored as
        before; ``auto_download`` is not supported (download the files first).

        Args:
            annotation_json: path of the JSON file.
            image_dir: folder holding the images (``file_name`` is relative to it).
            class_ids: COCO category ids to load (default: all). With a subset,
                only images containing at least one of those categories are
                added, and only their annotations are kept.
            image_ids: COCO image ids to load (default: all, including images
                without annotations); intersected with the class selection.
            source: source name of the classes/images (default ``"coco"``).
                Use different names to merge several files with clashing ids.
            return_coco: also return the ``pycocotools.coco.COCO`` object.

        Raises:
            ValueError: malformed JSON, unknown category or image ids.
        """
        if auto_download:
            raise ValueError("load_coco: auto_download is not supported; download the COCO "
                             "images and annotations and pass their paths")
        if year is not None or os.path.isdir(annotation_json):
            annotation_json, image_dir = legacy_coco_paths(annotation_json, image_dir,
                                                           year or "2014")
        data = read_coco_json(annotation_json)
        from mrcnn.evaluation.coco import make_coco  # pycocotools' index, built quietly
        coco = make_coco(data)
        name = os.fspath(annotation_json)

        known_cats = sorted(coco.cats)
        if class_ids is None:
            # A background category without annotations (labelme's COCO export
            # writes "_background_" with id 0) is not a class: 0 is the BG id.
            used = {a.get("category_id") for a in coco.dataset.get("annotations", [])}
            class_ids = [c for c in known_cats
                         if c in used or str(coco.cats[c].get("name", "")).strip("_").lower()
                         != "background"]
            selected_images = set(coco.imgs)
        else:
            class_ids = sorted({int(c) for c in class_ids})
            unknown = [c for c in class_ids if c not in coco.cats]
            if unknown:
                raise ValueError(f"load_coco: category ids {unknown} are not in {name!r} "
                                 f"(known: {known_cats})")
            selected_images = set()
            for cat in class_ids:
                selected_images.update(coco.getImgIds(catIds=[cat]))
        if image_ids is not None:
            wanted = {int(i) for i in image_ids}
            unknown = sorted(wanted - set(coco.imgs))
            if unknown:
                raise ValueError(f"load_coco: image ids {unknown} are not in {name!r}")
            selected_images &= wanted

        for cat in class_ids:
            self.add_class(source, cat, coco.cats[cat]["name"])
        self._add_keypoint_sets(coco, class_ids, source, name)
        cat_set = set(class_ids)
        for img_id in sorted(selected_images):
            img = coco.imgs[img_id]
            if "file_name" not in img:
                raise ValueError(f"load_coco: image {img_id} in {name!r} has no 'file_name'")
            anns = [a for a in coco.imgToAnns.get(img_id, []) if a.get("category_id") in cat_set]
            self.add_image(source, image_id=img_id,
                           path=os.path.join(os.fspath(image_dir), img["file_name"]),
                           width=img.get("width"), height=img.get("height"),
                           annotations=anns)
        self._coco_sources.add(source)
        if return_coco:
            return coco
        return None

    def _add_keypoint_sets(self, coco, class_ids, source, file_name):
        """Keypoint names, skeleton and per-category sets of the loaded categories."""
        names = list(self.keypoint_names)
        skeleton = list(self.keypoint_skeleton)
        sets = dict(self.keypoint_class_sets or {})
        for cat in class_ids:
            cat_names = coco.cats[cat].get("keypoints") or []
            if not cat_names:
                continue
            if not all(isinstance(n, str) for n in cat_names) or len(set(cat_names)) != \
                    len(cat_names):
                raise ValueError(f"load_coco: category {cat} in {file_name!r}: 'keypoints' "
                                 f"must be distinct names, got {cat_names!r}")
            indices = []
            for n in cat_names:
                if n not in names:
                    names.append(n)
                indices.append(names.index(n))
            sets[f"{source}.{cat}"] = indices
            for pair in coco.cats[cat].get("skeleton") or []:
                if len(pair) != 2 or not all(1 <= int(p) <= len(indices) for p in pair):
                    raise ValueError(f"load_coco: category {cat} in {file_name!r}: skeleton "
                                     f"pair {pair!r} is not two 1-based keypoint numbers "
                                     f"<= {len(indices)}")
                edge = (indices[int(pair[0]) - 1], indices[int(pair[1]) - 1])
                if edge not in skeleton:
                    skeleton.append(edge)
        self.keypoint_names, self.keypoint_skeleton = tuple(names), tuple(skeleton)
        self.keypoint_class_sets = sets or None

    def image_reference(self, image_id):
        """The image's file path."""
        return str(self.image_info[image_id]["path"])

    def _image_size(self, image_id):
        info = self.image_info[image_id]
        if info.get("height") is None or info.get("width") is None:
            height, width = self.load_image(image_id).shape[:2]
            info["height"], info["width"] = height, width
        return int(info["height"]), int(info["width"])

    def load_mask(self, image_id):
        """Masks of an image's annotations.

        Returns:
            masks: bool ``[H, W, N]``.
            class_ids: int32 ``[N]`` internal ids; negative for ``iscrowd`` regions.

        Annotations that rasterise to no pixel (or have no usable segmentation)
        are skipped with a warning naming the image and annotation id.
        """
        info = self.image_info[image_id]
        if info["source"] not in self._coco_sources or "annotations" not in info:
            return super().load_mask(image_id)
        height, width = self._image_size(image_id)
        masks, class_ids = [], []
        for ann, mask in self._instances(image_id):
            class_id = self.map_source_class_id(f"{info['source']}.{ann['category_id']}")
            if ann.get("iscrowd", 0):
                class_id = -class_id
            masks.append(mask)
            class_ids.append(class_id)
        if not masks:
            return np.zeros((height, width, 0), dtype=bool), np.zeros((0,), dtype=np.int32)
        return np.stack(masks, axis=-1), np.asarray(class_ids, dtype=np.int32)

    def _instances(self, image_id, warn=True):
        """``(annotation, mask)`` of the annotations `load_mask` keeps, in order."""
        info = self.image_info[image_id]
        height, width = self._image_size(image_id)
        for ann in info["annotations"]:
            where = (f"image {info['id']} ({info['path']}), annotation "
                     f"{ann.get('id', '?')}")
            with warnings.catch_warnings():
                if not warn:
                    warnings.simplefilter("ignore")
                mask = annotation_to_mask(ann, height, width, where)
            if mask is None:
                continue
            if not mask.any():
                if warn:
                    warnings.warn(f"load_coco: skipping {where}: it covers no pixel after "
                                  f"rasterising", UserWarning, stacklevel=3)
                continue
            yield ann, mask

    def load_keypoints(self, image_id, num_keypoints=None):
        """Keypoints of the instances `load_mask` returns: float32 ``[N, K, 3]``.

        An annotation's ``keypoints`` go to its category's indices (module
        docstring), shifted by `COCO_KEYPOINT_SHIFT`; unlabelled (``v = 0``)
        ones and annotations without keypoints are zeros.

        Raises:
            ValueError naming the image and annotation when ``keypoints`` is
            not one ``(x, y, v)`` triple per name of its category, with
            ``v`` in 0 / 1 / 2.
        """
        from mrcnn.structures.keypoints import check_keypoints

        info = self.image_info[image_id]
        if info["source"] not in self._coco_sources or "annotations" not in info:
            return super().load_keypoints(image_id, num_keypoints)
        k = len(self.keypoint_names) if num_keypoints is None else int(num_keypoints)
        sets = self.keypoint_class_sets or {}
        rows = []
        for ann, _ in self._instances(image_id, warn=False):
            row = np.zeros((k, 3), dtype=np.float32)
            values = ann.get("keypoints")
            where = f"load_keypoints: image {info['id']} ({info['path']}), annotation " \
                    f"{ann.get('id', '?')}"
            indices = sets.get(f"{info['source']}.{ann['category_id']}")
            if values:
                if indices is None or len(values) != 3 * len(indices):
                    expected = 0 if indices is None else 3 * len(indices)
                    raise ValueError(f"{where}: {len(values)} keypoint values, expected "
                                     f"{expected} (x, y, v per name of the category)")
                triples = check_keypoints(np.reshape(values, (1, -1, 3)), where=where)[0]
                if max(indices) >= k:
                    raise ValueError(f"{where}: keypoint index {max(indices)} does not fit "
                                     f"NUM_KEYPOINTS = {k}")
                labelled = triples[:, 2] > 0
                triples[labelled, :2] += COCO_KEYPOINT_SHIFT
                triples[~labelled] = 0.0
                row[indices] = triples
            rows.append(row)
        return np.stack(rows) if rows else np.zeros((0, k, 3), dtype=np.float32)


def legacy_coco_paths(dataset_dir, subset, year):
    """(annotation file, image folder) of the old ``load_coco(dir, subset, year)`` layout."""
    dataset_dir = os.fspath(dataset_dir)
    image_subset = "val" if subset in ("minival", "valminusminival") else subset
    return (os.path.join(dataset_dir, "annotations", f"instances_{subset}{year}.json"),
            os.path.join(dataset_dir, f"{image_subset}{year}"))


def annotation_to_mask(ann, height, width, where="annotation"):
    """Rasterise one COCO annotation's segmentation to a bool ``[height, width]`` mask.

    Returns None (after a warning) when there is no usable segmentation.
    Raises ValueError for an RLE whose size differs from the image's.
    """
    from pycocotools import mask as mask_utils

    segm = ann.get("segmentation")
    if isinstance(segm, list):
        polygons = []
        for k, poly in enumerate(segm):
            ok = (isinstance(poly, (list, tuple)) and len(poly) >= 6 and len(poly) % 2 == 0
                  and all(isinstance(v, (int, float)) and np.isfinite(v) for v in poly))
            if ok:
                polygons.append([float(v) for v in poly])
            else:
                warnings.warn(f"load_coco: {where}: ignoring polygon {k} (a polygon needs an "
                              f"even number >= 6 of finite coordinates)", UserWarning, stacklevel=3)
        if not polygons:
            return None
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    elif isinstance(segm, dict) and "counts" in segm and "size" in segm:
        size = [int(s) for s in segm["size"]]
        if size != [height, width]:
            raise ValueError(f"load_coco: {where}: RLE size {size} differs from the image "
                             f"size [{height}, {width}]")
        if isinstance(segm["counts"], list):
            rle = mask_utils.frPyObjects(segm, height, width)
        else:
            rle = segm
    else:
        warnings.warn(f"load_coco: {where}: no polygon or RLE segmentation", UserWarning,
                      stacklevel=3)
        return None
    return mask_utils.decode(rle).astype(bool)
