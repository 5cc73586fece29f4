"""Tests for mrcnn/ops/roi_align_harness.py and the standalone harness it drives
(custom_ops/roi_align/harness/): the CPU build (g++, the op's own CPU kernels, no
TensorFlow) against the NumPy reference and the compiled TF op, forward and backward, on
random and hand-made cases (samples on pixel and bin edges, boxes partly outside, max
ties); the case format's errors; the timing fields; the CUDA build compiles (and, on a
machine with a GPU, agrees with the CPU build)."""

import json
import os
import shutil
import subprocess

import numpy as np
import pytest
import tensorflow as tf

import mrcnn.ops as ops
from mrcnn.ops import roi_align_harness as rh
from mrcnn.ops.build import find_nvcc
from roi_align_reference import (linear_map, random_case, roi_align_max_gradient_reference,
                                 roi_align_reference)

SKIP_BUILD = bool(os.environ.get("MRCNN_OPS_SKIP_BUILD"))
CONFIGS = [(2, True), (0, False), (0, True), (3, False)]   # (sampling_ratio, aligned)


@pytest.fixture(scope="module")
def cpu_harness(tmp_path_factory):
    if shutil.which(os.environ.get("CXX", "g++")) is None:
        pytest.skip("no C++ compiler (g++ / $CXX): the CPU harness cannot be built")
    return rh.build_cpu(tmp_path_factory.mktemp("harness_build"))


def run_case(binary, tmp_path, features, boxes, box_indices, grads, output_size, threads=1,
             **attrs):
    case = rh.write_case(tmp_path / "case", features, boxes, box_indices, grads, output_size,
                         **attrs)
    return rh.run_harness(binary, case, tmp_path / "out", threads=threads)


def random_inputs(seed, ratio, aligned, aggregation, output_size=(5, 4)):
    """A random case (boxes over and around the map, a few inverted) with seeded grads;
    for max, the grads of near-tie bins are zeroed (their winner depends on rounding)."""
    features, boxes, box_indices = random_case(seed, n=3, height=13, width=10, channels=5,
                                               k=40, spread=(-20, 60))
    grads = np.random.default_rng(seed + 100).normal(
        size=(len(boxes), *output_size, features.shape[3])).astype(np.float32)
    attrs = dict(spatial_scale=0.25, sampling_ratio=ratio, aligned=aligned)
    if aggregation == "max":
        grads, _ = rh.drop_near_ties(
            grads, rh.max_margin(features, boxes, box_indices, output_size, **attrs))
    return features, boxes, box_indices, grads, dict(attrs, aggregation=aggregation)


def tf_op(features, boxes, box_indices, grads, output_size, **attrs):
    """Forward and backward (gradient of sum(grads * out)) of the compiled TF op."""
    if SKIP_BUILD:
        pytest.skip("MRCNN_OPS_SKIP_BUILD is set: no compiled op to compare with")
    x = tf.constant(features)
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = ops.compiled_roi_align()(x, tf.constant(boxes), tf.constant(box_indices),
                                       output_size, **attrs)
        loss = tf.reduce_sum(out * grads)
    return out.numpy(), tape.gradient(loss, x).numpy()


# --- the NumPy reference itself --------------------------------------------------

@pytest.mark.parametrize("aggregation", ["avg", "max"])
@pytest.mark.parametrize("ratio,aligned", CONFIGS)
def test_numpy_reference_matches_loop_reference_and_is_the_adjoint(ratio, aligned, aggregation):
    features, boxes, box_indices, grads, attrs = random_inputs(1, ratio, aligned, aggregation)
    forward = rh.reference_forward(features, boxes, box_indices, (5, 4), **attrs)
    backward = rh.reference_backward(features, boxes, box_indices, grads, (5, 4), **attrs)
    np.testing.assert_allclose(
        forward, roi_align_reference(features, boxes, box_indices, (5, 4), **attrs), atol=1e-12)
    # Both aggregations are linear in the features given the winners:
    # <f(x), g> == <x, backward(g)>.
    np.testing.assert_allclose(np.sum(forward * grads),
                               np.sum(features.astype(np.float64) * backward), rtol=1e-12)
    assert np.abs(backward).max() > 0.1
    if aggregation == "max":
        del attrs["aggregation"]
        expected = roi_align_max_gradient_reference(features, boxes, box_indices, (5, 4),
                                                    grads, **attrs)
        np.testing.assert_allclose(backward, expected, atol=1e-12)


