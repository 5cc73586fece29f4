"""Evaluation while training: COCO box / mask AP and mAP@0.5 every N epochs, the best
checkpoint, early stopping.

Switched on with ``MaskRCNN.train(..., evaluation=...)``: an `EvaluationConfig`, a
dict of its fields, or None (off, the default)::

    model.train(train_set, val_set, learning_rate=1e-3, epochs=14, layers="all",
                evaluation={"every": 2, "images": 20, "best_metric": "segm_AP",
                            "early_stopping_patience": 3})

After every ``every``-th epoch (1-based epoch numbers divisible by ``every``)
and after the last epoch of the ``train()`` call, `EvaluationCallback`:

1. copies the training weights into an inference-mode `MaskRCNN` built once
   (same config, one replica; or ``inference_config``) and kept on the
   training model for later ``train()`` calls;
2. detects on the first ``images`` images of the data set (``dataset``, else
   ``train()``'s ``val_dataset``) and scores them with
   `mrcnn.evaluation.coco.evaluate_model`: pycocotools' box and mask AP, AP50,
   AP75, and the mean per-image AP at IoU 0.5 (`mrcnn.evaluation.metrics.compute_ap`);
   With a keypoint head (``NUM_KEYPOINTS`` > 0) also COCO keypoint AP by OKS
   (`mrcnn.evaluation.keypoints.evaluate_keypoints`, ``KEYPOINT_OKS_SIGMAS``)
   of the same detections: `KEYPOINT_METRICS`;
3. adds them to the epoch's logs as ``val_<name>`` for each name in `METRICS`
   (``val_segm_AP``, ``val_bbox_AP``, ``val_mAP50``, ...; with keypoints
   ``val_keypoints_AP``, ``val_keypoints_AP50``, ``val_keypoints_AP75``): the Keras History
   holds one entry per evaluation (``history.history["evaluated_epochs"]``
   lists their epochs), and TensorBoard's callback writes them to the run's
   ``validation`` log as ``epoch_segm_AP`` etc. A value is -1 where pycocotools
   finds it undefined (no ground truth);
4. when ``best_metric`` improved (by more than ``min_delta``; -1 never is),
   writes ``mask_rcnn_<name>_best.h5`` into the run's log directory through
   `mrcnn.engine.checkpoints.save_checkpoint` (atomic; weights and RoI pooling
   record, no optimizer state) and ``mask_rcnn_<name>_best.json`` beside it
   (metric, value, epoch, all metrics). The JSON file carries the best value
   across ``train()`` calls and resumed runs, so a later, worse evaluation
   never replaces the file. `MaskRCNN.find_last` ignores ``_best.h5``
   (resuming continues from the newest epoch, not the best one); load it
   for inference like any checkpoint;
5. with ``early_stopping_patience = P``: stops training
   (``model.stop_training``) after P evaluations in a row without
   improvement within one ``train()`` call. `MaskRCNN.epoch` is then the last
   completed epoch, so a later ``train()`` call (e.g. a learning-rate drop)
   continues from there;
6. prints one line with the metrics and the seconds the evaluation took.

It runs between epochs, in Python, on another Keras model: the training step
is not traced again (tested). Training itself is unchanged: ``train()`` builds
the inference model before it seeds the run (``Config.SEED``), so a seeded run
draws the same random numbers, and logs the same losses, with and without
evaluation (tested). An epoch whose loss is not finite is not evaluated.

Distributed training: only the chief (`mrcnn.engine.distribute.is_chief`)
evaluates and writes files. Under ``MultiWorkerMirroredStrategy`` every worker
then receives the chief's metrics and its decision to stop (one small
all-reduce at each evaluation), so all workers log the same values and stop at
the same epoch. Under a single-machine strategy (``MirroredStrategy``) the
training weights are read from their mirrored variables.

Cost: one ``detect`` per ``BATCH_SIZE`` images plus pycocotools; on the shapes
sample, see samples/shapes/README.md for the measured seconds per evaluation.
"""

import copy
import dataclasses
import json
import logging
import math
import os
import time

import keras
import numpy as np

from mrcnn.engine import checkpoints as _checkpoints

