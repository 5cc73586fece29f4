"""The paper's Table 2 ablations, trained and evaluated here (a script, not a test).

    .venv/bin/python benchmarks/ablations.py                           # both data sets, CPU sizes
    .venv/bin/python benchmarks/ablations.py --datasets shapes --rows roi_pool,roialign_avg
    .venv/bin/python benchmarks/ablations.py --full                    # GPU: larger sizes, longer
    .venv/bin/python benchmarks/ablations.py --steps 20 --epochs 1 --out logs/abl/quick.json

One row per setting: a base config plus one change (`ROWS`). The base: FPN,
RoIAlign (avg), sigmoid masks, one mask per class (the defaults, the paper's
choices), on ResNet-50 with ``--full`` and, at the CPU sizes, on the samples'
light backbone (`samples.shapes.backbone`: the demos' recipe, which learns in
minutes on 2 cores); there the backbone rows (R50-C4, R50-FPN, X50-FPN) have
the shorter schedule of `SIZES`' ``"backbones"`` entry. Rows whose change the
base already has are the base's one run, shown in every group where it appears.
Groups (`GROUPS`) follow the paper: RoI pooling (Table 2c), mask loss (2b),
class-specific or agnostic masks (Section 4.2) and backbone / head (2a).

Every row trains from scratch (no downloads) with the same seed (``--seed``:
`Config.SEED`: initial weights, input pipeline) and data, and the schedule of
its group: ``--epochs`` x ``--steps`` steps, Adam with a linear warm-up and a
cosine decay, all layers, batch norm trained. Data sets (`DATASETS`):

* ``shapes``: generated images (`samples.shapes.shapes.make_dataset`), train
  from seed `SHAPES_TRAIN_SEED`, held-out val from `SHAPES_VAL_SEED`;
* ``nuclei``: the Data Science Bowl images at ``../shared/data/nuclei``
  (``--nuclei-dir``) with the nucleus sample's split, augmentation and
  evaluation (whole val images); skipped, with a message, when absent.

Columns: COCO mask AP, AP50, AP75 (pycocotools via `mrcnn.evaluation.coco`, in
percent as in the paper), the training step time (median over the steps after the
first `WARMUP_STEPS_UNTIMED`, in ms: tracing excluded, the input pipeline
included) and the paper's Table 2 figures beside them where the paper has the
row (`PAPER`). A row that fails (e.g. a head this version does not have) gets
its error in its cells; the other rows still run.

Output: ``--out`` (a JSON of the settings and every run, written atomically)
and the Markdown table beside it (same name, ``.md``), also printed.
"""

import argparse
import dataclasses
import gc
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _path in (ROOT, HERE):
    if _path not in sys.path:
        sys.path.insert(0, _path)

DATASETS = ("shapes", "nuclei")
DEFAULT_NUCLEI_DIR = os.path.join(ROOT, "..", "shared", "data", "nuclei")
DEFAULT_OUT = os.path.join(ROOT, "logs", "ablations", "ablations.json")
SHAPES_TRAIN_SEED = 0
SHAPES_VAL_SEED = 1
WARMUP_STEPS_UNTIMED = 3  # first steps left out of the step time (tracing)


@dataclasses.dataclass(frozen=True)
class Row:
    """One setting: ``changes`` (Config name, value) pairs applied to the base."""

    name: str
    label: str
    changes: tuple = ()
    backbone_row: bool = False  # a row of the backbone group (its own CPU schedule)


