"""What a checkpoint keeps besides the weights: the optimizer state and the RoI
pooling method.

`save_checkpoint` writes both into the legacy-layout HDF5 file of
`mrcnn.weights.io.save_weights`, beside (never inside) what the weights loader
reads::

    /                     attrs: layer_names, ... (the weights, unchanged)
                                 mrcnn_roi_pooling_method = b"roi_align"
                                 mrcnn_architecture = b'{"BACKBONE": "resnet50", ...}'
    /optimizer_weights    attrs: weight_names = [b"iteration",
                                 b"momentum/conv1/conv1/kernel:0", ...]
                                 optimizer = b"Adam"
    /optimizer_weights/iteration                       dataset ()
    /optimizer_weights/momentum/conv1/conv1/kernel:0   dataset (7, 7, 3, 64)

Optimizer state (`optimizer_state`, `restore_optimizer_state`): every variable
of the optimizer except its learning rate (which ``train()`` sets): the
iteration count and the slot variables (SGD momentum, Adam / AdamW ``m``
("momentum") and ``v`` ("velocity")). A slot is keyed ``<slot>/<weight>``,
``<weight>`` being the dataset path of its model variable in the weights
layout, so the key does not depend on the optimizer's or the model's
auto-generated names and matches between processes. The dynamic loss scale of
``mixed_float16``'s ``LossScaleOptimizer`` is stored as ``loss_scale/<name>``.
`mrcnn.model.MaskRCNN.load_weights` keeps a checkpoint's state aside and
``train()`` restores it once its optimizer is built; entries match by key and
shape, and whatever does not match is reported (a different ``layers=``
selection trains other variables). Files without the group (the released COCO
weights, older checkpoints) restore nothing, silently.

Architecture (`describe_model`, root attribute ``mrcnn_architecture``, JSON):
head, backbone, RoIAlign aggregation, mask loss and class-agnostic masks. A
weights-shape mismatch on loading names the file's record; a different mask
loss or aggregation (same shapes, other outputs) is warned about.

RoI pooling (`pooling_method_of`, `resolve_pooling_method`): the released COCO
weights were trained with ``crop_and_resize`` pooling, ``Config`` defaults to
``"auto"``; see `resolve_pooling_method` for the rule applied on loading.
"""

import dataclasses
import json
import logging
import os
import re
import warnings

import numpy as np

from mrcnn.constants import LEGACY_POOLING_METHOD as _LEGACY_POOLING_METHOD
from mrcnn.engine.callbacks import INTERRUPTED_SUFFIX
from mrcnn.weights import io as _weights

__all__ = ["save_checkpoint", "find_last_checkpoint", "resume_point", "checkpoint_epoch",
           "CHECKPOINT_RE", "OPTIMIZER_GROUP", "POOLING_ATTR", "OptimizerState",
           "optimizer_state",
           "write_optimizer_state", "read_optimizer_state", "restore_optimizer_state",
           "pooling_layers", "pooling_method_of", "set_pooling_method",
           "resolve_pooling_method", "LEGACY_POOLING_METHOD", "ARCHITECTURE_ATTR",
           "describe_model", "architecture_warning"]

logger = logging.getLogger(__name__)

OPTIMIZER_GROUP = "optimizer_weights"
POOLING_ATTR = _weights.POOLING_ATTR
ARCHITECTURE_ATTR = _weights.ARCHITECTURE_ATTR
# The pooling of files that do not record theirs (the released COCO weights).
LEGACY_POOLING_METHOD = _LEGACY_POOLING_METHOD
_POOLING_LAYERS = ("roi_align_classifier", "roi_align_mask")
_NOT_SAVED = ("learning_rate",)
_LOSS_SCALE_PREFIX = "loss_scale/"


@dataclasses.dataclass
class OptimizerState:
    """The optimizer state of a checkpoint: ``values`` ``{key: array}`` and the
    optimizer's class name (``"SGD"``, ``"Adam"``, ``"AdamW"``)."""
    optimizer: str
    values: dict
    filepath: str = None


# ------------------------------------------------------------------- optimizer

