"""RoIAlign CUDA kernels on a GPU machine without TensorFlow: correctness and speed.

    python benchmarks/roi_align_gpu.py --out results/

Needs NumPy, a C++ compiler, and for the GPU part nvcc, an NVIDIA GPU and PyTorch with
torchvision; never imports TensorFlow, and runs from a plain copy of the repository.
Builds the standalone harness (``custom_ops/roi_align/harness``: the op's own CPU and
CUDA kernels; ``mrcnn.ops.roi_align_harness``) into ``--build-dir`` and then:

1. Checks: seeded random cases (boxes over and around the map, a few inverted) for
   avg / max x aligned True / False x sampling ratio 2 / 0 (adaptive), plus a hand-made
   case (samples on pixel edges, on the map's border, outside it, exact max ties).
   Forward and backward of the CUDA harness against the float64 NumPy reference, the
   CPU harness and (avg) ``torchvision.ops.roi_align`` on the GPU (NCHW there; its
   ``aligned=True`` is our half-pixel convention); the CPU harness against NumPy.
   For max, bins whose best two samples are within 1e-4 (but not equal) get a zero
   incoming gradient (their winner depends on rounding).
2. Workload of ``benchmarks/roi_align.py``: features [2, 256, 256, 256] float32, 1000
   random boxes, 7x7, sampling 2, spatial scale 1/4, aligned, avg: our CUDA kernels
   (CUDA events, warm-up then --repeats) against torchvision (same timing, NCHW
   input: each in its native layout), outputs compared with each other and with the
   CPU harness. The CPU harness is timed too.

Prints the comparisons (max abs / max rel error) and a table of medians; writes
``roi_align_gpu.json`` into --out. Exit status 1 if any comparison is out of
tolerance (or a harness fails). Without torch or a GPU it says so and runs what it
can: the CPU harness against NumPy (and the workload on the CPU harness).
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_DIR))

import numpy as np  # noqa: E402

from mrcnn.ops import roi_align_harness as rh  # noqa: E402  (NumPy only, no TensorFlow)
from mrcnn.ops.build import BuildError, find_nvcc  # noqa: E402

CHECK_CONFIGS = [(agg, aligned, ratio) for agg in ("avg", "max") for aligned in (True, False)
                 for ratio in (2, 0)]
CHECK_OUTPUT = (7, 7)   # the random cases' pooled size
CHECK_TOL = dict(atol=1e-4, rtol=1e-4)      # float32 positions up to ~50 px: errors ~3e-5
WORKLOAD_TOL = dict(atol=1e-3, rtol=1e-3)   # coordinates up to 256, sums of ~100 terms


def check_inputs(seed, n=2, size=40, channels=16, k=64, scale=0.25):
    """Random float32 features [n, size, size + 4, C]; k boxes in image pixels (the map
    times 1/scale), spread over and around the map, a sixth of them inverted."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n, size, size + 4, channels)).astype(np.float32)
    corners = rng.uniform(-0.2 * size / scale, 1.2 * size / scale, size=(k, 2, 2))
    boxes = np.concatenate([corners.min(1), corners.max(1)], 1).astype(np.float32)
    boxes[: k // 6, 2:] = boxes[: k // 6, :2] - 3.0
    return features, boxes, rng.integers(0, n, k).astype(np.int32)


def hand_made_inputs():
    """Integer-valued 6 x 7 maps with plateaus (exact max ties: a constant channel, a
    step), boxes on whole pixels whose 2 x 2 bins of 2 x 2 samples (unaligned, scale 1)
    lie on dyadic positions (exact in float32), on the map's border and outside it."""
    y, x = np.meshgrid(np.arange(6), np.arange(7), indexing="ij")
    features = np.stack([10.0 * y + x, np.ones(y.shape), (y > 3) * 4.0 - 2.0], -1)
    features = np.stack([features, features[::-1]]).astype(np.float32)
    boxes = np.array([[0, 0, 4, 4], [4, 0, 8, 4], [-2, 0, 2, 4], [3, 0, 6, 1],
                      [0, 0, 12, 14], [-9, -9, -5, -5], [1, 1, 5, 6]], np.float32)
    return features, boxes, np.array([0, 0, 1, 1, 0, 1, 0], np.int32)


def workload_inputs(size=256, channels=256, num_boxes=1000, stride=4):
    """The inputs of benchmarks/roi_align.py (seed 0) plus seeded incoming gradients."""
    rng = np.random.default_rng(0)
    image = size * stride
    features = rng.normal(size=(2, size, size, channels)).astype(np.float32)
    y1x1 = rng.uniform(0, image * 0.8, size=(num_boxes, 2))
    hw = rng.uniform(16, image * 0.4, size=(num_boxes, 2))
    boxes = np.concatenate([y1x1, np.minimum(y1x1 + hw, image)], 1).astype(np.float32)
    box_indices = rng.integers(0, 2, num_boxes).astype(np.int32)
    grads = np.random.default_rng(1).normal(size=(num_boxes, 7, 7, channels)).astype(np.float32)
    return features, boxes, box_indices, grads


def load_torch():
    """``(torch, torchvision.ops, None)`` with a usable GPU, else ``(None, None, why)``."""
    try:
        import torch
        import torchvision.ops as tv_ops
    except ImportError as err:
        return None, None, f"PyTorch / torchvision not importable ({err})"
    if not torch.cuda.is_available():
        return None, None, "PyTorch sees no CUDA GPU"
    return torch, tv_ops, None


def gpu_arch(torch):
    if os.environ.get("MRCNN_CUDA_ARCH"):
        return os.environ["MRCNN_CUDA_ARCH"]
    if torch is not None:
        major, minor = torch.cuda.get_device_capability(0)
        return f"sm_{major}{minor}"
    try:
        cap = subprocess.run(["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30).stdout.split()
        return "sm_" + cap[0].replace(".", "") if cap else None
    except (OSError, subprocess.TimeoutExpired):
        return None


class TorchvisionRoIAlign:
    """torchvision.ops.roi_align on the GPU on NCHW copies of our NHWC inputs."""

    def __init__(self, torch, tv_ops, features, boxes, box_indices, grads, output_size,
                 spatial_scale, sampling_ratio, aligned):
        self.torch, self.tv_ops = torch, tv_ops
        dev = torch.device("cuda")
        self.x = torch.from_numpy(features).to(dev).permute(0, 3, 1, 2).contiguous()
        self.x_grad = self.x.clone().requires_grad_(True)
        rois = np.concatenate([box_indices[:, None].astype(np.float32), boxes[:, [1, 0, 3, 2]]],
                              1)                                   # (b, x1, y1, x2, y2)
        self.rois = torch.from_numpy(np.ascontiguousarray(rois)).to(dev)
        self.g = torch.from_numpy(grads).to(dev).permute(0, 3, 1, 2).contiguous()
        self.args = (output_size, spatial_scale, sampling_ratio, aligned)

    def forward(self):
        with self.torch.no_grad():
            return self.tv_ops.roi_align(self.x, self.rois, *self.args)

    def forward_backward(self):
        out = self.tv_ops.roi_align(self.x_grad, self.rois, *self.args)
        return out, self.torch.autograd.grad(out, self.x_grad, self.g)[0]

    def results(self):
        out, grad = self.forward_backward()
        return (out.detach().permute(0, 2, 3, 1).cpu().numpy(),
                grad.permute(0, 2, 3, 1).cpu().numpy())

    def time(self, fn, warmup, repeats):
        """Milliseconds of each of `repeats` calls (CUDA events), after `warmup` calls."""
        for _ in range(warmup):
            fn()
        self.torch.cuda.synchronize()
        times = []
        for _ in range(repeats):
            start = self.torch.cuda.Event(enable_timing=True)
            stop = self.torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            stop.record()
            stop.synchronize()
            times.append(start.elapsed_time(stop))
        return times


class Report:
    def __init__(self):
        self.comparisons, self.notes, self.failures = [], [], []

    def note(self, text):
        print(text, flush=True)
        self.notes.append(text)

    def compare(self, case, what, got, expected, tol):
        row = dict(case=case, what=what, **rh.compare(got, expected, **tol), **tol)
        self.comparisons.append(row)
        print(f"  {case:46s} {what:30s} max abs {row['max_abs']:9.2e}  max rel "
              f"{row['max_rel']:9.2e}  {'ok' if row['ok'] else 'OUT OF TOLERANCE'}", flush=True)
        if not row["ok"]:
            self.failures.append(f"{case}: {what}")

    def fail(self, text):
        self.note("FAILED: " + text)
        self.failures.append(text)


def run_checks(report, work, cpu_bin, cuda_bin, torch, tv_ops):
    cases = [(f"random {agg} aligned={al} ratio={r}", check_inputs(11 + i), CHECK_OUTPUT,
              agg, al, r, 0.25) for i, (agg, al, r) in enumerate(CHECK_CONFIGS)]
    cases += [(f"hand-made {agg}", hand_made_inputs(), (2, 2), agg, False, 2, 1.0)
              for agg in ("avg", "max")]
    for index, (name, (features, boxes, box_indices), size, agg, aligned, ratio, scale) in \
            enumerate(cases):
        attrs = dict(spatial_scale=scale, sampling_ratio=ratio, aligned=aligned)
        grads = np.random.default_rng(100 + index).normal(
            size=(len(boxes), *size, features.shape[3])).astype(np.float32)
        if agg == "max":
            grads, dropped = rh.drop_near_ties(
                grads, rh.max_margin(features, boxes, box_indices, size, **attrs))
            name += f" ({dropped} near ties)" if dropped else ""
        case = rh.write_case(work / f"check{index}", features, boxes, box_indices, grads,
                             size, aggregation=agg, **attrs)
        ref_out = rh.reference_forward(features, boxes, box_indices, size, aggregation=agg,
                                       **attrs)
        ref_grad = rh.reference_backward(features, boxes, box_indices, grads, size,
                                         aggregation=agg, **attrs)
        results = {}
        for label, binary in (("CPU harness", cpu_bin), ("CUDA", cuda_bin)):
            if binary is None:
                continue
            try:
                results[label] = rh.run_harness(binary, case, work / f"check{index}_{binary.name}",
                                                threads=os.cpu_count() or 1)
            except rh.HarnessError as err:
                report.fail(str(err))
                continue
            report.compare(name, f"{label} fwd vs NumPy", results[label]["output"], ref_out,
                           CHECK_TOL)
            report.compare(name, f"{label} bwd vs NumPy", results[label]["grad_features"],
                           ref_grad, CHECK_TOL)
        if "CUDA" in results and "CPU harness" in results:
            for key, short in (("output", "fwd"), ("grad_features", "bwd")):
                report.compare(name, f"CUDA {short} vs CPU harness", results["CUDA"][key],
                               results["CPU harness"][key], CHECK_TOL)
        if "CUDA" in results and torch is not None and agg == "avg":
            tv = TorchvisionRoIAlign(torch, tv_ops, features, boxes, box_indices, grads, size,
                                     scale, ratio, aligned)
            tv_out, tv_grad = tv.results()
            report.compare(name, "CUDA fwd vs torchvision", results["CUDA"]["output"], tv_out,
                           CHECK_TOL)
            report.compare(name, "CUDA bwd vs torchvision", results["CUDA"]["grad_features"],
                           tv_grad, CHECK_TOL)


def run_workload(report, work, cpu_bin, cuda_bin, torch, tv_ops, args):
    features, boxes, box_indices, grads = workload_inputs(args.size, args.channels, args.boxes)
    case = rh.write_case(work / "workload", features, boxes, box_indices, grads, (7, 7),
                         spatial_scale=0.25, sampling_ratio=2, aligned=True, aggregation="avg")
    name = f"workload [2, {args.size}, {args.size}, {args.channels}] K={args.boxes}"
    medians, results = {}, {}
    threads = os.cpu_count() or 1
    for key, label, binary, warmup, repeats in (
            ("cuda", "ours, CUDA (NHWC)", cuda_bin, args.warmup, args.repeats),
            ("cpu", f"ours, CPU harness, {threads} threads", cpu_bin, 1, args.cpu_repeats)):
        if binary is None:
            continue
        try:
            results[key] = rh.run_harness(binary, case, work / f"workload_{key}", warmup,
                                          repeats, threads)
        except rh.HarnessError as err:
            report.fail(str(err))
            continue
        info = results[key]["result"]
        medians[label] = {k: statistics.median(info[f"{k}_ms"])
                          for k in ("forward", "backward", "forward_backward")}
        report.note(f"{label}: {info['device']}")
    if "cuda" in results and "cpu" in results:
        for key, short in (("output", "fwd"), ("grad_features", "bwd")):
            report.compare(name, f"CUDA {short} vs CPU harness", results["cuda"][key],
                           results["cpu"][key], WORKLOAD_TOL)
    if torch is not None and "cuda" in results:
        tv = TorchvisionRoIAlign(torch, tv_ops, features, boxes, box_indices, grads, (7, 7),
                                 0.25, 2, True)
        tv_out, tv_grad = tv.results()
        ours = results["cuda"]
        report.compare(name, "CUDA fwd vs torchvision", ours["output"], tv_out, WORKLOAD_TOL)
        report.compare(name, "CUDA bwd vs torchvision", ours["grad_features"], tv_grad,
                       WORKLOAD_TOL)
        fwd = tv.time(tv.forward, args.warmup, args.repeats)
        both = tv.time(tv.forward_backward, args.warmup, args.repeats)
        medians["torchvision.ops.roi_align (NCHW)"] = {
            "forward": statistics.median(fwd), "backward": None,
            "forward_backward": statistics.median(both)}
    return medians


def print_table(medians, args):
    print(f"\nmedians, ms ({args.repeats} GPU repeats after {args.warmup} warm-up; "
          f"CPU: {args.cpu_repeats} repeats)")
    print(f"{'implementation':44s} {'forward':>9s} {'backward':>9s} {'fwd+bwd':>9s}")
    for label, row in medians.items():
        cells = [f"{row[k]:9.3f}" if row[k] is not None else f"{'-':>9s}"
                 for k in ("forward", "backward", "forward_backward")]
        print(f"{label:44s} {' '.join(cells)}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="results", help="folder for roi_align_gpu.json")
    parser.add_argument("--build-dir", default=str(REPO_DIR / "build" / "roi_align_harness"),
                        help="where the harness binaries are built (reused when unchanged)")
    parser.add_argument("--repeats", type=int, default=50, help="timed GPU calls")
    parser.add_argument("--warmup", type=int, default=10, help="untimed GPU calls first")
    parser.add_argument("--cpu-repeats", type=int, default=3, help="timed CPU-harness calls")
    parser.add_argument("--boxes", type=int, default=1000)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--skip-workload", action="store_true", help="checks only")
    args = parser.parse_args(argv)
    start = time.monotonic()
    report = Report()
    torch, tv_ops, torch_missing = load_torch()
    env = {"python": sys.version.split()[0], "numpy": np.__version__,
           "machine": platform.machine(), "cpus": os.cpu_count()}
    if torch is not None:
        import torchvision
        env.update(torch=torch.__version__, torchvision=torchvision.__version__,
                   gpu=torch.cuda.get_device_name(0))
    else:
        report.note(f"no GPU comparison: {torch_missing}; running the CPU harness against "
                    "NumPy only")
    build_dir = Path(args.build_dir)
    cpu_bin = cuda_bin = None
    try:
        cpu_bin = rh.build_cpu(build_dir, log=print)
    except BuildError as err:
        report.note(f"no CPU harness: {err}")
    nvcc = find_nvcc()
    arch = gpu_arch(torch) if nvcc else None
    if nvcc is None:
        report.note("no CUDA harness: nvcc not found (set MRCNN_NVCC or install the toolkit)")
    elif arch is None:
        report.note("no CUDA harness: no GPU found (nvidia-smi) and MRCNN_CUDA_ARCH unset")
    else:
        env["cuda_arch"] = arch
        try:
            cuda_bin = rh.build_cuda(build_dir, arch=arch, nvcc=nvcc, log=print)
        except BuildError as err:
            report.fail(f"CUDA harness build: {err}")
    if cpu_bin is None and cuda_bin is None:
        report.fail("neither harness could be built")
    medians = {}
    with tempfile.TemporaryDirectory(prefix="roi_align_gpu_") as tmp:
        work = Path(tmp)
        print("\nchecks (tolerance |got - expected| <= atol + rtol |expected|: "
              f"{CHECK_TOL})")
        run_checks(report, work, cpu_bin, cuda_bin, torch, tv_ops)
        if not args.skip_workload:
            print(f"\nworkload (tolerance {WORKLOAD_TOL})")
            medians = run_workload(report, work, cpu_bin, cuda_bin, torch, tv_ops, args)
    if medians:
        print_table(medians, args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = dict(environment=env, args=vars(args), notes=report.notes,
                   comparisons=report.comparisons, medians_ms=medians,
                   failures=report.failures, seconds=round(time.monotonic() - start, 1))
    fd, tmp_path = tempfile.mkstemp(dir=out, prefix=".roi_align_gpu_")
    with os.fdopen(fd, "w") as f:
        json.dump(summary, f, indent=1)
    os.replace(tmp_path, out / "roi_align_gpu.json")
    print(f"\n{len(report.comparisons)} comparisons, {len(report.failures)} failed; "
          f"{summary['seconds']} s; wrote {out / 'roi_align_gpu.json'}")
    for failure in report.failures:
        print(f"  FAILED: {failure}")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
