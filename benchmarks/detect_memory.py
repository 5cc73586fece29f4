"""Memory and tracing of ``MaskRCNN.detect()`` over thousands of calls (a script, not a test).

    .venv/bin/python benchmarks/detect_memory.py                   # 2000 calls, report every 200
    .venv/bin/python benchmarks/detect_memory.py --calls 5000 --every 500

Model: the shapes sample's inference config (`samples.shapes.shapes.ShapesInferenceConfig`:
light backbone, 4 classes, 100 proposals, 10 detection slots, batch 1) with
random seeded weights and ``DETECTION_MIN_CONFIDENCE`` 0 by default, so every
call fills all 10 detection slots and the mask pasting runs in full. Resize
mode ``pad64`` (scale by IMAGE_MIN_DIM, then pad to multiples of 64): images
of different sizes mold to different shapes, so `detect` keeps one
``tf.function`` per shape in ``model._predict_functions``. The default image
sizes 128x128, 64x128 and 128x192 (H x W) mold to three distinct shapes
(``--sizes`` takes others, as ``HxW``). Images: shapes drawn with the
sample's `random_image_spec` / `render_image` (three per size, seeded),
cycled: call i uses size ``i % 3``.

Every ``--every`` calls it prints: call count, resident set (``/proc/self/statm``,
MB), peak RSS (``ru_maxrss``), Python objects tracked by ``gc``, the number of
predict functions and each one's ``experimental_get_tracing_count()``, and the
"triggered tf.function retracing" warnings TensorFlow logged so far. At the
end: the RSS growth between the first report (after warm-up, call
``--every``) and the last call, in MB and MB per 1000 calls.

Exit status: 1 when a predict function was traced more than once, when there
are more predict functions than distinct molded shapes, or when TensorFlow
warned about retracing; 0 otherwise (memory growth is reported, not judged:
it depends on the allocator).
"""

import argparse
import gc
import logging
import os
import resource
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)


