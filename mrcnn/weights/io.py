"""Weights I/O in the legacy Keras 2 HDF5 layout (the released COCO file's layout).

Layout (read and written here; the released ``mask_rcnn_coco.h5`` and our own
checkpoints share it, so one loader serves both)::

    /                       attrs: layer_names = [b"input_image", b"conv1", ...]
                                   (optional) backend, keras_version
    /conv1                  attrs: weight_names = [b"conv1/kernel:0", b"conv1/bias:0"]
    /conv1/conv1/kernel:0   dataset (7, 7, 3, 64)
    /conv1/conv1/bias:0     dataset (64,)
    /rpn_model              attrs: weight_names = [b"rpn_conv_shared/kernel:0",
                                   b"rpn_conv_shared/bias:0", b"rpn_class_raw/kernel:0", ...]
    /input_image            attrs: weight_names = []   (layers without weights)

Our checkpoints also record the RoI pooling method of the model (root attribute
``mrcnn_roi_pooling_method``) and, for a model with a built optimizer, its
state (group ``optimizer_weights``); see `mrcnn.engine.checkpoints`. The weights
loader ignores both.

Keras full-model saves put all of this under a ``/model_weights`` group; that
is accepted too. Very long attribute lists may be split by Keras into
``layer_names0``, ``layer_names1``, ... (the HDF5 64 KiB header limit); both
forms are read, and :func:`save_weights` splits the same way when needed.

Matching rules (``by_name=True``): each weighted layer of the file is looked up
by name in the model, searching nested models too. Within a layer, the file's
weights are paired with the layer's variables in order (Conv: kernel, bias;
BatchNorm: gamma, beta, moving_mean, moving_variance), after checking the count
and every shape; when the short names (``kernel``, ``gamma``...) of both sides
are the same set, the pairing follows the names instead, so a file that lists
them in another order still loads correctly. A nested model (``rpn_model``) is
one group whose weight names carry the sub-layer name as prefix
(``rpn_conv_shared/kernel:0``); those are paired sub-layer by sub-layer.
The heads' layers (``mrcnn_class_conv1``, ...) are plain layers that run on
the RoIs merged into the batch axis; the released file's ``TimeDistributed``
groups hold the same ``<layer>/<var>:0`` names, so they load by name. The ``anchors`` layer of training-mode files (a constant,
never a variable of our models) is ignored.

Loading is all-or-nothing: every layer is matched and every shape checked
before the first variable is assigned, so an error leaves the model untouched.
"""

import dataclasses
import json
import os
import warnings

import h5py
import numpy as np

__all__ = ["load_weights", "save_weights", "LoadReport", "HEAD_LAYERS_FOR_NEW_CLASSES",
           "open_weights_file", "read_attr_strings", "weighted_layers",
           "layer_name_index", "match_layer_variables", "assign_pairs", "POOLING_ATTR",
           "ARCHITECTURE_ATTR", "describe_architecture"]

# Layers whose shapes depend on NUM_CLASSES: exclude them to fine-tune the COCO
# weights on a dataset with another number of classes. ("mrcnn_bbox" is the
# legacy name of a reshape layer; listing it is harmless and familiar.)
HEAD_LAYERS_FOR_NEW_CLASSES = ["mrcnn_class_logits", "mrcnn_bbox_fc", "mrcnn_bbox",
                               "mrcnn_mask"]

# File layers never loaded: the training graph's anchor constant.
IGNORED_FILE_LAYERS = ("anchors",)

# HDF5 object headers hold at most 64 KiB of attributes; Keras splits longer
# lists into numbered chunks. Same threshold as Keras uses.
_HDF5_ATTR_LIMIT = 64512

# Root attributes of our checkpoints (mrcnn.engine.checkpoints): the model's RoI
# pooling, and a JSON description of its architecture (head, backbone, mask loss...).
POOLING_ATTR = "mrcnn_roi_pooling_method"
ARCHITECTURE_ATTR = "mrcnn_architecture"


