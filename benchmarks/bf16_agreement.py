"""How far bfloat16 detections are from float32's, with the same trained weights.

Builds two inference models of a sample's config, float32 and
``MIXED_PRECISION = "mixed_bfloat16"``, loads the same weights file into both
(the variables stay float32 under either policy, so a float32 checkpoint loads
as it is), runs them alternately on the same held-out images and prints:

* the number of detections of each;
* the fraction of float32 detections paired with a bf16 detection of the same
  class at box IoU >= ``--iou`` (0.9), and the mask IoU of those pairs
  (`mrcnn.evaluation.metrics.match_detections`);
* the score differences of the pairs (mean / max absolute);
* the same for the float32 detections scoring at least ``--min-score`` (0.9)
  (their partners may score less), and the median score of the unpaired ones;
* mAP@0.5 (mean of the per-image `compute_ap`, mask IoU) and COCO mask / box AP
  (`evaluate_coco`) of each, and their differences;
* the time per image of each, measured alternately (the first model of each
  image alternates too) after one untimed call per image size and model (tracing).

Data: ``shapes`` evaluates on ``--images`` fresh images generated with seed
``--seed + 2`` (the shapes sample trains on ``--seed`` and validates on
``--seed + 1``); ``nucleus`` on the val split of the nucleus sample's folder.

Examples::

    python benchmarks/bf16_agreement.py --train-shapes --seed 0        # the demo's recipe
    python benchmarks/bf16_agreement.py --data shapes --weights PATH.h5
    python benchmarks/bf16_agreement.py --train-nucleus --epochs 8 --lr-drop-epochs 2
    python benchmarks/bf16_agreement.py --data nucleus --weights PATH.h5 --dataset DIR

``--train-shapes`` / ``--train-nucleus`` run the sample's own ``train`` command
(``samples/shapes/shapes.py train`` / ``samples/nucleus/nucleus.py train``) with
``--seed``, ``--logs`` and the training options given here, then use its last
checkpoint. ``--set NAME=VALUE`` reaches the sample's config both when training
and for the two inference models.
"""

import argparse
import os
import shlex
import statistics
import sys
import time

import numpy as np

ROOT_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
if ROOT_DIR not in sys.path:  # run from a clone without installing the package
    sys.path.insert(0, ROOT_DIR)

DATA = ("shapes", "nucleus")
PRECISIONS = ("float32", "mixed_bfloat16")
DEFAULT_LOGS_DIR = os.path.join(ROOT_DIR, "logs")


def _sample(data):
    if data == "shapes":
        from samples.shapes import shapes as module
    else:
        from samples.nucleus import nucleus as module
    return module


# ----------------------------------------------------------------------------- pure parts
def agreement(reference_results, other_results, iou_threshold=0.9, min_score=None):
    """How closely ``other_results`` reproduce ``reference_results`` (the same images).

    Args:
        reference_results, other_results: lists of ``detect()`` results, one per
            image, in the same image order (``rois`` pixel boxes ``(y1, x1, y2, x2)``,
            ``class_ids``, ``scores``, ``masks`` bool ``[H, W, N]``).
        iou_threshold: minimum box IoU of a same-class pair (`match_detections`).
        min_score: None, or count only the reference detections scoring at least
            this (and their pairs); the pairs are still formed among all detections,
            so a partner just below the threshold in the other run still counts.

    Returns:
        dict: ``reference_detections``, ``other_detections``, ``matched`` (pairs),
        ``matched_fraction`` (pairs / reference detections; NaN with none),
        ``other_matched_fraction`` (pairs / other detections), ``box_iou_mean``,
        ``mask_iou_mean``, ``mask_iou_min``, ``score_abs_mean``, ``score_abs_max``
        (over the pairs; NaN without pairs), ``unpaired_score_median`` (the
        median score of the reference detections left unpaired; NaN with none) and
        ``same_count_images`` (images with as many detections in both).
    """
    from mrcnn.evaluation.metrics import match_detections

    if len(reference_results) != len(other_results):
        raise ValueError(f"agreement: expected one result per image in both runs, got "
                         f"{len(reference_results)} and {len(other_results)}")
    pairs = [match_detections(a, b, iou_threshold)
             for a, b in zip(reference_results, other_results)]
    n_ref = sum(len(r["scores"]) for r in reference_results)
    if min_score is not None:
        n_ref = sum(int(np.sum(np.asarray(r["scores"]) >= min_score))
                    for r in reference_results)
        pairs = [{k: v[np.asarray(a["scores"])[p["reference_index"]] >= min_score]
                  for k, v in p.items()} for a, p in zip(reference_results, pairs)]
    n_other = sum(len(r["scores"]) for r in other_results)

    def joined(key):
        return np.concatenate([p[key] for p in pairs]) if pairs else np.zeros(0)

    unpaired = []
    for a, p in zip(reference_results, pairs):
        scores = np.asarray(a["scores"], dtype=np.float64)
        left = np.ones(len(scores), bool)
        left[p["reference_index"]] = False
        if min_score is not None:
            left &= scores >= min_score
        unpaired.append(scores[left])
    unpaired = np.concatenate(unpaired) if unpaired else np.zeros(0)
    box_iou, mask_iou = joined("box_iou"), joined("mask_iou")
    score = np.abs(joined("score_difference"))
    matched = len(box_iou)

    def stat(values, fn):
        return float(fn(values)) if len(values) else float("nan")

    return {"reference_detections": n_ref, "other_detections": n_other, "matched": matched,
            "matched_fraction": matched / n_ref if n_ref else float("nan"),
            "other_matched_fraction": matched / n_other if n_other else float("nan"),
            "box_iou_mean": stat(box_iou, np.mean), "mask_iou_mean": stat(mask_iou, np.mean),
            "mask_iou_min": stat(mask_iou, np.min), "score_abs_mean": stat(score, np.mean),
            "score_abs_max": stat(score, np.max),
            "unpaired_score_median": stat(unpaired, np.median),
            "same_count_images": sum(len(a["scores"]) == len(b["scores"])
                                     for a, b in zip(reference_results, other_results))}


