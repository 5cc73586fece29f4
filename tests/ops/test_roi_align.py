"""Tests of mrcnn.ops.roi_align on both paths (compiled op and pure-TF fallback).

Expected values come from hand computation on tiny maps and from an
independent loop-based NumPy reference written here from the definition.
"""

import math
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import mrcnn.ops as ops
from mrcnn.ops import build as ops_build
from mrcnn.ops.roi_align_tf import roi_align_tf
from roi_align_reference import bilinear_reference, roi_align_reference  # noqa: F401
from roi_align_reference import linear_map, random_case

SKIP_BUILD = bool(os.environ.get("MRCNN_OPS_SKIP_BUILD"))
# The `impl` fixture (both implementations) is in conftest.py.


def compiled_fn():
    if SKIP_BUILD:
        pytest.skip("MRCNN_OPS_SKIP_BUILD is set")
    return ops.compiled_roi_align()


# --- inputs (linear_map, random_case: tests/roi_align_reference.py) -------------

def run(features, boxes, box_indices, output_size, **kwargs):
    return ops.roi_align(tf.constant(features), tf.constant(boxes, tf.float32),
                         tf.constant(box_indices, tf.int32), output_size, **kwargs).numpy()


# --- hand-computed values ----------------------------------------------------------

HAND_CASES = [
    # (box, output_size, sampling_ratio, aligned, expected value, why)
    ((1, 1, 3, 3), (1, 1), 2, True, 16.5, "shift to (0.5..2.5): samples at 1,2 -> 11,12,21,22"),
    ((1, 1, 3, 3), (1, 1), 2, False, 22.0, "samples at 1.5,2.5 -> mean of 16.5,17.5,26.5,27.5"),
    ((2, 2, 4.5, 4.5), (1, 1), 1, False, 33.0, "sample at 3.25 > H-1 uses the last row/col"),
    ((-1, 0, 0, 1), (1, 1), 1, False, 0.5, "y = -0.5 is clamped to 0; x = 0.5"),
    ((-2, 0, -1, 1), (1, 1), 1, False, 0.0, "y = -1.5 < -1 contributes zero"),
    ((5.5, 0, 7, 1), (1, 1), 1, False, 0.0, "y = 6.25 > H contributes zero"),
    ((0, 0, 4, 4), (1, 1), 0, False, 20.625, "adaptive: 4 samples 0.5..3.5, 3.5 -> row 3"),
    ((0, 0, 4, 4), (1, 1), 2, False, 22.0, "fixed 2: samples at 1, 3"),
    ((1, 1, 1.2, 1.2), (1, 1), 1, False, 16.5, "RoI size clamped to 1: sample at 1.5"),
    ((1, 1, 1.2, 1.2), (1, 1), 1, True, 6.6, "aligned: no clamp, sample at 0.6"),
]


@pytest.mark.parametrize("box,output_size,ratio,aligned,expected,why", HAND_CASES,
                         ids=[case[-1][:40] for case in HAND_CASES])
def test_hand_computed_values(impl, box, output_size, ratio, aligned, expected, why):
    features = linear_map(4, 4)
    out = run(features, [box], [0], output_size, sampling_ratio=ratio, aligned=aligned)
    assert out.shape == (1,) + output_size + (1,)
    np.testing.assert_allclose(out[0, 0, 0, 0], expected, atol=1e-5, err_msg=why)


def test_hand_computed_2x2_bins_and_channels(impl):
    # Box (0, 0, 4, 4) aligned -> (-0.5 .. 3.5), bins of 2, one sample per bin at
    # -0.5 + 1 = 0.5 and 2.5: value 10 y + x + 100 c.
    features = linear_map(4, 4, channels=2)
    out = run(features, [[0, 0, 4, 4]], [0], (2, 2), sampling_ratio=1, aligned=True)
    expected = np.array([[5.5, 7.5], [25.5, 27.5]])
    np.testing.assert_allclose(out[0, :, :, 0], expected, atol=1e-5)
    np.testing.assert_allclose(out[0, :, :, 1], expected + 100, atol=1e-5)