@dataclasses.dataclass
class LoadReport:
    """What :func:`load_weights` did.

    Attributes:
        filepath: the file read.
        loaded: model layer names that received weights, in file order.
        excluded: file layer names skipped because they were in ``exclude``.
        not_in_model: weighted file layers with no model layer of that name
            (by_name only; ignored, as Keras always did).
        not_in_file: weighted model layers (top level; nested models as one)
            that received nothing and were not excluded: they keep their
            current (e.g. random) values.
        roi_pooling_method: the RoI pooling the file records (our
            checkpoints), None for a file without the record (the released
            COCO weights, older checkpoints: trained with crop_and_resize).
        architecture: the architecture the file records (a dict, see
            `mrcnn.engine.checkpoints.describe_model`), None without a record.
    """
    filepath: str
    loaded: list = dataclasses.field(default_factory=list)
    excluded: list = dataclasses.field(default_factory=list)
    not_in_model: list = dataclasses.field(default_factory=list)
    not_in_file: list = dataclasses.field(default_factory=list)
    roi_pooling_method: str = None
    architecture: dict = None

    def summary(self):
        """One line: the file and how many layers were loaded, excluded, skipped."""
        parts = [f"{len(self.loaded)} layers loaded"]
        if self.excluded:
            parts.append(f"{len(self.excluded)} excluded")
        if self.not_in_model:
            parts.append(f"{len(self.not_in_model)} in the file but not in the model")
        if self.not_in_file:
            parts.append(f"{len(self.not_in_file)} of the model not in the file")
        return f"LoadReport({os.path.basename(self.filepath)!r}: {', '.join(parts)})"

    def details(self):
        """Every layer name, by outcome (several lines)."""
        lines = [f"{self.filepath}"]
        for title, names in (("loaded", self.loaded), ("excluded", self.excluded),
                             ("not in the model", self.not_in_model),
                             ("not in the file", self.not_in_file)):
            lines.append(f"{title} ({len(names)}): {', '.join(names) if names else '-'}")
        if self.roi_pooling_method:
            lines.append(f"roi pooling method recorded: {self.roi_pooling_method}")
        if self.architecture:
            lines.append(f"architecture recorded: {describe_architecture(self.architecture)}")
        return "\n".join(lines)

    # A cell ending in model.load_weights(...) shows one line, not 233 names;
    # the lists are attributes (report.loaded, ...) and report.details().
    __repr__ = summary
    __str__ = summary

    def _repr_pretty_(self, printer, cycle):
        printer.text(self.summary())


def _read_architecture(value):
    try:
        record = json.loads(_decode(value))
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def describe_architecture(record):
    """``"HEAD_ARCHITECTURE='c4', BACKBONE='resnet50', ..."``: a recorded architecture
    as the Config settings it came from."""
    return ", ".join(f"{key}={value!r}" for key, value in sorted(record.items()))


# --------------------------------------------------------------------------- file side

def open_weights_file(filepath):
    """Open an HDF5 file for reading with clear errors.

    Raises:
        FileNotFoundError: no file at ``filepath``.
        ValueError: the file exists but is not a readable HDF5 file
            (wrong format, truncated, unreadable).
    """
    filepath = os.fspath(filepath)
    if not os.path.isfile(filepath):
        raise FileNotFoundError(f"Weights file not found: {filepath!r}")
    try:
        return h5py.File(filepath, "r")
    except OSError as err:
        raise ValueError(f"{filepath!r} is not a readable HDF5 weights file "
                         f"(wrong format, truncated or corrupted): {err}") from err


def _decode(value):
    return value.decode("utf8") if isinstance(value, bytes) else str(value)