def detection_metrics(dataset, image_ids, results, max_dets=None):
    """mAP@0.5 (mean over images of `compute_ap` at mask IoU 0.5) and COCO mask and
    box AP / AP50 / AP75 (`evaluate_coco`, ``max_dets`` detections per image at most)."""
    from mrcnn.evaluation.coco import evaluate_coco
    from mrcnn.evaluation.metrics import compute_ap
    from mrcnn.structures.boxes import extract_bboxes

    aps = []
    for image_id, r in zip(image_ids, results):
        gt_masks, gt_class_ids = dataset.load_mask(image_id)
        aps.append(compute_ap(extract_bboxes(gt_masks), gt_class_ids, gt_masks, r["rois"],
                              r["class_ids"], r["scores"], r["masks"], iou_threshold=0.5)[0])
    coco = evaluate_coco(dataset, results, image_ids, eval_types=("segm", "bbox"),
                         verbose=False, max_dets=max_dets)
    out = {"mAP50": float(np.mean(aps)) if aps else float("nan")}
    for kind, stats in coco.items():
        for key in ("AP", "AP50", "AP75"):
            out[f"{kind}_{key}"] = float(stats[key])
    return out


# ----------------------------------------------------------------------------- models
def with_precision(config, policy):
    """A new instance of ``config``'s class with ``MIXED_PRECISION = policy``
    (None for float32), validated as any Config."""
    value = None if policy == "float32" else policy
    cls = type(config)
    return type(cls.__name__, (cls,), {"MIXED_PRECISION": value})()


def build_models(config, weights, logs):
    """``{"float32": model, "mixed_bfloat16": model}``: inference `MaskRCNN`s of
    ``config`` under each policy, each loading ``weights`` (an HDF5 file) by name."""
    from mrcnn import model as modellib

    models = {}
    for policy in PRECISIONS:
        model = modellib.MaskRCNN("inference", with_precision(config, policy), logs)
        model.load_weights(weights, by_name=True)
        models[policy] = model
    return models


def detect_alternated(models, dataset, image_ids):
    """Run every model of ``models`` (name -> `MaskRCNN`) on each image, one image
    at a time; the model that goes first alternates from image to image.

    Before the timed calls each model detects once, untimed, on one image of each
    size (``detect`` traces its graph once per input shape).

    Returns:
        results: name -> list of ``detect()`` results (image order);
        seconds: name -> list of per-image wall times;
        tracing: name -> seconds of the untimed first calls, summed.
    """
    names = list(models)
    tracing = {name: 0.0 for name in names}
    seen = set()
    for image_id in image_ids:
        image = dataset.load_image(image_id)
        if image.shape in seen:
            continue
        seen.add(image.shape)
        for name in names:
            start = time.perf_counter()
            models[name].detect([image], verbose=0)
            tracing[name] += time.perf_counter() - start
    results = {name: [] for name in names}
    seconds = {name: [] for name in names}
    for k, image_id in enumerate(image_ids):
        image = dataset.load_image(image_id)
        for name in (names if k % 2 == 0 else names[::-1]):
            start = time.perf_counter()
            result = models[name].detect([image], verbose=0)[0]
            seconds[name].append(time.perf_counter() - start)
            results[name].append(result)
    return results, seconds, tracing


