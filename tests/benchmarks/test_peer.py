"""Tests for benchmarks/peer.py and benchmarks/peer_torch.py: argument parsing, the
alternation loop with fake callables, the CPU-flag reader on a sample /proc/cpuinfo, the
tables and ratios, the peer's JSON-line protocol (with a fake handler, in a real
subprocess) and the benchmark's random inputs; where torchvision is importable (by this
interpreter or by ``MRCNN_PEER_PYTHON``), the real peer's ``info`` reply."""

import importlib.util
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from benchmark_scripts import load_benchmark
from locations import REPO_DIR

BENCHMARKS = os.path.join(REPO_DIR, "benchmarks")


peer = load_benchmark("peer")
peer_torch = load_benchmark("peer_torch")

CPUINFO = """\
processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9B14
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512vl
bogomips\t: 5199.99

processor\t: 1
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9B14
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512vl
"""


def test_parse_args_defaults_and_checks():
    args = peer.parse_args([])
    assert args.groups == ("inference", "training")
    assert (args.rounds, args.warmup, args.size, args.train_rois) == (5, 1, 1024, 512)
    assert args.threads == len(os.sched_getaffinity(0))  # 0 -> all cores
    assert args.peer_python is None and args.peer_bn == "frozen" and not args.no_peer
    assert args.peer_omp_wait == "passive" and args.rpn_channels == 512
    assert "512 channels (the released weights' layout), theirs 256" in peer.rpn_note(512)
    args = peer.parse_args(["--groups", "training", "--threads", "1", "--rounds", "3",
                            "--peer-python", "/x/python", "--peer-bn", "stock",
                            "--rpn-channels", "256"])
    assert (args.groups, args.threads, args.rounds) == (("training",), 1, 3)
    assert (args.peer_python, args.peer_bn, args.rpn_channels) == ("/x/python", "stock", 256)
    assert "256 channels on both sides" in peer.rpn_note(args.rpn_channels)
    for bad in (["--groups", "inference,detect"], ["--rounds", "0"], ["--threads", "-1"],
                ["--peer-bn", "half"], ["--rpn-channels", "0"]):
        with pytest.raises(SystemExit):
            peer.parse_args(bad)


def test_alternate_calls_in_turn_and_drops_warmup_rounds():
    order = []
    replies = {"a": iter([9.0, 1.0, 2.0, 3.0]), "b": iter([8.0, 4.0, 5.0, 6.0])}

    def fake(name):
        def call():
            order.append(name)
            return {"seconds": next(replies[name]), "tag": name + str(len(order))}
        return call

    times, last = peer.alternate({"a": fake("a"), "b": fake("b")}, rounds=3, warmup=1)
    assert order == ["a", "b"] * 4
    assert times == {"a": [1.0, 2.0, 3.0], "b": [4.0, 5.0, 6.0]}  # warm-up 9, 8 dropped
    assert last == {"a": {"seconds": 3.0, "tag": "a7"}, "b": {"seconds": 6.0, "tag": "b8"}}


def test_wall_timed_uses_the_clock():
    ticks = iter([10.0, 12.5])
    call = peer.wall_timed(lambda: "done", clock=lambda: next(ticks))
    assert call() == {"seconds": 2.5, "result": "done"}


def test_cpu_info_reads_model_count_and_flags():
    info = peer.cpu_info(CPUINFO)
    assert info["model"] == "AMD EPYC 9B14"
    assert info["logical_cpus"] == 2
    assert info["flags"] == {"avx512f": True, "avx512_bf16": True, "amx_bf16": False,
                             "amx_tile": False, "avx512_fp16": False}
    assert peer.cpu_info("")["flags"]["avx512_bf16"] is False
    assert peer.read_cpu_info(os.path.join(REPO_DIR, "no-such-cpuinfo")) is None


def test_ratio_rows_and_table():
    times = {"ours float32": [2.0, 3.0, 2.5], "peer float32": [4.0, 5.0, 4.5],
             "ours bfloat16": [1.0, 1.2, 1.1]}
    rows = peer.ratio_rows(times, peer.RATIOS["training"])
    assert rows == [("ours / peer, float32", "0.50", "0.56", "<= 0.7", "met"),
                    ("ours bfloat16 / ours float32", "0.50", "0.44", "<= 0.3", "not met")]
    # a ratio whose sides were not both timed (no peer) is left out
    assert peer.ratio_rows({"ours float32": [1.0]}, peer.RATIOS["training"]) == []
    table = peer.format_table(("ratio", "best"), [("a", "0.50"), ("longer name", "12.25")])
    assert table.splitlines() == ["| ratio       | best  |",
                                  "|-------------|------:|",
                                  "| a           |  0.50 |",
                                  "| longer name | 12.25 |"]
    rows = peer.timing_rows({"ours float32": [2.0, 3.0, 2.5]},
                            {"ours float32": {"seconds": 2.5, "loss": 1.25, "detections": 100}})
    assert rows == [("ours float32", "2.000", "2.500", 3, "loss 1.25, detections 100")]


