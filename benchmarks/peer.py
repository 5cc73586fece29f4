"""Side-by-side benchmark against torchvision's Mask R-CNN (the peer; a script, not a test).

    .venv/bin/python benchmarks/peer.py --peer-python PEER_VENV/bin/python --rounds 3
    .venv/bin/python benchmarks/peer.py --groups inference --rounds 5 --threads 1
    .venv/bin/python benchmarks/peer.py --no-peer              # ours only (no torch needed)

Ours runs in this process (TensorFlow); the peer, torchvision's
``maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)``, runs in a subprocess
(`benchmarks/peer_torch.py`) started with ``--peer-python`` (a Python with torch and
torchvision, see ``benchmarks/requirements-peer.txt``; default: this interpreter if it
can import torchvision, else ours only). The subprocess answers one timed call per
request over a pipe, and the calls alternate (ours, peer, ours, ...), so that load
from other processes hits both alike. Both libraries get the same intra-op and
inter-op thread count (``--threads``, default all cores of this process's affinity).

Workloads (R50-FPN, ``--size`` x ``--size`` input, batch 1, random weights, seeded):

* ``inference``: ours ``MaskRCNN.detect([image])`` (the `common.r50_inference_config`
  model: 1000 proposals, 100 detection slots, DETECTION_MIN_CONFIDENCE 0) in float32
  and in ``MIXED_PRECISION="mixed_bfloat16"`` (same weights); theirs in eval mode,
  ``box_score_thresh=0``, 1000 post-NMS proposals, 100 detections per image, in float32
  and under ``torch.autocast("cpu", dtype=torch.bfloat16)``; both return full-size
  masks thresholded at 0.5. Input: one random uint8 image.
* ``training``: one SGD step, all layers trainable, ``--train-rois`` RoIs per image
  (ours TRAIN_ROIS_PER_IMAGE, theirs box_batch_size_per_image), 2000 post-NMS proposals,
  frozen batch norm on both sides, float32; and ours mixed_bfloat16 (same initial
  weights). Ours: the `training.make_config` ``r50-1024`` model with a 256-channel mask
  head and SGD (as torchvision); the step time is the Keras step
  (`training._step_timer`). Input for both: the same random image with
  ``--instances`` random ground-truth boxes and masks.

Printed per workload: best and median of ``--rounds`` alternated calls (after
``--warmup`` untimed rounds) for each side, and the ratios (best / best, median /
median) against the issue's targets; plus the CPU model and bf16 flags
(``/proc/cpuinfo``), thread counts, versions and the load average at start and end.
"""

import argparse
import gc
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _path in (ROOT, HERE):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from common import alternate  # noqa: E402  (the scripts' one alternated loop)

PEER_SCRIPT = os.path.join(HERE, "peer_torch.py")
CPU_FLAGS = ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_fp16")
GROUPS = ("inference", "training")

# (label, numerator, denominator, target ratio or None)
RATIOS = {
    "inference": (("ours / peer, float32", "ours float32", "peer float32", 0.7),
                  ("ours / peer, bfloat16", "ours bfloat16", "peer bfloat16", None),
                  ("ours bfloat16 / ours float32", "ours bfloat16", "ours float32", 0.3),
                  ("peer bfloat16 / peer float32", "peer bfloat16", "peer float32", None)),
    "training": (("ours / peer, float32", "ours float32", "peer float32", 0.7),
                 ("ours bfloat16 / ours float32", "ours bfloat16", "ours float32", 0.3)),
}

NOTES = (
    "detections: ours fills all 100 slots (DETECTION_MIN_CONFIDENCE 0, best class per "
    "RoI, then per-class NMS); theirs box_score_thresh=0 keeps up to 100 of every "
    "class's score per RoI (80 x 1000 candidates before per-class NMS)",
    "proposals: ours the top 6000 anchors over all levels before NMS; theirs the top "
    "1000 (test) / 2000 (training) per level",
    "batch norm: frozen on both sides (ours TRAIN_BN False; theirs FrozenBatchNorm2d, "
    "unless --peer-bn stock)",
    "training: ours samples RoIs 33 % positive with mini-mask (56x56) targets, theirs "
    "25 % positive with targets RoIAligned from the full masks; both SGD with momentum "
    "0.9, weight decay 1e-4, gradient norm clipped at 5",
)


