"""The helpers users import as ``from mrcnn import utils``.

This module only re-exports; each function lives in the module that owns its
job (boxes, images, anchors, dataset, loaders, evaluation), so there is one
implementation of each. Coordinate conventions are documented there: boxes are
``(y1, x1, y2, x2)``, in pixels with exclusive ``y2``/``x2`` unless a function
says it works on normalised boxes.

Importing this module does not import TensorFlow: the TensorFlow helpers of the
original ``utils`` (``batch_slice``, ``box_refinement_graph``) and
``mold_mask`` are looked up on first use (module ``__getattr__``).
"""

from mrcnn.structures.anchors import (  # noqa: F401
    compute_backbone_shapes,
    generate_anchors,
    generate_pyramid_anchors,
    get_anchors_for_config,
)
from mrcnn.structures.boxes import (  # noqa: F401
    apply_box_deltas,
    box_refinement,
    compute_iou,
    compute_overlaps,
    compute_overlaps_masks,
    denorm_boxes,
    extract_bboxes,
    non_max_suppression,
    norm_boxes,
)
from mrcnn.data.dataset import Dataset, DatasetNotPreparedError, to_rgb_uint8  # noqa: F401
from mrcnn.weights.download import COCO_MODEL_URL, download_trained_weights  # noqa: F401
from mrcnn.evaluation.coco import (build_coco_ground_truth, detections_to_coco, evaluate_coco, evaluate_model)  # noqa: F401
from mrcnn.evaluation.metrics import (compute_ap, compute_ap_range, compute_matches, compute_recall, trim_zeros)
from mrcnn.structures.image_meta import compose_image_meta, parse_image_meta  # noqa: F401
from mrcnn.structures.masks import expand_mask, minimize_mask, resize_mask, unmold_mask
from mrcnn.structures.images import mold_image, resize, resize_image, unmold_image
from mrcnn.data.loaders import CocoDataset, FolderDataset, LabelmeDataset, ViaDataset  # noqa: F401

# name -> owning module, imported on first access (they need TensorFlow).
_LAZY = {
    "batch_slice": "mrcnn.legacy_api",
    "mold_mask": "mrcnn.legacy_api",
    "box_refinement_graph": "mrcnn.structures.boxes_tf",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
