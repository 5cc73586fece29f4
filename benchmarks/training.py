"""Training step time, img/s, input-pipeline img/s and peak memory (a script, not a test).

    .venv/bin/python benchmarks/training.py --config shapes          # ShapesConfig, 128 px
    .venv/bin/python benchmarks/training.py --config r50-1024 --steps 3
    .venv/bin/python benchmarks/training.py --config shapes --pipeline-only
    .venv/bin/python benchmarks/training.py --config shapes --ab-precision mixed_bfloat16
    .venv/bin/python benchmarks/training.py --config shapes --xla
    .venv/bin/python benchmarks/training.py --config shapes --profile --steps 3
    .venv/bin/python benchmarks/training.py --config shapes --onednn-verbose --steps 1

Two measurements, each on its own:

* step: one batch from `mrcnn.data.pipeline.build_training_dataset` is kept in memory
  and fed again and again (``tf.data.Dataset.from_tensors(batch).repeat()``)
  to ``keras_model.fit`` with the layers ``--layers`` trainable and SGD as in
  `MaskRCNN.compile`; a callback records the wall time of each step. The
  first ``--warmup`` steps (tracing) are dropped; median and min of the rest.
  So the step time excludes the input pipeline.
* pipeline: batches pulled from `mrcnn.data.pipeline.build_training_dataset` (shuffle,
  parallel `build_example`, prefetch; no augmentation) as fast as it gives
  them, images per second, after one warm-up batch. Compared with the step rate
  it says whether the pipeline can keep the model fed (on these 2 cores the two
  compete for the same CPU during real training).

Configs: ``shapes`` is `samples.shapes.shapes.ShapesConfig` (128 px, light
backbone, batch 4); ``r50-1024`` is ResNet-50-FPN at 1024x1024, batch 1,
81 classes, the released COCO recipe's RoI counts (2000 proposals, 200 RoIs).
Data: the shapes data set at the config's size. Peak RSS (``ru_maxrss``) is
printed at the end (run one config per process to see its own peak).

``--precision`` sets ``Config.MIXED_PRECISION`` (mixed_float16 also wraps the
optimizer in a LossScaleOptimizer, see `mrcnn.engine.precision`); ``--xla`` sets
``Config.XLA`` and, without a GPU, ``TF_XLA_FLAGS`` (`mrcnn.engine.xla.CPU_FLAGS`)
before TensorFlow is imported. The step's final loss is printed so that a
policy that diverges or yields NaN shows.

``--profile``: after ``--warmup`` steps, a tf.profiler trace of ``--steps``
steps (of the ``--precision`` model, then of the ``--ab-precision`` one if
given) is written under ``--profile-dir`` (with ``--inter-op`` 1 inter-op thread
by default, so that ops run one at a time and each op's time is its own: side by
side they share the intra-op threads and their times overlap) and summed per stage (backbone,
FPN, RPN head, proposals, detection targets, RoIAlign forward / backward, box
and mask heads, losses, weight decay, backward of frozen layers, optimizer:
`step_profile.stage_table`), ms per step and share, plus the costliest op
types. ``--onednn-verbose``: reruns this script with ``ONEDNN_VERBOSE=1`` and
counts the oneDNN primitives executed in ``--steps`` steps after the warm-up,
by kind, propagation, data types and implementation (bf16 against f32
convolutions, reorders; `step_profile.count_onednn_kernels`).
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


from common import add_precision_options, enable_cpu_xla_flags  # noqa: E402


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
    p.add_argument("--profile", action="store_true",
                   help="tf.profiler trace of --steps steps and a per-stage table")
    p.add_argument("--profile-dir", default=None,
                   help="where --profile writes its traces (default: a temporary folder)")
    p.add_argument("--inter-op", type=int, default=1,
                   help="inter-op threads under --profile (default 1: "
                        "each op's trace time is its own)")
    p.add_argument("--onednn-verbose", action="store_true",
                   help="count the oneDNN kernels of --steps steps (ONEDNN_VERBOSE=1)")
    p.add_argument("--onednn-child", action="store_true", help=argparse.SUPPRESS)
    add_precision_options(p, "A/B in one process: the --precision model and a P model "
                             "(same initial weights), one training step of each in turn")
    return p.parse_args(argv)


def make_config(name, precision="float32", xla=False):
    from samples.shapes.shapes import ShapesConfig

    class BaseConfig(ShapesConfig):
        MIXED_PRECISION = None if precision == "float32" else precision
        XLA = xla

    if name == "shapes":
        return BaseConfig()

    class R50Config(BaseConfig):
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
    from mrcnn.data.pipeline import build_training_dataset

    data = build_training_dataset(dataset, config, shuffle=True, repeat=True, seed=0)
    iterator = iter(data)
    next(iterator)  # warm-up: starts the workers
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    seconds = time.perf_counter() - start
    return batches * config.BATCH_SIZE / seconds, seconds / batches


def _training_batch(dataset, config):
    import tensorflow as tf

    from mrcnn.data.pipeline import build_training_dataset

    batch = next(iter(build_training_dataset(dataset, config, shuffle=False, repeat=False,
                                             seed=0)))
    return tf.data.Dataset.from_tensors(batch).repeat()


def _step_model(config, layers, weights=None):
    """A compiled training `MaskRCNN` (seeded random weights, or ``weights``)."""
    import keras

    from mrcnn import model as modellib

    keras.utils.set_random_seed(0)
    with tempfile.TemporaryDirectory() as logs:
        model = modellib.MaskRCNN("training", config, logs)
    if weights is not None:
        model.keras_model.set_weights(weights)
    model.set_trainable(layers, verbose=0)
    model.compile(config.LEARNING_RATE, config.LEARNING_MOMENTUM)
    return model


def _step_timer():
    """A Keras callback recording each training step's wall time and last logs."""
    import keras

    class StepTimes(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times = []
            self.last_logs = {}

        def on_train_batch_begin(self, batch, logs=None):
            self._start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.times.append(time.perf_counter() - self._start)
            self.last_logs = dict(logs or {})

    return StepTimes()


def bench_step(dataset, config, steps, warmup, layers):
    data = _training_batch(dataset, config)
    model = _step_model(config, layers)
    timer = _step_timer()
    model.keras_model.fit(data, epochs=1, steps_per_epoch=warmup + steps, callbacks=[timer],
                          shuffle=False, verbose=0)
    timed = timer.times[warmup:]
    loss = timer.last_logs.get("loss")
    return statistics.median(timed), min(timed), timer.times[:warmup], loss


def bench_step_ab(dataset, configs, steps, warmup, layers):
    """Training steps of two configs (e.g. two precisions) alternated in one process.

    ``configs``: ``{label: config}`` with two entries; the second model starts
    from the first one's weights. After ``warmup`` steps each, ``steps``
    rounds of one ``fit`` step per model. Returns ``{label: (median, min,
    first step times, last loss)}``."""
    (label_a, config_a), (label_b, config_b) = configs.items()
    data = _training_batch(dataset, config_a)
    model_a = _step_model(config_a, layers)
    model_b = _step_model(config_b, layers, weights=model_a.keras_model.get_weights())
    models = {label_a: model_a, label_b: model_b}
    timers = {label: _step_timer() for label in models}
    for label, model in models.items():
        model.keras_model.fit(data, epochs=1, steps_per_epoch=warmup, callbacks=[timers[label]],
                              shuffle=False, verbose=0)
    for _ in range(steps):
        for label, model in models.items():
            model.keras_model.fit(data, epochs=1, steps_per_epoch=1,
                                  callbacks=[timers[label]], shuffle=False, verbose=0)
    out = {}
    for label, timer in timers.items():
        timed = timer.times[warmup:]
        out[label] = (statistics.median(timed), min(timed), timer.times[:warmup],
                      timer.last_logs.get("loss"))
    return out


def profile_step(dataset, config, steps, warmup, layers, logdir, label):
    """Trace ``steps`` training steps after ``warmup`` with tf.profiler; print the
    per-stage table and the costliest op types. Returns ``(rows, total ms)``."""
    import tensorflow as tf

    import step_profile

    data = _training_batch(dataset, config)
    model = _step_model(config, layers)
    timer = _step_timer()
    fit = model.keras_model.fit
    fit(data, epochs=1, steps_per_epoch=warmup, callbacks=[timer], shuffle=False, verbose=0)
    tf.profiler.experimental.start(logdir)
    try:
        fit(data, epochs=1, steps_per_epoch=steps, callbacks=[timer], shuffle=False, verbose=0)
    finally:
        tf.profiler.experimental.stop()
    times = timer.times[warmup:]
    op_times = step_profile.read_xspace_ops(logdir)
    stages, frozen = step_profile.layer_stages(model.keras_model)
    rows, total = step_profile.stage_table(op_times, steps, stages, frozen,
                                           model.keras_model.name,
                                           model.keras_model.optimizer.name)
    print(step_profile.format_stage_table(
        rows, total, f"\nper-stage op time, {label} (layers={layers!r}; {steps} profiled "
                     f"steps, wall median {statistics.median(times):.3f} s; trace in "
                     f"{logdir}):"))
    print("costliest op types (ms per step): " + ", ".join(
        f"{t} {ms:.0f}" for t, ms in step_profile.top_op_types(op_times, steps)))
    return rows, total


def onednn_child(dataset, config, steps, warmup, layers):
    """Run ``warmup`` then ``steps`` steps, the latter between the oneDNN markers."""
    import ctypes

    import step_profile

    data = _training_batch(dataset, config)
    model = _step_model(config, layers)
    fit = model.keras_model.fit
    fit(data, epochs=1, steps_per_epoch=warmup, shuffle=False, verbose=0)
    libc = ctypes.CDLL(None)

    def mark(text):
        libc.fflush(None)   # oneDNN prints with C stdio: flush it before the marker
        sys.stdout.flush()
        os.write(1, (text + "\n").encode())

    mark(step_profile.ONEDNN_BEGIN)
    fit(data, epochs=1, steps_per_epoch=steps, shuffle=False, verbose=0)
    mark(step_profile.ONEDNN_END)


def onednn_counts(argv, steps):
    """Rerun this script (same arguments) with ``ONEDNN_VERBOSE=1`` and print the
    oneDNN kernels of its marked steps per step."""
    import subprocess

    import step_profile

    child = [a for a in argv if a != "--onednn-verbose"] + ["--onednn-child"]
    env = dict(os.environ, ONEDNN_VERBOSE="1")
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__)] + child, env=env,
                            stdout=subprocess.PIPE, text=True, errors="replace")
    keep, inside = [], False
    for line in proc.stdout:    # only the marked lines are kept (warm-up prints many)
        if step_profile.ONEDNN_BEGIN in line:
            inside = True
        if inside:
            keep.append(line)
        if step_profile.ONEDNN_END in line:
            inside = False
    if proc.wait() != 0:
        raise RuntimeError(f"--onednn-verbose: the child run failed (exit {proc.returncode})")
    counts = step_profile.count_onednn_kernels(keep)
    if not counts:
        print("oneDNN: no primitive executed in the marked steps (oneDNN off? "
              "TF_ENABLE_ONEDNN_OPTS=0)")
        return counts
    print(f"oneDNN primitives per step ({steps} steps, ONEDNN_VERBOSE=1):")
    print(step_profile.format_onednn_counts(counts, steps))
    return counts


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    xla_flags = enable_cpu_xla_flags() if args.xla else None
    import tensorflow as tf
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    if args.profile:
        # One op at a time: ops running side by side share the intra-op threads,
        # and each op's time in the trace would include its wait for them.
        tf.config.threading.set_inter_op_parallelism_threads(args.inter_op)
    from samples.shapes.shapes import make_dataset

    config = make_config(args.config, args.precision, args.xla)
    size = int(config.IMAGE_SHAPE[0])
    dataset = make_dataset(max(16, 4 * config.BATCH_SIZE), size, seed=0)
    if args.onednn_child:
        onednn_child(dataset, config, args.steps, args.warmup, args.layers)
        return
    print(f"load average at start: {os.getloadavg()}")
    print(f"precision: {args.precision}; XLA: {args.xla}"
          + (f" (TF_XLA_FLAGS={xla_flags!r})" if args.xla else ""))
    print(f"config {args.config}: {size}px, batch {config.BATCH_SIZE}, backbone "
          f"{config.BACKBONE if isinstance(config.BACKBONE, str) else 'light (samples.shapes)'}")
    if args.onednn_verbose:
        onednn_counts(argv, args.steps)
        print(f"load average at end: {os.getloadavg()}")
        return
    if args.profile:
        precisions = [args.precision] + ([args.ab_precision] if args.ab_precision else [])
        root = args.profile_dir or tempfile.mkdtemp(prefix="mrcnn_train_profile_")
        for precision in precisions:
            profile_step(dataset, make_config(args.config, precision, args.xla), args.steps,
                         args.warmup, args.layers, os.path.join(root, precision), precision)
        print(f"peak RSS: {peak_rss_mb():.0f} MB")
        print(f"load average at end: {os.getloadavg()}")
        return
    if not args.step_only:
        rate, per_batch = bench_pipeline(dataset, config, args.pipeline_batches)
        print(f"pipeline: {rate:.1f} img/s ({per_batch * 1000:.0f} ms per batch of "
              f"{config.BATCH_SIZE}), {args.pipeline_batches} batches")
    if not args.pipeline_only:
        if args.ab_precision:
            labels = (args.precision, args.ab_precision)
            if labels[0] == labels[1]:
                labels = (labels[0] + " (A)", labels[1] + " (B)")
            configs = {labels[0]: config,
                       labels[1]: make_config(args.config, args.ab_precision, args.xla)}
            results = bench_step_ab(dataset, configs, args.steps, args.warmup, args.layers)
        else:
            results = {args.precision: bench_step(dataset, config, args.steps, args.warmup,
                                                  args.layers)}
        for label, (med, best, first, loss) in results.items():
            print(f"training step {label} (layers={args.layers!r}): median {med:.3f} s, min "
                  f"{best:.3f} s over {args.steps} steps -> {config.BATCH_SIZE / med:.2f} "
                  f"img/s; first steps (tracing) {', '.join(f'{t:.1f}' for t in first)} s; "
                  f"last loss {float(loss) if loss is not None else float('nan'):.4f}")
        if len(results) == 2:
            (la, ra), (lb, rb) = results.items()
            print(f"A/B ratio {lb} / {la}: median {rb[0] / ra[0]:.2f}, min {rb[1] / ra[1]:.2f}")
    print(f"peak RSS: {peak_rss_mb():.0f} MB")
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