# ----------------------------------------------------------------------------- pieces
def rpn_note(channels):
    """The RPN head line of the settings printed at the end."""
    if channels == 256:
        return "RPN head: a 3x3 conv with 256 channels on both sides (--rpn-channels 256)"
    layout = " (the released weights' layout)" if channels == 512 else ""
    return (f"RPN head: ours a 3x3 conv with {channels} channels{layout}, theirs 256 "
            f"channels (--rpn-channels 256 equalises it)")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--peer-python", default=None, metavar="PATH",
                   help="Python with torch and torchvision (default: this interpreter if it "
                        "can import torchvision)")
    p.add_argument("--no-peer", action="store_true", help="ours only")
    p.add_argument("--groups", default=",".join(GROUPS),
                   help="comma-separated workload groups: inference, training")
    p.add_argument("--rounds", type=int, default=5, help="timed alternated rounds")
    p.add_argument("--warmup", type=int, default=1, help="untimed first rounds (tracing)")
    p.add_argument("--threads", type=int, default=0,
                   help="intra-op and inter-op threads of both libraries (0: all cores)")
    p.add_argument("--size", type=int, default=1024, help="image side (square), pixels")
    p.add_argument("--train-rois", type=int, default=512, help="RoIs per image, training")
    p.add_argument("--instances", type=int, default=4,
                   help="random ground-truth instances in the training image")
    p.add_argument("--peer-bn", choices=("frozen", "stock"), default="frozen",
                   help="theirs: FrozenBatchNorm2d (as ours) or the trainable BatchNorm2d "
                        "torchvision builds without pretrained weights")
    p.add_argument("--peer-omp-wait", choices=("passive", "active", "unset"),
                   default="passive",
                   help="the peer's OMP_WAIT_POLICY (torch's OpenMP threads): passive "
                        "threads sleep at barriers instead of spinning; on a loaded machine "
                        "spinning threads made torch 10-60x slower")
    p.add_argument("--rpn-channels", type=int, default=512,
                   help="ours: RPN_HEAD_CHANNELS (512: the released weights' layout; 256: "
                        "torchvision's and the FPN paper's head)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.groups = tuple(g.strip() for g in args.groups.split(",") if g.strip())
    unknown = [g for g in args.groups if g not in GROUPS]
    if unknown or not args.groups:
        p.error(f"--groups: {unknown or args.groups!r}: expected some of {', '.join(GROUPS)}")
    for name in ("rounds", "size", "train_rois", "instances", "rpn_channels"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.warmup < 0 or args.threads < 0:
        p.error("--warmup and --threads must be >= 0")
    if args.threads == 0:
        args.threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
            else (os.cpu_count() or 1)
    return args


def cpu_info(text):
    """The CPU model, logical CPU count and which of `CPU_FLAGS` are present, from the
    text of ``/proc/cpuinfo`` (the first processor's ``flags`` line)."""
    model, flags, count = "unknown", None, 0
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "processor":
            count += 1
        elif key == "model name" and model == "unknown":
            model = value.strip()
        elif key == "flags" and flags is None:
            flags = set(value.split())
    flags = flags or set()
    return {"model": model, "logical_cpus": count,
            "flags": {flag: flag in flags for flag in CPU_FLAGS}}


def read_cpu_info(path="/proc/cpuinfo"):
    """`cpu_info` of ``path``; None when the file is absent (not Linux)."""
    try:
        with open(path) as f:
            return cpu_info(f.read())
    except OSError:
        return None


def wall_timed(fn, clock=time.perf_counter):
    """A callable that runs ``fn()`` and returns ``{"seconds": wall time, "result": ...}``."""
    def call():
        start = clock()
        result = fn()
        return {"seconds": clock() - start, "result": result}
    return call


def summarize(seconds):
    """``(best, median)`` of a list of seconds."""
    return min(seconds), statistics.median(seconds)


def ratio_rows(times, ratios):
    """Rows ``(label, best ratio, median ratio, target, verdict)`` for the ratios whose
    two sides were timed (see `RATIOS`); verdict "met" / "not met" / "" (no target)."""
    rows = []
    for label, num, den, target in ratios:
        if num not in times or den not in times:
            continue
        (nb, nm), (db, dm) = summarize(times[num]), summarize(times[den])
        best, median = nb / db, nm / dm
        verdict = "" if target is None else ("met" if best <= target else "not met")
        rows.append((label, f"{best:.2f}", f"{median:.2f}",
                     "" if target is None else f"<= {target}", verdict))
    return rows


def format_table(header, rows):
    """A Markdown table (columns padded to their widest cell; numbers right-aligned)."""
    cells = [tuple(str(c) for c in header)] + [tuple(str(c) for c in r) for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]

    def numeric(i):
        return all(_is_number(row[i]) for row in cells[1:]) and len(cells) > 1

    align = [numeric(i) for i in range(len(header))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(cells[0], widths)) + " |",
             "|" + "|".join(("-" * (w + 1) + ":") if a else ("-" * (w + 2))
                            for w, a in zip(widths, align)) + "|"]
    for row in cells[1:]:
        lines.append("| " + " | ".join(c.rjust(w) if a else c.ljust(w)
                                       for c, w, a in zip(row, widths, align)) + " |")
    return "\n".join(lines)


def _is_number(text):
    try:
        float(text)
        return True
    except ValueError:
        return False


def timing_rows(times, last):
    """Rows ``(side, best s, median s, calls, last reply's extra)`` for `format_table`."""
    rows = []
    for name, seconds in times.items():
        best, median = summarize(seconds)
        extra = {k: v for k, v in last.get(name, {}).items()
                 if k not in ("seconds", "result", "ok", "losses", "mask_shape")}
        rows.append((name, f"{best:.3f}", f"{median:.3f}", len(seconds),
                     ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                               for k, v in extra.items())))
    return rows


