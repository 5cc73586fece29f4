"""Batch norm folded into the convolutions (``Config.FOLD_BATCH_NORM``): time, agreement,
oneDNN reorders, stages (a script, not a test).

    .venv/bin/python benchmarks/fold_batch_norm.py --repeats 5            # A/B, alternated
    .venv/bin/python benchmarks/fold_batch_norm.py --repeats 0 --reorders  # oneDNN reorders
    .venv/bin/python benchmarks/fold_batch_norm.py --repeats 0 --profile 2 # stages, both

Model as `benchmarks/inference.py` (R50-FPN, 81 classes, 1024 px "square", 1000
proposals, batch 1, seeded random weights, DETECTION_MIN_CONFIDENCE 0: 100
detections; a 768x1024 noise image). The random batch-norm statistics are made
non-trivial (gamma, beta, moving mean / variance drawn per channel) so that the
folded kernels differ from the unfolded ones.

* A/B (``--repeats N``): a folded and an unfolded model with the same weights,
  ``detect()`` calls alternated N times (fair under a changing load); medians,
  minima, their ratio, and how far the folded detections are from the unfolded
  ones (`inference.compare_detections`). Also the time of computing every folded
  kernel and bias alone (what folding adds to each call).
* ``--reorders``: one child process per variant with ``ONEDNN_VERBOSE=1``; after a
  warm-up detect (tracing, primitive creation) the oneDNN lines of one more
  detect are counted: executed primitives by kind, and the reorders (layout
  conversions) by source -> destination memory format.
* ``--profile R``: `inference.stage_profile` (each top-level layer timed, eager,
  minimum of R runs) for both variants.
"""

import argparse
import collections
import ctypes
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

