"""Ready-made `Dataset` subclasses for common annotation formats.

* `CocoDataset` - COCO instance-segmentation JSON (polygons, RLE, iscrowd).
* `ViaDataset` - VGG Image Annotator (VIA 1.x export / 2.x project) JSON.
* `FolderDataset` - a folder of images with per-instance mask PNGs or label images.
* `LabelmeDataset` - labelme JSON files (polygons, rectangles, circles, ``__ignore__``).

Each one can be used directly::

    from mrcnn.data.loaders import CocoDataset
    ds = CocoDataset()
    ds.load_coco("annotations/instances_val2017.json", "val2017")
    ds.prepare()
"""

from mrcnn.data.loaders.coco import CocoDataset
from mrcnn.data.loaders.folder import FolderDataset
from mrcnn.data.loaders.labelme import LabelmeDataset
from mrcnn.data.loaders.via import ViaDataset

__all__ = ["CocoDataset", "ViaDataset", "FolderDataset", "LabelmeDataset"]
