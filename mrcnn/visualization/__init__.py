"""Drawing: instances, boxes, masks (`mrcnn.visualize`) and statistics tables.
"""
