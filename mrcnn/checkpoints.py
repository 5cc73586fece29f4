"""What a checkpoint keeps besides the weights: the optimizer state.

It lives in the same legacy-layout HDF5 file `mrcnn.weights.save_weights`
writes, beside (never inside) what the weights loader reads::

    /                     attrs: layer_names, ... (the weights, unchanged)
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
"""

import dataclasses
import logging
import warnings

import numpy as np

from mrcnn import weights as _weights

__all__ = ["OPTIMIZER_GROUP", "OptimizerState", "optimizer_state",
           "write_optimizer_state", "read_optimizer_state", "restore_optimizer_state",
           "after_load", "before_fit"]

logger = logging.getLogger(__name__)

OPTIMIZER_GROUP = "optimizer_weights"
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
    from mrcnn import distribute
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


# ------------------------------------------------- hooks of mrcnn.model.MaskRCNN

def after_load(model, report, exclude=None):
    """`MaskRCNN.load_weights`' bookkeeping once the weights are in.

    Keeps a training model's optimizer state aside for ``train()`` (not for
    an ``exclude`` load, a fine-tune rather than a resume).
    """
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
