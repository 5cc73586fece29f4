"""Drawing, as users import it: ``from mrcnn import visualize``.

A thin re-export (the original's module name): instances, boxes, masks and
their differences live in `mrcnn.visualization.instances`, keypoints in
`mrcnn.visualization.keypoints`, tables and plots in `mrcnn.visualization.stats`.
"""

from mrcnn.visualization.instances import (  # noqa: F401
    NO_INSTANCES_MESSAGE, apply_mask, display_differences, display_images,
    display_instances, display_top_masks, draw_box, draw_boxes, draw_rois, random_colors)
from mrcnn.visualization.keypoints import display_keypoints  # noqa: F401
from mrcnn.visualization.stats import (  # noqa: F401
    display_table, display_weight_stats, plot_overlaps, plot_precision_recall,
    table_to_html, table_to_text)

__all__ = [
    "random_colors", "apply_mask", "draw_box", "display_images", "display_instances",
    "display_top_masks", "draw_boxes", "draw_rois", "display_differences",
    "display_table", "display_weight_stats", "plot_precision_recall", "plot_overlaps",
    "display_keypoints",
]