def test_spatial_scale_multiplies_boxes(impl):
    features = linear_map(4, 4)
    scaled = run(features, [[4, 4, 12, 12]], [0], (1, 1), spatial_scale=0.25,
                 sampling_ratio=2, aligned=False)
    direct = run(features, [[1, 1, 3, 3]], [0], (1, 1), sampling_ratio=2, aligned=False)
    np.testing.assert_allclose(scaled, direct, atol=1e-6)
    np.testing.assert_allclose(direct[0, 0, 0, 0], 22.0, atol=1e-5)


# --- independent reference on random inputs ---------------------------------------

@pytest.mark.parametrize("ratio,aligned,scale,output_size", [
    (2, True, 1.0, (3, 4)), (2, False, 0.5, (2, 2)), (0, True, 0.5, (3, 3)),
    (0, False, 1.0, (2, 3)), (3, True, 0.25, (4, 2)), (1, False, 1.0, (1, 1))])
def test_matches_numpy_reference(impl, ratio, aligned, scale, output_size):
    features, boxes, box_indices = random_case(seed=ratio * 10 + int(aligned),
                                               spread=(-8 / scale, 20 / scale))
    out = run(features, boxes, box_indices, output_size, spatial_scale=scale,
              sampling_ratio=ratio, aligned=aligned)
    expected = roi_align_reference(features, boxes, box_indices, output_size, scale, ratio,
                                   aligned)
    np.testing.assert_allclose(out, expected, atol=1e-5, rtol=1e-5)


def test_boxes_partly_and_fully_outside(impl):
    features, _, _ = random_case(seed=3, n=1, height=6, width=7)
    boxes = np.array([[-4, -4, 3, 3],        # partly outside (top-left)
                      [3, 4, 9, 12],         # partly outside (bottom-right)
                      [-30, -30, -10, -10],  # fully outside, above/left of -1
                      [20, 20, 30, 40]],     # fully outside, beyond H and W
                     np.float32)
    out = run(features, boxes, [0, 0, 0, 0], (3, 3), sampling_ratio=2, aligned=True)
    expected = roi_align_reference(features, boxes, [0, 0, 0, 0], (3, 3), 1.0, 2, True)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert np.all(out[2:] == 0.0)
    assert np.abs(out[:2]).sum() > 0


@pytest.mark.parametrize("aligned", [True, False])
def test_scale_invariance(impl, aligned):
    # The same image-space field sampled at stride 2 and stride 4 (features of a
    # 32-px image): constant and linear fields give identical pooled values.
    def field(stride, size, kind):
        centre = (np.arange(size) + (0.5 if aligned else 0.0)) * stride  # image px
        y, x = np.meshgrid(centre, centre, indexing="ij")
        value = np.full_like(y, 3.0) if kind == "constant" else 0.5 * y - 0.25 * x + 2.0
        return value[None, :, :, None].astype(np.float32)

    boxes = np.array([[6, 5, 20, 23], [9, 8.5, 17, 26], [7, 7, 8, 9]], np.float32)
    if not aligned:
        boxes = boxes[:2]  # the min-size-1 clamp acts on map units: not scale-free
    indices = np.zeros(len(boxes), np.int32)
    for kind in ("constant", "linear"):
        for ratio in (2, 0):
            fine = run(field(2, 16, kind), boxes, indices, (3, 3), spatial_scale=0.5,
                       sampling_ratio=ratio, aligned=aligned)
            coarse = run(field(4, 8, kind), boxes, indices, (3, 3), spatial_scale=0.25,
                         sampling_ratio=ratio, aligned=aligned)
            np.testing.assert_allclose(fine, coarse, atol=1e-4, err_msg=f"{kind} {ratio}")
            if kind == "constant":
                np.testing.assert_allclose(fine, 3.0, atol=1e-5)
            else:
                assert fine.std() > 0.5  # the linear field really varies


