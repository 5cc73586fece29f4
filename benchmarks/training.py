"""Training step time, img/s, input-pipeline img/s and peak memory (a script, not a test).

    .venv/bin/python benchmarks/training.py --config shapes          # ShapesConfig, 128 px
    .venv/bin/python benchmarks/training.py --config r50-1024 --steps 3
    .venv/bin/python benchmarks/training.py --config shapes --pipeline-only

Two measurements, each on its own:

* step: one batch from `mrcnn.data.build_training_dataset` is kept in memory
  and fed again and again (``tf.data.Dataset.from_tensors(batch).repeat()``)
  to ``keras_model.fit`` with the layers ``--layers`` trainable and SGD as in
  `MaskRCNN.compile`; a callback records the wall time of each step. The
  first ``--warmup`` steps (tracing) are dropped; median and min of the rest.
  So the step time excludes the input pipeline.
* pipeline: batches pulled from `mrcnn.data.build_training_dataset` (shuffle,
  parallel `build_example`, prefetch; no augmentation) as fast as it gives
  them, images per second, after one warm-up batch. Compared with the step rate
  it says whether the pipeline can keep the model fed (on these 2 cores the two
  compete for the same CPU during real training).

Configs: ``shapes`` is `samples.shapes.shapes.ShapesConfig` (128 px, light
backbone, batch 4); ``r50-1024`` is ResNet-50-FPN at 1024x1024, batch 1,
81 classes, the released COCO recipe's RoI counts (2000 proposals, 200 RoIs).
Data: the shapes data set at the config's size. Peak RSS (``ru_maxrss``) is
printed at the end (run one config per process to see its own peak).
"""

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", choices=("shapes", "r50-1024"), default="shapes")
    p.add_argument("--steps", type=int, default=10, help="timed training steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed first steps")
    p.add_argument("--layers", default="all", help="trainable layers preset or regex")
    p.add_argument("--pipeline-batches", type=int, default=10)
    p.add_argument("--pipeline-only", action="store_true")
    p.add_argument("--step-only", action="store_true")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0: TF default)")
    return p.parse_args(argv)


def make_config(name):
    from samples.shapes.shapes import ShapesConfig

    if name == "shapes":
        return ShapesConfig()

    class R50Config(ShapesConfig):
        NAME = "r50_1024"
        NUM_CLASSES = 81
        BACKBONE = "resnet50"
        COMPUTE_BACKBONE_SHAPE = None
        IMAGES_PER_GPU = 1
        IMAGE_MIN_DIM = 800
        IMAGE_MAX_DIM = 1024
        RPN_ANCHOR_SCALES = (32, 64, 128, 256, 512)
        TOP_DOWN_PYRAMID_SIZE = 256
        FPN_CLASSIF_FC_LAYERS_SIZE = 1024
        RPN_TRAIN_ANCHORS_PER_IMAGE = 256
        PRE_NMS_LIMIT = 6000
        POST_NMS_ROIS_TRAINING = 2000
        TRAIN_ROIS_PER_IMAGE = 200
        MAX_GT_INSTANCES = 100
        MINI_MASK_SHAPE = (56, 56)
        TRAIN_BN = False

    return R50Config()


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def bench_pipeline(dataset, config, batches):
    from mrcnn.data import build_training_dataset

    data = build_training_dataset(dataset, config, shuffle=True, repeat=True, seed=0)
    iterator = iter(data)
    next(iterator)  # warm-up: starts the workers
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    seconds = time.perf_counter() - start
    return batches * config.BATCH_SIZE / seconds, seconds / batches


def bench_step(dataset, config, steps, warmup, layers):
    import keras
    import tensorflow as tf

    from mrcnn import model as modellib
    from mrcnn.data import build_training_dataset

    batch = next(iter(build_training_dataset(dataset, config, shuffle=False, repeat=False,
                                             seed=0)))
    data = tf.data.Dataset.from_tensors(batch).repeat()
    keras.utils.set_random_seed(0)
    with tempfile.TemporaryDirectory() as logs:
        model = modellib.MaskRCNN("training", config, logs)
    model.set_trainable(layers, verbose=0)
    model.compile(config.LEARNING_RATE, config.LEARNING_MOMENTUM)

    class StepTimes(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times = []

        def on_train_batch_begin(self, batch, logs=None):
            self._start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.times.append(time.perf_counter() - self._start)

    timer = StepTimes()
    model.keras_model.fit(data, epochs=1, steps_per_epoch=warmup + steps, callbacks=[timer],
                          shuffle=False, verbose=0)
    timed = timer.times[warmup:]
    return statistics.median(timed), min(timed), timer.times[:warmup]


def main(argv=None):
    args = parse_args(argv)
    import tensorflow as tf
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    from samples.shapes.shapes import make_dataset

    config = make_config(args.config)
    size = int(config.IMAGE_SHAPE[0])
    dataset = make_dataset(max(16, 4 * config.BATCH_SIZE), size, seed=0)
    print(f"load average at start: {os.getloadavg()}")
    print(f"config {args.config}: {size}px, batch {config.BATCH_SIZE}, backbone "
          f"{config.BACKBONE if isinstance(config.BACKBONE, str) else 'light (samples.shapes)'}")
    if not args.step_only:
        rate, per_batch = bench_pipeline(dataset, config, args.pipeline_batches)
        print(f"pipeline: {rate:.1f} img/s ({per_batch * 1000:.0f} ms per batch of "
              f"{config.BATCH_SIZE}), {args.pipeline_batches} batches")
    if not args.pipeline_only:
        med, best, first = bench_step(dataset, config, args.steps, args.warmup, args.layers)
        print(f"training step (layers={args.layers!r}): median {med:.3f} s, min {best:.3f} s "
              f"over {args.steps} steps -> {config.BATCH_SIZE / med:.2f} img/s; first steps "
              f"(tracing) {', '.join(f'{t:.1f}' for t in first)} s")
    print(f"peak RSS: {peak_rss_mb():.0f} MB")
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
