"""Data sets, loaders, the training input pipeline, augmentation and input checks.
"""
