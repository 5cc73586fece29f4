"""Tests for benchmarks/batch_throughput.py and the ``--batch-sizes`` / ``--precision``
options of benchmarks/inference.py: the CPU flag reader, the images-per-second rows,
the option parsing (no model is built)."""

import os

import numpy as np
import pytest

from benchmark_scripts import load_benchmark
from locations import REPO_DIR

BENCHMARKS = os.path.join(REPO_DIR, "benchmarks")


bt = load_benchmark("batch_throughput")
inference = load_benchmark("inference")

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
flags\t\t: fpu sse2 avx512f avx512_bf16 avx512vl
bugs\t\t: sysret_ss_attrs

processor\t: 1
flags\t\t: fpu amx_tile amx_bf16
"""


def test_cpu_flags_reads_the_first_flags_line():
    assert bt.cpu_flags(CPUINFO) == {"avx512f": True, "avx512_bf16": True,
                                     "amx_tile": False, "amx_bf16": False}
    assert bt.cpu_flags("processor\t: 0\n") == dict.fromkeys(bt.CPU_FLAGS)
    # "avx512_bf16" must not match inside another flag's name
    assert bt.cpu_flags("flags : avx512_bf16x", ("avx512_bf16",)) == {"avx512_bf16": False}


def test_throughput_rows_images_per_second_and_speedup():
    times = {("float32", 1): [2.0, 1.0, 3.0], ("float32", 4): [5.0, 4.0, 6.0],
             ("mixed_bfloat16", 2): [1.0, 0.5, 2.0]}
    rows = {(p, b): rest for p, b, *rest in bt.throughput_rows(times)}
    assert rows["float32", 1] == pytest.approx([2.0, 1.0, 0.5, 1.0, 1.0])
    assert rows["float32", 4] == pytest.approx([5.0, 4.0, 0.8, 1.0, 1.6])
    med, best, ips, ips_best, speedup = rows["mixed_bfloat16", 2]
    assert (med, best, ips, ips_best) == pytest.approx((1.0, 0.5, 2.0, 4.0))
    assert np.isnan(speedup)            # no batch-1 time of that precision


def test_bench_images_differ_and_image_0_is_the_scripts_image():
    images = bt.bench_images((6, 8), 3)
    assert [im.shape for im in images] == [(6, 8, 3)] * 3 and images[0].dtype == np.uint8
    assert not np.array_equal(images[0], images[1])
    np.testing.assert_array_equal(
        images[0], np.random.default_rng(0).integers(0, 256, (6, 8, 3), dtype=np.uint8))


def test_inference_options_batch_sizes_and_several_precisions():
    args = inference.parse_args(["--batch-sizes", "1", "2", "4",
                                 "--precision", "float32", "mixed_bfloat16"])
    assert args.batch_sizes == [1, 2, 4]
    assert args.precisions == ["float32", "mixed_bfloat16"] and args.precision == "float32"
    plain = inference.parse_args(["--precision", "mixed_bfloat16"])
    assert plain.precision == "mixed_bfloat16" and plain.batch_sizes is None
    assert inference.parse_args([]).precision == "float32"
    with pytest.raises(SystemExit):
        inference.parse_args(["--precision", "float32", "mixed_bfloat16"])
    with pytest.raises(SystemExit):
        inference.parse_args(["--batch-sizes", "0", "2"])