def peer_environment(environ, args):
    """The peer subprocess's environment: ``environ`` with ``OMP_NUM_THREADS`` /
    ``MKL_NUM_THREADS`` set to ``args.threads`` and ``OMP_WAIT_POLICY`` from
    ``--peer-omp-wait`` ("unset" leaves what ``environ`` has)."""
    env = dict(environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    if args.peer_omp_wait != "unset":
        env["OMP_WAIT_POLICY"] = args.peer_omp_wait.upper()
    return env


def find_peer_python(path):
    """The peer's interpreter: ``path`` (must exist), else this interpreter when it can
    import torchvision, else None."""
    if path:
        if not os.path.exists(path):
            raise FileNotFoundError(f"--peer-python {path!r}: no such file")
        return path
    return sys.executable if importlib.util.find_spec("torchvision") is not None else None


class PeerError(RuntimeError):
    """The peer answered ``ok: false`` or died."""


class PeerClient:
    """Talks to `peer_torch.serve` in a subprocess ``command`` (a list), one JSON line
    per request and per reply; the subprocess's stderr is this process's."""

    def __init__(self, command, env=None):
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, bufsize=1,
                                        env=env)

    def request(self, cmd, **fields):
        self.process.stdin.write(json.dumps({"cmd": cmd, **fields}) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            code = self.process.wait()
            raise PeerError(f"peer exited (status {code}) before answering {cmd!r}")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise PeerError(f"peer {cmd!r} failed: {reply.get('error')}\n"
                            f"{reply.get('traceback', '')}")
        return reply

    def caller(self, workload):
        """A callable for `alternate`: one timed call of ``workload`` in the peer."""
        return lambda: self.request("call", workload=workload)

    def close(self):
        if self.process.poll() is None:
            try:
                self.request("quit")
            except (PeerError, OSError, ValueError):
                pass
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# ----------------------------------------------------------------------------- inputs
def make_inputs(size, instances, seed):
    """The random inputs both sides get: ``image`` uint8 ``[size, size, 3]`` (inference),
    ``train_image`` (likewise), ``masks`` bool ``[size, size, N]`` (random ellipses),
    ``class_ids`` int32 ``[N]`` in 1..80 and ``boxes`` int32 ``[N, 4]``, the masks'
    pixel boxes (y1, x1, y2, x2), y2/x2 exclusive (`mrcnn.structures.boxes.extract_bboxes`)."""
    import numpy as np

    from mrcnn.structures.boxes import extract_bboxes

    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    train_image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:size, 0:size]
    masks = np.zeros((size, size, instances), dtype=bool)
    for i in range(instances):
        ry, rx = rng.uniform(0.05, 0.2, 2) * size
        cy, cx = rng.uniform(0.25, 0.75, 2) * size
        masks[:, :, i] = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
    class_ids = rng.integers(1, 81, instances).astype(np.int32)
    return {"image": image, "train_image": train_image, "masks": masks,
            "class_ids": class_ids, "boxes": extract_bboxes(masks).astype(np.int32)}


def one_image_dataset(image, masks, class_ids, num_classes):
    """A `mrcnn.data.dataset.Dataset` holding one in-memory image and its masks."""
    from mrcnn.data.dataset import Dataset

    class OneImage(Dataset):
        def load_image(self, image_id):
            return image

        def load_mask(self, image_id):
            return masks, class_ids

    dataset = OneImage()
    for class_id in range(1, num_classes):
        dataset.add_class("bench", class_id, f"class{class_id}")
    dataset.add_image("bench", image_id=0, path=None)
    dataset.prepare()
    return dataset