def parse_size(text):
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--sizes: expected HxW (e.g. 128x96), got {text!r}")
    if h < 16 or w < 16:
        raise argparse.ArgumentTypeError(f"--sizes: {text!r} is too small (16 px minimum)")
    return h, w


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--calls", type=int, default=2000, help="detect() calls in all")
    p.add_argument("--every", type=int, default=200, help="report every this many calls")
    p.add_argument("--sizes", type=parse_size, nargs="+",
                   default=[(128, 128), (64, 128), (128, 192)], help="image sizes HxW, cycled")
    p.add_argument("--resize-mode", default="pad64", choices=("pad64", "square"),
                   help="IMAGE_RESIZE_MODE ('square' molds every size to one shape)")
    p.add_argument("--min-confidence", type=float, default=0.0,
                   help="DETECTION_MIN_CONFIDENCE (0: all detection slots filled)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.calls < 1 or args.every < 1:
        p.error("--calls and --every must be positive")
    return args


PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2.0 ** 20


def rss_mb():
    """Current resident set size in MB, from /proc/self/statm (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE_MB


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class RetraceCounter(logging.Handler):
    """Counts TensorFlow's "... triggered tf.function retracing" warnings."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.count = 0
        self.messages = []

    def emit(self, record):
        message = record.getMessage()
        if "retracing" in message:
            self.count += 1
            self.messages.append(message[:300])


def make_images(sizes, seed):
    """Three drawn-shapes uint8 images ``[H, W, 3]`` per size, listed size-major."""
    import numpy as np

    from samples.shapes.shapes import random_image_spec, render_image

    rng = np.random.default_rng(seed)
    images = []
    for h, w in sizes:
        per_size = []
        for _ in range(3):
            bg, shapes = random_image_spec(rng, h, w)
            per_size.append(render_image(bg, shapes, h, w))
        images.append(per_size)
    return images


def tracing_counts(model):
    return {shape: fn.experimental_get_tracing_count()
            for shape, fn in model._predict_functions.items()}


def main(argv=None):
    args = parse_args(argv)
    import keras
    import tensorflow as tf

    tf.get_logger().setLevel("WARNING")
    retraces = RetraceCounter()
    tf.get_logger().addHandler(retraces)

    from mrcnn import model as modellib

    from mrcnn.inference import molding as inference
    from samples.shapes.shapes import ShapesInferenceConfig

    class MemoryConfig(ShapesInferenceConfig):
        NAME = "detect_memory"
        IMAGE_RESIZE_MODE = args.resize_mode
        IMAGE_MIN_DIM = 64
        IMAGE_MAX_DIM = 128
        DETECTION_MIN_CONFIDENCE = args.min_confidence

    config = MemoryConfig()
    print(f"load average at start: {os.getloadavg()}")
    print(f"TF {tf.__version__}; config: light backbone, {args.resize_mode}, "
          f"{config.POST_NMS_ROIS_INFERENCE} proposals, {config.DETECTION_MAX_INSTANCES} "
          f"detection slots, min confidence {args.min_confidence}")
    keras.utils.set_random_seed(args.seed)
    with tempfile.TemporaryDirectory() as logs:
        model = modellib.MaskRCNN("inference", config, logs)
    images = make_images(args.sizes, args.seed)
    molded_shapes = sorted({inference.mold_image_for_inference(group[0], config)[0].shape
                            for group in images})
    print("image sizes " + ", ".join(f"{h}x{w}" for h, w in args.sizes)
          + f" -> molded shapes {molded_shapes}")
    print(f"RSS after building the model: {rss_mb():.0f} MB")
    header = (f"{'calls':>6} {'RSS MB':>8} {'peak MB':>8} {'gc objs':>9} {'ms/call':>8} "
              f"{'fns':>4} {'retrace warns':>13}  tracing counts")
    print(header)

    n_sizes = len(images)
    reports = []
    detections = 0
    start = last = time.perf_counter()
    for call in range(1, args.calls + 1):
        group = images[(call - 1) % n_sizes]
        image = group[((call - 1) // n_sizes) % len(group)]
        detections += len(model.detect([image])[0]["scores"])
        if call % args.every == 0 or call == args.calls:
            now = time.perf_counter()
            ms = (now - last) * 1000.0 / (call - (reports[-1][0] if reports else 0))
            last = now
            counts = tracing_counts(model)
            rss = rss_mb()
            reports.append((call, rss))
            counts_text = ", ".join(f"{'x'.join(map(str, s[1:3]))}: {c}"
                                    for s, c in counts.items())
            print(f"{call:6d} {rss:8.1f} {peak_rss_mb():8.0f} {len(gc.get_objects()):9d} "
                  f"{ms:8.1f} {len(counts):4d} {retraces.count:13d}  {counts_text}",
                  flush=True)
    total = time.perf_counter() - start

    counts = tracing_counts(model)
    print(f"{args.calls} calls in {total:.1f} s ({total * 1000 / args.calls:.1f} ms per call, "
          f"tracing included), {detections / args.calls:.1f} detections per call")
    if len(reports) >= 2:
        (c0, r0), (c1, r1) = reports[0], reports[-1]
        growth = r1 - r0
        print(f"RSS growth from call {c0} to call {c1}: {growth:+.1f} MB "
              f"({growth * 1000.0 / (c1 - c0):+.2f} MB per 1000 calls); "
              f"first {r0:.1f} MB, last {r1:.1f} MB, peak {peak_rss_mb():.0f} MB")
    print(f"load average at end: {os.getloadavg()}")

    problems = []
    over = {s: c for s, c in counts.items() if c > 1}
    if over:
        problems.append(f"predict functions traced more than once: {over}")
    if len(counts) > len(molded_shapes):
        problems.append(f"{len(counts)} predict functions for {len(molded_shapes)} molded shapes")
    if retraces.count:
        problems.append(f"{retraces.count} retracing warnings, e.g. {retraces.messages[0]!r}")
    for problem in problems:
        print(f"FAIL: {problem}")
    if not problems:
        print(f"OK: {len(counts)} predict functions, each traced once; no retracing warnings")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