def _levels(optimizer):
    """``[(prefix, optimizer, own variables)]``: a LossScaleOptimizer's own
    variables, then its inner optimizer's (the one keyed without prefix)."""
    inner = getattr(optimizer, "inner_optimizer", None)
    if inner is None:
        return [("", optimizer, list(optimizer.variables))]
    inner_ids = {id(v) for v in inner.variables}
    own = [v for v in optimizer.variables if id(v) not in inner_ids]
    return [(_LOSS_SCALE_PREFIX, optimizer, own)] + _levels(inner)


def _base_optimizer(optimizer):
    while getattr(optimizer, "inner_optimizer", None) is not None:
        optimizer = optimizer.inner_optimizer
    return optimizer


def _weight_names(keras_model):
    """``{id(variable): "<layer>/<weight_name>"}``, the variable's dataset path
    in the legacy weights layout (stable across processes and builds)."""
    names = {}
    for layer in keras_model.layers:
        if layer.weights:
            for wname, var in _weights._layer_weight_entries(layer):
                names[id(var)] = f"{layer.name}/{wname}"
    return names


def _keyed_variables(optimizer, keras_model):
    """``{key: optimizer variable}`` for everything but the learning rate."""
    names = _weight_names(keras_model)
    keyed = {}
    for prefix, opt, variables in _levels(optimizer):
        # A slot variable is named "<reference path with / as _>_<slot>".
        refs = {}
        for ref in getattr(opt, "_trainable_variables", None) or []:
            if id(ref) in names:
                refs[ref.path.replace("/", "_")] = names[id(ref)]
        for var in variables:
            name = var.name
            if name in _NOT_SAVED:
                continue
            key = None
            for i in range(len(name) - 1, 0, -1):  # longest reference prefix first
                if name[i] == "_" and name[:i] in refs:
                    key = f"{name[i + 1:]}/{refs[name[:i]]}"
                    break
            keyed[prefix + (key or name)] = var
    return keyed


def optimizer_state(keras_model):
    """The `OptimizerState` of ``keras_model``'s optimizer, or None when it has
    no built optimizer (an inference model, a model not trained yet)."""
    optimizer = getattr(keras_model, "optimizer", None)
    if optimizer is None or not getattr(optimizer, "built", False):
        return None
    values = {key: np.asarray(var)
              for key, var in _keyed_variables(optimizer, keras_model).items()}
    return OptimizerState(type(_base_optimizer(optimizer)).__name__, values)


def write_optimizer_state(h5file, keras_model):
    """Write the ``optimizer_weights`` group into an open HDF5 file (nothing
    without a built optimizer); returns the number of entries written."""
    state = optimizer_state(keras_model)
    if state is None:
        return 0
    group = h5file.create_group(OPTIMIZER_GROUP)
    group.attrs["optimizer"] = state.optimizer.encode("utf8")
    _weights._write_attr_strings(group, "weight_names", list(state.values))
    for key, value in state.values.items():
        group.create_dataset(key, data=value)
    return len(state.values)


def read_optimizer_state(filepath):
    """The `OptimizerState` stored in ``filepath``, or None (no such group)."""
    with _weights.open_weights_file(filepath) as f:
        group = f.get(OPTIMIZER_GROUP)
        if group is None:
            return None
        keys = _weights.read_attr_strings(group, "weight_names") or []
        values = {key: np.asarray(group[key][()]) for key in keys if key in group}
        name = _weights._decode(group.attrs.get("optimizer", b""))
    return OptimizerState(name, values, str(filepath))


def _some(names, n=5):
    names = sorted(names)
    more = f" and {len(names) - n} more" if len(names) > n else ""
    return ", ".join(names[:n]) + more


