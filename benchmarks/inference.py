"""Inference latency, where it goes, and peak memory (a script, not a test).

    .venv/bin/python benchmarks/inference.py                       # R50-FPN, 1024 px, 1000 RoIs
    .venv/bin/python benchmarks/inference.py --profile --repeats 5 # + per-stage times
    .venv/bin/python benchmarks/inference.py --saved-model         # + exported SavedModel
    .venv/bin/python benchmarks/inference.py --ab-precision mixed_bfloat16  # float32 vs bf16
    .venv/bin/python benchmarks/inference.py --xla                 # XLA auto-clustering
    .venv/bin/python benchmarks/inference.py --batch-sizes 1 2 4 --precision float32 mixed_bfloat16

Model: ResNet-50-FPN, COCO head sizes (81 classes), IMAGE_MAX_DIM 1024
("square"), POST_NMS_ROIS_INFERENCE 1000, batch 1, random weights (the cost
does not depend on the weights except through the number of detections, so
DETECTION_MIN_CONFIDENCE is 0 by default: every image yields the full
DETECTION_MAX_INSTANCES = 100 detections, the worst case for the mask head
and the unmolding; ``--detections 10`` raises the threshold so that 10 remain,
closer to a trained model on a typical photo). The image is random noise of
``--image-size`` (default 768x1024, H x W, so the padding and the unmolding run
as for a real photo).

Reported: median / min wall time of ``MaskRCNN.detect([image])`` over
``--repeats`` calls after ``--warmup`` calls (tracing excluded); with
``--profile`` the time of each stage (see `stage_profile`); the peak resident
memory (``ru_maxrss``) after the detect() runs. ``--legacy`` puts back the code
before the speed work (per-mask `mrcnn.structures.masks.unmold_mask` loop; mask head on
every padded detection row) for before/after figures.

Precision and XLA: ``--precision`` sets ``Config.MIXED_PRECISION``
(float32, mixed_float16, mixed_bfloat16); ``--ab-precision P`` builds, in the
same process, a second model under policy ``P`` with the first model's
weights, alternates detect() calls of the two, and prints both timings and how
far P's detections are from the first model's on the same image (scores,
boxes, class ids, mask IoU). ``--xla`` sets ``Config.XLA`` and, on a machine
without a GPU, ``TF_XLA_FLAGS`` (`mrcnn.engine.xla.CPU_FLAGS`) before TensorFlow is
imported, without which TensorFlow compiles nothing on a CPU.

Batches: ``--batch-sizes 1 2 4`` (with one or more ``--precision``) times one model
per batch size and precision, same weights, each call a full batch of different
images, configurations alternated round by round, and prints images per second,
whether the batched detections equal one image at a time, and the CPU's bf16 / AMX
flags (`batch_throughput`).
"""

import argparse
import contextlib
import io
import os
import resource
import statistics
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)


from common import (PRECISIONS, add_precision_options, alternate,  # noqa: E402
                    enable_cpu_xla_flags)