# ----------------------------------------------------------------------------- ours
def training_config(train_rois, precision, size=1024, rpn_channels=512):
    """`training.make_config` ``r50-1024`` with ``size`` px images, ``train_rois`` RoIs per
    image, the 256-channel mask head and SGD (the shapes recipe it derives from has 64
    channels and Adam), ``RPN_HEAD_CHANNELS`` ``rpn_channels``."""
    from training import make_config

    base = type(make_config("r50-1024"))

    class PeerTrainingConfig(base):
        IMAGE_MIN_DIM = min(800, size)
        IMAGE_MAX_DIM = size
        TRAIN_ROIS_PER_IMAGE = train_rois
        MASK_HEAD_CONV_CHANNELS = 256
        OPTIMIZER = "SGD"
        MIXED_PRECISION = None if precision == "float32" else precision
        RPN_HEAD_CHANNELS = rpn_channels

    return PeerTrainingConfig()


def ours_inference_calls(image, size, seed, rpn_channels=512):
    """``{"ours float32": ..., "ours bfloat16": ...}`` detect() callables (same weights)."""
    import keras

    from common import r50_inference_config
    from mrcnn import model as modellib

    keras.utils.set_random_seed(seed)
    models = {}
    for precision in ("float32", "mixed_bfloat16"):
        with tempfile.TemporaryDirectory() as logs:
            models[precision] = modellib.MaskRCNN(
                "inference", r50_inference_config(size=size, precision=precision,
                                                  rpn_channels=rpn_channels), logs)
    models["mixed_bfloat16"].keras_model.set_weights(models["float32"].keras_model.get_weights())

    def detect(model):
        def call():
            start = time.perf_counter()
            result = model.detect([image])[0]
            return {"seconds": time.perf_counter() - start,
                    "detections": int(len(result["class_ids"]))}
        return call

    return {"ours float32": detect(models["float32"]),
            "ours bfloat16": detect(models["mixed_bfloat16"])}


def ours_training_calls(inputs, train_rois, seed, size, rpn_channels=512):
    """``{"ours float32": ..., "ours bfloat16": ...}`` one-step callables (same initial
    weights, the same one-image batch); each returns the Keras step time and loss."""
    import keras

    from training import _step_model, _step_timer, _training_batch

    config = training_config(train_rois, "float32", size, rpn_channels)
    dataset = one_image_dataset(inputs["train_image"], inputs["masks"], inputs["class_ids"],
                                config.NUM_CLASSES)
    data = _training_batch(dataset, config)
    keras.utils.set_random_seed(seed)
    model32 = _step_model(config, "all")
    config16 = training_config(train_rois, "mixed_bfloat16", size, rpn_channels)
    model16 = _step_model(config16, "all", weights=model32.keras_model.get_weights())

    def step(model):
        timer = _step_timer()

        def call():
            start = time.perf_counter()
            model.keras_model.fit(data, epochs=1, steps_per_epoch=1, callbacks=[timer],
                                  shuffle=False, verbose=0)
            fit_seconds = time.perf_counter() - start
            loss = timer.last_logs.get("loss")
            return {"seconds": timer.times[-1], "fit_seconds": fit_seconds,
                    "loss": float(loss) if loss is not None else float("nan")}
        return call

    return config, {"ours float32": step(model32), "ours bfloat16": step(model16)}


def peer_settings(config, args, group):
    """What the peer builds (`peer_torch.build_model`), from our config."""
    settings = {"num_classes": config.NUM_CLASSES, "size": args.size,
                "rpn_pre_nms_test": 1000, "detections": config.DETECTION_MAX_INSTANCES,
                "train_rois": args.train_rois, "score_thresh": 0.0, "trainable_layers": 5,
                "frozen_bn": args.peer_bn == "frozen", "seed": args.seed}
    if group == "inference":
        settings["rpn_post_nms_test"] = config.POST_NMS_ROIS_INFERENCE
    else:
        settings.update(rpn_post_nms_test=1000,
                        rpn_post_nms_train=config.POST_NMS_ROIS_TRAINING,
                        learning_rate=config.LEARNING_RATE,
                        momentum=config.LEARNING_MOMENTUM, weight_decay=config.WEIGHT_DECAY,
                        clip_norm=config.GRADIENT_CLIP_NORM)
    return settings