def restore_optimizer_state(keras_model, state, strategy=None, verbose=1):
    """Assign ``state`` (an `OptimizerState`) to the optimizer of a compiled
    ``keras_model``, building the optimizer first (under ``strategy``).

    Entries that match a variable by key and shape are assigned; the rest is
    reported with one warning (saved entries without a variable, variables
    without a saved entry, which start from zero). A state saved by another
    optimizer class restores nothing (warned).

    Returns:
        the number of variables restored.
    """
    from mrcnn.engine import distribute
    optimizer = keras_model.optimizer
    if not optimizer.built:
        with distribute.strategy_scope(strategy):
            optimizer.build(keras_model.trainable_variables)
    source = state.filepath or "the checkpoint"
    kind = type(_base_optimizer(optimizer)).__name__
    if state.optimizer and state.optimizer != kind:
        warnings.warn(f"{source}: its optimizer state is {state.optimizer}'s, this run "
                      f"trains with {kind}: the optimizer starts fresh", stacklevel=2)
        return 0
    keyed = _keyed_variables(optimizer, keras_model)
    restored, wrong_shape = [], []
    for key, var in keyed.items():
        if key not in state.values:
            continue
        value = state.values[key]
        if tuple(value.shape) != tuple(var.shape):
            wrong_shape.append(key)
            continue
        var.assign(value.astype(var.dtype))
        restored.append(key)
    unused = [k for k in state.values if k not in keyed]
    fresh = [k for k in keyed if k not in state.values]
    text = (f"Restored {len(restored)} of {len(keyed)} optimizer variables ({kind}, "
            f"iteration {int(np.asarray(optimizer.iterations))}) from {source}")
    logger.info(text)
    if verbose:
        print(text, flush=True)
    problems = []
    if unused:
        problems.append(f"{len(unused)} saved entries have no variable in this run "
                        f"(another layers= selection?): {_some(unused)}")
    if fresh:
        problems.append(f"{len(fresh)} optimizer variables had no saved state and start "
                        f"from zero: {_some(fresh)}")
    if wrong_shape:
        problems.append(f"{len(wrong_shape)} entries differ in shape and were not "
                        f"restored: {_some(wrong_shape)}")
    if problems:
        warnings.warn(f"{source}: optimizer state only partly restored: "
                      + "; ".join(problems), stacklevel=2)
    return len(restored)


# ------------------------------------------------------------------ RoI pooling

def describe_model(keras_model):
    """The architecture settings a Mask R-CNN graph was built with, read from
    its layers: ``{"HEAD_ARCHITECTURE", "BACKBONE", "RPN_HEAD_CHANNELS",
    "ROI_ALIGN_AGGREGATION", "MASK_LOSS", "CLASS_AGNOSTIC_MASK"}`` (keys left
    out where the graph does not tell, e.g. a callable backbone). Recorded in
    checkpoints (root attribute ``mrcnn_architecture``, JSON) and compared on
    loading (`after_load`)."""
    index = {layer.name: layer for layer in keras_model.layers}
    record = {"HEAD_ARCHITECTURE": "c4" if "res5_head" in index else "fpn"}
    backbone = getattr(index.get("conv1"), "mrcnn_backbone", None)
    if backbone:
        record["BACKBONE"] = backbone
    rpn = index.get("rpn_model")
    if rpn is not None:
        record["RPN_HEAD_CHANNELS"] = int(rpn.get_layer("rpn_conv_shared").filters)
    poolers = pooling_layers(keras_model)
    if poolers:
        record["ROI_ALIGN_AGGREGATION"] = poolers[0].aggregation
    mask = index.get("mrcnn_mask")
    if mask is not None and getattr(mask, "mrcnn_mask_loss", None):
        record["MASK_LOSS"] = mask.mrcnn_mask_loss
        record["CLASS_AGNOSTIC_MASK"] = bool(mask.mrcnn_class_agnostic)
    return record


# Recorded settings that change what the weights compute without changing their
# shapes: a difference is warned about on loading.
_SHAPE_FREE_SETTINGS = ("MASK_LOSS", "ROI_ALIGN_AGGREGATION")


def architecture_warning(recorded, model_record, filepath):
    """A warning text when a file's recorded architecture differs from the
    model's in a setting the weights' shapes cannot catch, else None."""
    if not recorded:
        return None
    differ = [k for k in _SHAPE_FREE_SETTINGS
              if k in recorded and k in model_record and recorded[k] != model_record[k]]
    if not differ:
        return None
    return (f"{filepath} was trained with " +
            ", ".join(f"{k}={recorded[k]!r}" for k in differ) + ", but this model uses " +
            ", ".join(f"{k}={model_record[k]!r}" for k in differ) +
            ": set the same in your Config to get what the weights were trained for")


