"""Drive the standalone RoIAlign harness (``custom_ops/roi_align/harness/``): build it,
write its case files, run it, read its results; plus the NumPy reference of its maths.

No TensorFlow: this module imports only NumPy and TF-free parts of ``mrcnn``, so it runs
on a GPU machine that has CUDA and PyTorch but no TensorFlow (``benchmarks/roi_align_gpu.py``).

The harness runs the op's own kernels outside TensorFlow: the CPU build (g++) the
kernels of ``roi_align_cpu.h``, the CUDA build (nvcc) those of ``roi_align_kernels.cu.cc``.
Case format (a directory; see ``harness/harness.h``): ``case.txt`` (shapes and
attributes) and raw little-endian float32 / int32 arrays ``features.f32`` ``[N, H, W, C]``
(NHWC), ``boxes.f32`` ``[K, 4]`` ``(y1, x1, y2, x2)`` in input-image pixels (continuous
coordinates, multiplied by ``spatial_scale``), ``box_indices.i32`` ``[K]``, ``grads.f32``
``[K, PH, PW, C]``. Results: ``output.f32``, ``grad_features.f32``, ``result.json``.
"""

import hashlib
import json
import math
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from mrcnn.ops.build import CXX_FLAGS, NVCC_FLAGS, BuildError, find_nvcc
from mrcnn.structures.interpolation import roi_align as numpy_roi_align
from mrcnn.structures.interpolation import roi_align_sample_points, roi_align_taps

__all__ = ["CASE_FORMAT", "HarnessError", "harness_dir", "build_cpu", "build_cuda",
           "write_case", "run_harness", "reference_forward", "reference_backward",
           "max_margin", "drop_near_ties", "compare"]

CASE_FORMAT = 1
_REPO_DIR = Path(__file__).resolve().parents[2]
_CPU_SOURCES = ("harness/harness.h", "harness/harness_cpu.cc", "roi_align.h", "roi_align_cpu.h")
_CUDA_SOURCES = ("harness/harness.h", "harness/harness_cuda.cu.cc", "roi_align.h",
                 "roi_align_kernels.cu.cc")


class HarnessError(RuntimeError):
    """The harness rejected its input or a kernel failed (its message says which)."""


def harness_dir():
    """``custom_ops/roi_align/harness`` of this checkout (not shipped by ``pip install``)."""
    path = _REPO_DIR / "custom_ops" / "roi_align" / "harness"
    if not (path / "harness.h").is_file():
        raise BuildError(f"RoIAlign harness sources not found in {path} (they are in a "
                         "repository checkout only)")
    return path


