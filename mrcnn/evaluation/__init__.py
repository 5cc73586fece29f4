"""Metrics: mAP (VOC style), COCO AP through pycocotools, the DSB 2018 score.
"""
