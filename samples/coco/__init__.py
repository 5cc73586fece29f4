"""COCO sample: train and evaluate Mask R-CNN on any COCO-format data set."""