ROWS = (
    Row("roi_pool", "RoIPool (quantised, max)", (("ROI_POOLING_METHOD", "roi_pool"),)),
    Row("roi_warp", "RoIWarp (quantised box, bilinear, avg)",
        (("ROI_POOLING_METHOD", "roi_warp"),)),
    Row("roialign_max", "RoIAlign, max", (("ROI_ALIGN_AGGREGATION", "max"),)),
    Row("roialign_avg", "RoIAlign, avg"),
    Row("sigmoid", "sigmoid (per-class binary)"),
    Row("softmax", "softmax (multinomial)", (("MASK_LOSS", "softmax"),)),
    Row("class_specific", "class-specific masks"),
    Row("class_agnostic", "class-agnostic masks", (("CLASS_AGNOSTIC_MASK", True),)),
    Row("r50_c4", "R50-C4", (("BACKBONE", "resnet50"), ("HEAD_ARCHITECTURE", "c4")), True),
    Row("r50_fpn", "R50-FPN", (("BACKBONE", "resnet50"),), True),
    Row("x50_fpn", "X50-FPN (ResNeXt-50 32x4d)", (("BACKBONE", "resnext50_32x4d"),), True),
)
ROW_NAMES = tuple(r.name for r in ROWS)
GROUPS = (
    ("RoI pooling (Table 2c)", ("roi_pool", "roi_warp", "roialign_max", "roialign_avg")),
    ("mask loss (Table 2b)", ("sigmoid", "softmax")),
    ("mask classes (Section 4.2)", ("class_specific", "class_agnostic")),
    ("backbone and head (Table 2a)", ("r50_c4", "r50_fpn", "x50_fpn")),
)

# The paper's mask AP / AP50 / AP75 (COCO minival, percent) for the rows it has;
# None where it gives no figure. Table 2b, 2c and Section 4.2 are on ResNet-50-C4.
PAPER = {
    "roi_pool": ((26.9, 48.8, 26.4), "2c, R50-C4"),
    "roi_warp": ((27.1, 48.9, 27.1), "2c, R50-C4, RoIWarp avg (max: 27.2 / 49.2 / 27.1)"),
    "roialign_max": ((30.2, 51.0, 31.8), "2c, R50-C4"),
    "roialign_avg": ((30.3, 51.2, 31.5), "2c, R50-C4"),
    "sigmoid": ((30.3, 51.2, 31.5), "2b, R50-C4"),
    "softmax": ((24.8, 44.1, 25.1), "2b, R50-C4"),
    "class_specific": ((30.3, 51.2, 31.5), "4.2 text (AP); the R50-C4 baseline of 2a"),
    "class_agnostic": ((29.7, None, None), "4.2 text, R50-C4 (AP only)"),
    "r50_c4": ((30.3, 51.2, 31.5), "2a"),
    "r50_fpn": ((33.6, 55.2, 35.3), "2a"),
    "x50_fpn": ((None, None, None), "no ResNeXt-50 row (2a: X101-FPN 36.7 / 59.5 / 38.9)"),
}

# The settings the base fixes for every row (the rows change one of them).
# The backbone is the size's (`SIZES`): ResNet-50 with --full, else the samples' light one.
BASE_SETTINGS = {"ROI_POOLING_METHOD": "roi_align", "ROI_ALIGN_AGGREGATION": "avg",
                 "MASK_LOSS": "sigmoid", "CLASS_AGNOSTIC_MASK": False, "TRAIN_BN": True,
                 "OPTIMIZER": "Adam", "LEARNING_RATE_SCHEDULE": "cosine",
                 "LEARNING_RATE_COSINE_MIN_FACTOR": 0.01, "WARMUP_FACTOR": 0.01}