def read_attr_strings(group, name):
    """Read a list-of-strings attribute, joining Keras's numbered chunks.

    Returns None when neither ``name`` nor ``name0`` exists.
    """
    if name in group.attrs:
        values = list(np.atleast_1d(group.attrs[name]))
    elif f"{name}0" in group.attrs:
        values, i = [], 0
        while f"{name}{i}" in group.attrs:
            values.extend(np.atleast_1d(group.attrs[f"{name}{i}"]))
            i += 1
    else:
        return None
    return [_decode(v) for v in values]


def _write_attr_strings(group, name, values):
    """Write a list-of-strings attribute as bytes, in chunks if it is long."""
    data = np.array([v.encode("utf8") for v in values]) if values else np.zeros((0,), "S1")
    if data.nbytes <= _HDF5_ATTR_LIMIT:
        group.attrs[name] = data
        return
    n_chunks = int(np.ceil(data.nbytes / _HDF5_ATTR_LIMIT))
    for i, chunk in enumerate(np.array_split(data, n_chunks)):
        group.attrs[f"{name}{i}"] = chunk


def _legacy_root(f, filepath):
    """The group holding ``layer_names`` (the root or ``model_weights``)."""
    for group in (f, f.get("model_weights")):
        if isinstance(group, h5py.Group) and read_attr_strings(group, "layer_names") is not None:
            return group
    found = f"top-level entries {sorted(f.keys())[:10]}, attributes {sorted(f.attrs.keys())}"
    hint = ""
    if "layers" in f and "vars" in f:
        hint = (" It looks like a Keras 3 '.weights.h5' file: load it with "
                "keras_model.load_weights() or re-save it with mrcnn.weights.io.save_weights().")
    raise ValueError(f"{filepath!r} is not a Keras weights file in the legacy HDF5 layout: "
                     f"no 'layer_names' attribute (found {found}).{hint}")


def _file_layers(root, filepath):
    """``[(layer_name, [(weight_name, dataset), ...]), ...]`` in file order (all layers)."""
    out = []
    for name in read_attr_strings(root, "layer_names"):
        if name not in root:
            raise ValueError(f"{filepath!r}: layer {name!r} is listed in 'layer_names' but "
                             f"has no group in the file (corrupted weights file).")
        group = root[name]
        weight_names = read_attr_strings(group, "weight_names") or []
        weights = []
        for wname in weight_names:
            if wname not in group:
                raise ValueError(f"{filepath!r}: weight {wname!r} of layer {name!r} is "
                                 f"listed but missing from the file (corrupted weights file).")
            weights.append((wname, group[wname]))
        out.append((name, weights))
    return out


# -------------------------------------------------------------------------- model side

def _is_nested_model(layer):
    import keras
    return isinstance(layer, keras.Model)


def weighted_layers(model):
    """Top-level layers of ``model`` that own variables, in ``model.layers`` order.

    A nested model counts as one layer (its variables are its sub-layers').
    """
    return [layer for layer in model.layers if layer.weights]


def layer_name_index(model):
    """``{name: layer}`` for every layer of ``model``, nested models searched too.

    Top-level names win over names found inside nested models; within nested
    models the first occurrence (depth-first, in layer order) wins.
    """
    index = {}
    pending = [model]
    while pending:
        current = pending.pop(0)
        for layer in current.layers:
            index.setdefault(layer.name, layer)
            if _is_nested_model(layer):
                pending.append(layer)
    return index


def _short_name(weight_name):
    """``"conv1/kernel:0"`` -> ``"kernel"``; ``"kernel"`` -> ``"kernel"``."""
    return weight_name.rsplit("/", 1)[-1].split(":", 1)[0]


def _variables_in_file_order(layer, file_weight_names):
    """The layer's variables, reordered by short name when both sides agree on names."""
    variables = list(layer.weights)
    file_short = [_short_name(n) for n in file_weight_names]
    model_short = [v.name for v in variables]
    if (len(set(file_short)) == len(file_short) == len(model_short)
            and set(file_short) == set(model_short)):
        by_name = {v.name: v for v in variables}
        return [by_name[s] for s in file_short]
    return variables