def test_drop_near_ties_keeps_exact_ties():
    grads = np.ones((1, 1, 1, 4))
    margin = np.array([0.0, 1e-6, 1e-3, np.inf]).reshape(1, 1, 1, 4)
    kept, dropped = rh.drop_near_ties(grads, margin, eps=1e-4)
    assert kept.dtype == np.float32 and dropped == 1
    np.testing.assert_array_equal(kept.ravel(), [1, 0, 1, 1])


# --- the CPU harness -------------------------------------------------------------

@pytest.mark.parametrize("aggregation", ["avg", "max"])
@pytest.mark.parametrize("ratio,aligned", CONFIGS)
def test_cpu_harness_matches_reference_and_tf_op(cpu_harness, tmp_path, ratio, aligned,
                                                 aggregation):
    features, boxes, box_indices, grads, attrs = random_inputs(7 + ratio, ratio, aligned,
                                                               aggregation)
    got = run_case(cpu_harness, tmp_path, features, boxes, box_indices, grads, (5, 4),
                   threads=2, **attrs)
    assert got["output"].shape == (40, 5, 4, 5) and got["grad_features"].shape == (3, 13, 10, 5)
    np.testing.assert_allclose(
        got["output"], rh.reference_forward(features, boxes, box_indices, (5, 4), **attrs),
        atol=2e-5, rtol=1e-5)
    np.testing.assert_allclose(
        got["grad_features"],
        rh.reference_backward(features, boxes, box_indices, grads, (5, 4), **attrs),
        atol=2e-5, rtol=1e-5)
    # The same kernels as the op, the same flags: the same bits (the op uses
    # TensorFlow's thread pool, the harness its own; results do not depend on it).
    out, grad = tf_op(features, boxes, box_indices, grads, (5, 4), **attrs)
    np.testing.assert_array_equal(got["output"], out)
    np.testing.assert_array_equal(got["grad_features"], grad)


@pytest.mark.parametrize("aggregation", ["avg", "max"])
def test_samples_on_pixel_and_bin_edges(cpu_harness, tmp_path, aggregation):
    # features[b, y, x] = 10 y + x on a 5 x 6 map, one box per image; unaligned, one
    # sample per bin (so max == avg), every position and weight exact in float32:
    # box 0: bins of 2 px, samples on whole pixel positions (1, 1) (1, 3) (3, 1) (3, 3):
    #        exact values, each bin's whole gradient to one pixel;
    # box 1: samples at y = 5 == H (on the map's edge: clamped to the last row) and
    #        y = 7 > H (outside: 0, no gradient);
    # box 2: samples at y = -1 (the lowest valid position: clamped to row 0) and y = 1;
    # box 3: 3 x 1 px, samples at y = 3.75 and 5.25 (outside), x = 0.25 and 0.75.
    features = np.repeat(linear_map(5, 6), 4, axis=0)
    boxes = np.array([[0, 0, 4, 4], [4, 0, 8, 4], [-2, 0, 2, 4], [3, 0, 6, 1]], np.float32)
    box_indices = np.arange(4, dtype=np.int32)
    grads = np.arange(1, 17, dtype=np.float32).reshape(4, 2, 2, 1)
    attrs = dict(sampling_ratio=1, aligned=False, aggregation=aggregation)
    got = run_case(cpu_harness, tmp_path, features, boxes, box_indices, grads, (2, 2), **attrs)
    out, grad = got["output"][..., 0], got["grad_features"][..., 0]
    np.testing.assert_array_equal(out[0], [[11, 13], [31, 33]])
    np.testing.assert_array_equal(out[1], [[41, 43], [0, 0]])
    np.testing.assert_array_equal(out[2], [[1, 3], [11, 13]])
    np.testing.assert_array_equal(out[3], [[37.75, 38.25], [0, 0]])
    expected = np.zeros_like(grad)
    expected[0, [1, 1, 3, 3], [1, 3, 1, 3]] = [1, 2, 3, 4]
    expected[1, [4, 4], [1, 3]] = [5, 6]
    expected[2, [0, 0, 1, 1], [1, 3, 1, 3]] = [9, 10, 11, 12]
    # Box 3, bins (0, 0) and (0, 1) (gradients 13, 14): rows 3 / 4 weigh 1/4 / 3/4,
    # columns 0 / 1 weigh 3/4 / 1/4 and 1/4 / 3/4.
    expected[3, 3:5, 0:2] = np.outer([0.25, 0.75], [13 * 0.75 + 14 * 0.25, 13 * 0.25 + 14 * 0.75])
    np.testing.assert_array_equal(grad, expected)
    reference = rh.reference_backward(features, boxes, box_indices, grads, (2, 2), **attrs)
    np.testing.assert_array_equal(got["grad_features"], reference)
    out_tf, grad_tf = tf_op(features, boxes, box_indices, grads, (2, 2), **attrs)
    np.testing.assert_array_equal(got["output"], out_tf)
    np.testing.assert_array_equal(got["grad_features"], grad_tf)