def test_empty_boxes_and_zero_gradient(impl):
    features = tf.constant(np.random.default_rng(0).normal(size=(2, 5, 6, 3)), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(features)
        out = ops.roi_align(features, tf.zeros([0, 4]), tf.zeros([0], tf.int32), (7, 7))
        loss = tf.reduce_sum(out)
    assert out.shape == (0, 7, 7, 3)
    grad = tape.gradient(loss, features)
    assert grad is not None and grad.shape == features.shape
    assert float(tf.reduce_max(tf.abs(grad))) == 0.0


def test_empty_boxes_in_graph_with_unknown_k(impl):
    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 4]),
                                  tf.TensorSpec([None, 4]), tf.TensorSpec([None], tf.int32)])
    def pooled(features, boxes, box_indices):
        return ops.roi_align(features, boxes, box_indices, (2, 3), sampling_ratio=0)

    out = pooled(tf.ones([1, 4, 4, 4]), tf.zeros([0, 4]), tf.zeros([0], tf.int32))
    assert out.shape == (0, 2, 3, 4)
    out = pooled(tf.ones([1, 4, 4, 4]), tf.constant([[0.0, 0, 4, 4]]), tf.constant([0]))
    np.testing.assert_allclose(out.numpy(), 1.0, atol=1e-6)


# --- gradients ---------------------------------------------------------------------

def test_gradient_float64_numeric(impl):
    features, boxes, box_indices = random_case(seed=7, n=2, height=5, width=6, channels=2, k=6)
    boxes = tf.constant(boxes)
    box_indices = tf.constant(box_indices)

    def pooled(x):
        return ops.roi_align(x, boxes, box_indices, (2, 2), sampling_ratio=2, aligned=True)

    theoretical, numerical = tf.test.compute_gradient(
        pooled, [tf.constant(features.astype(np.float64))])
    np.testing.assert_allclose(theoretical[0], numerical[0], atol=1e-6)
    assert np.abs(theoretical[0]).sum() > 0


def test_float32_gradient_matches_reference_numeric_gradient(impl):
    features, boxes, box_indices = random_case(seed=11, n=2, height=4, width=5, channels=2, k=5)
    weights = np.random.default_rng(1).normal(size=(5, 2, 3, 2))
    x = tf.constant(features)
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = ops.roi_align(x, boxes, box_indices, (2, 3), sampling_ratio=0, aligned=False)
        loss = tf.reduce_sum(out * tf.constant(weights, tf.float32))
    analytic = tape.gradient(loss, x).numpy()

    def reference_loss(f):
        return float((roi_align_reference(f, boxes, box_indices, (2, 3), 1.0, 0, False)
                      * weights).sum())

    numeric = np.zeros(features.shape)
    base = features.astype(np.float64)
    for index in np.ndindex(*features.shape):
        plus, minus = base.copy(), base.copy()
        plus[index] += 1e-3
        minus[index] -= 1e-3
        numeric[index] = (reference_loss(plus) - reference_loss(minus)) / 2e-3
    np.testing.assert_allclose(analytic, numeric, atol=1e-4)


def test_no_gradient_to_boxes(impl):
    features = tf.constant(linear_map(4, 4))
    boxes = tf.constant([[0.5, 0.5, 3.0, 3.0]])
    with tf.GradientTape() as tape:
        tape.watch(boxes)
        loss = tf.reduce_sum(ops.roi_align(features, boxes, [0], (2, 2)))
    grad = tape.gradient(loss, boxes)
    assert grad is None or float(tf.reduce_max(tf.abs(grad))) == 0.0


# --- dtypes and errors -------------------------------------------------------------

