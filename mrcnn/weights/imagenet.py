"""ImageNet initialisation of the backbone.

Two kinds of files, chosen by :func:`load_imagenet_backbone` from the suffix:

* **Keras's application weights** (``.h5``) for ``resnet50`` / ``resnet101``;
* **torchvision / timm checkpoints** (``.safetensors``, ``.npz`` of named
  arrays, or ``.pth`` / ``.pt`` / ``.bin`` where PyTorch is installed) for the
  ResNeXt backbones.

Keras applications
------------------

Keras's ``keras.applications.ResNet50`` / ``ResNet101`` (ResNet v1) name their
layers differently from our backbone (whose names follow the released COCO
file, see :mod:`mrcnn.modeling.backbone`). The mapping, from Keras's resnet source:

=====================================  =====================================
Keras application layer                ours
=====================================  =====================================
``conv1_conv`` / ``conv1_bn``          ``conv1`` / ``bn_conv1``
``conv{s}_block{i}_0_conv`` / ``_bn``  ``res{s}{b}_branch1`` / ``bn{s}{b}_branch1`` (shortcut)
``conv{s}_block{i}_1_conv`` / ``_bn``  ``res{s}{b}_branch2a`` / ``bn{s}{b}_branch2a``
``conv{s}_block{i}_2_conv`` / ``_bn``  ``res{s}{b}_branch2b`` / ``bn{s}{b}_branch2b``
``conv{s}_block{i}_3_conv`` / ``_bn``  ``res{s}{b}_branch2c`` / ``bn{s}{b}_branch2c``
=====================================  =====================================

with stage ``s`` in 2..5 and block letter ``b = "abc..."[i - 1]`` (blocks are
numbered from 1). Layers without a counterpart (``probs``/``predictions``) are
ignored. Files already using our names (the original ``fchollet``
``deep-learning-models`` ResNet-50 release) load unchanged.

Two file layouts are read: the legacy Keras 2 HDF5 layout of the files Keras
downloads (``layer_names`` / ``weight_names``, as in :mod:`mrcnn.weights.io`) and
the Keras 3 ``.weights.h5`` layout written by ``model.save_weights`` (groups
``layers/<class>[_n]/vars`` holding datasets ``0``, ``1``, ... and an attribute
``name`` with the layer name).

Note: Keras's ImageNet ResNets use BatchNorm epsilon 1.001e-5 while ours uses
the Keras default 1e-3 (as the COCO weights were trained with); the ImageNet
statistics are a starting point for fine-tuning, so the difference is harmless.

torchvision / timm
------------------

:mod:`mrcnn.weights.imagenet_convert` maps torchvision's and timm's names and
layouts onto ours; a torchvision / timm ResNet is refused for ``resnet50`` /
``resnet101`` (another stride placement). ``get_imagenet_weights`` looks for
``$KERAS_HOME/models/<architecture>.safetensors`` (or ``.npz``, ``.pth``) and
says where to download one (timm's Hugging Face repositories,
:data:`mrcnn.weights.imagenet_convert.TIMM_CHECKPOINTS`).
"""

import os
import re

import h5py

from mrcnn.modeling.backbone import BACKBONE_SPECS
from mrcnn.weights import io as weights_io
from mrcnn.weights.imagenet_convert import (TIMM_CHECKPOINTS, TORCH_SUFFIXES,
                                            TORCHVISION_WEIGHTS, model_backbone,
                                            torch_backbone_pairs)

__all__ = ["IMAGENET_WEIGHTS_URL", "imagenet_weights_filename", "imagenet_weights_path",
           "get_imagenet_weights", "keras_to_mrcnn_name", "read_named_weights",
           "load_imagenet_backbone"]

# Where keras.applications downloads its ResNet weights from.
IMAGENET_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"

_BRANCHES = {"0": "1", "1": "2a", "2": "2b", "3": "2c"}
_BLOCK_RE = re.compile(r"^conv([2-5])_block(\d+)_([0-3])_(conv|bn)$")


def imagenet_weights_filename(architecture="resnet50", include_top=False):
    """Keras's file name, e.g. ``resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5``."""
    if architecture not in ("resnet50", "resnet101"):
        raise ValueError(f"No ImageNet weights for architecture {architecture!r}; "
                         f"expected 'resnet50' or 'resnet101'.")
    suffix = "" if include_top else "_notop"
    return f"{architecture}_weights_tf_dim_ordering_tf_kernels{suffix}.h5"


def _keras_models_dir():
    keras_home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(keras_home, "models")


def _is_torch_layout(architecture):
    spec = BACKBONE_SPECS.get(architecture)
    return spec is not None and spec.layout == "torch"