MARK = "=== fold_batch_norm: measured detect ==="


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=1024, help="IMAGE_MAX_DIM (square)")
    p.add_argument("--image-size", type=int, nargs=2, default=(768, 1024), metavar=("H", "W"))
    p.add_argument("--backbone", default="resnet50")
    p.add_argument("--rois", type=int, default=1000, help="POST_NMS_ROIS_INFERENCE")
    p.add_argument("--repeats", type=int, default=5, help="alternated A/B rounds (0: none)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reorders", action="store_true", help="count oneDNN reorders per detect")
    p.add_argument("--profile", type=int, default=0, metavar="R",
                   help="stage profile of both variants, minimum of R eager runs")
    p.add_argument("--child", choices=("fold", "no-fold"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def bench_config(args, fold):
    from mrcnn.config import Config

    class BenchConfig(Config):
        NAME = "bench"
        NUM_CLASSES = 81
        BACKBONE = args.backbone
        GPU_COUNT = 1
        IMAGES_PER_GPU = 1
        IMAGE_MIN_DIM = min(800, args.size)
        IMAGE_MAX_DIM = args.size
        POST_NMS_ROIS_INFERENCE = args.rois
        DETECTION_MIN_CONFIDENCE = 0.0
        FOLD_BATCH_NORM = fold

    return BenchConfig()


def build(args, fold, weights=None):
    """A seeded model (random, non-trivial batch-norm statistics), or ``weights``."""
    import keras
    import numpy as np

    from mrcnn import model as modellib
    from mrcnn.modeling.folding import foldable_pairs

    keras.utils.set_random_seed(args.seed)
    with tempfile.TemporaryDirectory() as logs:
        model = modellib.MaskRCNN("inference", bench_config(args, fold), logs)
    if weights is not None:
        model.keras_model.set_weights(weights)
        return model
    rng = np.random.default_rng(args.seed)
    for _, bn in foldable_pairs(model.keras_model):
        n = bn.gamma.shape[0]
        bn.gamma.assign(rng.uniform(0.5, 1.5, n).astype(np.float32))
        bn.beta.assign(rng.normal(0.0, 0.1, n).astype(np.float32))
        bn.moving_mean.assign(rng.normal(0.0, 0.1, n).astype(np.float32))
        bn.moving_variance.assign(rng.uniform(0.5, 2.0, n).astype(np.float32))
    return model


def test_image(args):
    import numpy as np
    return np.random.default_rng(0).integers(0, 256, tuple(args.image_size) + (3,),
                                             dtype=np.uint8)


def folding_overhead(model, repeats=5):
    """Seconds to compute every folded kernel and bias once (a tf.function)."""
    import tensorflow as tf

    from mrcnn.modeling.folding import folded_kernel_and_bias, foldable_pairs

    pairs = foldable_pairs(model.keras_model)

    @tf.function
    def fold_all():
        return [folded_kernel_and_bias(conv, bn) for conv, bn in pairs]

    fold_all()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fold_all()
        times.append(time.perf_counter() - start)
    params = sum(int(conv.kernel.shape.num_elements()) for conv, _ in pairs)
    return statistics.median(times), min(times), len(pairs), params


def ab(args, image):
    from inference import compare_detections

    folded = build(args, True)
    unfolded = build(args, False, weights=folded.keras_model.get_weights())
    variants = {"folded": folded, "unfolded": unfolded}
    for name, m in variants.items():
        start = time.perf_counter()
        m.detect([image])
        print(f"{name}: first call (tracing included) {time.perf_counter() - start:.2f} s")
        for _ in range(args.warmup):
            m.detect([image])
    from common import alternate

    times, last = alternate({name: (lambda m=m: m.detect([image])) for name, m in
                             variants.items()}, args.repeats)
    results = {name: reply[0] for name, reply in last.items()}
    for name, spent in times.items():
        print(f"A/B {name:9s}: median {statistics.median(spent):.3f} s, min {min(spent):.3f} s "
              f"over {len(spent)} calls")
    f, u = times["folded"], times["unfolded"]
    print(f"A/B ratio folded / unfolded: median {statistics.median(f) / statistics.median(u):.3f}"
          f", min {min(f) / min(u):.3f}")
    diff = compare_detections(results["unfolded"], results["folded"])
    print("detections folded vs unfolded (same image): " + ", ".join(
        f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in diff.items()))
    med, best, count, params = folding_overhead(folded)
    print(f"folding alone ({count} pairs, {params / 1e6:.1f} M kernel weights): median "
          f"{med * 1e3:.1f} ms, min {best * 1e3:.1f} ms per call")
    return variants


def child(args):
    """One variant with ONEDNN_VERBOSE set by the parent: warm up, mark, one detect."""
    import tensorflow as tf
    tf.get_logger().setLevel("ERROR")
    model = build(args, args.child == "fold")
    image = test_image(args)
    model.detect([image])
    model.detect([image])
    libc = ctypes.CDLL(None)
    libc.fflush(None)
    sys.stdout.flush()
    os.write(1, (MARK + "\n").encode())
    model.detect([image])
    libc.fflush(None)
    sys.stdout.flush()
    os.write(1, (MARK + " end\n").encode())


def count_reorders(args):
    """Per variant: oneDNN primitives executed in one detect, reorders by formats."""
    for variant in ("no-fold", "fold"):
        env = dict(os.environ, ONEDNN_VERBOSE="1")
        cmd = [sys.executable, os.path.abspath(__file__), "--child", variant,
               "--size", str(args.size), "--backbone", args.backbone, "--rois", str(args.rois),
               "--seed", str(args.seed), "--image-size", *map(str, args.image_size)]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
        lines = out.split(MARK + "\n", 1)[1].split(MARK + " end", 1)[0].splitlines()
        execs = []
        for line in lines:
            fields = line.split(",")
            if line.startswith("onednn_verbose") and "exec" in fields:
                i = fields.index("exec")  # exec, engine, kind, impl, prop, memory descriptors
                execs.append((fields[i + 2], fields[i + 5] if len(fields) > i + 5 else ""))
        kinds = collections.Counter(kind for kind, _ in execs)
        reorders = collections.Counter()
        for kind, mds in execs:
            if kind == "reorder":
                tags = re.findall(r"(?:src|dst)\w*:(\w+):\w*:\w+:(\w+)", mds)
                reorders[" -> ".join(f"{t}:{d}" for d, t in tags) or mds] += 1
        print(f"{variant}: oneDNN primitives executed in one detect: "
              + ", ".join(f"{k} {v}" for k, v in kinds.most_common()))
        for fmt, n in reorders.most_common(8):
            print(f"  reorder {fmt}: {n}")


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        return child(args)
    import tensorflow as tf
    tf.get_logger().setLevel("ERROR")
    print(f"load average at start: {os.getloadavg()}")
    image = test_image(args)
    variants = ab(args, image) if args.repeats else None
    if args.profile:
        from inference import stage_profile
        if variants is None:
            folded = build(args, True)
            variants = {"folded": folded,
                        "unfolded": build(args, False, weights=folded.keras_model.get_weights())}
        best = {name: {} for name in variants}
        for _ in range(args.profile):  # alternated, one eager run each (plus its warm-up)
            for name, m in variants.items():
                for stage, seconds in stage_profile(m, image, 1):
                    best[name][stage] = min(best[name].get(stage, seconds), seconds)
        print(f"stage profile (s; eager, per layer, min of {args.profile} alternated runs): "
              "folded / unfolded")
        for stage, a in best["folded"].items():
            print(f"  {stage:34s} {a:7.3f} {best['unfolded'].get(stage, float('nan')):7.3f}")
    if args.reorders:
        count_reorders(args)
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
