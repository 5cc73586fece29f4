"""Images per second of ``MaskRCNN.detect()`` at several batch sizes and precisions
(``benchmarks/inference.py --batch-sizes 1 2 4 --precision float32 mixed_bfloat16``).

One model per (precision, batch size), all with the same weights (``set_weights`` from
the first); a configuration of batch size ``b`` has ``IMAGES_PER_GPU = b`` and each of its
calls is ``detect(images[:b])``, one full batch of ``b`` different images of the same size
(one graph call). Timing is alternated: every round calls each configuration once, so the
load from other processes hits all alike (as ``--ab`` does). Before timing, each batched
configuration's detections are compared with its precision's batch-1 model run on the same
images one at a time (identical, or how far apart).
"""

import statistics
import tempfile
import time

__all__ = ["CPU_FLAGS", "cpu_flags", "bench_images", "build_models", "identity_report",
           "alternated_times", "throughput_rows", "run"]

CPU_FLAGS = ("avx512f", "avx512_bf16", "amx_tile", "amx_bf16")


def cpu_flags(cpuinfo_text=None, names=CPU_FLAGS):
    """``{flag: bool}`` for ``names``, read from the first ``flags`` line of
    ``/proc/cpuinfo`` (or of ``cpuinfo_text``); ``None`` values when there is none
    (not Linux)."""
    if cpuinfo_text is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as f:
                cpuinfo_text = f.read()
        except OSError:
            cpuinfo_text = ""
    for line in cpuinfo_text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            present = set(value.split())
            return {name: name in present for name in names}
    return {name: None for name in names}


def bench_images(image_size, count, seed=0):
    """``count`` different uint8 noise images ``[H, W, 3]`` (``image_size`` = (H, W));
    image 0 is the one the rest of `benchmarks/inference.py` times."""
    import numpy as np

    return [np.random.default_rng(seed + i).integers(0, 256, tuple(image_size) + (3,),
                                                     dtype=np.uint8)
            for i in range(count)]


def build_models(first, config_class, precisions, batch_sizes):
    """``{(precision, batch_size): MaskRCNN}``; ``first`` (a built model of
    ``config_class``, batch 1, precision ``precisions[0]``) is reused and gives every
    other model its weights and detection score threshold."""
    from mrcnn import model as modellib

    threshold = first.keras_model.get_layer("mrcnn_detection").detection_min_confidence
    weights = first.keras_model.get_weights()
    models = {}
    for precision in precisions:
        for b in batch_sizes:
            if (precision, b) == (precisions[0], 1):
                models[precision, b] = first
                continue

            class BatchConfig(config_class):
                IMAGES_PER_GPU = b
                MIXED_PRECISION = None if precision == "float32" else precision

            with tempfile.TemporaryDirectory() as logs:
                model = modellib.MaskRCNN("inference", BatchConfig(), logs)
            model.keras_model.set_weights(weights)
            model.keras_model.get_layer("mrcnn_detection").detection_min_confidence = threshold
            models[precision, b] = model
    return models


def identical(a, b):
    """Whether two `detect` dicts hold the same keys and exactly equal arrays."""
    import numpy as np

    return a.keys() == b.keys() and all(
        a[k].shape == b[k].shape and np.array_equal(a[k], b[k]) for k in a)


def identity_report(models, images, compare):
    """For each precision, each batched model's ``detect(images[:b])`` against the
    batch-1 model's ``detect([image])`` per image: ``{(precision, b): text}``
    ("identical" or ``compare``'s differences of the first image that differs)."""
    report = {}
    singles = {}
    for (precision, b), model in models.items():
        if b == 1:
            continue
        if precision not in singles:
            one = models[precision, 1]
            singles[precision] = [one.detect([image])[0] for image in images]
        batched = model.detect(images[:b])
        text = "identical"
        for i, (a, r) in enumerate(zip(singles[precision], batched)):
            if not identical(a, r):
                diff = compare(a, r)
                text = f"image {i} differs: " + ", ".join(
                    f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                    for k, v in diff.items())
                break
        report[precision, b] = text
    return report


def alternated_times(models, images, rounds, warmup):
    """Seconds of each ``detect(images[:b])`` call: ``{(precision, b): [s, ...]}``
    over ``rounds`` rounds, each calling every configuration once (after
    ``warmup`` untimed rounds); also ``{(precision, b): first-call s}``."""
    from common import alternate

    first = {}
    for key, model in models.items():
        start = time.perf_counter()
        model.detect(images[:key[1]])
        first[key] = time.perf_counter() - start
    calls = {key: (lambda m=model, b=key[1]: m.detect(images[:b])) for key, model in models.items()}
    times, _ = alternate(calls, rounds, warmup=max(0, warmup - 1))
    return times, first


def throughput_rows(times):
    """``[(precision, b, median s, min s, images/s at the median, images/s at the
    min, speed-up of images/s at the median over the precision's batch 1)]``."""
    rows = []
    for (precision, b), spent in times.items():
        med, best = statistics.median(spent), min(spent)
        base = times.get((precision, 1))
        speedup = (b / med) / (1 / statistics.median(base)) if base else float("nan")
        rows.append((precision, b, med, best, b / med, b / best, speedup))
    return rows


def run(first, config_class, args, compare):
    """The ``--batch-sizes`` mode of `benchmarks/inference.py`: build the models, check
    the batched detections against one image at a time, time alternated rounds and print
    a table. ``compare(a, b)``: detection differences (``compare_detections``)."""
    import resource

    flags = cpu_flags()
    print("CPU flags: " + ", ".join(f"{k} {'yes' if v else ('no' if v is False else '?')}"
                                    for k, v in flags.items()))
    precisions, batch_sizes = list(args.precisions), sorted(set(args.batch_sizes))
    if 1 not in batch_sizes:
        batch_sizes = [1] + batch_sizes     # the reference for identity and speed-up
    images = bench_images(args.image_size, max(batch_sizes))
    start = time.perf_counter()
    models = build_models(first, config_class, precisions, batch_sizes)
    print(f"built {len(models)} models in {time.perf_counter() - start:.1f} s")
    times, first_calls = alternated_times(models, images, args.repeats, args.warmup)
    for (precision, b), text in identity_report(models, images, compare).items():
        print(f"{precision} batch {b} vs batch 1 one image at a time: {text}")
    print(f"detect() images/s, {args.size}px, {args.rois} RoIs, images {args.image_size[0]}x"
          f"{args.image_size[1]}, {args.repeats} alternated rounds:")
    print("| precision | batch | first call s | median s / call | min s / call "
          "| img/s (median) | img/s (min) | vs batch 1 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for precision, b, med, best, ips, ips_best, speedup in throughput_rows(times):
        print(f"| {precision} | {b} | {first_calls[precision, b]:.1f} | {med:.3f} | "
              f"{best:.3f} | {ips:.3f} | {ips_best:.3f} | {speedup:.2f} |")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    return times
