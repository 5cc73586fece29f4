"""Custom Keras layers of the Mask R-CNN graph (thin wrappers over TF functions).

* :class:`ProposalLayer` -- RPN outputs + anchors -> proposals (``ROI``).
* :class:`DetectionTargetLayer` -- training RoIs and head targets (``proposal_targets``).
* :class:`PyramidROIAlign` -- RoI pooling from P2..P5.
* :class:`DetectionLayer` -- final detections (``mrcnn_detection``).
"""

from mrcnn.layers.detection import DetectionLayer
from mrcnn.layers.detection_target import DetectionTargetLayer
from mrcnn.layers.proposal import ProposalLayer
from mrcnn.layers.pyramid_roi_align import PyramidROIAlign

__all__ = ["ProposalLayer", "DetectionTargetLayer", "PyramidROIAlign", "DetectionLayer"]