@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16])
def test_16_bit_features(impl, dtype):
    features, boxes, box_indices = random_case(seed=5, k=8)
    x = tf.cast(tf.constant(features), dtype)
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = ops.roi_align(x, boxes, box_indices, (2, 2))
        loss = tf.reduce_sum(tf.cast(out, tf.float32))
    grad = tape.gradient(loss, x)
    assert out.dtype == dtype and grad.dtype == dtype
    expected = roi_align_reference(tf.cast(x, tf.float32).numpy(), boxes, box_indices, (2, 2))
    np.testing.assert_allclose(tf.cast(out, tf.float32).numpy(), expected, atol=0.05, rtol=0.02)


def test_bad_arguments_raise_clear_errors(impl):
    features = tf.zeros([1, 4, 4, 2])
    with pytest.raises(ValueError, match="output_size"):
        ops.roi_align(features, tf.zeros([1, 4]), [0], (0, 2))
    with pytest.raises(ValueError, match="boxes"):
        ops.roi_align(features, tf.zeros([1, 3]), [0], (2, 2))
    with pytest.raises(ValueError, match="features"):
        ops.roi_align(tf.zeros([4, 4, 2]), tf.zeros([1, 4]), [0], (2, 2))
    with pytest.raises(ValueError, match="aggregation.*'median'"):
        ops.roi_align(features, tf.zeros([1, 4]), [0], (2, 2), aggregation="median")
    with pytest.raises(tf.errors.InvalidArgumentError):
        ops.roi_align(features, tf.constant([[0.0, 0, 2, 2]]), [3], (2, 2))


# --- compiled vs fallback, loading, fallback behaviour ----------------------------

@pytest.mark.parametrize("aggregation", ["avg", "max"])
@pytest.mark.parametrize("ratio,aligned", [(2, True), (0, False), (0, True), (3, False)])
def test_compiled_equals_tf_fallback(ratio, aligned, aggregation):
    compiled = compiled_fn()
    features, boxes, box_indices = random_case(seed=21 + ratio, n=3, height=13, width=10,
                                               channels=5, k=40, spread=(-20, 60))
    args = (tf.constant(features), tf.constant(boxes), tf.constant(box_indices), (5, 4))
    kwargs = dict(spatial_scale=0.25, sampling_ratio=ratio, aligned=aligned,
                  aggregation=aggregation)
    x = args[0]
    weights = tf.constant(np.random.default_rng(2).normal(size=(40, 5, 4, 5)), tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        a = compiled(x, *args[1:], **kwargs)
        b = roi_align_tf(x, *args[1:], **kwargs)
        loss_a, loss_b = tf.reduce_sum(a * weights), tf.reduce_sum(b * weights)
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)
    np.testing.assert_allclose(tape.gradient(loss_a, x).numpy(),
                               tape.gradient(loss_b, x).numpy(), atol=1e-5)


def test_compiled_op_loaded_in_auto_mode(monkeypatch):
    if SKIP_BUILD:
        pytest.skip("MRCNN_OPS_SKIP_BUILD is set")
    monkeypatch.delenv(ops.IMPL_ENV, raising=False)
    ops.reset_implementation()
    try:
        assert ops.implementation() == "compiled", ops.fallback_reason()
        assert ops.fallback_reason() is None
    finally:
        ops.reset_implementation()


def test_fallback_warns_once_and_compiled_mode_fails_loudly(monkeypatch):
    def broken():
        raise OSError("simulated: cannot load library")

    monkeypatch.setattr(ops, "compiled_roi_align", broken)
    monkeypatch.delenv("MRCNN_OPS_SKIP_BUILD", raising=False)
    monkeypatch.setenv(ops.IMPL_ENV, "auto")
    ops.reset_implementation()
    try:
        with pytest.warns(RuntimeWarning, match="simulated: cannot load library"):
            assert ops.implementation() == "tf"
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            out = ops.roi_align(linear_map(4, 4), [[1, 1, 3, 3]], [0], (1, 1))
        np.testing.assert_allclose(out.numpy()[0, 0, 0, 0], 16.5, atol=1e-5)
        monkeypatch.setenv(ops.IMPL_ENV, "compiled")
        ops.reset_implementation()
        with pytest.raises(RuntimeError, match="simulated"):
            ops.implementation()
        monkeypatch.setenv(ops.IMPL_ENV, "bogus")
        ops.reset_implementation()
        with pytest.raises(ValueError, match="MRCNN_ROI_ALIGN_IMPL"):
            ops.implementation()
    finally:
        ops.reset_implementation()