def parse_args(argv=None):
    # "resolve": --batch-sizes mode redefines --precision to take several policies
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], conflict_handler="resolve")
    p.add_argument("--size", type=int, default=1024, help="IMAGE_MAX_DIM (square)")
    p.add_argument("--image-size", type=int, nargs=2, default=(768, 1024),
                   metavar=("H", "W"), help="size of the input image before molding")
    p.add_argument("--backbone", default="resnet50")
    p.add_argument("--rois", type=int, default=1000, help="POST_NMS_ROIS_INFERENCE")
    p.add_argument("--min-confidence", type=float, default=0.0)
    p.add_argument("--detections", type=int, default=0,
                   help="keep only this many detections (score threshold set from a first "
                        "run), as a trained model with a 0.7 threshold would; 0: all")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0: TF default)")
    p.add_argument("--roi-align", choices=("auto", "compiled", "tf"), default="auto",
                   help="MRCNN_ROI_ALIGN_IMPL")
    p.add_argument("--profile", action="store_true", help="time the graph's stages")
    p.add_argument("--ab", action="store_true",
                   help="A/B in one process: current code and --legacy, calls alternated "
                        "(fair under a changing load from other processes)")
    p.add_argument("--legacy", action="store_true",
                   help="the code before the speed work: masks pasted one by one with "
                        "mrcnn.structures.masks.unmold_mask, mask head on all DETECTION_MAX_INSTANCES rows")
    add_precision_options(p, "A/B in one process: the --precision model and a P model with "
                             "the same weights, calls alternated; prints the detections' "
                             "differences")
    p.add_argument("--no-fold", action="store_true",
                   help="Config.FOLD_BATCH_NORM = False (A/B: benchmarks/fold_batch_norm.py)")
    p.add_argument("--saved-model", action="store_true",
                   help="also export (roi_align='compiled' unless --roi-align tf) and time "
                        "the SavedModel's detect")
    p.add_argument("--precision", choices=PRECISIONS, nargs="+", default=["float32"],
                   help="Config.MIXED_PRECISION of the model (several only with --batch-sizes)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=None, metavar="B",
                   help="images/s of detect() at each IMAGES_PER_GPU B for each --precision, "
                        "alternated rounds of --repeats (see benchmarks/batch_throughput.py)")
    args = p.parse_args(argv)
    args.precisions = args.precision
    if len(args.precisions) > 1 and not args.batch_sizes:
        p.error("several --precision values need --batch-sizes")
    if args.batch_sizes and min(args.batch_sizes) < 1:
        p.error(f"--batch-sizes must be >= 1, got {args.batch_sizes}")
    args.precision = args.precisions[0]
    return args


def timed(fn, repeats, warmup):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def legacy_paste_masks(masks, boxes, image_hw, threshold=0.5):
    """The mask pasting `unmold_detections` did before `paste_masks`: one
    `unmold_mask` (scikit-image resize) per instance into an ``[H, W, N]`` array."""
    import numpy as np

    from mrcnn.structures.masks import unmold_mask

    full = np.zeros(tuple(image_hw) + (len(boxes),), dtype=bool)
    for i in range(len(boxes)):
        full[:, :, i] = unmold_mask(masks[i], boxes[i], tuple(image_hw))
    return full


def ab_compare(model, config_class, image, args):
    """Alternate detect() calls of the current code and of the legacy code."""
    import tensorflow as tf

    from mrcnn.modeling import assembly as graph

    from mrcnn.inference import molding as inference
    from mrcnn import model as modellib

    current_paste, current_call = inference.paste_masks, graph.RealDetectionBoxes.call
    graph.RealDetectionBoxes.call = lambda self, d: tf.stop_gradient(d[..., :4])
    with tempfile.TemporaryDirectory() as logs:
        legacy = modellib.MaskRCNN("inference", config_class(), logs)
    legacy.keras_model.set_weights(model.keras_model.get_weights())
    legacy.keras_model.get_layer("mrcnn_detection").detection_min_confidence = \
        model.keras_model.get_layer("mrcnn_detection").detection_min_confidence
    inference.paste_masks = legacy_paste_masks
    legacy.detect([image])                      # traced with the legacy graph
    graph.RealDetectionBoxes.call = current_call
    variants = {"current": (model, current_paste), "legacy": (legacy, legacy_paste_masks)}

    def call(m, paste):
        inference.paste_masks = paste
        return m.detect([image])

    try:
        times, _ = alternate({name: (lambda v=v: call(*v)) for name, v in variants.items()},
                             args.repeats)
    finally:
        inference.paste_masks = current_paste
    for name, spent in times.items():
        print(f"A/B {name:8s}: median {statistics.median(spent):.3f} s, min {min(spent):.3f} s")