def _build(out_dir, name, command, sources, log):
    """Compile into ``out_dir/name`` unless a binary from the same sources and command
    is there (a stamp file holds their hash); returns the binary's path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    source_dir = harness_dir().parent
    digest = hashlib.sha256(" ".join(command).encode())
    for source in sources:
        digest.update((source_dir / source).read_bytes())
    binary, stamp = out_dir / name, out_dir / (name + ".sha256")
    if binary.is_file() and stamp.is_file() and stamp.read_text() == digest.hexdigest():
        return binary
    tmp = out_dir / (name + ".tmp")
    cmd = [*command, "-o", str(tmp)]
    if log:
        log("$ " + " ".join(cmd))
    result = subprocess.run(cmd, cwd=source_dir, capture_output=True, text=True)
    if result.returncode != 0:
        raise BuildError(f"building {name} failed (exit {result.returncode}):\n"
                         f"{(result.stdout + result.stderr)[-6000:]}")
    os.replace(tmp, binary)
    stamp.write_text(digest.hexdigest())
    return binary


def build_cpu(out_dir, log=None):
    """Build the CPU harness with g++ (``$CXX``); returns its path. Raises BuildError."""
    cxx = os.environ.get("CXX", "g++")
    if shutil.which(cxx) is None:
        raise BuildError(f"C++ compiler {cxx!r} not found")
    command = [cxx, *CXX_FLAGS, "-pthread", "-I.", "harness/harness_cpu.cc"]
    return _build(out_dir, "roi_align_harness_cpu", command, _CPU_SOURCES, log)


def build_cuda(out_dir, arch="sm_80", nvcc=None, log=None):
    """Build the CUDA harness with nvcc from ``roi_align_kernels.cu.cc`` itself (the
    op's kernel source) for ``arch`` (e.g. ``"sm_90"``); returns its path."""
    nvcc = nvcc or find_nvcc()
    if nvcc is None:
        raise BuildError("nvcc not found (set MRCNN_NVCC or install the CUDA toolkit)")
    command = [nvcc, *NVCC_FLAGS, f"-arch={arch}", "-I.", "roi_align_kernels.cu.cc",
               "harness/harness_cuda.cu.cc"]
    return _build(out_dir, f"roi_align_harness_cuda_{arch}", command, _CUDA_SOURCES, log)


def _write_atomically(path, data):
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp_")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _check_array(name, array, dtype, ndim, shape=None):
    array = np.asarray(array)
    if array.ndim != ndim or (shape is not None and tuple(array.shape) != tuple(shape)):
        want = "x".join(str(s) for s in shape) if shape is not None else f"{ndim}-D"
        raise ValueError(f"write_case: {name} must be {want}, got shape {array.shape}")
    return np.ascontiguousarray(array, dtype=dtype)


def write_case(case_dir, features, boxes, box_indices, grads, output_size, spatial_scale=1.0,
               sampling_ratio=2, aligned=True, aggregation="avg"):
    """Write one harness case into ``case_dir`` (created): features ``[N, H, W, C]``,
    boxes ``[K, 4]`` ``(y1, x1, y2, x2)``, box_indices ``[K]``, grads ``[K, PH, PW, C]``
    (cast to float32 / int32). Returns the directory's Path."""
    if aggregation not in ("avg", "max"):
        raise ValueError(f"write_case: aggregation must be 'avg' or 'max', got {aggregation!r}")
    ph, pw = (int(s) for s in output_size)
    features = _check_array("features [N, H, W, C]", features, "<f4", 4)
    n, h, w, c = features.shape
    boxes = _check_array("boxes [K, 4]", boxes, "<f4", 2)
    k = boxes.shape[0]
    boxes = _check_array("boxes [K, 4]", boxes, "<f4", 2, (k, 4))
    box_indices = _check_array("box_indices [K]", box_indices, "<i4", 1, (k,))
    grads = _check_array("grads [K, PH, PW, C]", grads, "<f4", 4, (k, ph, pw, c))
    if k and (box_indices.min() < 0 or box_indices.max() >= n):
        raise ValueError(f"write_case: box_indices must lie in [0, {n}), got "
                         f"{box_indices.min()}..{box_indices.max()}")
    case_dir = Path(case_dir)
    case_dir.mkdir(parents=True, exist_ok=True)
    for name, array in (("features.f32", features), ("boxes.f32", boxes),
                        ("box_indices.i32", box_indices), ("grads.f32", grads)):
        _write_atomically(case_dir / name, array.tobytes())
    header = (f"format {CASE_FORMAT}\nfeatures {n} {h} {w} {c}\nboxes {k}\npooled {ph} {pw}\n"
              f"spatial_scale {float(np.float32(spatial_scale)):.9g}\n"
              f"sampling_ratio {max(int(sampling_ratio), 0)}\naligned {int(bool(aligned))}\n"
              f"aggregation {aggregation}\n")
    _write_atomically(case_dir / "case.txt", header.encode())
    return case_dir


def run_harness(binary, case_dir, out_dir, warmup=0, repeats=0, threads=1, timeout=600):
    """Run a harness binary on a case; returns ``{"output": float32 [K, PH, PW, C],
    "grad_features": float32 [N, H, W, C], "result": the result.json dict}``.
    Raises HarnessError with the harness's message when it exits non-zero."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = [str(binary), str(case_dir), str(out_dir), "--warmup", str(warmup),
           "--repeats", str(repeats), "--threads", str(threads)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise HarnessError(f"{Path(binary).name} {case_dir} exited {result.returncode}: "
                           f"{(result.stderr or result.stdout).strip()}")
    info = json.loads((out_dir / "result.json").read_text())
    out_shape, grad_shape = info["output_shape"], info["grad_features_shape"]
    return {"output": np.fromfile(out_dir / "output.f32", "<f4").reshape(out_shape),
            "grad_features": np.fromfile(out_dir / "grad_features.f32", "<f4")
            .reshape(grad_shape),
            "result": info}


# --- NumPy reference (float64) --------------------------------------------------------

def _box_samples(image, box, output_size, spatial_scale, sampling_ratio, aligned):
    """Taps and bilinear values of one RoI's samples on image [H, W, C]: ``None`` for
    a RoI without samples, else (y taps, x taps, (grid_h, grid_w), count,
    values [ph * grid_h, pw * grid_w, C])."""
    points = roi_align_sample_points(box, output_size, spatial_scale, sampling_ratio, aligned)
    if points is None:
        return None
    ys, xs, grid_h, grid_w = points
    ty, tx = roi_align_taps(ys, image.shape[0]), roi_align_taps(xs, image.shape[1])
    rows = image[ty[0]] * ty[2][:, None, None] + image[ty[1]] * ty[3][:, None, None]
    values = rows[:, tx[0]] * tx[2][None, :, None] + rows[:, tx[1]] * tx[3][None, :, None]
    return ty, tx, (grid_h, grid_w), grid_h * grid_w, values


def _winners(values, output_size, grid):
    """Per bin and channel: the index (row-major over the bin's grid) of the first
    maximum, and the gap between the best and the second-best sample (inf for one)."""
    ph, pw = output_size
    per_bin = values.reshape(ph, grid[0], pw, grid[1], -1).transpose(0, 2, 1, 3, 4)
    per_bin = per_bin.reshape(ph, pw, grid[0] * grid[1], -1)
    winner = np.argmax(per_bin, axis=2)                                  # first maximum
    if per_bin.shape[2] == 1:
        return winner, np.full(winner.shape, np.inf)
    top = np.sort(per_bin, axis=2)
    return winner, top[:, :, -1] - top[:, :, -2]


def reference_forward(features, boxes, box_indices, output_size, spatial_scale=1.0,
                      sampling_ratio=2, aligned=True, aggregation="avg"):
    """RoIAlign of a batch, float64 ``[K, PH, PW, C]`` (the maths of the op, by
    :func:`mrcnn.structures.interpolation.roi_align`, one image at a time)."""
    features = np.asarray(features, np.float64)
    boxes = np.asarray(boxes).reshape(-1, 4)
    box_indices = np.asarray(box_indices).astype(np.int64)
    out = np.zeros((len(boxes), *output_size, features.shape[3]))
    for b in np.unique(box_indices):
        rows = np.flatnonzero(box_indices == b)
        out[rows] = numpy_roi_align(features[b], boxes[rows], output_size, spatial_scale,
                                    sampling_ratio, aligned, aggregation)
    return out


def reference_backward(features, boxes, box_indices, grads, output_size, spatial_scale=1.0,
                       sampling_ratio=2, aligned=True, aggregation="avg"):
    """d(sum(grads * RoIAlign(features))) / d(features), float64 ``[N, H, W, C]``:
    each sample's share (average: 1/count of its bin's gradient; max: the whole
    gradient to the first maximum of the bin, per channel) goes to its bilinear taps."""
    features = np.asarray(features, np.float64)
    grads = np.asarray(grads, np.float64)
    out = np.zeros_like(features)
    channels = np.arange(features.shape[3])
    for k, box in enumerate(np.asarray(boxes).reshape(-1, 4)):
        b = int(box_indices[k])
        found = _box_samples(features[b], box, output_size, spatial_scale, sampling_ratio,
                             aligned)
        if found is None:
            continue
        (y_lo, y_hi, wy_lo, wy_hi), (x_lo, x_hi, wx_lo, wx_hi), grid, count, values = found
        if aggregation == "max":
            winner, _ = _winners(values, output_size, grid)              # [ph, pw, C]
            p, q = np.meshgrid(np.arange(output_size[0]), np.arange(output_size[1]),
                               indexing="ij")
            row = p[..., None] * grid[0] + winner // grid[1]
            col = q[..., None] * grid[1] + winner % grid[1]
            c = np.broadcast_to(channels, winner.shape)
            for ys, wy in ((y_lo, wy_lo), (y_hi, wy_hi)):
                for xs, wx in ((x_lo, wx_lo), (x_hi, wx_hi)):
                    np.add.at(out[b], (ys[row], xs[col], c), grads[k] * wy[row] * wx[col])
            continue
        share = np.repeat(np.repeat(grads[k], grid[0], 0), grid[1], 1) / count  # [Sy, Sx, C]
        rows = np.zeros((share.shape[0], features.shape[2], features.shape[3]))
        np.add.at(rows, (slice(None), x_lo), share * wx_lo[None, :, None])
        np.add.at(rows, (slice(None), x_hi), share * wx_hi[None, :, None])
        np.add.at(out[b], y_lo, rows * wy_lo[:, None, None])
        np.add.at(out[b], y_hi, rows * wy_hi[:, None, None])
    return out


def max_margin(features, boxes, box_indices, output_size, spatial_scale=1.0,
               sampling_ratio=2, aligned=True):
    """Per output element ``[K, PH, PW, C]``: how far the bin's maximum is above its
    second-best sample (float64; inf for a bin of one sample or none). Where it is
    tiny but not 0, float32 kernels may pick another winner than the reference."""
    features = np.asarray(features, np.float64)
    out = np.full((len(boxes), *output_size, features.shape[3]), np.inf)
    for k, box in enumerate(np.asarray(boxes).reshape(-1, 4)):
        found = _box_samples(features[int(box_indices[k])], box, output_size, spatial_scale,
                             sampling_ratio, aligned)
        if found is not None:
            out[k] = _winners(found[4], output_size, found[2])[1]
    return out


def drop_near_ties(grads, margin, eps=1e-4):
    """``grads`` with the elements whose bins are near ties (``0 < margin < eps``) set
    to 0, so the max gradient does not depend on rounding; exact ties are kept (the
    first sample in scan order wins them). Returns (grads float32, count dropped)."""
    near = (margin > 0) & (margin < eps)
    grads = np.where(near, 0.0, grads).astype(np.float32)
    return grads, int(near.sum())


def compare(got, expected, atol, rtol):
    """``{"max_abs", "max_rel", "ok"}``: ok when ``|got - expected| <= atol + rtol *
    |expected|`` everywhere and shapes agree; max_rel over elements with
    ``|expected| > atol``."""
    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    if got.shape != expected.shape:
        return {"max_abs": math.inf, "max_rel": math.inf, "ok": False,
                "error": f"shape {got.shape} != {expected.shape}"}
    diff = np.abs(got - expected)
    big = np.abs(expected) > atol
    max_abs = float(diff.max()) if diff.size else 0.0
    max_rel = float((diff[big] / np.abs(expected[big])).max()) if big.any() else 0.0
    ok = bool(np.all(np.isfinite(got)) and np.all(diff <= atol + rtol * np.abs(expected)))
    return {"max_abs": max_abs, "max_rel": max_rel, "ok": ok}
