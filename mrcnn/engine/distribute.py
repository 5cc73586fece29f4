"""Distributed training: which ``tf.distribute`` strategy a `MaskRCNN` uses, its
global batch, the per-worker input pipeline, and which worker writes files.

Strategy selection (`resolve_strategy`), first match wins:

1. an explicit ``strategy`` argument (any ``tf.distribute.Strategy``);
2. ``TF_CONFIG`` in the environment describing a cluster with more than one
   task: ``tf.distribute.MultiWorkerMirroredStrategy`` (synchronous
   all-reduce across machines; every worker runs the same script with its own
   ``TF_CONFIG`` ``task``);
3. ``Config.GPU_COUNT > 1``: ``tf.distribute.MirroredStrategy`` over the
   first ``GPU_COUNT`` GPUs (ValueError when fewer GPUs are visible);
4. otherwise none: TensorFlow's default (one device).

Batches: every replica takes ``IMAGES_PER_GPU`` images per step, so a step
consumes ``IMAGES_PER_GPU * num_replicas_in_sync`` images (``BATCH_SIZE`` when
the replicas are GPU_COUNT GPUs of one machine). Each replica's losses are
means over its own images; the train step divides its loss by the number of
replicas and the optimizer sums the gradients over replicas (all-reduce), so
the update is the mean over replicas.

Input: `distributed_dataset` builds one pipeline per worker through
``strategy.distribute_datasets_from_function``. Worker ``i`` of ``n`` loads
only the images at positions ``i, i + n, i + 2n, ...`` of the data set (each
image is read by one worker, not read by all and thrown away) and batches
them by the per-replica batch size.

Files: only the chief (task ``chief``, or ``worker`` 0 when the cluster has no
chief) writes checkpoints and TensorBoard logs (`is_chief`); the others
train in lockstep and write nothing.

``MultiWorkerMirroredStrategy`` must be created before TensorFlow runs any
op in the process: construct the `MaskRCNN` (or the strategy, passed in)
first thing in the script. Every worker runs the whole script: each loads
the initial weights itself (the file must be readable on every machine;
to resume with `find_last`, give all workers one shared ``model_dir``), and
the chief's initial values are broadcast to the others when the variables
are created.

A worker that fails (an unreadable image without ``SKIP_BAD_IMAGES``, a
crash) stops with its own error; the others, waiting for it in the gradient
all-reduce, stop within seconds with ``UnavailableError`` naming its task
(tested with two local workers) rather than hang.

Loss scaling (``mixed_float16``) under several replicas: each replica's loss
is divided by the replica count before scaling, so its float16 gradients
are N times smaller than one device's and overflow at an N times larger
loss scale; the dynamic scale may therefore skip a different number of
warm-up steps than a single-device run.
"""

import contextlib
import json
import os

__all__ = ["resolve_strategy", "tf_config_cluster_size", "is_chief",
           "replicas_in_sync", "global_batch_size", "distributed_dataset",
           "strategy_scope"]


def tf_config_cluster_size(environ=None):
    """Number of tasks (chief + workers) in ``TF_CONFIG``; 0 when unset.

    Raises ValueError naming ``TF_CONFIG`` when it is not valid JSON or lacks
    ``cluster`` / ``task``.
    """
    raw = (os.environ if environ is None else environ).get("TF_CONFIG", "")
    if not raw.strip():
        return 0
    try:
        spec = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ValueError(f"TF_CONFIG is not valid JSON ({err}): {raw[:200]!r}") from err
    if not isinstance(spec, dict) or not isinstance(spec.get("cluster"), dict) \
            or not isinstance(spec.get("task"), dict):
        raise ValueError("TF_CONFIG: expected {\"cluster\": {\"worker\": [\"host:port\", "
                         "...]}, \"task\": {\"type\": \"worker\", \"index\": i}}, got "
                         f"{raw[:200]!r}")
    cluster = spec["cluster"]
    return sum(len(cluster.get(kind, [])) for kind in ("chief", "worker"))


def resolve_strategy(config, strategy=None, mode="training"):
    """The ``tf.distribute.Strategy`` to build and train under, or None.

    See the module docstring for the order. Inference models (``mode !=
    "training"``) use a given ``strategy`` but never create one: `detect`
    runs on one device.
    """
    import tensorflow as tf

    if strategy is not None:
        if not isinstance(strategy, tf.distribute.Strategy):
            raise TypeError(f"MaskRCNN: strategy must be a tf.distribute.Strategy, got "
                            f"{type(strategy).__name__}")
        return strategy
    if mode != "training":
        return None
    if tf_config_cluster_size() > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    if config.GPU_COUNT > 1:
        gpus = tf.config.list_logical_devices("GPU")
        if len(gpus) < config.GPU_COUNT:
            raise ValueError(
                f"{type(config).__name__}.GPU_COUNT={config.GPU_COUNT} but TensorFlow sees "
                f"{len(gpus)} GPU(s) {[d.name for d in gpus]}; set GPU_COUNT to at most "
                f"{max(len(gpus), 1)} or pass strategy=... to MaskRCNN")
        return tf.distribute.MirroredStrategy(
            devices=[d.name for d in gpus[:config.GPU_COUNT]])
    return None


def replicas_in_sync(strategy):
    """Replicas taking part in each step (1 without a strategy)."""
    return 1 if strategy is None else int(strategy.num_replicas_in_sync)


def global_batch_size(config, strategy):
    """Images per training step: ``IMAGES_PER_GPU`` on each replica."""
    return int(config.IMAGES_PER_GPU) * replicas_in_sync(strategy)


def is_chief(strategy):
    """Whether this process writes checkpoints and logs.

    True without a strategy and for single-machine strategies; under
    ``MultiWorkerMirroredStrategy``: task type ``chief``, or ``worker`` 0 when
    the cluster has no chief.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    cluster = resolver.cluster_spec().as_dict()
    if resolver.task_type == "chief":
        return True
    return resolver.task_type == "worker" and int(resolver.task_id or 0) == 0 \
        and "chief" not in cluster


def strategy_scope(strategy):
    """``strategy.scope()``, or a no-op context without a strategy."""
    return contextlib.nullcontext() if strategy is None else strategy.scope()


def distributed_dataset(strategy, build, global_batch):
    """One input pipeline per worker, distributed over the replicas.

    Args:
        strategy: a ``tf.distribute.Strategy``.
        build: ``build(batch_size, num_shards, shard_index, shard_seed_offset)``
            -> a ``tf.data.Dataset`` of batches of ``batch_size`` (e.g.
            `mrcnn.data.pipeline.build_training_dataset` with those arguments).
        global_batch: images per step over all replicas.

    Returns:
        a ``tf.distribute.DistributedDataset`` that ``keras.Model.fit`` takes.
    """
    import tensorflow as tf

    def per_worker(context):
        batch = context.get_per_replica_batch_size(global_batch)
        dataset = build(batch, context.num_input_pipelines, context.input_pipeline_id,
                        context.input_pipeline_id)
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = \
            tf.data.experimental.AutoShardPolicy.OFF  # sharded by position above
        return dataset.with_options(options)

    return strategy.distribute_datasets_from_function(per_worker)