def compare_detections(a, b):
    """How far detect() result ``b`` is from ``a`` (same image): a dict of numbers.

    Detections are matched by order (both sorted by score by the graph's
    NMS) when the counts are equal; otherwise only the counts are compared
    and the first min(counts) rows are compared as well. ``matched_*``: each
    detection of ``a`` paired with the same-class detection of ``b`` of highest
    box IoU (found when IoU >= 0.5), independent of the order."""
    import numpy as np

    na, nb = len(a["scores"]), len(b["scores"])
    n = min(na, nb)
    out = {"count_a": na, "count_b": nb}
    if n:
        out["max_abs_score"] = float(np.abs(a["scores"][:n] - b["scores"][:n]).max())
        out["max_abs_box_px"] = int(np.abs(a["rois"][:n].astype(np.int64)
                                           - b["rois"][:n].astype(np.int64)).max())
        out["class_agree"] = float((a["class_ids"][:n] == b["class_ids"][:n]).mean())
        ma, mb = a["masks"][..., :n], b["masks"][..., :n]
        inter = np.logical_and(ma, mb).sum(axis=(0, 1))
        union = np.logical_or(ma, mb).sum(axis=(0, 1))
        iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
        out["mask_iou_mean"], out["mask_iou_min"] = float(iou.mean()), float(iou.min())
        # scores of the same box set, order-free: the sorted score lists
        out["max_abs_sorted_score"] = float(np.abs(np.sort(a["scores"])[::-1][:n]
                                                   - np.sort(b["scores"])[::-1][:n]).max())
    if na and nb:
        # order-free matching: each detection of a -> the same-class detection
        # of b with the highest box IoU (IoU >= 0.5 counts as found)
        iou = box_iou(a["rois"], b["rois"])
        iou[a["class_ids"][:, None] != b["class_ids"][None, :]] = 0.0
        best = iou.argmax(axis=1)
        found = iou[np.arange(na), best] >= 0.5
        out["matched_iou50"] = f"{int(found.sum())}/{na}"
        if found.any():
            out["matched_max_abs_score"] = float(np.abs(
                a["scores"][found] - b["scores"][best[found]]).max())
            out["matched_max_abs_box_px"] = int(np.abs(
                a["rois"][found].astype(np.int64) - b["rois"][best[found]]).max())
    return out


def box_iou(a, b):
    """IoU matrix ``[len(a), len(b)]`` of pixel boxes (y1, x1, y2, x2), y2/x2 exclusive."""
    import numpy as np

    a, b = a.astype(np.float64), b.astype(np.float64)
    y1 = np.maximum(a[:, None, 0], b[None, :, 0])
    x1 = np.maximum(a[:, None, 1], b[None, :, 1])
    y2 = np.minimum(a[:, None, 2], b[None, :, 2])
    x2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(y2 - y1, 0, None) * np.clip(x2 - x1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def ab_precision(model, config_class, image, args):
    """Alternate detect() of ``model`` (``--precision``) and of a copy built under
    ``--ab-precision`` with the same weights; print timings and differences."""
    from mrcnn import model as modellib

    other_policy = args.ab_precision

    class OtherConfig(config_class):
        MIXED_PRECISION = None if other_policy == "float32" else other_policy

    with tempfile.TemporaryDirectory() as logs:
        other = modellib.MaskRCNN("inference", OtherConfig(), logs)
    other.keras_model.set_weights(model.keras_model.get_weights())
    other.keras_model.get_layer("mrcnn_detection").detection_min_confidence = \
        model.keras_model.get_layer("mrcnn_detection").detection_min_confidence
    start = time.perf_counter()
    other.detect([image])
    print(f"{other_policy}: first call (tracing included): "
          f"{time.perf_counter() - start:.2f} s")
    for _ in range(max(0, args.warmup - 1)):
        other.detect([image])
    variants = {args.precision: model, other_policy: other}
    if args.precision == other_policy:
        variants = {args.precision + " (A)": model, other_policy + " (B)": other}
    times, last = alternate({name: (lambda m=m: m.detect([image])) for name, m in
                             variants.items()}, args.repeats)
    results = {name: reply[0] for name, reply in last.items()}
    for name, spent in times.items():
        print(f"A/B {name:15s}: median {statistics.median(spent):.3f} s, "
              f"min {min(spent):.3f} s over {len(spent)} calls")
    names = list(variants)
    a, b = statistics.median(times[names[0]]), statistics.median(times[names[1]])
    print(f"A/B ratio {names[1]} / {names[0]}: median {b / a:.2f}, min "
          f"{min(times[names[1]]) / min(times[names[0]]):.2f}")
    diff = compare_detections(results[names[0]], results[names[1]])
    print(f"detections {names[1]} vs {names[0]} (same image, matched by order): "
          + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                      for k, v in diff.items()))
    diffs, values = tensor_differences(model, other, image, return_values=True)
    for name, (abs_max, rel_max, rel_mean) in diffs.items():
        print(f"tensor {name:17s} {names[1]} vs {names[0]}: max abs diff {abs_max:.4g} "
              f"({rel_max:.2%} of max |value|), mean abs diff {rel_mean:.2%} of mean |value|")
    print(rpn_margin_report(values["rpn_class"][0][0], values["rpn_class"][1][0]))
    return times, diff