__all__ = ["METRICS", "KEYPOINT_METRICS", "EvaluationConfig", "EvaluationCallback",
           "evaluation_config", "make_callback", "best_checkpoint_path", "BEST_SUFFIX",
           "evaluation_model_config",
           "copy_weights", "share_from_chief"]

logger = logging.getLogger(__name__)

BEST_SUFFIX = "_best"
# Names of the metrics, logged as "val_" + name.
METRICS = ("segm_AP", "segm_AP50", "segm_AP75", "bbox_AP", "bbox_AP50", "bbox_AP75",
           "mAP50")
# With a keypoint head (NUM_KEYPOINTS > 0), also these.
KEYPOINT_METRICS = ("keypoints_AP", "keypoints_AP50", "keypoints_AP75")


@dataclasses.dataclass
class EvaluationConfig:
    """What `EvaluationCallback` does (see the module docstring).

    Attributes:
        every: evaluate after each epoch whose 1-based number is a multiple of
            ``every`` (and after the last epoch of each ``train()`` call).
        dataset: a prepared `mrcnn.data.dataset.Dataset`; None: ``train()``'s
            ``val_dataset``.
        images: how many images to evaluate on: the first ``images`` of
            ``dataset.image_ids`` (None: all), or a list of image ids.
        best_metric: the metric (a name of `METRICS`, or of `KEYPOINT_METRICS`
            for a model with keypoints; ``val_`` prefix allowed) that picks the
            best checkpoint and drives early stopping; None writes no best
            checkpoint.
        early_stopping_patience: stop after this many evaluations in a row
            without improvement (None: never stop).
        min_delta: an improvement is an increase by more than this.
        inference_config: the Config of the inference model (None: the
            training config with ``GPU_COUNT = 1``), e.g. a lower
            ``DETECTION_MIN_CONFIDENCE`` or another ``IMAGE_RESIZE_MODE``.
        verbose: print the line per evaluation (None: follow ``train()``'s
            ``verbose``).
    """
    every: int = 1
    dataset: object = None
    images: object = 50
    best_metric: str = "segm_AP"
    early_stopping_patience: int = None
    min_delta: float = 0.0
    inference_config: object = None
    verbose: int = None

    def __post_init__(self):
        def positive(name, allow_none=False):
            value = getattr(self, name)
            if value is None and allow_none:
                return
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
                    or value < 1:
                raise ValueError(f"evaluation {name}: expected a positive integer"
                                 f"{' or None' if allow_none else ''}, got {value!r}")

        positive("every")
        positive("early_stopping_patience", allow_none=True)
        if not isinstance(self.images, (list, tuple, np.ndarray)):
            positive("images", allow_none=True)
        elif len(self.images) == 0:
            raise ValueError("evaluation images: the list of image ids is empty")
        if self.best_metric is not None:
            name = str(self.best_metric)
            name = name[4:] if name.startswith("val_") else name
            if name not in METRICS + KEYPOINT_METRICS:
                raise ValueError(f"evaluation best_metric: expected one of "
                                 f"{METRICS + KEYPOINT_METRICS} (or None), got "
                                 f"{self.best_metric!r}")
            self.best_metric = name
        elif self.early_stopping_patience is not None:
            raise ValueError("evaluation early_stopping_patience needs a best_metric to "
                             "watch (e.g. 'segm_AP')")
        if isinstance(self.min_delta, bool) or not isinstance(
                self.min_delta, (int, float, np.floating)) or not self.min_delta >= 0:
            raise ValueError(f"evaluation min_delta: expected a number >= 0, got "
                             f"{self.min_delta!r}")
        if self.dataset is not None and not hasattr(self.dataset, "image_ids"):
            raise ValueError(f"evaluation dataset: expected a prepared mrcnn Dataset, got "
                             f"{type(self.dataset).__name__}")