# ----------------------------------------------------------------------------- main
def run_group(group, args, inputs, peer, input_path):
    """Set up both sides of ``group``, alternate the calls, print the tables."""
    import keras

    if group == "inference":
        from common import r50_inference_config
        config = r50_inference_config(size=args.size, rpn_channels=args.rpn_channels)
        calls = ours_inference_calls(inputs["image"], args.size, args.seed, args.rpn_channels)
        peer_workloads = {"peer float32": "inference_float32",
                          "peer bfloat16": "inference_bfloat16"}
        order = ("ours float32", "peer float32", "ours bfloat16", "peer bfloat16")
    else:
        config, calls = ours_training_calls(inputs, args.train_rois, args.seed, args.size,
                                            args.rpn_channels)
        peer_workloads = {"peer float32": "training_float32"}
        order = ("ours float32", "peer float32", "ours bfloat16")
    if peer is not None:
        reply = peer.request("setup", group=group, settings=peer_settings(config, args, group),
                             input_path=input_path)
        print(f"peer {group} model: {reply['parameters']:,} parameters, "
              f"{reply['trainable_parameters']:,} trainable")
        calls.update({name: peer.caller(w) for name, w in peer_workloads.items()})
    calls = {name: calls[name] for name in order if name in calls}
    start = time.perf_counter()
    times, last = alternate(calls, args.rounds, args.warmup)
    print(f"\n{group} ({args.size}x{args.size}, batch 1; {args.warmup} warm-up + "
          f"{args.rounds} timed rounds, {time.perf_counter() - start:.0f} s; "
          f"load average now {os.getloadavg()[0]:.2f}):")
    print(format_table(("side", "best s", "median s", "calls", "last call"),
                       timing_rows(times, last)))
    rows = ratio_rows(times, RATIOS[group])
    if rows:
        print(format_table(("ratio", "best", "median", "target", ""), rows))
    if peer is not None:
        peer.request("drop")
    calls.clear()
    keras.backend.clear_session()
    gc.collect()
    return times


def print_machine(args, peer_info):
    import keras
    import numpy as np
    import tensorflow as tf

    info = read_cpu_info()
    if info:
        print(f"CPU: {info['model']}, {info['logical_cpus']} logical CPUs; flags: "
              + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in info["flags"].items()))
    print(f"ours: TensorFlow {tf.__version__}, Keras {keras.__version__}, NumPy "
          f"{np.__version__}; threads intra-op "
          f"{tf.config.threading.get_intra_op_parallelism_threads()}, inter-op "
          f"{tf.config.threading.get_inter_op_parallelism_threads()}; "
          f"TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS', '(unset)')}")
    if peer_info:
        print(f"peer: torch {peer_info['torch']}, torchvision {peer_info['torchvision']}, "
              f"NumPy {peer_info['numpy']}, Python {peer_info['python']}; threads intra-op "
              f"{peer_info['intra_op_threads']}, inter-op {peer_info['inter_op_threads']}; "
              f"mkldnn {peer_info['mkldnn']}, CPU capability {peer_info['cpu_capability']}; "
              f"batch norm {args.peer_bn}; OMP_WAIT_POLICY "
              f"{peer_info.get('omp_wait_policy') or '(unset)'}")


def main(argv=None):
    args = parse_args(argv)
    print(f"load average at start: {os.getloadavg()}")
    peer_python = None if args.no_peer else find_peer_python(args.peer_python)
    if peer_python is None and not args.no_peer:
        print("peer: torchvision is not importable here and no --peer-python was given: "
              "timing ours only (see benchmarks/requirements-peer.txt)")
    peer, peer_info = None, None
    if peer_python is not None:
        env = peer_environment(os.environ, args)
        peer = PeerClient([peer_python, PEER_SCRIPT], env=env)
    try:
        if peer is not None:
            peer_info = peer.request("info", threads=args.threads)
        import tensorflow as tf
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
        tf.get_logger().setLevel("ERROR")
        import numpy as np
        print_machine(args, peer_info)
        inputs = make_inputs(args.size, args.instances, args.seed)
        with tempfile.TemporaryDirectory() as tmp:
            input_path = os.path.join(tmp, "inputs.npz")
            np.savez(input_path, image=inputs["image"], masks=inputs["masks"],
                     boxes=inputs["boxes"], class_ids=inputs["class_ids"])
            train_path = os.path.join(tmp, "train_inputs.npz")
            np.savez(train_path, image=inputs["train_image"], masks=inputs["masks"],
                     boxes=inputs["boxes"], class_ids=inputs["class_ids"])
            for group in args.groups:
                run_group(group, args, inputs, peer,
                          input_path if group == "inference" else train_path)
    finally:
        if peer is not None:
            peer.close()
    print("\nsettings of the two sides (where they differ, not equalised):")
    for note in (rpn_note(args.rpn_channels),) + NOTES:
        print(f"- {note}")
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