def rpn_margin_report(probs_a, probs_b):
    """Where the largest RPN probability differences come from: the logit
    margin ``log(p_fg / p_bg)`` of every anchor (from ``[A, 2]`` probabilities,
    float64), its error between the two models, and the float32 foreground
    probability of the anchors whose probability moved most."""
    import numpy as np

    def margin(p):
        p = np.maximum(np.asarray(p, np.float64), 1e-300)
        return np.log(p[:, 1]) - np.log(p[:, 0])

    m_a, m_b = margin(probs_a), margin(probs_b)
    error = np.abs(m_a - m_b)
    moved = np.abs(np.asarray(probs_a[:, 1], np.float64) - probs_b[:, 1])
    worst = int(moved.argmax())
    big = moved > 0.1
    return (f"rpn logit margins: |margin| median {np.median(np.abs(m_a)):.3g}, max "
            f"{np.abs(m_a).max():.3g}; margin error max {error.max():.3g} "
            f"({error.max() / np.abs(m_a).max():.2%} of max |margin|), mean {error.mean():.3g}; "
            f"largest probability change {moved[worst]:.3g} at an anchor with p_fg "
            f"{probs_a[worst, 1]:.3f} (margin error {error[worst]:.3g}); "
            f"{int(big.sum())} of {moved.size} anchors moved > 0.1, median p_fg "
            f"{np.median(probs_a[big, 1]) if big.any() else float('nan'):.3f}")


TENSORS = (("fpn_p2", "fpn_p2"), ("fpn_p6", "fpn_p6"), ("rpn_class", "rpn_class"),
           ("rpn_bbox", "rpn_bbox"))


def tensor_differences(model_a, model_b, image, return_values=False):
    """Intermediate tensors that do not depend on the proposals, compared between
    two models of the same weights (eager run): name -> (max abs diff, max abs
    diff / max |a|, mean abs diff / mean |a|); with ``return_values`` also
    name -> (a, b) float64 arrays."""
    import numpy as np

    with contextlib.redirect_stdout(io.StringIO()):
        va = model_a.run_graph([image], list(TENSORS))
        vb = model_b.run_graph([image], list(TENSORS))
    out, values = {}, {}
    for name in va:
        a = np.asarray(va[name], np.float64)
        b = np.asarray(vb[name], np.float64)
        d = np.abs(a - b)
        out[name] = (float(d.max()), float(d.max() / max(np.abs(a).max(), 1e-30)),
                     float(d.mean() / max(np.abs(a).mean(), 1e-30)))
        values[name] = (a, b)
    return (out, values) if return_values else out


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