def test_serve_answers_each_line_and_reports_errors():
    class Fake:
        def info(self, threads):
            return {"threads": threads}

        def call(self, workload):
            raise RuntimeError(f"no {workload}")

    lines = [json.dumps({"cmd": "info", "threads": 3}), "",
             json.dumps({"cmd": "call", "workload": "x"}), json.dumps({"cmd": "nope"}),
             json.dumps({"cmd": "quit"}), json.dumps({"cmd": "info", "threads": 1})]
    out = io.StringIO()
    peer_torch.serve(Fake(), lines, out)
    replies = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(replies) == 4  # the line after quit is not read
    assert replies[0] == {"ok": True, "threads": 3}
    assert not replies[1]["ok"] and replies[1]["error"] == "RuntimeError: no x"
    assert not replies[2]["ok"] and "unknown command 'nope'" in replies[2]["error"]
    assert replies[3] == {"ok": True}


def test_client_talks_to_a_subprocess_server():
    # the fake handler prints to stdout (as a library might): main() keeps the replies
    # on their own stream, so they still parse
    script = ("import os, sys; sys.path.insert(0, %r); import peer_torch\n"
              "class H:\n"
              "    def call(self, workload):\n"
              "        print('noise on stdout', flush=True)\n"
              "        os.write(1, b'more noise\\n')\n"
              "        return {'seconds': 0.25, 'workload': workload}\n"
              "peer_torch.main(H())\n") % BENCHMARKS
    client = peer.PeerClient([sys.executable, "-c", script])
    try:
        times, last = peer.alternate({"peer": client.caller("training_float32")}, rounds=2)
        assert times == {"peer": [0.25, 0.25]}
        assert last["peer"] == {"ok": True, "seconds": 0.25, "workload": "training_float32"}
        with pytest.raises(peer.PeerError, match="unknown command 'setup'"):
            client.request("setup")
    finally:
        client.close()
    assert client.process.returncode == 0


def test_peer_environment_sets_threads_and_wait_policy():
    args = peer.parse_args(["--threads", "3"])
    env = peer.peer_environment({"PATH": "/bin", "OMP_WAIT_POLICY": "ACTIVE"}, args)
    assert env == {"PATH": "/bin", "OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": "3",
                   "OMP_WAIT_POLICY": "PASSIVE"}
    args = peer.parse_args(["--threads", "1", "--peer-omp-wait", "unset"])
    assert peer.peer_environment({"OMP_WAIT_POLICY": "ACTIVE"}, args)["OMP_WAIT_POLICY"] \
        == "ACTIVE"


def test_find_peer_python(tmp_path):
    with pytest.raises(FileNotFoundError, match="--peer-python"):
        peer.find_peer_python(str(tmp_path / "python"))
    assert peer.find_peer_python(sys.executable) == sys.executable
    has_torchvision = importlib.util.find_spec("torchvision") is not None
    assert peer.find_peer_python(None) == (sys.executable if has_torchvision else None)


def test_make_inputs_boxes_enclose_masks():
    inputs = peer.make_inputs(64, 3, seed=1)
    assert inputs["image"].shape == inputs["train_image"].shape == (64, 64, 3)
    assert inputs["image"].dtype == np.uint8
    assert inputs["masks"].shape == (64, 64, 3) and inputs["masks"].dtype == bool
    assert inputs["class_ids"].min() >= 1 and inputs["class_ids"].max() <= 80
    for i, (y1, x1, y2, x2) in enumerate(inputs["boxes"]):
        ys, xs = np.nonzero(inputs["masks"][:, :, i])
        assert (y1, x1, y2, x2) == (ys.min(), xs.min(), ys.max() + 1, xs.max() + 1)
    again = peer.make_inputs(64, 3, seed=1)
    assert np.array_equal(again["train_image"], inputs["train_image"])


def _peer_python():
    path = os.environ.get("MRCNN_PEER_PYTHON") or sys.executable
    probe = subprocess.run([path, "-c", "import torchvision"], capture_output=True)
    return path if probe.returncode == 0 else None


def test_real_peer_info_reply():
    path = _peer_python()
    if path is None:
        pytest.skip("torchvision is not importable by this interpreter and "
                    "MRCNN_PEER_PYTHON is unset (benchmarks/requirements-peer.txt)")
    client = peer.PeerClient([path, peer.PEER_SCRIPT])
    try:
        info = client.request("info", threads=1)
        assert info["intra_op_threads"] == 1
        assert info["torch"] and info["torchvision"]
        with pytest.raises(peer.PeerError, match="no 'setup'"):
            client.request("call", workload="inference_float32")
    finally:
        client.close()


def test_alternate_times_here_unless_the_call_reports_its_seconds():
    # The scripts' one alternated loop (benchmarks/common.py): a call returning
    # {"seconds": s} is timed where it ran; any other is timed with the clock.
    common = load_benchmark("common")
    ticks = iter(float(t) for t in range(100))
    order = []

    def local(name):
        def call():
            order.append(name)
            return name
        return call

    def remote():
        order.append("remote")
        return {"seconds": 0.25}

    times, last = common.alternate({"a": local("a"), "r": remote}, rounds=2, warmup=1,
                                   clock=lambda: next(ticks))
    assert order == ["a", "remote"] * 3
    assert times == {"a": [1.0, 1.0], "r": [0.25, 0.25]}     # 2 ticks per call: 1 s each
    assert last == {"a": "a", "r": {"seconds": 0.25}}
