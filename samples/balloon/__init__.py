"""Balloon sample: fine-tune Mask R-CNN on a VIA-annotated data set and colour-splash."""
