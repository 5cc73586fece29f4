"""Training machinery: the train step, callbacks, checkpoints, distribution,
mixed precision, XLA.
"""
