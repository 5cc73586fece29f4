"""Benchmark RoIAlign: compiled op vs pure-TF fallback vs crop_and_resize + avg pool.

    .venv/bin/python benchmarks/roi_align.py [--repeats 7] [--boxes 1000] [--size 256]

Features ``[2, size, size, 256]``, ``--boxes`` random boxes (image pixels, stride
4 so ``spatial_scale = 1/4``), 7x7 output, sampling ratio 2. Prints the median
wall time of the forward pass and of forward + backward (gradient w.r.t. the
features) for each implementation, each wrapped in ``tf.function``; the
implementations are timed round-robin (one call of each per round) so that
load from other processes on a shared machine affects them alike.

``crop_and_resize`` is what the old implementation did: normalised boxes,
14x14 crops (one bilinear sample per cell), then 2x2 average pooling.
"""

import argparse
import statistics
import time

import numpy as np
import tensorflow as tf

from mrcnn.ops.roi_align_tf import roi_align_tf
from mrcnn.ops._compiled import load as load_compiled


def crop_and_resize_pool(features, boxes, box_indices, output_size, spatial_scale,
                         sampling_ratio=2, aligned=True):
    """Old approach: crop_and_resize to (2*ph, 2*pw) then 2x2 average pooling."""
    del sampling_ratio, aligned
    shape = tf.cast(tf.shape(features)[1:3], tf.float32)
    image_h, image_w = shape[0] / spatial_scale, shape[1] / spatial_scale
    scale = tf.stack([image_h, image_w, image_h, image_w])
    crops = tf.image.crop_and_resize(features, boxes / scale, box_indices,
                                     [2 * output_size[0], 2 * output_size[1]])
    return tf.nn.avg_pool2d(crops, 2, 2, "VALID")


def interleaved_medians(fns, repeats):
    """Median seconds of each callable, timed round-robin so that load changes
    on a shared machine hit every implementation alike."""
    for fn in fns.values():
        fn()  # trace + warm up
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--boxes", type=int, default=1000)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--threads", type=int, default=0,
                        help="intra-op threads (0: TensorFlow's default, all cores)")
    args = parser.parse_args()
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)

    rng = np.random.default_rng(0)
    stride = 4
    image = args.size * stride
    features = tf.constant(rng.normal(size=(2, args.size, args.size, args.channels))
                           .astype(np.float32))
    y1x1 = rng.uniform(0, image * 0.8, size=(args.boxes, 2))
    hw = rng.uniform(16, image * 0.4, size=(args.boxes, 2))
    boxes = tf.constant(np.concatenate([y1x1, np.minimum(y1x1 + hw, image)], 1)
                        .astype(np.float32))
    box_indices = tf.constant(rng.integers(0, 2, args.boxes).astype(np.int32))

    impls = {"compiled": load_compiled(), "pure-TF": roi_align_tf,
             "crop_and_resize 14x14 + avgpool": crop_and_resize_pool}
    threading = tf.config.threading
    print(f"features {features.shape.as_list()}, {args.boxes} boxes, 7x7, sampling_ratio 2, "
          f"median of {args.repeats}; threads: inter "
          f"{threading.get_inter_op_parallelism_threads()} intra "
          f"{threading.get_intra_op_parallelism_threads()} (0 = all cores)")
    calls = {}
    for name, fn in impls.items():
        @tf.function
        def forward(fn=fn):
            return fn(features, boxes, box_indices, (7, 7), spatial_scale=1.0 / stride,
                      sampling_ratio=2, aligned=True)

        @tf.function
        def forward_backward(fn=fn):
            with tf.GradientTape() as tape:
                tape.watch(features)
                out = fn(features, boxes, box_indices, (7, 7), spatial_scale=1.0 / stride,
                         sampling_ratio=2, aligned=True)
                loss = tf.reduce_sum(out)
            # Return the loss too: otherwise the forward op is pruned (the
            # gradients need only the boxes and the feature shape).
            return loss, tape.gradient(loss, features)

        calls[(name, "fwd")] = lambda f=forward: f().numpy()
        calls[(name, "both")] = lambda f=forward_backward: [t.numpy() for t in f()]
    medians = interleaved_medians(calls, args.repeats)
    print(f"{'implementation':34s} {'forward ms':>11s} {'fwd+bwd ms':>11s}")
    for name in impls:
        print(f"{name:34s} {medians[(name, 'fwd')] * 1e3:11.1f} "
              f"{medians[(name, 'both')] * 1e3:11.1f}")


if __name__ == "__main__":
    main()