def save_checkpoint(keras_model, filepath, include_optimizer=True):
    """`mrcnn.weights.io.save_weights` (atomic, legacy layout) plus the RoI pooling
    record (root attribute ``mrcnn_roi_pooling_method``), the architecture
    record (``mrcnn_architecture``, `describe_model`) and, with
    ``include_optimizer``, the state of a built optimizer (``optimizer_weights``;
    the learning rate is not saved). Returns the path written."""
    method = pooling_method_of(keras_model)
    attrs = {ARCHITECTURE_ATTR: json.dumps(describe_model(keras_model), sort_keys=True)}
    if method is not None:
        attrs[POOLING_ATTR] = method
    extra = (lambda h5file: write_optimizer_state(h5file, keras_model)) \
        if include_optimizer else None
    return _weights.save_weights(keras_model, filepath, attrs=attrs, write_extra=extra)


def pooling_layers(keras_model):
    """The model's `PyramidROIAlign` layers (classifier and mask heads)."""
    from mrcnn.modeling.roi_heads.poolers import PyramidROIAlign
    return [layer for layer in keras_model.layers if isinstance(layer, PyramidROIAlign)]


def pooling_method_of(keras_model):
    """The RoI pooling method the model's `PyramidROIAlign` layers use (the
    classifier's when they differ), or None for a model without them."""
    layers = sorted(pooling_layers(keras_model),
                    key=lambda l: l.name not in _POOLING_LAYERS[:1])
    return layers[0].method if layers else None


def set_pooling_method(keras_model, method):
    """Switch every `PyramidROIAlign` layer of ``keras_model`` to ``method``
    (takes effect the next time the graph is traced)."""
    from mrcnn.modeling.roi_heads.poolers import POOLING_METHODS
    if method not in POOLING_METHODS:
        raise ValueError(f"RoI pooling method must be one of {POOLING_METHODS}, got "
                         f"{method!r}")
    for layer in pooling_layers(keras_model):
        layer.method = method


def resolve_pooling_method(mode, configured, recorded, filepath):
    """The pooling a model should use after loading weights, and a message.

    Args:
        mode: ``"training"`` or ``"inference"``.
        configured: ``Config.ROI_POOLING_METHOD`` (``"auto"`` or one of
            `mrcnn.constants.POOLING_METHODS`: ``"roi_align"``,
            ``"crop_and_resize"``, ``"roi_pool"``, ``"roi_warp"``).
        recorded: the file's recorded method (any of those methods; it comes
            back unchanged), None for a legacy file (the released COCO
            weights: trained with ``crop_and_resize``).
        filepath: for the messages.

    Returns:
        ``(method, warning, note)``: the method to use; a warning text when an
        explicit setting differs from the file's record (else None); an
        informational line (else None).

    The rule: an inference model with ``"auto"`` takes the file's method
    (``crop_and_resize`` for a legacy file), so the released weights give the
    original detections. An explicit setting is honoured (warned when it
    differs from the file's record). A training model keeps its configured
    method (``"auto"``: ``roi_align``); loading a legacy file says that it was
    trained with ``crop_and_resize`` and training continues with RoIAlign.
    """
    trained_with = recorded or LEGACY_POOLING_METHOD
    if configured == "auto":
        if mode == "inference":
            return trained_with, None, None
        method = "roi_align"
        note = None
        if recorded is None:
            note = (f"{filepath}: no recorded RoI pooling, so trained with "
                    f"{LEGACY_POOLING_METHOD} (the released weights); training "
                    f"continues with {method} (ROI_POOLING_METHOD='auto')")
        return method, None, note
    warning = None
    if configured != trained_with and (mode == "inference" or recorded is not None):
        what = "records" if recorded else "has no record, so is taken as trained with"
        warning = (f"{filepath} {what} RoI pooling {trained_with!r}, but "
                   f"Config.ROI_POOLING_METHOD={configured!r} is used (set 'auto' to "
                   f"follow the file)")
    return configured, warning, None


# ------------------------------------------------- hooks of mrcnn.model.MaskRCNN