STAGES = (  # (stage, predicate on a top-level layer name), first match wins
    ("inputs", lambda n: n.startswith("input_")),
    ("FPN", lambda n: n.startswith("fpn_")),
    ("RPN heads (rpn_model on P2..P6)", lambda n: n.startswith("rpn")),
    ("proposals (top-k, NMS)", lambda n: n == "ROI"),
    ("RoIAlign 7x7 (classifier)", lambda n: n == "roi_align_classifier"),
    ("classifier head", lambda n: n.startswith(("mrcnn_class", "mrcnn_bbox", "pool_squeeze"))),
    ("detection (refine, NMS)", lambda n: n == "mrcnn_detection"),
    ("RoIAlign 14x14 (mask)", lambda n: n == "roi_align_mask"),
    ("mask head", lambda n: n.startswith("mrcnn_mask") or n == "detection_boxes"),
    ("backbone", lambda n: True),
)


def _stage_of(name):
    return next(stage for stage, match in STAGES if match(name))


def stage_profile(model, image, repeats):
    """Seconds of each stage: the graph run EAGERLY, every top-level layer timed.

    Eager execution on the CPU is synchronous, so wrapping each layer's
    ``call`` with a clock gives the time of its ops (plus a few microseconds of
    Python per op; eager convolutions also miss Grappler's graph fusions, so
    the sum is a little above the tf.function time). Stage = sum of its
    layers; the minimum over ``repeats`` runs is reported. Mold and unmold are
    the NumPy steps of `detect`.
    """
    import numpy as np
    import tensorflow as tf

    from mrcnn.inference import molding as inference

    km = model.keras_model
    config = model.config
    molded, meta, window = inference.mold_image_for_inference(image, config)
    anchors = model.get_anchors(molded.shape)
    feeds = [tf.constant(molded[None]), tf.constant(meta[None]),
             tf.constant(np.asarray(anchors, np.float32)[None])]
    spent = {}

    def clocked(layer):
        call = layer.call

        def wrapper(*a, **k):
            start = time.perf_counter()
            out = call(*a, **k)
            stage = _stage_of(layer.name)
            spent[stage] = spent.get(stage, 0.0) + time.perf_counter() - start
            return out
        return wrapper

    for layer in km.layers:
        layer.call = clocked(layer)
    best = {}
    try:
        for run in range(repeats + 1):          # run 0: warm-up
            spent.clear()
            start = time.perf_counter()
            outputs = km(feeds, training=False)
            total = time.perf_counter() - start
            if run:
                for stage, seconds in list(spent.items()) + [("eager total", total)]:
                    best[stage] = min(best.get(stage, np.inf), seconds)
    finally:
        for layer in km.layers:
            del layer.call
    detections, masks = outputs["detections"][0].numpy(), outputs["mrcnn_mask"][0].numpy()

    _, mold_min = timed(lambda: inference.mold_image_for_inference(image, config),
                        repeats, 1)
    _, unmold_min = timed(lambda: inference.unmold_detections(
        detections, masks, image.shape, molded.shape, window), repeats, 1)
    n = int((detections[:, 4] > 0).sum())
    order = ["backbone"] + [stage for stage, _ in STAGES[1:-1]]
    rows = [("mold (NumPy resize)", mold_min)]
    rows += [(stage, best[stage]) for stage in order if stage in best]
    rows += [("graph, eager total", best["eager total"]), (f"unmold ({n} masks)", unmold_min)]
    return rows


