"""What the benchmark scripts share: the precision and XLA options.

Imports neither TensorFlow nor mrcnn's graph code, so a script can set
``TF_XLA_FLAGS`` (`enable_cpu_xla_flags`) before TensorFlow starts.
"""

import os
import sys

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


def has_gpu_device():
    """Whether an NVIDIA GPU is visible, checked without importing TensorFlow."""
    return os.path.exists("/dev/nvidia0") or os.path.exists("/dev/nvidiactl")


def enable_cpu_xla_flags():
    """Put `mrcnn.engine.xla.CPU_FLAGS` into ``TF_XLA_FLAGS`` (no GPU only); must run
    before TensorFlow is imported. Returns the value TensorFlow will read."""
    from mrcnn.engine.xla import CPU_FLAGS  # mrcnn.engine.xla does not import TensorFlow

    if "tensorflow" in sys.modules:
        raise RuntimeError("--xla: TensorFlow was imported before TF_XLA_FLAGS was set")
    if not has_gpu_device():
        flags = os.environ.get("TF_XLA_FLAGS", "")
        missing = [f for f in CPU_FLAGS.split() if f not in flags.split()]
        os.environ["TF_XLA_FLAGS"] = " ".join(flags.split() + missing)
    return os.environ.get("TF_XLA_FLAGS", "")


def add_precision_options(parser, ab_help):
    """``--precision``, ``--ab-precision P`` (``ab_help``: what the A/B does)
    and ``--xla`` on an argparse parser."""
    parser.add_argument("--precision", choices=PRECISIONS, default="float32",
                        help="Config.MIXED_PRECISION of the model")
    parser.add_argument("--ab-precision", choices=PRECISIONS, default=None, metavar="P",
                        help=ab_help)
    parser.add_argument("--xla", action="store_true",
                        help="Config.XLA=True (and TF_XLA_FLAGS for CPU clusters if no GPU)")