@pytest.mark.parametrize("aggregation", ["avg", "max"])
@pytest.mark.parametrize("aligned", [True, False])
def test_boxes_partly_outside_the_map(cpu_harness, tmp_path, aggregation, aligned):
    features = linear_map(6, 8, channels=2) + 1.0
    boxes = np.array([[-6, -4, 3, 5], [2, 5, 11, 14], [-9, -9, -5, -5], [-1, 2, 4, 20]],
                     np.float32)
    grads = np.random.default_rng(3).normal(size=(4, 3, 3, 2)).astype(np.float32)
    attrs = dict(sampling_ratio=2, aligned=aligned, aggregation=aggregation)
    got = run_case(cpu_harness, tmp_path, features, boxes, np.zeros(4, np.int32), grads,
                   (3, 3), **attrs)
    # Box 2 lies wholly below -1: zeros, and none of its gradient lands anywhere.
    np.testing.assert_array_equal(got["output"][2], 0)
    np.testing.assert_allclose(
        got["output"],
        rh.reference_forward(features, boxes, np.zeros(4, np.int32), (3, 3), **attrs),
        atol=2e-5, rtol=1e-6)
    np.testing.assert_allclose(
        got["grad_features"],
        rh.reference_backward(features, boxes, np.zeros(4, np.int32), grads, (3, 3), **attrs),
        atol=2e-5, rtol=1e-6)
    out_tf, grad_tf = tf_op(features, boxes, np.zeros(4, np.int32), grads, (3, 3), **attrs)
    np.testing.assert_array_equal(got["output"], out_tf)
    np.testing.assert_array_equal(got["grad_features"], grad_tf)


def test_max_ties_go_to_the_first_sample(cpu_harness, tmp_path):
    # Unaligned, one 1 x 1 bin, sampling 2, samples on whole pixel positions (exact).
    # Box 0 (0, 0, 4, 4): samples (1, 1) (1, 3) (3, 1) (3, 3) in scan order. Channel 0:
    # all 1, channel 2: all -2 -> (1, 1) wins; channel 1: (1, 3) and (3, 1) tie at 5 ->
    # (1, 3) wins. Box 1 (0, 0, 12, 12): samples (3, 3) inside, (3, 9) (9, 3) (9, 9)
    # outside the 4 x 4 map (value 0). Channel 0: (3, 3) = 1 wins; channel 1: all 0,
    # the first, (3, 3) inside, wins the tie; channel 2: (3, 3) = -2 loses to the
    # first outside sample: output 0, no gradient.
    features = np.zeros((1, 4, 4, 3), np.float32)
    features[..., 0] = 1.0
    features[0, 1, 3, 1] = features[0, 3, 1, 1] = 5.0
    features[..., 2] = -2.0
    features[0, 3, 3, 1] = 0.0
    boxes = np.array([[0, 0, 4, 4], [0, 0, 12, 12]], np.float32)
    box_indices = np.zeros(2, np.int32)
    grads = np.array([[10.0, 20.0, 30.0], [40.0, 50.0, 60.0]], np.float32).reshape(2, 1, 1, 3)
    attrs = dict(sampling_ratio=2, aligned=False, aggregation="max")
    got = run_case(cpu_harness, tmp_path, features, boxes, box_indices, grads, (1, 1), **attrs)
    np.testing.assert_array_equal(got["output"][:, 0, 0], [[1, 5, -2], [1, 0, 0]])
    expected = np.zeros((4, 4, 3), np.float32)
    expected[1, 1, 0], expected[1, 3, 1], expected[1, 1, 2] = 10, 20, 30
    expected[3, 3, 0], expected[3, 3, 1] = 40, 50
    np.testing.assert_array_equal(got["grad_features"][0], expected)
    np.testing.assert_array_equal(
        got["grad_features"],
        rh.reference_backward(features, boxes, box_indices, grads, (1, 1), **attrs))
    out_tf, grad_tf = tf_op(features, boxes, box_indices, grads, (1, 1), **attrs)
    np.testing.assert_array_equal(got["output"], out_tf)
    np.testing.assert_array_equal(got["grad_features"], grad_tf)