# --- gradient under op determinism (Config.DETERMINISTIC) -------------------------

def test_deterministic_gradient_needed_only_on_gpu_with_op_determinism(monkeypatch):
    from mrcnn.ops import _compiled

    cpu = tf.constant(np.zeros((1, 4, 4, 1), np.float32))
    assert not _compiled.op_determinism_enabled()
    assert not _compiled.needs_deterministic_gradient(cpu)
    monkeypatch.setattr(_compiled, "op_determinism_enabled", lambda: True)
    # The CPU grad kernel is deterministic: no detour.
    assert "CPU" in cpu.device and not _compiled.needs_deterministic_gradient(cpu)

    class Placed:
        def __init__(self, device):
            self.device = device
    assert _compiled.needs_deterministic_gradient(Placed("/job:localhost/replica:0/task:0/"
                                                         "device:GPU:1"))
    assert _compiled.needs_deterministic_gradient(Placed("GPU:0"))
    # Unplaced (graph tensor without a device): wherever TF puts the op, i.e.
    # a GPU if there is one.
    monkeypatch.setattr(tf.config, "list_logical_devices",
                        lambda kind=None: ["gpu0"] if kind == "GPU" else [])
    assert _compiled.needs_deterministic_gradient(Placed(""))
    monkeypatch.setattr(tf.config, "list_logical_devices", lambda kind=None: [])
    assert not _compiled.needs_deterministic_gradient(Placed(""))


@pytest.mark.parametrize("aggregation", ["avg", "max"])
@pytest.mark.parametrize("dtype", [tf.float32, tf.bfloat16])
def test_deterministic_gradient_path_equals_both_implementations(monkeypatch, dtype,
                                                                 aggregation):
    """With the detour forced (as on a GPU under op determinism), the compiled
    op's gradient is the pure-TF gradient, eagerly and in a tf.function, and
    agrees with the grad kernel's."""
    compiled = compiled_fn()
    from mrcnn.ops import _compiled

    features, boxes, box_indices = random_case(seed=8, n=2, height=12, width=9, channels=4,
                                               k=30, spread=(-10, 40))
    x = tf.cast(tf.constant(features), dtype)
    weights = tf.constant(np.random.default_rng(3).normal(size=(30, 3, 5, 4)), tf.float32)
    kwargs = dict(spatial_scale=0.5, sampling_ratio=0, aligned=True, aggregation=aggregation)

    def gradient(fn):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.cast(fn(x, boxes, box_indices, (3, 5), **kwargs),
                                         tf.float32) * weights)
        return tape.gradient(loss, x)

    kernel = gradient(compiled)
    reference = gradient(roi_align_tf)
    calls = []
    original = _compiled.deterministic_gradient

    def counting(*args, **kw):
        calls.append(1)
        return original(*args, **kw)

    monkeypatch.setattr(_compiled, "needs_deterministic_gradient", lambda features: True)
    monkeypatch.setattr(_compiled, "deterministic_gradient", counting)
    eager = gradient(compiled)
    traced = tf.function(lambda: gradient(compiled))()
    assert len(calls) == 2
    for got in (eager, traced):
        assert got.dtype == dtype and got.shape == x.shape
        # Same ops as the reference; only the summation order of the gather
        # gradient may differ (a few float32 ulps).
        np.testing.assert_allclose(tf.cast(got, tf.float32).numpy(),
                                   tf.cast(reference, tf.float32).numpy(), rtol=0, atol=1e-6)
    tolerance = 1e-5 if dtype == tf.float32 else 0.05
    np.testing.assert_allclose(tf.cast(eager, tf.float32).numpy(),
                               tf.cast(kernel, tf.float32).numpy(), atol=tolerance)
    assert np.abs(reference.numpy().astype(np.float32)).max() > 0.1


