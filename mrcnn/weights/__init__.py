"""Weights I/O: the legacy HDF5 layout, ImageNet backbones, downloads.
"""