def compare(models, dataset, image_ids, iou_threshold=0.9, max_dets=None, min_score=0.9):
    """Detect with both models (`detect_alternated`) and measure: a dict with
    ``agreement`` (bf16 against float32, `agreement`), ``confident`` (the same
    for the float32 detections scoring at least ``min_score``), ``metrics`` (name ->
    `detection_metrics`), ``seconds`` and ``tracing`` (name -> per-image times /
    their sum) and the ``results``."""
    results, seconds, tracing = detect_alternated(models, dataset, image_ids)
    reference, other = PRECISIONS
    return {"agreement": agreement(results[reference], results[other], iou_threshold),
            "confident": agreement(results[reference], results[other], iou_threshold,
                                   min_score),
            "min_score": min_score,
            "metrics": {name: detection_metrics(dataset, image_ids, results[name], max_dets)
                        for name in models},
            "seconds": seconds, "tracing": tracing, "results": results,
            "iou_threshold": iou_threshold, "images": len(image_ids)}


# ----------------------------------------------------------------------------- command line
def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="bfloat16 against float32 detections of one trained Mask R-CNN.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--weights", help="an HDF5 weights file (with --data)")
    source.add_argument("--train-shapes", action="store_true",
                        help="train the shapes sample first (its train command, --seed)")
    source.add_argument("--train-nucleus", action="store_true",
                        help="train the nucleus sample first on its train split")
    parser.add_argument("--data", choices=DATA, default=None,
                        help="the sample whose config and held-out images are used "
                             "(implied by --train-shapes / --train-nucleus)")
    parser.add_argument("--seed", type=int, default=0,
                        help="training seed; shapes are evaluated on images of seed + 2")
    parser.add_argument("--images", type=int, default=100,
                        help="shapes: held-out images (nucleus: the whole val split)")
    parser.add_argument("--dataset", default=None,
                        help="nucleus: the images folder (default: the sample's)")
    parser.add_argument("--iou", type=float, default=0.9,
                        help="box IoU of a float32 / bf16 pair (default %(default)s)")
    parser.add_argument("--min-score", type=float, default=0.9,
                        help="also report the float32 detections scoring at least this")
    parser.add_argument("--logs", default=DEFAULT_LOGS_DIR,
                        help="logs and checkpoints directory (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=None, help="training: the sample's --epochs")
    parser.add_argument("--lr-drop-epochs", type=int, default=None,
                        help="training: the sample's --lr-drop-epochs")
    parser.add_argument("--steps-per-epoch", type=int, default=None,
                        help="training: the sample's --steps-per-epoch")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a sample Config setting, for training and both inference models")
    args = parser.parse_args(argv)
    implied = "shapes" if args.train_shapes else "nucleus" if args.train_nucleus else None
    if args.weights is not None and args.data is None:
        parser.error("--weights needs --data shapes or --data nucleus")
    if implied and args.data not in (None, implied):
        parser.error(f"--train-{implied} trains the {implied} sample; --data {args.data} "
                     f"contradicts it")
    args.data = args.data or implied
    if args.weights is not None and not os.path.isfile(args.weights):
        parser.error(f"--weights {args.weights!r}: no such file")
    if not 0 < args.iou <= 1:
        parser.error(f"--iou: expected a value in (0, 1], got {args.iou}")
    return args


def sample_argv(args, command):
    """The sample's command line for ``command`` with this script's options."""
    argv = [command, "--seed", str(args.seed), "--logs", args.logs]
    if args.data == "nucleus" and args.dataset:
        argv += ["--dataset", args.dataset]
    for option in ("epochs", "lr_drop_epochs", "steps_per_epoch"):
        value = getattr(args, option)
        if value is not None and command == "train":
            argv += ["--" + option.replace("_", "-"), str(value)]
    for item in args.set:
        argv += ["--set", item]
    return argv


def train_sample(args):
    """Run the sample's ``train`` command; returns the seconds it took."""
    sample = _sample(args.data)
    argv = sample_argv(args, "train")
    print(f"Training: {args.data} {shlex.join(argv)}")
    start = time.time()
    code = sample.main(argv)
    if code:
        raise SystemExit(f"training the {args.data} sample failed (exit code {code})")
    return time.time() - start


def held_out(args, config):
    """The held-out data set and its image ids."""
    sample = _sample(args.data)
    if args.data == "shapes":
        dataset = sample.make_dataset(args.images, config.IMAGE_SHAPE[0], args.seed + 2)
    else:
        dataset = sample.load_dataset(args.dataset or sample.DEFAULT_DATASET, "val")
    return dataset, list(dataset.image_ids)


def print_report(report, weights):
    a = report["agreement"]
    f32, bf16 = PRECISIONS
    print(f"\n==== bfloat16 against float32: {report['images']} images, weights {weights} ====")
    print(f"detections: float32 {a['reference_detections']}, bf16 {a['other_detections']} "
          f"(same count on {a['same_count_images']} of {report['images']} images)")
    print(f"float32 detections paired with a same-class bf16 detection at box IoU >= "
          f"{report['iou_threshold']}: {a['matched']} / {a['reference_detections']} = "
          f"{a['matched_fraction']:.4f} (bf16 detections paired: "
          f"{a['other_matched_fraction']:.4f})")
    print(f"pairs: box IoU mean {a['box_iou_mean']:.4f}; mask IoU mean {a['mask_iou_mean']:.4f}, "
          f"min {a['mask_iou_min']:.4f}; |score difference| mean {a['score_abs_mean']:.2e}, "
          f"max {a['score_abs_max']:.2e}")
    c = report["confident"]
    print(f"float32 detections scoring >= {report['min_score']}: {c['matched']} / "
          f"{c['reference_detections']} = {c['matched_fraction']:.4f} paired; mask IoU mean "
          f"{c['mask_iou_mean']:.4f}, min {c['mask_iou_min']:.4f}; |score difference| mean "
          f"{c['score_abs_mean']:.2e}, max {c['score_abs_max']:.2e}")
    print(f"unpaired float32 detections: median score {a['unpaired_score_median']:.3f}")
    m32, m16 = report["metrics"][f32], report["metrics"][bf16]
    print(f"{'metric':10s} {'float32':>8s} {'bf16':>8s} {'bf16-f32':>9s}")
    for key in m32:
        print(f"{key:10s} {m32[key]:8.4f} {m16[key]:8.4f} {m16[key] - m32[key]:+9.4f}")
    s32, s16 = report["seconds"][f32], report["seconds"][bf16]
    print(f"time per image (alternated): float32 median {statistics.median(s32):.3f} s, "
          f"mean {statistics.mean(s32):.3f} s; bf16 median {statistics.median(s16):.3f} s, "
          f"mean {statistics.mean(s16):.3f} s; bf16 / float32 (means) "
          f"{statistics.mean(s16) / statistics.mean(s32):.2f}")
    print(f"untimed first calls (tracing, per image size): float32 "
          f"{report['tracing'][f32]:.1f} s, bf16 {report['tracing'][bf16]:.1f} s")


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    args = parse_args(argv)
    print(f"command: {shlex.join([sys.executable, os.path.relpath(__file__)] + sys.argv[1:])}")
    print(f"seed: {args.seed}; load average at start: {os.getloadavg()}")
    sample = _sample(args.data)
    if args.train_shapes or args.train_nucleus:
        seconds = train_sample(args)
        print(f"Training took {seconds:.0f} s")
    import keras

    from mrcnn import model as modellib

    keras.utils.set_random_seed(args.seed)
    parsed = sample.build_parser().parse_args(sample_argv(args, "evaluate"))
    config = sample.make_config(parsed, inference=True)
    weights = args.weights
    if weights is None:
        weights = modellib.MaskRCNN("inference", config, args.logs).find_last()
    models = build_models(config, weights, args.logs)
    dataset, image_ids = held_out(args, config)
    max_dets = (1, 10, max(100, int(config.DETECTION_MAX_INSTANCES)))
    report = compare(models, dataset, image_ids, args.iou, max_dets, args.min_score)
    print_report(report, weights)
    print(f"load average at end: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
