"""Optional XLA compilation (``Config.XLA``) through TensorFlow's auto-clustering.

The Mask R-CNN graph cannot be compiled by XLA as a whole (``jit_compile=True``
on the whole train step or ``detect`` function fails): its proposal and
detection layers use NMS and boolean masks with data-dependent shapes, and
RoIAlign is a custom op without an XLA kernel. Auto-clustering instead
compiles the XLA-compatible subgraphs -- the convolutions, batch norms and
activations of the backbone, FPN, RPN and heads, the loss arithmetic, the
optimizer update -- into fused XLA clusters, and leaves the other ops to
TensorFlow. It applies to every ``tf.function`` the process runs afterwards:
the training step and the per-shape ``detect`` functions alike.

``Config.XLA = True`` turns it on (process-wide, when the `MaskRCNN` is
built). TensorFlow auto-clusters on GPUs; on a CPU-only machine it does so
only when ``TF_XLA_FLAGS="--tf_xla_auto_jit=2 --tf_xla_cpu_global_jit"`` is
set before TensorFlow starts (a warning says so otherwise). Measured on the
2-core CPU machine (benchmarks/README.md): no speed-up for inference (oneDNN's
convolutions are already the bulk), a 1.5x slower training step, 2.5 to 3x
longer tracing, hence off by default; no GPU was available to measure it
where it is meant to help.
"""

import os
import warnings

__all__ = ["configure_xla", "CPU_FLAGS"]

CPU_FLAGS = "--tf_xla_auto_jit=2 --tf_xla_cpu_global_jit"


def configure_xla(enabled):
    """Turn on XLA auto-clustering when ``enabled``; returns whether it is on.

    Never turns it off again (another model of the process may want it).
    """
    if not enabled:
        return False
    import tensorflow as tf

    tf.config.optimizer.set_jit("autoclustering")
    if not tf.config.list_logical_devices("GPU") and \
            "--tf_xla_cpu_global_jit" not in os.environ.get("TF_XLA_FLAGS", ""):
        warnings.warn("Config.XLA=True without a GPU: TensorFlow compiles CPU clusters "
                      f"only with TF_XLA_FLAGS='{CPU_FLAGS}' set before it starts, so "
                      "nothing is compiled here", stacklevel=3)
    return True
