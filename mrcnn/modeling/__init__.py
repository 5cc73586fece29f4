"""The Mask R-CNN network by stage: backbone, FPN, `rpn/`, `roi_heads/`, and
`assembly` (the training and inference graphs).
"""