# Per data set and size: training images (shapes only: generated), val images
# (shapes only), steps per epoch, epochs, and the Config settings.
SIZES = {
    # The shapes demo's recipe (`samples.shapes.shapes.ShapesConfig`: 128 px, batch
    # 4, light backbone, small heads), 4 x 100 steps; the backbone rows: batch 2,
    # 2 x 50 steps (a ResNet-50-C4 step costs ~5x a light one on a CPU).
    ("shapes", "small"): dict(
        train_images=500, val_images=50, steps=100, epochs=4, config=dict(
            IMAGE_MIN_DIM=128, IMAGE_MAX_DIM=128, IMAGES_PER_GPU=4, LEARNING_RATE=0.001, WARMUP_STEPS=50, DETECTION_MIN_CONFIDENCE=0.05),
        backbones=dict(steps=50, epochs=2, config=dict(IMAGES_PER_GPU=2, WARMUP_STEPS=20))),
    ("shapes", "full"): dict(
        train_images=2000, val_images=200, steps=500, epochs=20, config=dict(
            BACKBONE="resnet50", COMPUTE_BACKBONE_SHAPE=None,
            IMAGE_MIN_DIM=256, IMAGE_MAX_DIM=256, IMAGES_PER_GPU=8, LEARNING_RATE=0.001,
            WARMUP_STEPS=500, TOP_DOWN_PYRAMID_SIZE=256, FPN_CLASSIF_FC_LAYERS_SIZE=1024,
            MASK_HEAD_CONV_CHANNELS=256, PRE_NMS_LIMIT=2000, POST_NMS_ROIS_TRAINING=1000,
            POST_NMS_ROIS_INFERENCE=500, TRAIN_ROIS_PER_IMAGE=128,
            RPN_ANCHOR_SCALES=(16, 32, 64, 128, 256), DETECTION_MIN_CONFIDENCE=0.05)),
    # The nucleus demo's recipe (256 px crops, batch 2, light backbone), 1 x 150
    # steps; the backbone rows 25 steps (their cost, not their accuracy).
    ("nuclei", "small"): dict(
        train_images=None, val_images=None, steps=150, epochs=1, config=dict(
            IMAGE_MIN_DIM=256, IMAGE_MAX_DIM=256, IMAGES_PER_GPU=2, LEARNING_RATE=0.001, WARMUP_STEPS=30),
        backbones=dict(steps=25, epochs=1, config=dict(WARMUP_STEPS=5))),
    ("nuclei", "full"): dict(
        train_images=None, val_images=None, steps=500, epochs=20, config=dict(
            BACKBONE="resnet50", COMPUTE_BACKBONE_SHAPE=None,
            IMAGE_MIN_DIM=512, IMAGE_MAX_DIM=512, IMAGES_PER_GPU=4, LEARNING_RATE=0.001,
            WARMUP_STEPS=500, TOP_DOWN_PYRAMID_SIZE=256, FPN_CLASSIF_FC_LAYERS_SIZE=1024,
            MASK_HEAD_CONV_CHANNELS=256, PRE_NMS_LIMIT=6000, POST_NMS_ROIS_TRAINING=2000,
            POST_NMS_ROIS_INFERENCE=2000, TRAIN_ROIS_PER_IMAGE=512)),
}


# ----------------------------------------------------------------------------- rows, configs
def select_rows(names=None):
    """`Row` objects for ``names`` (a list, or a comma-separated string; None: all),
    in the table's order. Raises ValueError naming an unknown row."""
    if names is None:
        return list(ROWS)
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in names if n not in ROW_NAMES]
    if unknown:
        raise ValueError(f"--rows: unknown row(s) {', '.join(unknown)}; expected names from "
                         f"{', '.join(ROW_NAMES)}")
    return [r for r in ROWS if r.name in set(names)]


def effective_changes(row, settings=None):
    """The row's changes that the base of ``settings`` does not already have
    (``settings`` None: all of them)."""
    if settings is None:
        return tuple(row.changes)
    training, _ = _config_classes(settings["dataset"])
    base = {**{n: getattr(training, n, None) for n, _ in row.changes}, **settings["config"]}
    return tuple((n, v) for n, v in row.changes if base.get(n) != v)


def run_name(row, settings=None):
    """The run a row's numbers come from: ``"base"`` for the rows without an
    effective change (`effective_changes`), else the name of the first row with
    the same changes (rows with the same changes share a run)."""
    changes = sorted(effective_changes(row, settings))
    if not changes:
        return "base"
    same = [r for r in ROWS if sorted(effective_changes(r, settings)) == changes]
    return same[0].name if same else row.name


def row_settings(settings, row):
    """``settings`` for one row: at the CPU sizes a backbone row takes the size's
    ``"backbones"`` schedule (steps, epochs, config overrides)."""
    size = SIZES[(settings["dataset"], "full" if settings["full"] else "small")]
    if not row.backbone_row or "backbones" not in size or settings.get("fixed_schedule"):
        return settings
    extra = size["backbones"]
    steps, epochs = int(extra["steps"]), int(extra["epochs"])
    config = {**settings["config"], **extra["config"], "STEPS_PER_EPOCH": steps,
              "LEARNING_RATE_COSINE_EPOCHS": epochs}
    config.update(settings.get("overrides") or {})
    return {**settings, "steps": steps, "epochs": epochs, "config": config}


