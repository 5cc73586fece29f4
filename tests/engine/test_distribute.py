"""Tests of mrcnn.engine.distribute and of training under tf.distribute strategies.

The strategy runs happen in subprocesses (tests/distributed_worker.py):
logical CPU devices and MultiWorkerMirroredStrategy have to be set up before
TensorFlow initialises, which the test process has long done.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from model_fixtures import RectanglesDataset, TinyConfig
from mrcnn.engine import distribute
from mrcnn.data.pipeline import build_training_dataset
from locations import TESTS_DIR

WORKER = os.path.join(TESTS_DIR, "distributed_worker.py")
LEARNING_RATE = 0.01  # distributed_worker.WorkerConfig.LEARNING_RATE


# --------------------------------------------------------------------- TF_CONFIG
def _tf_config(workers, index, chief=None, task_type="worker"):
    cluster = {"worker": workers}
    if chief:
        cluster["chief"] = chief
    return {"TF_CONFIG": json.dumps({"cluster": cluster,
                                     "task": {"type": task_type, "index": index}})}


def test_tf_config_cluster_size():
    assert distribute.tf_config_cluster_size({}) == 0
    assert distribute.tf_config_cluster_size({"TF_CONFIG": "  "}) == 0
    assert distribute.tf_config_cluster_size(_tf_config(["a:1", "b:2"], 1)) == 2
    assert distribute.tf_config_cluster_size(_tf_config(["a:1", "b:2"], 0, ["c:3"])) == 3


@pytest.mark.parametrize("raw, expected", [
    ("{not json", "not valid JSON"),
    (json.dumps({"cluster": {"worker": ["a:1"]}}), "task"),
    (json.dumps(["a:1"]), "cluster"),
])
def test_tf_config_errors_name_the_variable(raw, expected):
    with pytest.raises(ValueError, match="TF_CONFIG") as info:
        distribute.tf_config_cluster_size({"TF_CONFIG": raw})
    assert expected in str(info.value)


class _Resolver:
    def __init__(self, task_type, task_id, cluster):
        self.task_type, self.task_id, self._cluster = task_type, task_id, cluster

    def cluster_spec(self):
        class Spec:
            def as_dict(inner):
                return self._cluster
        return Spec()


class _Strategy:
    def __init__(self, resolver):
        self.cluster_resolver = resolver


def test_is_chief():
    assert distribute.is_chief(None)
    workers = {"worker": ["a:1", "b:2"]}
    assert distribute.is_chief(_Strategy(_Resolver("worker", 0, workers)))
    assert not distribute.is_chief(_Strategy(_Resolver("worker", 1, workers)))
    with_chief = {"chief": ["c:3"], **workers}
    assert distribute.is_chief(_Strategy(_Resolver("chief", 0, with_chief)))
    assert not distribute.is_chief(_Strategy(_Resolver("worker", 0, with_chief)))
    # A single-machine strategy has no task type: it is its own chief.
    assert distribute.is_chief(_Strategy(_Resolver(None, None, {})))


def test_resolve_strategy(monkeypatch):
    import tensorflow as tf

    monkeypatch.delenv("TF_CONFIG", raising=False)
    config = TinyConfig()
    assert distribute.resolve_strategy(config) is None
    given = tf.distribute.get_strategy()
    assert distribute.resolve_strategy(config, given) is given
    with pytest.raises(TypeError, match="tf.distribute.Strategy"):
        distribute.resolve_strategy(config, "mirrored")
    assert distribute.replicas_in_sync(None) == 1
    assert distribute.global_batch_size(config, None) == config.IMAGES_PER_GPU

    class TwoGpus(TinyConfig):
        GPU_COUNT = 2
    if len(tf.config.list_logical_devices("GPU")) < 2:
        with pytest.raises(ValueError, match=r"TwoGpus.GPU_COUNT=2 but TensorFlow sees"):
            distribute.resolve_strategy(TwoGpus())
    # Inference never creates a strategy (detect runs on one device).
    assert distribute.resolve_strategy(TwoGpus(), mode="inference") is None


# --------------------------------------------------------------------- sharding
def test_pipeline_shards_are_disjoint_and_cover_the_data():
    config = TinyConfig()
    data = RectanglesDataset([1, 2, 1, 2, 1, 2, 1])
    seen = []
    for shard in range(3):
        stream = build_training_dataset(data, config, shuffle=True, repeat=False, seed=0,
                                        batch_size=1, num_shards=3, shard_index=shard)
        ids = [int(b["input_image_meta"][0, 0]) for b in stream]
        assert all(i % 3 == shard for i in ids)
        seen += ids
    assert sorted(seen) == list(range(7))


def test_pipeline_shard_errors():
    config = TinyConfig()
    data = RectanglesDataset([1, 2, 1])
    with pytest.raises(ValueError, match=r"shard 1 of 2: 1 images.*batch size 2"):
        build_training_dataset(data, config, num_shards=2, shard_index=1)
    with pytest.raises(ValueError, match=r"shard_index=2 is not in \[0, num_shards=2\)"):
        build_training_dataset(data, config, num_shards=2, shard_index=2)


# --------------------------------------------------------------------- strategies
def _run_workers(commands, timeout=900, check=True):
    """Start the commands (argv, extra env) together; return their outputs
    (``check=False``: ``(returncode, output)`` pairs)."""
    procs = []
    for argv, extra_env in commands:
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **extra_env)
        if "TF_CONFIG" not in extra_env:
            env.pop("TF_CONFIG", None)
        procs.append(subprocess.Popen([sys.executable, WORKER] + argv, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    outputs = []
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=timeout)
            outputs.append(out if check else (proc.returncode, out))
            if check:
                assert proc.returncode == 0, f"worker failed ({proc.args}):\n{out[-6000:]}"
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    return outputs


def _updates(arrays, run):
    """``{variable path: final - initial}`` of one ``clip<i>`` run."""
    out = {}
    for key in arrays.files:
        if key.startswith(f"{run}/"):
            path = key.split("/", 1)[1]
            out[path] = arrays[key].astype(np.float64) - arrays[f"initial/{path}"]
    return out


def _global_norm(updates):
    return float(np.sqrt(sum(np.sum(u ** 2) for u in updates.values())))


@pytest.mark.slow
def test_mirrored_strategy_matches_one_device(tmp_path):
    """Two replicas, one image each, give one device's update on one image.

    Every image is the same picture and nothing samples at random, so each
    replica's loss equals one device's; the mean over replicas must then give
    the same update. Without the 1/replicas loss scaling the update would be
    twice as large; with Keras' per-replica clipping, the clipped update would
    be twice as large as the clipped one-device update.
    """
    single, mirrored = tmp_path / "single.npz", tmp_path / "mirrored.npz"
    common = ["--clip", "none", "0.1", "--seed", "5", "--data", "same"]
    _run_workers([(["--setup", "single", "--out", str(single)] + common, {}),
                  (["--setup", "mirrored", "--out", str(mirrored)] + common, {})])
    one, two = np.load(single), np.load(mirrored)
    assert int(one["replicas"]) == 1 and int(two["replicas"]) == 2
    for key in one.files:
        if key.startswith("initial/"):
            np.testing.assert_array_equal(one[key], two[key], err_msg=key)

    for run in ("clip0", "clip1"):
        expected, actual = _updates(one, run), _updates(two, run)
        assert expected.keys() == actual.keys()
        assert _global_norm(expected) > 0
        for path, update in expected.items():
            # 1 % of the variable's largest update (summation order and the
            # float32 rounding of the stored weights) plus a few ulps.
            tolerance = 0.01 * np.abs(update).max() + 1e-7
            np.testing.assert_allclose(actual[path], update, rtol=0, atol=tolerance,
                                       err_msg=f"{run} {path}")
    # GRADIENT_CLIP_NORM 0.1 clips the total gradient (its norm is well above
    # 0.1 with random weights): the first SGD step then has norm lr * 0.1.
    for arrays in (one, two):
        norm = _global_norm(_updates(arrays, "clip1"))
        assert norm == pytest.approx(LEARNING_RATE * 0.1, rel=1e-3)


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.mark.slow
def test_multi_worker_training_ends_with_identical_weights(tmp_path):
    """Two worker processes on localhost (TF_CONFIG): MultiWorkerMirroredStrategy.

    The workers read disjoint halves of the data set and start from
    unseeded (so locally different) initial weights; the strategy broadcasts
    the chief's initial values and all-reduces the gradients, so after two
    steps both hold the same weights. Only the chief writes a checkpoint.
    """
    ports = _free_ports(2)
    workers = [f"localhost:{p}" for p in ports]
    commands = []
    for index in range(2):
        argv = ["--setup", "multiworker", "--out", str(tmp_path / f"worker{index}.npz"),
                "--steps", "2", "--data", "varied",
                "--model-dir", str(tmp_path / f"logs{index}")]
        commands.append((argv, _tf_config(workers, index)))
    _run_workers(commands)
    w0, w1 = np.load(tmp_path / "worker0.npz"), np.load(tmp_path / "worker1.npz")
    assert int(w0["replicas"]) == 2 and int(w1["replicas"]) == 2

    # Worker i read only the images at positions i, i + 2, ...
    ids0, ids1 = set(w0["image_ids"].tolist()), set(w1["image_ids"].tolist())
    assert ids0 and ids1 and not ids0 & ids1
    assert all(i % 2 == 0 for i in ids0) and all(i % 2 == 1 for i in ids1)

    keys = [k for k in w0.files if k.startswith(("initial/", "clip0/"))]
    assert keys and set(keys) <= set(w1.files)
    for key in keys:
        np.testing.assert_array_equal(w0[key], w1[key], err_msg=key)
    # Unclipped SGD at lr 0.01 from random weights diverges (one-device runs
    # of this setup went from a loss of ~20 to ~1000 in one step), but the
    # weights must stay finite.
    assert not [k for k in keys if not np.isfinite(w0[k]).all()]
    assert _global_norm(_updates(w0, "clip0")) > 0

    # The chief (worker 0) wrote the epoch's checkpoint; worker 1 nothing.
    checkpoints = [name for _, _, files in os.walk(tmp_path / "logs0") for name in files
                   if name.endswith(".h5")]
    assert checkpoints == ["mask_rcnn_tiny_0001.h5"]
    assert not (tmp_path / "logs1").exists()


@pytest.mark.slow
def test_a_failing_worker_stops_the_others_instead_of_hanging(tmp_path):
    """Worker 1 cannot read its images: it stops with the error naming the image,
    and worker 0, waiting for it in the gradient all-reduce, stops with an error
    instead of waiting forever (the subprocess timeout would turn a hang into a
    test failure)."""
    workers = [f"localhost:{p}" for p in _free_ports(2)]
    commands = []
    for index in range(2):
        argv = ["--setup", "multiworker", "--out", str(tmp_path / f"worker{index}.npz"),
                "--steps", "2", "--data", "varied",
                "--model-dir", str(tmp_path / f"logs{index}")]
        commands.append((argv + (["--unreadable"] if index == 1 else []),
                         _tf_config(workers, index)))
    (code0, out0), (code1, out1) = _run_workers(commands, timeout=600, check=False)
    assert code1 != 0 and "cannot read image" in out1 and "image id" in out1, out1[-3000:]
    assert code0 != 0, out0[-3000:]
    assert "task:1" in out0 or "UnavailableError" in out0, out0[-3000:]
    assert not (tmp_path / "worker0.npz").exists()