def imagenet_weights_path(architecture="resnet50"):
    """Where the file is looked for: ``$KERAS_HOME/models/<file>`` (``~/.keras/models``).

    ResNet: Keras's file name (:func:`imagenet_weights_filename`); ResNeXt:
    ``<architecture>.safetensors`` (:func:`get_imagenet_weights` also accepts
    ``.npz`` and ``.pth`` there).
    """
    if _is_torch_layout(architecture):
        return os.path.join(_keras_models_dir(), f"{architecture}.safetensors")
    return os.path.join(_keras_models_dir(), imagenet_weights_filename(architecture))


def get_imagenet_weights(architecture="resnet50"):
    """Path of the (no-top) ImageNet weights file if present locally.

    Nothing is downloaded here (the machines this runs on may be offline).

    Raises:
        FileNotFoundError: saying which file to download, from where, and where
            to put it.
    """
    path = imagenet_weights_path(architecture)
    if _is_torch_layout(architecture):
        stem = os.path.splitext(path)[0]
        for suffix in (".safetensors", ".npz", ".pth"):
            if os.path.isfile(stem + suffix):
                return stem + suffix
        repo = TIMM_CHECKPOINTS[architecture][0]
        url = f"https://huggingface.co/{repo}/resolve/main/model.safetensors"
        tv = TORCHVISION_WEIGHTS.get(architecture)
        tv = (f", or torchvision's `torchvision.models.{tv}.IMAGENET1K_V1` .pth saved as "
              f"{stem + '.pth'!r} (reading .pth needs PyTorch)") if tv else ""
        raise FileNotFoundError(
            f"ImageNet weights for {architecture!r} not found at {path!r} (nor .npz / .pth "
            f"next to it). Download timm's {url} and save it as {path!r} (e.g. `mkdir -p "
            f"{os.path.dirname(path)} && curl -L -o {path} {url}`){tv}.")
    if os.path.isfile(path):
        return path
    name = imagenet_weights_filename(architecture)
    raise FileNotFoundError(
        f"ImageNet weights not found at {path!r}. Download {IMAGENET_WEIGHTS_URL}{name} "
        f"and save it as {path!r} (e.g. `mkdir -p {os.path.dirname(path)} && curl -L -o "
        f"{path} {IMAGENET_WEIGHTS_URL}{name}`), or run "
        f"`python -c \"import keras; keras.applications.{_app_name(architecture)}"
        f"(weights='imagenet', include_top=False)\"` once on a machine with internet access.")


def _app_name(architecture):
    return {"resnet50": "ResNet50", "resnet101": "ResNet101"}[architecture]


def keras_to_mrcnn_name(name):
    """Our layer name for a Keras-application ResNet layer name, or None.

    ``conv2_block1_0_conv`` -> ``res2a_branch1``; ``conv4_block23_3_bn`` ->
    ``bn4w_branch2c``; ``conv1_conv`` -> ``conv1``; ``conv1_bn`` -> ``bn_conv1``;
    names already in our scheme (``res2a_branch2a``, ``bn_conv1``...) are kept.
    """
    if name == "conv1_conv":
        return "conv1"
    if name == "conv1_bn":
        return "bn_conv1"
    match = _BLOCK_RE.match(name)
    if match:
        stage, block, branch, kind = match.groups()
        block = int(block)
        if not 1 <= block <= 26:
            return None
        letter = chr(ord("a") + block - 1)
        prefix = "res" if kind == "conv" else "bn"
        return f"{prefix}{stage}{letter}_branch{_BRANCHES[branch]}"
    if name in ("conv1", "bn_conv1") or re.match(r"^(res|bn)[2-5][a-z]_branch(1|2[abc])$", name):
        return name
    return None


def _legacy_named_weights(root, filepath):
    out = {}
    for name in weights_io.read_attr_strings(root, "layer_names"):
        group = root.get(name)
        if not isinstance(group, h5py.Group):
            raise ValueError(f"{filepath!r}: layer {name!r} is listed in 'layer_names' but "
                             f"has no group in the file (corrupted weights file).")
        names = weights_io.read_attr_strings(group, "weight_names") or []
        if names:
            out[name] = [(w, group[w]) for w in names]
    return out


def _keras3_named_weights(f, filepath):
    """Walk a Keras 3 ``.weights.h5`` file: every ``vars`` group with a ``name``."""
    out = {}

    def visit(path, obj):
        if not (isinstance(obj, h5py.Group) and path.split("/")[-1] == "vars"):
            return
        keys = sorted((k for k in obj.keys() if k.isdigit()), key=int)
        if not keys:
            return
        if "name" not in obj.attrs:
            raise ValueError(f"{filepath!r}: Keras 3 weights group {path!r} has no 'name' "
                             f"attribute; re-save the weights with a recent Keras 3.")
        layer = obj.attrs["name"]
        layer = layer.decode("utf8") if isinstance(layer, bytes) else str(layer)
        out.setdefault(layer, [(f"{layer}/vars/{k}", obj[k]) for k in keys])

    f.visititems(visit)
    return out