def settings_for(dataset, full=False, steps=None, epochs=None, seed=0, overrides=None,
                 train_images=None, val_images=None):
    """The run settings of one data set: a dict with ``train_images``,
    ``val_images`` (shapes: generated counts; nuclei: None = the whole split, else
    the first N of it), ``steps``, ``epochs``, ``seed`` and ``config`` (every
    Config setting the base sets: `BASE_SETTINGS`, the size's, SEED,
    STEPS_PER_EPOCH, the cosine length, then ``overrides``)."""
    if dataset not in DATASETS:
        raise ValueError(f"--datasets: unknown data set {dataset!r}; expected {DATASETS}")
    size = SIZES[(dataset, "full" if full else "small")]
    fixed = steps is not None or epochs is not None  # then every row's schedule
    steps = int(size["steps"] if steps is None else steps)
    epochs = int(size["epochs"] if epochs is None else epochs)
    if steps < 1 or epochs < 1:
        raise ValueError(f"--steps / --epochs: expected >= 1, got {steps} / {epochs}")
    config = {**BASE_SETTINGS, **size["config"], "SEED": int(seed), "STEPS_PER_EPOCH": steps,
              "VALIDATION_STEPS": 1, "LEARNING_RATE_COSINE_EPOCHS": epochs}
    config["WARMUP_STEPS"] = min(int(config.get("WARMUP_STEPS", 0)), max(0, steps * epochs // 4))
    config.update(overrides or {})
    counts = {"train_images": size["train_images"] if train_images is None else train_images,
              "val_images": size["val_images"] if val_images is None else val_images}
    return {"dataset": dataset, "full": bool(full), **counts, "steps": steps, "epochs": epochs,
            "seed": int(seed), "config": config, "overrides": dict(overrides or {}),
            "fixed_schedule": bool(fixed)}


def _config_classes(dataset):
    if dataset == "shapes":
        from samples.shapes.shapes import ShapesConfig, ShapesInferenceConfig
        return ShapesConfig, ShapesInferenceConfig
    from samples.nucleus.nucleus import NucleusConfig, NucleusInferenceConfig
    return NucleusConfig, NucleusInferenceConfig


def make_config(settings, row, inference=False):
    """The Config of ``row`` on ``settings`` (`settings_for`): the data set's
    sample config (or its inference config), the base settings, then the row's
    changes. Raises ValueError for a change naming a setting this version's
    Config does not have (it would be ignored) and for invalid values."""
    from mrcnn.config import Config

    for name, _value in row.changes:
        if not hasattr(Config, name):
            raise ValueError(f"row {row.name!r}: Config has no setting {name} (not in this "
                             f"version of mrcnn), so this row cannot run")
    training, inferring = _config_classes(settings["dataset"])
    base = inferring if inference else training
    attrs = dict(settings["config"])
    if inference:  # the sample's inference settings (batch 1, its resize mode) stay
        attrs = {k: v for k, v in attrs.items()
                 if k not in ("IMAGES_PER_GPU", "GPU_COUNT") and
                 not (settings["dataset"] == "nuclei" and k == "IMAGE_RESIZE_MODE")}
    attrs.update(dict(row.changes))
    name = f"Ablation_{settings['dataset']}_{row.name}" + ("_inference" if inference else "")
    return type(name, (base,), attrs)()


def config_settings(config):
    """``{NAME: value}`` of every upper-case setting of a Config instance (for comparing rows)."""
    return {n: getattr(config, n) for n in dir(config) if n.isupper()}


# ----------------------------------------------------------------------------- data
def load_data(settings, nuclei_dir=DEFAULT_NUCLEI_DIR):
    """``(train_set, val_set, augmentation)`` for ``settings``' data set.

    Raises:
        FileNotFoundError: the nuclei folder is absent (the message says what is missing).
    """
    dataset = settings["dataset"]
    if dataset == "shapes":
        from samples.shapes.shapes import make_dataset

        size = int(settings["config"]["IMAGE_MIN_DIM"])
        return (make_dataset(settings["train_images"], size, SHAPES_TRAIN_SEED),
                make_dataset(settings["val_images"], size, SHAPES_VAL_SEED), None)
    from samples.nucleus.nucleus import NucleusAugmentation, load_dataset, resolve_dataset_dir

    folder = resolve_dataset_dir(nuclei_dir)
    return (load_dataset(folder, "train", limit=settings["train_images"]),
            load_dataset(folder, "val", limit=settings["val_images"]),
            NucleusAugmentation(settings["seed"]))


def evaluate_masks(dataset, model, val_set):
    """COCO mask and box AP of ``model`` on ``val_set`` through the data set's
    sample (`samples.shapes.shapes.evaluate`, `samples.nucleus.nucleus.evaluate`):
    ``{"segm": {"AP", "AP50", "AP75", ...}, "bbox": {...}}`` (fractions)."""
    if dataset == "shapes":
        from samples.shapes.shapes import evaluate
    else:
        from samples.nucleus.nucleus import evaluate
    return evaluate(model, val_set)["coco"]


# ----------------------------------------------------------------------------- one run
def median_step_ms(times, untimed=WARMUP_STEPS_UNTIMED):
    """Median of the step times (s) after the first ``untimed`` ones, in ms;
    with too few steps the first one alone is left out; None with one step or none."""
    if len(times) <= 1:
        return None
    kept = times[untimed:] if len(times) > untimed else times[1:]
    return 1000.0 * statistics.median(kept)


def run_row(settings, row, data, work_dir, verbose=0):
    """Train ``row`` from scratch on ``data`` (`load_data`) and evaluate it.

    Returns a dict: ``segm`` / ``bbox`` (COCO stats, fractions), ``step_ms``
    (`median_step_ms`), ``first_step_s``, ``steps``, ``train_s`` (build and
    training), ``eval_s`` (inference model, detection, scoring), ``last_loss``.
    Raises whatever building, training or evaluating raises.
    """
    import keras

    from mrcnn import model as modellib
    from training import _step_timer  # benchmarks/training.py

    train_set, val_set, augmentation = data
    config = make_config(settings, row)
    inference_config = make_config(settings, row, inference=True)
    logs = tempfile.mkdtemp(prefix=f"{row.name}_", dir=work_dir)
    try:
        start = time.perf_counter()
        model = modellib.MaskRCNN("training", config, logs)
        timer = _step_timer()
        model.train(train_set, None, learning_rate=config.LEARNING_RATE,
                    epochs=settings["epochs"], layers="all", augmentation=augmentation,
                    custom_callbacks=[timer], verbose=verbose)
        checkpoint = model.checkpoint_path.format(epoch=model.epoch)
        train_s = time.perf_counter() - start
        del model
        keras.backend.clear_session()
        start = time.perf_counter()
        inference = modellib.MaskRCNN("inference", inference_config, logs)
        inference.load_weights(checkpoint, by_name=True)
        coco = evaluate_masks(settings["dataset"], inference, val_set)
        eval_s = time.perf_counter() - start
        del inference
    finally:
        shutil.rmtree(logs, ignore_errors=True)
        keras.backend.clear_session()
        gc.collect()
    loss = timer.last_logs.get("loss")
    return {"segm": coco["segm"], "bbox": coco.get("bbox"),
            "step_ms": median_step_ms(timer.times), "steps": len(timer.times),
            "first_step_s": timer.times[0] if timer.times else None,
            "train_s": train_s, "eval_s": eval_s,
            "last_loss": None if loss is None else float(loss)}


def _error_text(exc):
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}"[:300]


def run_dataset(settings, rows, work_dir, nuclei_dir=DEFAULT_NUCLEI_DIR, log=print,
                verbose=0):
    """Every run the ``rows`` need on one data set, each once.

    Returns ``{"settings", "skipped" (None or why), "runs": {run name: result
    or {"error": text}, each with "rows" (the rows it stands for), "changes",
    "wall_s"}, "rows": {row name: run name}}``."""
    out = {"settings": _jsonable(settings), "skipped": None, "runs": {}, "rows": {}}
    try:
        data = load_data(settings, nuclei_dir)
    except FileNotFoundError as exc:
        out["skipped"] = str(exc)
        log(f"[{settings['dataset']}] skipped: {exc}")
        return out
    for row in rows:
        key = run_name(row, settings)
        out["rows"][row.name] = key
        if key in out["runs"]:
            out["runs"][key]["rows"].append(row.name)
            continue
        changes = effective_changes(row, settings)
        own = row_settings(settings, row)
        log(f"[{settings['dataset']}] {key}: training {own['epochs']} x "
            f"{own['steps']} steps" + (f" ({', '.join(f'{n}={v!r}' for n, v in changes)})"
                                       if changes else " (the base)"))
        start = time.perf_counter()
        try:
            result = run_row(own, row, data, work_dir, verbose=verbose)
        except Exception as exc:  # noqa: BLE001 - a failed row is reported, the rest run
            result = {"error": _error_text(exc)}
        result.update(rows=[row.name], changes=[list(c) for c in changes],
                      schedule=f"{own['epochs']} x {own['steps']} steps, batch "
                               f"{own['config'].get('IMAGES_PER_GPU', '')}",
                      wall_s=time.perf_counter() - start)
        out["runs"][key] = result
        log(f"[{settings['dataset']}] {key}: " + _summary(result))
    return out


def _summary(result):
    if "error" in result:
        return f"error after {result['wall_s']:.0f} s: {result['error']}"
    segm = result["segm"]
    step = result["step_ms"]
    return (f"mask AP {100 * segm['AP']:.1f}, AP50 {100 * segm['AP50']:.1f}, AP75 "
            f"{100 * segm['AP75']:.1f}; step {'-' if step is None else f'{step:.0f}'} ms; "
            f"train {result['train_s']:.0f} s, eval {result['eval_s']:.0f} s, "
            f"wall {result['wall_s']:.0f} s")


def _jsonable(value):
    import numpy as np

    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


# ----------------------------------------------------------------------------- table
COLUMNS = ("group", "row", "setting", "mask AP", "AP50", "AP75", "ms / step",
           "paper AP", "paper AP50", "paper AP75")


def _pct(value):
    return "" if value is None or value < 0 else f"{100 * value:.1f}"


def _paper(value):
    return "" if value is None else f"{value:.1f}"


def table_rows(result, rows=None):
    """One dict per (group, row) of a data set's result (`run_dataset`), keys `COLUMNS`;
    a failed run's cells hold ``error: ...``, a row not run is left out."""
    wanted = set(result["rows"]) if rows is None else {r.name for r in rows}
    by_name = {r.name: r for r in ROWS}
    lines = []
    for group, names in GROUPS:
        for name in names:
            if name not in wanted or name not in result["rows"]:
                continue
            row, key = by_name[name], result["rows"][name]
            run = result["runs"][key]
            paper = PAPER[name][0]
            setting = ", ".join(f"{n}={v!r}" for n, v in run.get("changes", ())) or "base"
            cells = {"group": group, "row": row.label, "setting": setting,
                     "paper AP": _paper(paper[0]), "paper AP50": _paper(paper[1]),
                     "paper AP75": _paper(paper[2])}
            if "error" in run:
                cells.update({c: f"error: {run['error']}" if c == "mask AP" else "error"
                              for c in ("mask AP", "AP50", "AP75", "ms / step")})
            else:
                step = run["step_ms"]
                cells.update({"mask AP": _pct(run["segm"]["AP"]),
                              "AP50": _pct(run["segm"]["AP50"]),
                              "AP75": _pct(run["segm"]["AP75"]),
                              "ms / step": "" if step is None else f"{step:.0f}"})
            lines.append(cells)
    return lines


def format_markdown(results):
    """The Markdown tables of ``results`` (`run_table`): one per data set."""
    parts = []
    for dataset, result in results["datasets"].items():
        s = result["settings"]
        c = s["config"]
        parts.append(f"### {dataset}: {c['IMAGE_MIN_DIM']} px, batch {c['IMAGES_PER_GPU']}, "
                     f"{s['epochs']} x {s['steps']} steps, seed {s['seed']}")
        if result["skipped"]:
            parts.append(f"skipped: {result['skipped']}\n")
            continue
        parts.append("| " + " | ".join(COLUMNS) + " |")
        parts.append("|" + "|".join("---" if i < 3 else "---:" for i in range(len(COLUMNS)))
                     + "|")
        for cells in table_rows(result):
            parts.append("| " + " | ".join(str(cells[col]).replace("|", "/")
                                           for col in COLUMNS) + " |")
        walls = {key: run["wall_s"] for key, run in result["runs"].items()}
        each = ", ".join(f"{key} {run['wall_s']:.0f} s ({run.get('schedule', '')})"
                         for key, run in result["runs"].items())
        parts.append(f"\n{len(walls)} runs, {sum(walls.values()) / 60:.1f} min in all "
                     f"(per run: {each})\n")
    parts.append("Paper: Mask R-CNN (He et al. 2017), Table 2 and Section 4.2, COCO minival "
                 "mask AP; 2b, 2c and 4.2 on ResNet-50-C4 (here the base is an FPN model: "
                 "ResNet-50 with --full, the light backbone at the CPU sizes). "
                 "Paper sources per row: " + "; ".join(f"{n}: {PAPER[n][1]}" for n in ROW_NAMES))
    return "\n".join(parts) + "\n"


def _write_atomic(path, text):
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_results(results, out):
    """Write ``results`` to ``out`` (JSON) and the table to ``out`` with ``.md``
    (both atomically). Returns ``(json path, markdown path, markdown text)``."""
    markdown = format_markdown(results)
    md_path = os.path.splitext(out)[0] + ".md"
    _write_atomic(out, json.dumps(_jsonable(results), indent=1) + "\n")
    _write_atomic(md_path, markdown)
    return out, md_path, markdown


def run_table(datasets=DATASETS, rows=None, full=False, steps=None, epochs=None, seed=0,
              overrides=None, out=DEFAULT_OUT, nuclei_dir=DEFAULT_NUCLEI_DIR, log=print,
              verbose=0, train_images=None, val_images=None):
    """Train and evaluate ``rows`` (`select_rows`) on ``datasets``; the results
    are written after every data set (`write_results`) and returned:
    ``{"started", "load_average", "datasets": {name: run_dataset(...)}}``."""
    rows = select_rows(rows) if rows is None or isinstance(rows, str) else list(rows)
    results = {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "full": bool(full),
               "load_average_start": list(os.getloadavg()), "datasets": {}}
    work_dir = tempfile.mkdtemp(prefix="ablations_")
    try:
        for dataset in datasets:
            settings = settings_for(dataset, full, steps, epochs, seed, overrides,
                                    train_images, val_images)
            results["datasets"][dataset] = run_dataset(settings, rows, work_dir, nuclei_dir,
                                                       log=log, verbose=verbose)
            results["load_average_end"] = list(os.getloadavg())
            write_results(results, out)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    return results


# ----------------------------------------------------------------------------- command line
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--full", action="store_true",
                   help="GPU sizes: larger images, batches and heads, 20 x 500 steps")
    p.add_argument("--rows", default=None,
                   help=f"comma-separated rows (default: all): {', '.join(ROW_NAMES)}")
    p.add_argument("--datasets", default=",".join(DATASETS),
                   help="comma-separated: shapes, nuclei (default: both)")
    p.add_argument("--steps", type=int, default=None, help="steps per epoch")
    p.add_argument("--epochs", type=int, default=None, help="epochs")
    p.add_argument("--seed", type=int, default=0, help="Config.SEED of every row")
    p.add_argument("--train-images", type=int, default=None,
                   help="shapes: generated training images; nuclei: the first N of the split")
    p.add_argument("--val-images", type=int, default=None,
                   help="shapes: generated val images; nuclei: the first N of the split")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="override a base setting for every row and data set")
    p.add_argument("--nuclei-dir", default=DEFAULT_NUCLEI_DIR,
                   help="the nuclei folder (default: ../shared/data/nuclei of the clone)")
    p.add_argument("--out", default=DEFAULT_OUT,
                   help="results JSON; the Markdown table goes beside it (.md)")
    p.add_argument("--verbose", type=int, default=0, help="Keras fit verbosity")
    return p.parse_args(argv)


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = parse_args(argv)
    from mrcnn.config import Config
    from samples.common import parse_config_overrides

    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    try:
        rows = select_rows(args.rows)
        overrides = parse_config_overrides(args.set, Config)
        for dataset in datasets:
            settings_for(dataset, args.full, args.steps, args.epochs, args.seed, overrides)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}")
    start = time.time()
    print(f"load average at start: {os.getloadavg()}")
    results = run_table(datasets, rows, args.full, args.steps, args.epochs, args.seed,
                        overrides, args.out, args.nuclei_dir, verbose=args.verbose,
                        train_images=args.train_images, val_images=args.val_images)
    json_path, md_path, markdown = write_results(results, args.out)
    print("\n" + markdown)
    print(f"load average at end: {os.getloadavg()}")
    print(f"results: {json_path}, {md_path}; total {(time.time() - start) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