GPU_DETERMINISM_SCRIPT = """
import numpy as np, tensorflow as tf
tf.config.experimental.enable_op_determinism()
import mrcnn.ops as ops
rng = np.random.default_rng(0)
x = tf.constant(rng.normal(size=(2, 64, 64, 32)).astype(np.float32))
corners = rng.uniform(0, 256, size=(2000, 2, 2)).astype(np.float32)
boxes = tf.constant(np.concatenate([corners.min(1), corners.max(1)], 1))
idx = tf.constant(rng.integers(0, 2, 2000).astype(np.int32))
grads = []
for _ in range(3):
    with tf.device("/GPU:0"), tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(ops.compiled_roi_align()(x, boxes, idx, (7, 7), 0.25) ** 2)
    grads.append(tape.gradient(loss, x).numpy())
assert all(np.array_equal(grads[0], g) for g in grads[1:]), "gradients differ"
print("identical")
"""


@pytest.mark.gpu
def test_gpu_gradient_is_deterministic_under_op_determinism():
    if not tf.config.list_physical_devices("GPU"):
        pytest.skip("no GPU visible")
    compiled_fn()
    done = subprocess.run([sys.executable, "-c", GPU_DETERMINISM_SCRIPT], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0 and "identical" in done.stdout, done.stderr[-3000:]


@pytest.mark.gpu
@pytest.mark.parametrize("aggregation", ["avg", "max"])
def test_cpu_equals_gpu(aggregation):
    if not tf.config.list_physical_devices("GPU"):
        pytest.skip("no GPU visible")
    compiled = compiled_fn()
    features, boxes, box_indices = random_case(seed=4, n=2, height=16, width=16, channels=8,
                                               k=30, spread=(-10, 40))
    results = {}
    for device in ("/CPU:0", "/GPU:0"):
        with tf.device(device):
            x = tf.constant(features)
            with tf.GradientTape() as tape:
                tape.watch(x)
                out = compiled(x, boxes, box_indices, (7, 7), spatial_scale=0.5,
                               aggregation=aggregation)
                loss = tf.reduce_sum(out * out)
            results[device] = (out.numpy(), tape.gradient(loss, x).numpy())
    for cpu, gpu in zip(results["/CPU:0"], results["/GPU:0"]):
        np.testing.assert_allclose(cpu, gpu, atol=1e-4)


# --- build command -----------------------------------------------------------------

def _broken_sources(tmp_path, name, junk, prepend=False):
    source = ops_build.find_source_dir()
    broken = tmp_path / "src"
    shutil.copytree(source, broken)
    text = (broken / name).read_text()
    (broken / name).write_text(junk + text if prepend else text + junk)
    return broken


@pytest.mark.slow
def test_build_command_fails_on_cxx_syntax_error(tmp_path):
    # A missing header stops g++ at once (a syntax error further down would
    # first cost a full parse of TensorFlow's headers).
    broken = _broken_sources(tmp_path, "roi_align_ops.cc",
                             '#include "no_such_header.h"\nthis is not C++;\n', prepend=True)
    result = subprocess.run(
        [sys.executable, "-m", "mrcnn.ops.build", "--skip-cuda", "--source-dir", str(broken),
         "--out-dir", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "roi_align_ops.cc" in result.stderr and "error" in result.stderr
    assert not list(Path(tmp_path / "out").glob("*.so"))


def test_build_command_fails_on_cuda_syntax_error(tmp_path):
    if ops_build.find_nvcc() is None:
        pytest.skip("nvcc not installed")
    broken = _broken_sources(tmp_path, "roi_align_kernels.cu.cc", "\nint broken = ;\n")
    result = subprocess.run(
        [sys.executable, "-m", "mrcnn.ops.build", "--cuda-check-only", "--source-dir",
         str(broken)], capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "roi_align_kernels.cu.cc" in result.stderr