def evaluation_config(evaluation):
    """``train(evaluation=...)`` -> an `EvaluationConfig` or None.

    Takes None, an `EvaluationConfig`, or a dict of its fields (unknown keys
    raise ValueError naming them)."""
    if evaluation is None or isinstance(evaluation, EvaluationConfig):
        return evaluation
    if isinstance(evaluation, dict):
        fields = {f.name for f in dataclasses.fields(EvaluationConfig)}
        unknown = sorted(set(evaluation) - fields)
        if unknown:
            raise ValueError(f"evaluation: unknown setting(s) {unknown}; expected keys from "
                             f"{sorted(fields)}")
        return EvaluationConfig(**evaluation)
    raise TypeError(f"evaluation: expected None, an EvaluationConfig or a dict of its "
                    f"fields, got {type(evaluation).__name__}")


def best_checkpoint_path(log_dir, name):
    """``<log_dir>/mask_rcnn_<name>_best.h5``."""
    return os.path.join(log_dir, f"mask_rcnn_{name}{BEST_SUFFIX}.h5")


def evaluation_model_config(config):
    """A copy of a training ``config`` for the inference model: one replica
    (``GPU_COUNT = 1``, ``BATCH_SIZE = IMAGES_PER_GPU``), the rest shared."""
    evaluation = copy.copy(config)
    evaluation.GPU_COUNT = 1
    evaluation.BATCH_SIZE = int(config.IMAGES_PER_GPU)
    return evaluation


def _variable_pairs(target, source):
    """``[(target variable, source variable)]``: the weighted top-level layers of
    ``target`` matched by name to ``source``'s layers, their variables in order."""
    from mrcnn.weights import io as weights_io

    by_name = weights_io.layer_name_index(source)
    pairs = []
    for layer in weights_io.weighted_layers(target):
        other = by_name.get(layer.name)
        if other is None:
            raise ValueError(f"evaluation: the training model has no layer {layer.name!r} "
                             f"(the inference model's weights cannot be copied)")
        mine, theirs = list(layer.weights), list(other.weights)
        if [tuple(v.shape) for v in mine] != [tuple(v.shape) for v in theirs] \
                or [v.name for v in mine] != [v.name for v in theirs]:
            raise ValueError(f"evaluation: layer {layer.name!r} differs between the "
                             f"inference and the training model (another Config?)")
        pairs.extend(zip(mine, theirs))
    return pairs


def copy_weights(pairs):
    """Assign each source variable's value to its target (`_variable_pairs`)."""
    for target, source in pairs:
        target.assign(source.value)