def _nested_variables(model, file_weight_names):
    """Variables of a nested model paired with ``<sublayer>/<weight>`` file names.

    Returns None when the prefixes do not all name weighted sub-layers (the
    caller then pairs positionally).
    """
    index = layer_name_index(model)
    groups = {}
    for name in file_weight_names:
        if "/" not in name:
            return None
        groups.setdefault(name.split("/", 1)[0], []).append(name)
    if not all(prefix in index and index[prefix].weights for prefix in groups):
        return None
    paired = {}
    for prefix, names in groups.items():
        sub_vars = _variables_in_file_order(index[prefix], names)
        if len(sub_vars) != len(names):
            return None
        paired.update(zip(names, sub_vars))
    if len(paired) != len(model.weights):
        return None
    return [paired[n] for n in file_weight_names]


def _shape_error(filepath, file_layer, weight_name, file_shape, model_layer, var_shape):
    return ValueError(
        f"Cannot load {filepath!r}: weight {weight_name!r} of layer {file_layer!r} has "
        f"shape {tuple(file_shape)} in the file but the model's layer {model_layer!r} "
        f"expects {tuple(var_shape)}. If the number of classes differs from the file's "
        f"(e.g. COCO weights: 81 classes), load with by_name=True and "
        f"exclude={HEAD_LAYERS_FOR_NEW_CLASSES!r}; otherwise the file was saved from "
        f"a different architecture or configuration (BACKBONE, RPN_ANCHOR_RATIOS, "
        f"TOP_DOWN_PYRAMID_SIZE, RPN_HEAD_CHANNELS, ...).")


def match_layer_variables(filepath, file_layer, file_weights, layer):
    """Pair one file layer's weights with a model layer's variables.

    Args:
        filepath: the file name, for messages.
        file_layer: the layer's name in the file.
        file_weights: ``[(weight_name, array_or_dataset), ...]`` (anything with
            a ``.shape``).
        layer: the Keras layer (or nested model) to load into.

    Returns:
        ``[(variable, array_or_dataset), ...]``.

    Raises:
        ValueError: counts or shapes differ (message names file, layer,
            weight and both shapes).
    """
    names = [n for n, _ in file_weights]
    variables = None
    if _is_nested_model(layer):
        variables = _nested_variables(layer, names)
    if variables is None:
        variables = _variables_in_file_order(layer, names)
    if len(variables) != len(file_weights):
        raise ValueError(
            f"Cannot load {filepath!r}: layer {file_layer!r} has {len(file_weights)} "
            f"weights in the file ({names}) but the model's layer {layer.name!r} has "
            f"{len(variables)} ({[v.path for v in variables]}).")
    pairs = []
    for (wname, data), var in zip(file_weights, variables):
        if tuple(data.shape) != tuple(var.shape):
            raise _shape_error(filepath, file_layer, wname, data.shape, layer.name, var.shape)
        pairs.append((var, data))
    return pairs


def assign_pairs(filepath, pairs):
    """Read every array first, then assign them all (a read error changes nothing)."""
    arrays = []
    for var, data in pairs:
        try:
            value = np.asarray(data[()] if isinstance(data, h5py.Dataset) else data)
        except (OSError, KeyError, RuntimeError) as err:
            raise ValueError(f"{filepath!r} is not a readable HDF5 weights file: reading "
                             f"{getattr(data, 'name', '?')!r} failed: {err}") from err
        arrays.append(value.astype(var.dtype, copy=False))
    for (var, _), value in zip(pairs, arrays):
        var.assign(value)


# ------------------------------------------------------------------------------- load

