"""`mrcnn.utils` keeps the names users import, as the same objects as their owners."""

import importlib

import pytest

REEXPORTS = {
    "mrcnn.structures.boxes": ["extract_bboxes", "compute_iou", "compute_overlaps", "compute_overlaps_masks",
                    "non_max_suppression", "box_refinement", "apply_box_deltas", "norm_boxes",
                    "denorm_boxes"],
    "mrcnn.structures.images": ["resize", "resize_image", "mold_image", "unmold_image"],
    "mrcnn.structures.masks": ["resize_mask", "minimize_mask", "expand_mask", "unmold_mask"],
    "mrcnn.structures.image_meta": ["compose_image_meta", "parse_image_meta"],
    "mrcnn.structures.anchors": ["generate_anchors", "generate_pyramid_anchors", "compute_backbone_shapes"],
    "mrcnn.data.dataset": ["Dataset"],
    "mrcnn.evaluation.metrics": ["compute_matches", "compute_ap", "compute_ap_range",
                                 "compute_recall", "trim_zeros"],
    "mrcnn.evaluation.coco": ["evaluate_coco", "evaluate_model", "detections_to_coco"],
}


@pytest.mark.parametrize("owner", sorted(REEXPORTS))
def test_utils_reexports_owner_objects(owner):
    from mrcnn import utils
    mod = importlib.import_module(owner)
    for name in REEXPORTS[owner]:
        assert getattr(utils, name) is getattr(mod, name), name


def test_familiar_imports():
    from mrcnn import model as modellib, utils, visualize  # noqa: F401
    from mrcnn.config import Config  # noqa: F401
    assert hasattr(modellib, "MaskRCNN")
    assert hasattr(visualize, "display_instances")
    assert issubclass(utils.CocoDataset, utils.Dataset)