def read_named_weights(f, filepath):
    """``{layer_name: [(weight_name, dataset), ...]}`` from either layout (open file)."""
    for group in (f, f.get("model_weights")):
        if isinstance(group, h5py.Group) and \
                weights_io.read_attr_strings(group, "layer_names") is not None:
            return _legacy_named_weights(group, filepath)
    if "layers" in f:
        return _keras3_named_weights(f, filepath)
    raise ValueError(f"{filepath!r} is not a Keras weights file: neither a 'layer_names' "
                     f"attribute (legacy layout) nor a 'layers' group (Keras 3 layout); "
                     f"found top-level entries {sorted(f.keys())[:10]}.")


# ------------------------------------------------------------------------ loading

def load_imagenet_backbone(keras_model, filepath=None, architecture="resnet50", verbose=0):
    """Initialise the model's backbone layers from an ImageNet file.

    Args:
        keras_model: a model containing our backbone layers (``conv1``,
            ``bn_conv1``, ``res2a_branch2a``, ...), possibly in nested models.
        filepath: the weights file: a Keras application ``.h5`` (ResNet), or a
            torchvision / timm checkpoint (ResNeXt; :data:`TORCH_SUFFIXES`);
            None -> :func:`get_imagenet_weights`.
        architecture: used only to locate the default file (``Config.BACKBONE``).
        verbose: >= 1 prints a one-line summary.

    Returns:
        :class:`mrcnn.weights.io.LoadReport`; ``not_in_file`` lists the model's
        backbone layers the file did not cover (e.g. res4g..res4w when loading
        ResNet-50 weights into a ResNet-101), ``not_in_model`` the mapped file
        layers the model lacks (e.g. stage 5 when ``stage5=False``).

    Raises:
        FileNotFoundError, ValueError: as :func:`mrcnn.weights.io.load_weights`;
        ValueError also when no backbone layer of the model is in the file,
        and for a file whose architecture is not the model's (a torchvision /
        timm ResNet into ``resnet50`` / ``resnet101``, whose stride sits
        elsewhere; a Keras ResNet into a ResNeXt; another cardinality or width).
        ImportError: see :func:`read_torch_state_dict`.
    """
    if filepath is None:
        filepath = get_imagenet_weights(architecture)
    filepath = os.fspath(filepath)
    report = weights_io.LoadReport(filepath=filepath)
    index = weights_io.layer_name_index(keras_model)
    if filepath.lower().endswith(TORCH_SUFFIXES):
        pairs = torch_backbone_pairs(filepath, index, report)
        if not pairs:
            raise ValueError(f"{filepath!r}: none of its layers is in the model.")
        weights_io.assign_pairs(filepath, pairs)
        return _finish_report(report, index, [index[n] for n in report.loaded], verbose)
    model = model_backbone(index)
    if model is not None and model[0] == "torch":
        raise ValueError(f"{filepath!r}: Keras's ImageNet files are ResNets, but the model's "
                         f"backbone is a ResNeXt (cardinality {model[1]}); initialise it from "
                         f"a torchvision / timm checkpoint ({', '.join(TORCH_SUFFIXES)}).")
    pairs, loaded = [], []
    with weights_io.open_weights_file(filepath) as f:
        for file_name, file_weights in read_named_weights(f, filepath).items():
            ours = keras_to_mrcnn_name(file_name)
            if ours is None:
                continue
            layer = index.get(ours)
            if layer is None or not layer.weights:
                report.not_in_model.append(ours)
                continue
            pairs.extend(weights_io.match_layer_variables(filepath, file_name, file_weights,
                                                          layer))
            report.loaded.append(ours)
            loaded.append(layer)
        if not pairs:
            raise ValueError(f"{filepath!r}: none of its layers maps onto a ResNet backbone "
                             f"layer of the model (expected Keras application names such "
                             f"as 'conv1_conv', 'conv2_block1_1_conv').")
        weights_io.assign_pairs(filepath, pairs)
    return _finish_report(report, index, loaded, verbose)


def _finish_report(report, index, loaded, verbose):
    """Fill ``not_in_file`` (backbone layers left as they were); print if verbose."""
    filepath = report.filepath
    loaded_ids = {id(v) for layer in loaded for v in layer.weights}
    report.not_in_file = [name for name, layer in index.items()
                          if keras_to_mrcnn_name(name) == name and layer.weights
                          and not any(id(v) in loaded_ids for v in layer.weights)]
    if verbose:
        print(f"ImageNet backbone: {len(report.loaded)} layers loaded from {filepath}; "
              f"{len(report.not_in_file)} backbone layers not in the file.")
    return report