def load_weights(keras_model, filepath, by_name=False, exclude=None, verbose=0):
    """Load a legacy-layout HDF5 weights file into a Keras model.

    Args:
        keras_model: a built ``keras.Model``.
        filepath: path of the ``.h5`` file (COCO release or our checkpoint).
        by_name: True: load each file layer into the model layer of the same
            name (nested models searched); model layers absent from the file
            keep their values and are reported. False: the file's weighted
            layers and the model's weighted layers are paired in order (names
            may differ; counts must agree).
        exclude: layer names to skip (e.g. :data:`HEAD_LAYERS_FOR_NEW_CLASSES`).
        verbose: 0 silent; >= 1 warn about model layers not in the file and
            file layers not in the model; >= 2 also print each loaded layer.

    Returns:
        :class:`LoadReport`.

    Raises:
        FileNotFoundError: missing file.
        ValueError: unreadable / non-HDF5 / truncated file, no ``layer_names``,
            count or shape mismatch (naming file, layer, weight, shapes).
    """
    filepath = os.fspath(filepath)
    exclude = set(exclude or ())
    report = LoadReport(filepath=filepath)
    with open_weights_file(filepath) as f:
        root = _legacy_root(f, filepath)
        if POOLING_ATTR in f.attrs:
            report.roi_pooling_method = _decode(f.attrs[POOLING_ATTR])
        if ARCHITECTURE_ATTR in f.attrs:
            report.architecture = _read_architecture(f.attrs[ARCHITECTURE_ATTR])
        file_layers = []
        for name, weights in _file_layers(root, filepath):
            if not weights or name in IGNORED_FILE_LAYERS:
                continue
            if name in exclude:
                report.excluded.append(name)
                continue
            file_layers.append((name, weights))
        try:
            if by_name:
                pairs, loaded_layers = _plan_by_name(keras_model, filepath, file_layers,
                                                     report)
            else:
                pairs, loaded_layers = _plan_topological(keras_model, filepath, file_layers,
                                                         exclude, report)
            assign_pairs(filepath, pairs)
        except ValueError as err:
            if not report.architecture:
                raise
            raise ValueError(f"{err}\n{filepath} records the architecture "
                             f"{describe_architecture(report.architecture)}") from err

    report.not_in_file = _unloaded_layers(keras_model, loaded_layers, exclude)
    if verbose >= 2:
        for name in report.loaded:
            print(f"loaded weights: {name}")
    if verbose >= 1 and report.not_in_file:
        warnings.warn(f"{len(report.not_in_file)} weighted layers of the model were not "
                      f"in {filepath!r} and keep their values: {report.not_in_file}",
                      stacklevel=2)
    if verbose >= 1 and report.not_in_model:
        warnings.warn(f"{len(report.not_in_model)} layers of {filepath!r} have no layer "
                      f"of that name in the model and were ignored: {report.not_in_model}",
                      stacklevel=2)
    return report


def _plan_by_name(model, filepath, file_layers, report):
    index = layer_name_index(model)
    pairs, loaded = [], []
    for name, weights in file_layers:
        layer = index.get(name)
        if layer is None or not layer.weights:
            report.not_in_model.append(name)
            continue
        pairs.extend(match_layer_variables(filepath, name, weights, layer))
        report.loaded.append(name)
        loaded.append(layer)
    return pairs, loaded


def _plan_topological(model, filepath, file_layers, exclude, report):
    model_layers = [layer for layer in weighted_layers(model) if layer.name not in exclude]
    if len(model_layers) != len(file_layers):
        raise ValueError(
            f"Cannot load {filepath!r} by layer order: the file has {len(file_layers)} "
            f"weighted layers but the model has {len(model_layers)} (first ones: file "
            f"{[n for n, _ in file_layers[:3]]}, model {[l.name for l in model_layers[:3]]}). "
            f"Use by_name=True to load a file from a different architecture.")
    pairs = []
    for i, ((name, weights), layer) in enumerate(zip(file_layers, model_layers)):
        try:
            pairs.extend(match_layer_variables(filepath, name, weights, layer))
        except ValueError as err:
            raise ValueError(
                f"Cannot load {filepath!r} by layer order: the {i}-th weighted layer of the "
                f"file, {name!r}, does not match the model's {layer.name!r} (wrong "
                f"architecture?). {err}") from err
        report.loaded.append(layer.name)
    return pairs, model_layers