def test_timings_and_result_fields(cpu_harness, tmp_path):
    features, boxes, box_indices, grads, attrs = random_inputs(2, 2, True, "avg")
    case = rh.write_case(tmp_path / "case", features, boxes, box_indices, grads, (5, 4),
                         **attrs)
    info = rh.run_harness(cpu_harness, case, tmp_path / "out", warmup=1, repeats=3,
                          threads=2)["result"]
    assert info["backend"] == "cpu" and info["threads"] == 2
    assert info["output_shape"] == [40, 5, 4, 5] and info["grad_features_shape"] == [3, 13, 10, 5]
    for key in ("forward_ms", "backward_ms", "forward_backward_ms"):
        assert len(info[key]) == 3 and all(t >= 0 for t in info[key])
    assert not list((tmp_path / "out").glob("*.tmp"))


def test_bad_cases_give_clear_errors(cpu_harness, tmp_path):
    features, boxes, box_indices, grads, attrs = random_inputs(4, 2, True, "avg")
    case = rh.write_case(tmp_path / "case", features, boxes, box_indices, grads, (5, 4),
                         **attrs)
    (case / "features.f32").write_bytes((case / "features.f32").read_bytes()[:-4])
    with pytest.raises(rh.HarnessError, match=r"features\.f32: 7796 bytes, expected 7800"):
        rh.run_harness(cpu_harness, case, tmp_path / "out")
    case = rh.write_case(tmp_path / "case", features, boxes, box_indices, grads, (5, 4),
                         **attrs)
    (case / "box_indices.i32").write_bytes(np.full(40, 3, "<i4").tobytes())
    with pytest.raises(rh.HarnessError, match=r"box_indices\[0\] = 3 is outside the batch"):
        rh.run_harness(cpu_harness, case, tmp_path / "out")
    text = (case / "case.txt").read_text()
    (case / "case.txt").write_text(text.replace("aggregation avg", "aggregation median"))
    with pytest.raises(rh.HarnessError, match="'aggregation' expects avg or max, got 'median'"):
        rh.run_harness(cpu_harness, case, tmp_path / "out")
    with pytest.raises(ValueError, match=r"grads \[K, PH, PW, C\] must be 40x5x4x5"):
        rh.write_case(tmp_path / "bad", features, boxes, box_indices, grads[:, :4], (5, 4))
    with pytest.raises(ValueError, match=r"box_indices must lie in \[0, 3\)"):
        rh.write_case(tmp_path / "bad", features, boxes, box_indices + 3, grads, (5, 4))


# --- the CUDA harness ------------------------------------------------------------

def _gpu_visible():
    try:
        return subprocess.run(["nvidia-smi", "-L"], capture_output=True,
                              timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.slow   # nvcc: about 30 s on 2 cores, several times that under load
def test_cuda_harness_compiles_and_runs_where_a_gpu_is(request, tmp_path):
    if find_nvcc() is None:
        pytest.skip("nvcc not installed: the CUDA harness cannot be compiled here")
    binary = rh.build_cuda(tmp_path / "build", arch=os.environ.get("MRCNN_CUDA_ARCH", "sm_80"))
    assert binary.is_file() and os.access(binary, os.X_OK)
    features, boxes, box_indices, grads, attrs = random_inputs(5, 0, True, "max")
    case = rh.write_case(tmp_path / "case", features, boxes, box_indices, grads, (5, 4),
                         **attrs)
    if not _gpu_visible():
        # No GPU here: the binary starts, reads the case and says why it stops.
        with pytest.raises(rh.HarnessError, match="cuda"):
            rh.run_harness(binary, case, tmp_path / "out")
        return
    got = rh.run_harness(binary, case, tmp_path / "out")
    want = rh.run_harness(request.getfixturevalue("cpu_harness"), case, tmp_path / "cpu")
    assert got["result"]["backend"] == "cuda"
    np.testing.assert_allclose(got["output"], want["output"], atol=2e-5, rtol=1e-5)
    np.testing.assert_allclose(got["grad_features"], want["grad_features"], atol=2e-5,
                               rtol=1e-5)
    assert json.loads((tmp_path / "out" / "result.json").read_text())["format"] == 1
