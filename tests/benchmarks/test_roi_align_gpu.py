"""Tests for benchmarks/roi_align_gpu.py on a machine without a GPU (or without torch):
it says so, runs the CPU harness against NumPy on every check case, writes its JSON
summary, imports no TensorFlow, and exits 1 when a comparison is out of tolerance."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from benchmark_scripts import load_benchmark
from locations import REPO_DIR


bench = load_benchmark("roi_align_gpu")


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory):
    if shutil.which(os.environ.get("CXX", "g++")) is None:
        pytest.skip("no C++ compiler (g++ / $CXX): the CPU harness cannot be built")
    return tmp_path_factory.mktemp("harness_build")


def test_checks_run_on_the_cpu_harness_and_pass(build_dir, tmp_path):
    # As on a GPU machine: the script by path from the repository root, in a fresh
    # interpreter (which then reports whether anything imported TensorFlow).
    script = os.path.join("benchmarks", "roi_align_gpu.py")
    runner = ("import runpy, sys\n"
              f"sys.argv = [{script!r}, '--out', {str(tmp_path)!r}, '--build-dir', "
              f"{str(build_dir)!r}, '--skip-workload']\n"
              "try:\n"
              f"    runpy.run_path({script!r}, run_name='__main__')\n"
              "finally:\n"
              "    print('tensorflow imported:', 'tensorflow' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", runner], cwd=REPO_DIR, capture_output=True,
                            text=True, timeout=600)
    summary = json.loads((tmp_path / "roi_align_gpu.json").read_text())
    assert result.returncode == 0, result.stdout + result.stderr
    assert summary["failures"] == []
    assert "tensorflow imported: False" in result.stdout
    cpu_rows = [row for row in summary["comparisons"] if row["what"].startswith("CPU harness")]
    # 8 random configurations + 2 hand-made cases, forward and backward each.
    assert len(cpu_rows) == 20 and all(row["ok"] for row in cpu_rows)
    assert {row["case"].split(" (")[0] for row in cpu_rows} >= {
        "random max aligned=False ratio=0", "random avg aligned=True ratio=2", "hand-made max"}
    if bench.load_torch()[0] is None:
        assert "no GPU comparison" in result.stdout
        assert len(summary["comparisons"]) == 20


def test_a_wrong_result_fails_the_run(build_dir, tmp_path, monkeypatch, capsys):
    real = bench.rh.reference_backward
    monkeypatch.setattr(bench.rh, "reference_backward",
                        lambda *a, **k: real(*a, **k) * np.float64(1.01))
    code = bench.main(["--out", str(tmp_path), "--build-dir", str(build_dir),
                       "--skip-workload"])
    summary = json.loads((tmp_path / "roi_align_gpu.json").read_text())
    assert code == 1
    assert "random avg aligned=True ratio=2: CPU harness bwd vs NumPy" in summary["failures"]
    assert not any("fwd" in failure for failure in summary["failures"])
    assert "OUT OF TOLERANCE" in capsys.readouterr().out


def test_workload_inputs_are_those_of_the_cpu_benchmark():
    features, boxes, box_indices, grads = bench.workload_inputs(size=16, channels=2,
                                                                num_boxes=5)
    rng = np.random.default_rng(0)      # benchmarks/roi_align.py's draws, in order
    np.testing.assert_array_equal(features, rng.normal(size=(2, 16, 16, 2)).astype(np.float32))
    y1x1 = rng.uniform(0, 64 * 0.8, size=(5, 2))
    np.testing.assert_array_equal(boxes[:, :2], y1x1.astype(np.float32))
    assert grads.shape == (5, 7, 7, 2) and set(box_indices) <= {0, 1}
