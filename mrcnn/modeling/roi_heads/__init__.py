"""The RoI heads: pooling (`poolers`), RoI sampling, the box head with its
losses and detection, the mask head with its targets, loss and pasting.
"""
