"""Test helper: write HDF5 files in exactly the legacy Keras 2 weights layout.

Independent of :mod:`mrcnn.weights.io` (whose reader the tests check against it).

* :func:`write_legacy_h5` writes a layer list given explicitly.
* :func:`write_reference_h5` writes the layout of the released COCO Mask R-CNN
  file described by a reference TSV (``shared/reference/coco_h5_layers_*.tsv``:
  columns ``h5_layer_names_index``, ``layer_name``, ``keras_class``,
  ``weights(name:shape)``). Each dataset gets a distinct ``fillvalue`` and no
  data is written, so HDF5 allocates no storage and the file stays a few
  hundred KB although it describes ~64M parameters; reading a dataset returns
  its fill value everywhere. Weightless layers, whose names the TSV does not
  give, fill the gaps of ``h5_layer_names_index`` as ``weightless_<index>``.
"""

import os

import h5py
import numpy as np

# A copy of shared/reference/coco_h5_layers_*_r101_c81.tsv (layer names and
# weight shapes of the released COCO file) lives in tests/fixtures.
REFERENCE_DIR = os.environ.get("MRCNN_REFERENCE_DIR",
                               os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures"))


def reference_tsv(mode):
    """Path of the reference TSV for ``mode`` ("inference" or "training")."""
    return os.path.join(REFERENCE_DIR, f"coco_h5_layers_{mode}_r101_c81.tsv")


def parse_reference_tsv(tsv_path):
    """``[(index, layer_name, keras_class, [(weight_name, shape), ...]), ...]``."""
    rows = []
    with open(tsv_path) as f:
        header = f.readline().rstrip("\n").split("\t")
        if header[:2] != ["h5_layer_names_index", "layer_name"]:
            raise ValueError(f"{tsv_path!r}: unexpected header {header}")
        for line in f:
            if not line.strip():
                continue
            index, name, cls, spec = line.rstrip("\n").split("\t")
            weights = []
            for item in filter(None, (s.strip() for s in spec.split(";"))):
                wname, shape = item.split(":(", 1)
                dims = [int(d) for d in shape.rstrip(")").split(",") if d.strip()]
                weights.append((wname, tuple(dims)))
            rows.append((int(index), name, cls, weights))
    return rows


def _names_attr(values):
    return np.array([v.encode("utf8") for v in values]) if values else np.zeros((0,), "S1")


def write_legacy_h5(path, layers, wrap_model_weights=False):
    """Write a legacy Keras 2 weights file.

    Args:
        path: output file.
        layers: ``[(layer_name, [(weight_name, value), ...]), ...]`` in file
            order; ``value`` is an array (written as data) or a
            ``(shape, fillvalue)`` tuple (float32 dataset, nothing written).
            Weightless layers have an empty list.
        wrap_model_weights: put everything under ``/model_weights`` as Keras
            full-model saves do.
    """
    with h5py.File(path, "w") as f:
        root = f.create_group("model_weights") if wrap_model_weights else f
        root.attrs["layer_names"] = _names_attr([name for name, _ in layers])
        root.attrs["backend"] = b"tensorflow"
        root.attrs["keras_version"] = b"2.1.6"
        for name, weights in layers:
            group = root.create_group(name)
            group.attrs["weight_names"] = _names_attr([w for w, _ in weights])
            for wname, value in weights:
                if isinstance(value, tuple):
                    shape, fill = value
                    group.create_dataset(wname, shape=shape, dtype="float32",
                                         fillvalue=np.float32(fill))
                else:
                    group.create_dataset(wname, data=np.asarray(value))


def fill_value(k):
    """Distinct, exactly representable float32 fill value of the k-th dataset."""
    return np.float32(0.25 * (k + 1))


def write_reference_h5(tsv_path, path, wrap_model_weights=False):
    """Write the released file's layout from a reference TSV.

    Returns:
        ``{layer_name: [(weight_name, shape, fillvalue), ...]}`` for the
        weighted layers (in file order).
    """
    rows = parse_reference_tsv(tsv_path)
    by_index = {index: (name, weights) for index, name, _, weights in rows}
    layers, expected, k = [], {}, 0
    for index in range(max(by_index) + 1):
        if index not in by_index:
            layers.append((f"weightless_{index}", []))
            continue
        name, weights = by_index[index]
        entries = []
        for wname, shape in weights:
            fill = fill_value(k)
            k += 1
            entries.append((wname, (shape, fill)))
            expected.setdefault(name, []).append((wname, shape, fill))
        layers.append((name, entries))
    write_legacy_h5(path, layers, wrap_model_weights=wrap_model_weights)
    return expected