def main(argv=None):
    args = parse_args(argv)
    os.environ["MRCNN_ROI_ALIGN_IMPL"] = args.roi_align
    xla_flags = enable_cpu_xla_flags() if args.xla else None
    import numpy as np
    import tensorflow as tf
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)

    import keras
    tf.get_logger().setLevel("ERROR")
    from mrcnn import model as modellib, ops
    from mrcnn.inference import molding as inference
    if args.legacy:
        from mrcnn.modeling import assembly as graph
        inference.paste_masks = legacy_paste_masks
        graph.RealDetectionBoxes.call = lambda self, d: tf.stop_gradient(d[..., :4])
    from mrcnn.config import Config

    class BenchConfig(Config):
        NAME = "bench"
        NUM_CLASSES = 81
        BACKBONE = args.backbone
        GPU_COUNT = 1
        IMAGES_PER_GPU = 1
        IMAGE_MIN_DIM = min(800, args.size)
        IMAGE_MAX_DIM = args.size
        POST_NMS_ROIS_INFERENCE = args.rois
        DETECTION_MIN_CONFIDENCE = args.min_confidence
        MIXED_PRECISION = None if args.precision == "float32" else args.precision
        XLA = args.xla
        FOLD_BATCH_NORM = not args.no_fold

    print(f"load average at start: {os.getloadavg()}")
    print(f"precision: {args.precision}; XLA: {args.xla}"
          + (f" (TF_XLA_FLAGS={xla_flags!r})" if args.xla else ""))
    keras.utils.set_random_seed(args.seed)  # same random weights in every run
    with tempfile.TemporaryDirectory() as logs:
        model = modellib.MaskRCNN("inference", BenchConfig(), logs)
    image = np.random.default_rng(0).integers(0, 256, tuple(args.image_size) + (3,),
                                              dtype=np.uint8)
    print(f"RoIAlign implementation: {ops.implementation()}; threads: "
          f"{args.threads or 'default'}; TF {tf.__version__}")
    if args.detections:
        # Raise the score threshold until only the best ``--detections`` remain
        # (read when the graph is traced, i.e. by the first detect() below).
        scores = model.run_graph([image], [("detections", "mrcnn_detection")])["detections"]
        scores = np.sort(scores[0, :, 5])[::-1]
        layer = model.keras_model.get_layer("mrcnn_detection")
        layer.detection_min_confidence = float(scores[args.detections - 1])
    if args.batch_sizes:
        import batch_throughput
        batch_throughput.run(model, BenchConfig, args, compare_detections)
        print(f"load average at end: {os.getloadavg()}")
        return
    start = time.perf_counter()
    result = model.detect([image])[0]
    print(f"first call (tracing included): {time.perf_counter() - start:.2f} s, "
          f"{len(result['class_ids'])} detections")
    med, best = timed(lambda: model.detect([image]), args.repeats, args.warmup - 1)
    print(f"detect(), batch 1, {args.size}px, {args.rois} RoIs: median {med:.3f} s, "
          f"min {best:.3f} s over {args.repeats} runs")
    print(f"peak RSS after detect(): {peak_rss_mb():.0f} MB")
    print("predict functions (shape: tracing count): " + ", ".join(
        f"{shape}: {fn.experimental_get_tracing_count()}"
        for shape, fn in model._predict_functions.items()))
    if args.ab_precision:
        ab_precision(model, BenchConfig, image, args)
    if args.ab:
        ab_compare(model, BenchConfig, image, args)
    if args.profile:
        print("stage profile (s; eager, per layer, min over runs):")
        for name, seconds in stage_profile(model, image, args.repeats):
            print(f"  {name:28s} {seconds:7.3f}")
    if args.saved_model:
        from mrcnn.inference.export import export_saved_model, load_saved_model
        impl = "tf" if args.roi_align == "tf" else "compiled"
        with tempfile.TemporaryDirectory() as tmp:
            path = export_saved_model(model, os.path.join(tmp, "sm"), roi_align=impl)
            loaded = load_saved_model(path)
            tensor = tf.constant(image)
            med, best = timed(lambda: {k: v.numpy() for k, v in loaded.detect(tensor).items()},
                              args.repeats, args.warmup)
        print(f"SavedModel detect (roi_align={impl}, in-graph resize + unmold): "
              f"median {med:.3f} s, min {best:.3f} s")
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