def after_load(model, report, exclude=None):
    """`MaskRCNN.load_weights`' bookkeeping once the weights are in.

    Applies the pooling rule (`resolve_pooling_method`) when the file held
    head layers (an inference model's switch clears its traced detect
    functions), and keeps a training model's optimizer state aside for
    ``train()`` (not for an ``exclude`` load, a fine-tune rather than a resume).
    """
    if any(name.startswith("mrcnn_") for name in report.loaded):
        mismatch = architecture_warning(report.architecture, describe_model(model.keras_model),
                                        report.filepath)
        if mismatch:
            warnings.warn(mismatch, stacklevel=3)
        method, warning, note = resolve_pooling_method(
            model.mode, model.config.ROI_POOLING_METHOD, report.roi_pooling_method,
            report.filepath)
        if warning:
            warnings.warn(warning, stacklevel=3)
        if note:
            logger.info(note)
            print(note, flush=True)
        if method != pooling_method_of(model.keras_model):
            set_pooling_method(model.keras_model, method)
            model._predict_functions.clear()
    keep = model.mode == "training" and not exclude
    model._optimizer_state = read_optimizer_state(report.filepath) if keep else None


def before_fit(model, epochs, verbose=1):
    """In `MaskRCNN.train` after compiling: restore the optimizer state kept by
    `after_load`, once, and only when epochs will actually run (a resumed
    multi-stage script skips its finished stages without consuming it)."""
    state = getattr(model, "_optimizer_state", None)
    if state is None or epochs <= model.epoch:
        return 0
    model._optimizer_state = None
    return restore_optimizer_state(model.keras_model, state, model.strategy, verbose)

# --------------------------------------------------------------------------- log dirs
# <model_dir>/<name>YYYYMMDDTHHMM/mask_rcnn_<name>_<epoch>.h5
# Group 7 marks an interrupted checkpoint (weights part-way through epoch NNNN).
CHECKPOINT_RE = re.compile(
    r".*[/\\][\w\-.]+(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})[/\\]mask_rcnn_[\w\-.]+?_(\d{4})"
    r"(_interrupted)?\.h5$")


def checkpoint_epoch(path):
    """The 1-based epoch number NNNN of ``.../mask_rcnn_<name>_NNNN.h5``."""
    return int(os.path.basename(path)[-7:-3])


def resume_point(model_path):
    """``(log_dir, epoch)`` to continue from a checkpoint path, or None.

    ``.../<name>YYYYMMDDTHHMM/mask_rcnn_<name>_NNNN.h5`` gives its directory and
    epoch NNNN (training resumes at NNNN + 1); an interrupted checkpoint
    ``..._NNNN_interrupted.h5`` (weights part-way through epoch NNNN) gives
    NNNN - 1, so that epoch runs again. Any other path gives None.
    """
    path = os.path.abspath(os.fspath(model_path))
    match = CHECKPOINT_RE.match(path)
    if not match:
        return None
    epoch = int(match.group(6)) - (1 if match.group(7) else 0)
    return os.path.dirname(path), epoch


def find_last_checkpoint(model_dir, name):
    """Path of the newest checkpoint in the newest log directory ``<name>YYYYMMDDTHHMM``
    of ``model_dir`` (see `mrcnn.model.MaskRCNN.find_last` for the rules)."""
    pattern = re.compile(re.escape(name) + r"\d{8}T\d{4}")
    try:  # same prefix: sorting the names sorts the timestamps
        dirs = sorted(d for d in os.listdir(model_dir) if pattern.fullmatch(d)
                      and os.path.isdir(os.path.join(model_dir, d)))
    except FileNotFoundError:
        dirs = []
    if not dirs:
        raise FileNotFoundError(
            f"find_last: no log directory {name + 'YYYYMMDDTHHMM'!r} (config.NAME "
            f"lower-cased) in model_dir {model_dir!r}; train first or pass a "
            f"weights file to load_weights")
    last = os.path.join(model_dir, dirs[-1])
    checkpoints = sorted(f for f in os.listdir(last)  # not ..._best.h5 (evaluation)
                         if re.fullmatch(r"mask_rcnn_[\w\-.]+_\d{4}(_interrupted)?\.h5", f))
    regular = [f for f in checkpoints
               if not f.endswith(INTERRUPTED_SUFFIX + ".h5")]
    checkpoints = regular or checkpoints
    if not checkpoints:
        raise FileNotFoundError(f"find_last: no mask_rcnn_*.h5 checkpoint in the newest "
                                f"log directory {last!r}")
    return os.path.join(last, checkpoints[-1])
