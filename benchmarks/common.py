"""What the benchmark scripts share: the precision and XLA options, and the
alternated timing loop of their A/B comparisons (`alternate`).

Imports neither TensorFlow nor mrcnn's graph code, so a script can set
``TF_XLA_FLAGS`` (`enable_cpu_xla_flags`) before TensorFlow starts.
"""

import os
import sys
import time

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


def r50_inference_config(size=1024, rois=1000, min_confidence=0.0, precision="float32",
                         xla=False, backbone="resnet50", rpn_channels=512):
    """The inference benchmark's model: ResNet-50-FPN, 81 classes, ``IMAGE_MAX_DIM``
    ``size`` ("square"), ``POST_NMS_ROIS_INFERENCE`` ``rois``, batch 1,
    ``DETECTION_MIN_CONFIDENCE`` ``min_confidence`` (0: all 100 detection slots
    filled), ``Config.MIXED_PRECISION`` from ``precision``, ``RPN_HEAD_CHANNELS``
    ``rpn_channels`` (512: the released layout). Returns a `Config` instance."""
    from mrcnn.config import Config

    class BenchConfig(Config):
        NAME = "bench"
        NUM_CLASSES = 81
        BACKBONE = backbone
        GPU_COUNT = 1
        IMAGES_PER_GPU = 1
        IMAGE_MIN_DIM = min(800, size)
        IMAGE_MAX_DIM = size
        POST_NMS_ROIS_INFERENCE = rois
        DETECTION_MIN_CONFIDENCE = min_confidence
        MIXED_PRECISION = None if precision == "float32" else precision
        XLA = xla
        RPN_HEAD_CHANNELS = rpn_channels

    return BenchConfig()


def alternate(calls, rounds, warmup=0, clock=time.perf_counter):
    """Time ``calls`` (``{name: callable}``) in turn, one call of each per round, so
    that a load changing during the run hits every variant alike: ``warmup``
    untimed rounds, then ``rounds`` timed ones.

    A call is timed here with ``clock``, unless it returns a dict with a
    ``"seconds"`` entry: that is its time, measured where it ran (e.g. in
    another process, `peer.py`).

    Returns:
        ``(times, last)``: ``{name: [seconds of each timed round]}`` and
        ``{name: what its last call returned}``.
    """
    times = {name: [] for name in calls}
    last = {}
    for round_index in range(int(warmup) + int(rounds)):
        for name, call in calls.items():
            start = clock()
            reply = call()
            spent = clock() - start
            last[name] = reply
            if round_index >= warmup:
                if isinstance(reply, dict) and "seconds" in reply:
                    spent = reply["seconds"]
                times[name].append(float(spent))
    return times, last
