"""Boxes, anchors, image meta, images and masks: the data structures every stage shares.

Each convention has one owner: `coords` (box coordinates), `interpolation` /
`interpolation_tf` (linear sampling), `image_meta` (the meta vector's layout).
"""