def _is_multi_worker(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    return bool(resolver is not None and getattr(resolver, "task_type", None))


def share_from_chief(strategy, values, chief):
    """The chief's ``values`` (a float vector) on every worker of a multi-worker
    strategy: a SUM all-reduce to which the other workers add zeros. Every
    worker must call it at the same point (it is a collective operation)."""
    import tensorflow as tf

    values = np.asarray(values, np.float64)
    local = max(1, len(strategy.extended.worker_devices))
    share = (values / local if chief else np.zeros_like(values)).astype(np.float32)
    per_replica = strategy.run(lambda: tf.constant(share))
    total = strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
    return np.asarray(total, np.float64)


def _finite_losses(logs):
    """Whether every ``*loss`` value in the epoch logs is finite."""
    return all(math.isfinite(float(np.asarray(v))) for k, v in (logs or {}).items()
               if k.endswith("loss"))


def _read_best(path, metric):
    """``(value, epoch)`` recorded in a best-checkpoint JSON for ``metric``, or None."""
    try:
        with open(path) as f:
            record = json.load(f)
        if record.get("metric") != metric:
            return None
        return float(record["value"]), int(record["epoch"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as err:
        logger.warning("%s: unreadable (%s); the best checkpoint starts afresh", path, err)
        return None


def _write_json(path, record):
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(record, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


class EvaluationCallback(keras.callbacks.Callback):
    """Evaluate between epochs (see the module docstring); built by `make_callback`.

    Args:
        settings: an `EvaluationConfig`.
        dataset: the data set to evaluate on.
        eval_model: the inference `MaskRCNN` the weights are copied into (None
            on a worker that is not the chief).
        best_path: where the best checkpoint goes (its ``.json`` beside it).
        strategy: the training strategy (None: one device).
        chief: whether this process evaluates and writes.
        verbose: print one line per evaluation.
        keypoints: the model has a keypoint head: `KEYPOINT_METRICS` too.

    Attributes (after ``fit``): ``records`` (one dict per evaluation: epoch,
    seconds, the metrics), ``evaluated_epochs``, ``best`` ``(value, epoch)``
    or None, ``stopped_epoch`` (the epoch after which early stopping stopped
    training, else None).
    """

    def __init__(self, settings, dataset, eval_model, best_path, strategy=None, chief=True,
                 verbose=1, keypoints=False):
        super().__init__()
        if chief and eval_model is None:
            raise ValueError("EvaluationCallback: the chief needs an inference model")
        self.metric_names = METRICS + (KEYPOINT_METRICS if keypoints else ())
        if settings.best_metric is not None and settings.best_metric not in self.metric_names:
            raise ValueError(f"evaluation best_metric {settings.best_metric!r}: the model has "
                             f"no keypoint head (NUM_KEYPOINTS = 0); expected one of {METRICS}")
        self.settings = settings
        self.dataset = dataset
        self.eval_model = eval_model
        self.best_path = best_path
        self.strategy = strategy
        self.chief = chief
        self.verbose = verbose
        images = settings.images
        ids = list(dataset.image_ids)
        if isinstance(images, (list, tuple, np.ndarray)):
            bad = [i for i in images if int(i) not in set(ids)]
            if bad:
                raise ValueError(f"evaluation images: ids {bad[:5]} are not in the data set "
                                 f"(ids 0..{len(ids) - 1})")
            self.image_ids = [int(i) for i in images]
        else:
            self.image_ids = ids if images is None else ids[:int(images)]
        if not self.image_ids:
            raise ValueError("evaluation: the data set has no images")
        self.records, self.evaluated_epochs = [], []
        self.best, self.stopped_epoch = None, None
        self._wait = 0
        self._pairs = None

    @property
    def json_path(self):
        return os.path.splitext(self.best_path)[0] + ".json"

    def on_train_begin(self, logs=None):
        self.records, self.evaluated_epochs = [], []
        self.stopped_epoch, self._wait = None, 0
        if not self.chief:
            return
        metric = self.settings.best_metric
        self.best = _read_best(self.json_path, metric) if metric else None
        self._pairs = None

    def _due(self, number):
        return number % self.settings.every == 0 or number == self.params.get("epochs")

    def _evaluate(self):
        from mrcnn.evaluation.coco import evaluate_model

        model = self.eval_model
        if self._pairs is None:
            self._pairs = _variable_pairs(model.keras_model, self.model)
        copy_weights(self._pairs)
        method = _checkpoints.pooling_method_of(self.model)
        if method is not None and method != _checkpoints.pooling_method_of(model.keras_model):
            _checkpoints.set_pooling_method(model.keras_model, method)
            model._predict_functions.clear()
        result = evaluate_model(model, self.dataset, self.image_ids, verbose=False)
        values = {"mAP50": float(result["mAP50"])}
        for kind in ("segm", "bbox"):
            for stat in ("AP", "AP50", "AP75"):
                values[f"{kind}_{stat}"] = float(result["coco"][kind][stat])
        if KEYPOINT_METRICS[0] in self.metric_names:
            from mrcnn.evaluation.keypoints import evaluate_keypoints

            stats = evaluate_keypoints(self.dataset, result["results"], self.image_ids,
                                       sigmas=model.config.KEYPOINT_OKS_SIGMAS, verbose=False)
            for stat in ("AP", "AP50", "AP75"):
                values[f"keypoints_{stat}"] = float(stats[stat])
        return values

    def _improved(self, value):
        if value is None or not math.isfinite(value) or value < 0:
            return False  # -1: undefined
        return self.best is None or value > self.best[0] + self.settings.min_delta

    def on_epoch_end(self, epoch, logs=None):
        number = epoch + 1
        if not self._due(number) or not _finite_losses(logs):
            return  # (a non-finite loss stops training: nothing worth scoring)
        metric, patience = self.settings.best_metric, self.settings.early_stopping_patience
        values, seconds, saved, stop = None, None, None, False
        if self.chief:
            start = time.perf_counter()
            values = self._evaluate()
            seconds = time.perf_counter() - start
            if metric and self._improved(values[metric]):
                self._wait = 0
                self.best = (values[metric], number)
                saved = self._save_best(number, values)
            elif metric:
                self._wait += 1
            stop = bool(patience) and self._wait >= patience
        if _is_multi_worker(self.strategy):
            shared = share_from_chief(
                self.strategy, [float(stop)] + [values[m] if values else 0.0
                                                for m in self.metric_names], self.chief)
            stop = shared[0] > 0.5
            values = {m: float(v) for m, v in zip(self.metric_names, shared[1:])}
        if values is None:
            return
        if logs is not None:
            logs.update({f"val_{m}": values[m] for m in self.metric_names})
        self.evaluated_epochs.append(number)
        self.records.append({"epoch": number, "seconds": seconds, **values})
        if stop:
            self.stopped_epoch = number
            self.model.stop_training = True
        if self.verbose and self.chief:
            print("\n" + self._line(number, values, seconds, saved, stop), flush=True)

    def _save_best(self, number, values):
        from mrcnn.engine.callbacks import weights_are_finite

        if not weights_are_finite(self.model):
            return None
        os.makedirs(os.path.dirname(os.path.abspath(self.best_path)), exist_ok=True)
        _checkpoints.save_checkpoint(self.model, self.best_path, include_optimizer=False)
        _write_json(self.json_path, {"metric": self.settings.best_metric,
                                     "value": values[self.settings.best_metric],
                                     "epoch": number, "images": len(self.image_ids),
                                     "metrics": values})
        return self.best_path

    def _line(self, number, values, seconds, saved, stop):
        text = (f"Epoch {number}: evaluation on {len(self.image_ids)} images in "
                f"{seconds:.1f} s: mask AP {values['segm_AP']:.3f}  box AP "
                f"{values['bbox_AP']:.3f}  mAP@0.5 {values['mAP50']:.3f}")
        if "keypoints_AP" in values:
            text += f"  keypoint AP {values['keypoints_AP']:.3f}"
        metric = self.settings.best_metric
        if metric and saved:
            text += f"; best {metric} so far, saved {saved}"
        elif metric and self.best is not None:
            text += (f"; best {metric} {self.best[0]:.3f} (epoch {self.best[1]}), "
                     f"{self._wait} evaluation(s) without improvement")
        if stop:
            text += f"; stopping early (patience {self.settings.early_stopping_patience})"
        return text

    def on_train_end(self, logs=None):
        history = getattr(self.model, "history", None)
        if history is not None and hasattr(history, "history"):
            history.history["evaluated_epochs"] = list(self.evaluated_epochs)


def make_callback(model, evaluation, val_dataset, verbose=1):
    """The `EvaluationCallback` of ``MaskRCNN.train(evaluation=...)`` for the training
    `MaskRCNN` ``model``, or None when ``evaluation`` is None.

    On the chief, builds the inference model now (call it before seeding the
    run: its construction reseeds and draws initial weights) and keeps it on
    ``model`` for later ``train()`` calls with the same ``inference_config``.

    Raises:
        ValueError / TypeError: bad settings, or no data set to evaluate on.
    """
    settings = evaluation_config(evaluation)
    if settings is None:
        return None
    dataset = settings.dataset if settings.dataset is not None else val_dataset
    if dataset is None:
        raise ValueError("train(evaluation=...): no data set to evaluate on: pass "
                         "val_dataset or the evaluation's dataset")

    chief = model.is_chief
    eval_model = None
    if chief:
        cached = getattr(model, "_evaluation_model", None)
        if cached is not None and cached[0] is settings.inference_config:
            eval_model = cached[1]
        else:
            from mrcnn.model import MaskRCNN

            config = settings.inference_config or evaluation_model_config(model.config)
            eval_model = MaskRCNN(mode="inference", config=config, model_dir=model.model_dir)
            model._evaluation_model = (settings.inference_config, eval_model)
    from mrcnn.modeling.roi_heads.keypoint_branch import has_keypoints

    shown = verbose if settings.verbose is None else settings.verbose
    return EvaluationCallback(settings, dataset, eval_model,
                              best_checkpoint_path(model.log_dir, model._name()),
                              strategy=model.strategy, chief=chief, verbose=shown,
                              keypoints=has_keypoints(model.config))
