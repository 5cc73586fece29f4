"""Mask R-CNN on cell nuclei (Data Science Bowl 2018): see nucleus.py and README.md."""