def _unloaded_layers(model, loaded_layers, exclude):
    """Top-level weighted layers that received nothing (nested: no variable loaded)."""
    loaded_ids = set()
    for layer in loaded_layers:
        loaded_ids.update(id(v) for v in layer.weights)
    return [layer.name for layer in weighted_layers(model)
            if layer.name not in exclude
            and not any(id(v) in loaded_ids for v in layer.weights)]


# ------------------------------------------------------------------------------- save

def _layer_weight_entries(layer):
    """``[(weight_name, variable)]`` for one top-level layer, legacy naming.

    Plain layers and Keras wrappers: ``<layer>/<var>:0``. Nested
    models: ``<sublayer>/<var>:0`` for each weighted sub-layer, depth-first.
    Duplicate names within a layer get ``_1``, ``_2`` suffixes as Keras 2 did.
    """
    if _is_nested_model(layer):
        entries = []
        for sub in layer.layers:
            if sub.weights:
                entries.extend(_layer_weight_entries(sub))
    else:
        entries = [(f"{layer.name}/{v.name}:0", v) for v in layer.weights]
    seen, unique = {}, []
    for name, var in entries:
        base = name[:-2]
        count = seen.get(base, 0)
        seen[base] = count + 1
        unique.append((f"{base}_{count}:0" if count else name, var))
    return unique


def _write_layer_group(root, layer):
    """Write one layer's group: ``weight_names`` attribute and datasets."""
    group = root.create_group(layer.name)
    entries = _layer_weight_entries(layer) if layer.weights else []
    _write_attr_strings(group, "weight_names", [n for n, _ in entries])
    for name, var in entries:
        group.create_dataset(name, data=np.asarray(var))


def _write_file(path, keras_model, attrs, write_extra):
    import keras

    with h5py.File(path, "w") as f:
        _write_attr_strings(f, "layer_names", [layer.name for layer in keras_model.layers])
        f.attrs["backend"] = keras.backend.backend().encode("utf8")
        f.attrs["keras_version"] = str(keras.__version__).encode("utf8")
        for key, value in (attrs or {}).items():
            f.attrs[key] = str(value).encode("utf8")
        for layer in keras_model.layers:
            _write_layer_group(f, layer)
        if write_extra is not None:
            write_extra(f)
        f.flush()
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def save_weights(keras_model, filepath, attrs=None, write_extra=None):
    """Save all weights of ``keras_model`` in the legacy Keras 2 HDF5 layout.

    Every layer of ``keras_model.layers`` is listed in ``layer_names`` (weightless
    ones with empty ``weight_names``); nested models are one group. ``attrs``:
    extra root attributes (str values); ``write_extra(h5file)`` adds groups
    before the file is closed. `mrcnn.engine.checkpoints.save_checkpoint` uses
    both for the RoI pooling record and the optimizer state. Written
    atomically: a temporary file ``<filepath>.tmp-<pid>`` in the same directory
    is completed, then renamed over ``filepath``; on any error the previous
    file is left untouched and the temporary file removed.

    Returns:
        the path written (str).
    """
    filepath = os.fspath(filepath)
    directory = os.path.dirname(os.path.abspath(filepath))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"Cannot save weights to {filepath!r}: directory "
                                f"{directory!r} does not exist.")
    names = [layer.name for layer in keras_model.layers]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"Cannot save weights to {filepath!r}: duplicate layer names "
                         f"{duplicates} (layer names must be unique).")
    tmp = f"{filepath}.tmp-{os.getpid()}"
    try:
        _write_file(tmp, keras_model, attrs, write_extra)
        os.replace(tmp, filepath)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return filepath
