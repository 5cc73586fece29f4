"""Conversion of torchvision / timm ResNet and ResNeXt checkpoints to our backbone.

torchvision's and timm's ResNet / ResNeXt share one naming scheme
(:func:`torch_to_mrcnn_name`):

=======================================  ==============================================
torchvision / timm                       ours
=======================================  ==============================================
``conv1.weight``                         ``conv1`` kernel
``bn1.weight`` / ``bias``                ``bn_conv1`` gamma / beta
``bn1.running_mean`` / ``running_var``   ``bn_conv1`` moving_mean / moving_variance
``layer{L}.{i}.conv{1,2,3}.weight``      ``res{L+1}{b}_branch2{a,b,c}`` kernel
``layer{L}.{i}.bn{1,2,3}.*``             ``bn{L+1}{b}_branch2{a,b,c}`` (as ``bn1``)
``layer{L}.{i}.downsample.0.weight``     ``res{L+1}{b}_branch1`` kernel (the shortcut)
``layer{L}.{i}.downsample.1.*``          ``bn{L+1}{b}_branch1``
=======================================  ==============================================

with ``b = "abc..."[i]`` (blocks numbered from 0). ``fc.*`` (the classifier)
and ``*.num_batches_tracked`` are ignored; a ``module.`` prefix (saved from
``DataParallel``) is stripped; any other name is an error (it is another
architecture: timm's ``resnext50d`` deep stem, SE blocks, ...). Kernels go
from PyTorch's ``[out, in / groups, kh, kw]`` to Keras's
``[kh, kw, in / groups, out]`` (grouped convolutions included: both split the
output channels into consecutive groups). The ResNeXt BatchNorm layers use
PyTorch's epsilon 1e-5, so the statistics are copied unchanged and a converted
block computes exactly what the checkpoint's network computes.

The stride: torchvision and timm put the stride of a stage's first block on
the 3x3 conv (their ResNeXt, and their ResNet "v1.5"), as our ResNeXt
backbones do. Our ``resnet50`` / ``resnet101`` are the Caffe-style ResNet of
the released COCO weights (stride on the 1x1 conv, conv biases, epsilon 1e-3):
loading a torchvision / timm ResNet into them would compute another network,
so it is refused with an error saying so (use Keras's ImageNet ``.h5``).

Where to get the files (``get_imagenet_weights`` looks for
``$KERAS_HOME/models/<architecture>.safetensors``, ``.npz`` or ``.pth``):
timm's Hugging Face repositories hold ``model.safetensors`` files
(:data:`TIMM_CHECKPOINTS`); torchvision's ``.pth`` files come with
``torchvision.models.ResNeXt50_32X4D_Weights`` and the like.

Entry point: :func:`mrcnn.weights.imagenet.load_imagenet_backbone` (by suffix,
:data:`TORCH_SUFFIXES`).
"""

import os
import re

import numpy as np

from mrcnn.modeling.backbone import BACKBONE_SPECS, TORCH_BN_EPSILON

__all__ = ["TIMM_CHECKPOINTS", "TORCHVISION_WEIGHTS", "TORCH_SUFFIXES", "torch_to_mrcnn_name",
           "read_torch_state_dict", "convert_torch_state_dict", "torch_architecture",
           "model_backbone", "torch_backbone_pairs"]

# Hugging Face repositories of timm with a model.safetensors per architecture
# (https://huggingface.co/<repo>/resolve/main/model.safetensors); the first is
# the one the FileNotFoundError suggests. "tv_in1k" are torchvision's weights.
TIMM_CHECKPOINTS = {
    "resnext50_32x4d": ("timm/resnext50_32x4d.tv_in1k", "timm/resnext50_32x4d.a1h_in1k"),
    "resnext101_32x4d": ("timm/resnext101_32x4d.gluon_in1k",
                         "timm/resnext101_32x4d.fb_ssl_yfcc100m_ft_in1k"),
    "resnext101_64x4d": ("timm/resnext101_64x4d.tv_in1k", "timm/resnext101_64x4d.c1_in1k"),
    "resnext101_32x8d": ("timm/resnext101_32x8d.tv_in1k", "timm/resnext101_32x8d.tv2_in1k"),
}
# torchvision's weight enums (their .pth files), where torchvision has the architecture.
TORCHVISION_WEIGHTS = {"resnext50_32x4d": "ResNeXt50_32X4D_Weights",
                        "resnext101_64x4d": "ResNeXt101_64X4D_Weights",
                        "resnext101_32x8d": "ResNeXt101_32X8D_Weights"}
# File suffixes read as PyTorch state dicts (torchvision / timm names).
TORCH_SUFFIXES = (".safetensors", ".npz", ".pth", ".pt", ".bin")

_TORCH_BLOCK_RE = re.compile(r"^layer([1-4])\.(\d+)\.(conv[1-3]|bn[1-3]|downsample\.[01])\."
                             r"(weight|bias|running_mean|running_var)$")
_TORCH_BRANCH = {"1": "2a", "2": "2b", "3": "2c"}
_BN_VARIABLES = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean",
                 "running_var": "moving_variance"}


def _torch_ignored(name):
    """The classifier and BatchNorm's step counters: not part of the backbone."""
    return name.startswith("fc.") or name.endswith(".num_batches_tracked")


def torch_to_mrcnn_name(name):
    """``(layer, variable)`` of ours for a torchvision / timm ResNet(-X) name, or None.

    ``conv1.weight`` -> ``("conv1", "kernel")``; ``bn1.running_var`` ->
    ``("bn_conv1", "moving_variance")``; ``layer3.22.conv2.weight`` ->
    ``("res4w_branch2b", "kernel")``; ``layer1.0.downsample.1.bias`` ->
    ``("bn2a_branch1", "beta")``. A leading ``module.`` is ignored.
    """
    if name.startswith("module."):
        name = name[len("module."):]
    if name == "conv1.weight":
        return "conv1", "kernel"
    if name.startswith("bn1.") and name[4:] in _BN_VARIABLES:
        return "bn_conv1", _BN_VARIABLES[name[4:]]
    match = _TORCH_BLOCK_RE.match(name)
    if not match:
        return None
    stage, block, part, variable = match.groups()
    block = int(block)
    if block > 25:
        return None
    suffix = f"{int(stage) + 1}{chr(ord('a') + block)}_branch"
    if part.startswith("downsample"):
        suffix += "1"
        is_conv = part.endswith("0")
    else:
        suffix += _TORCH_BRANCH[part[-1]]
        is_conv = part.startswith("conv")
    if is_conv:
        return ("res" + suffix, "kernel") if variable == "weight" else None
    return "bn" + suffix, _BN_VARIABLES[variable]


def read_torch_state_dict(filepath):
    """``{name: np.ndarray}`` from a ``.safetensors``, ``.npz`` or ``.pth`` file.

    Raises:
        FileNotFoundError: no such file.
        ImportError: ``.safetensors`` without the ``safetensors`` package,
            ``.pth`` / ``.pt`` / ``.bin`` without PyTorch (saying what to do).
        ValueError: an unreadable file or an unknown suffix.
    """
    filepath = os.fspath(filepath)
    if not os.path.isfile(filepath):
        raise FileNotFoundError(f"ImageNet checkpoint not found: {filepath!r}")
    suffix = os.path.splitext(filepath)[1].lower()
    if suffix == ".safetensors":
        try:
            from safetensors.numpy import load_file
        except ImportError as err:
            raise ImportError(f"Reading {filepath!r} needs the 'safetensors' package "
                              f"(`pip install safetensors`); an .npz of the same named "
                              f"arrays is read without it.") from err
        try:
            return dict(load_file(filepath))
        except Exception as err:  # safetensors' own error types, bfloat16 arrays...
            raise ValueError(f"{filepath!r} is not a readable .safetensors file of float "
                             f"arrays: {err}") from err
    if suffix == ".npz":
        try:
            with np.load(filepath, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        except Exception as err:  # zipfile / pickle / format errors
            raise ValueError(f"{filepath!r} is not a readable .npz of named arrays "
                             f"(np.savez): {err}") from err
    if suffix in (".pth", ".pt", ".bin"):
        return _read_torch_pickle(filepath)
    raise ValueError(f"{filepath!r}: unknown checkpoint suffix {suffix!r}; expected one of "
                     f"{TORCH_SUFFIXES} (or a Keras .h5).")


def _read_torch_pickle(filepath):
    try:
        import torch
    except ImportError as err:
        raise ImportError(
            f"Reading {filepath!r} (a PyTorch checkpoint) needs PyTorch (`pip install "
            f"torch`). Without it, use timm's model.safetensors of the weights (see "
            f"mrcnn.weights.imagenet.TIMM_CHECKPOINTS), or convert the file once where "
            f"PyTorch is installed: python -c \"import numpy as np, torch; sd = torch.load("
            f"'{os.path.basename(filepath)}', map_location='cpu', weights_only=True); "
            f"np.savez('weights.npz', **{{k: v.numpy() for k, v in sd.items()}})\"") from err
    try:
        obj = torch.load(filepath, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"{filepath!r} is not a readable PyTorch state dict: {err}") from err
    for key in ("state_dict", "model"):  # training checkpoints wrap the weights
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise ValueError(f"{filepath!r} holds a {type(obj).__name__}, not a state dict "
                         f"(name -> tensor).")
    return {k: (v.detach().cpu().float().numpy() if v.is_floating_point() else
                v.detach().cpu().numpy()) if hasattr(v, "detach") else np.asarray(v)
            for k, v in obj.items()}


def convert_torch_state_dict(state, filepath="<state dict>"):
    """Our arrays from a torchvision / timm state dict.

    Args:
        state: ``{torch name: array}``; conv kernels ``[out, in / groups, kh,
            kw]``, BatchNorm vectors ``[C]``.
        filepath: for messages.

    Returns:
        ``{layer: {variable: array}}`` (variables ``kernel`` as
        ``[kh, kw, in / groups, out]``; ``gamma``, ``beta``, ``moving_mean``,
        ``moving_variance``), the BatchNorm statistics unchanged (our ResNeXt
        layers use PyTorch's epsilon).

    Raises:
        ValueError: a name outside the scheme (another architecture), a kernel
            that is not 4-D, a BatchNorm vector that is not 1-D.
    """
    out, unknown = {}, []
    for name, array in state.items():
        if _torch_ignored(name.removeprefix("module.")):
            continue
        mapped = torch_to_mrcnn_name(name)
        if mapped is None:
            unknown.append(name)
            continue
        layer, variable = mapped
        array = np.asarray(array)
        if variable == "kernel":
            if array.ndim != 4:
                raise ValueError(f"{filepath!r}: {name!r} has shape {array.shape}; a conv "
                                 f"weight [out, in / groups, kh, kw] was expected.")
            array = np.transpose(array, (2, 3, 1, 0))
        elif array.ndim != 1:
            raise ValueError(f"{filepath!r}: {name!r} has shape {array.shape}; a BatchNorm "
                             f"vector [channels] was expected.")
        out.setdefault(layer, {})[variable] = array
    if unknown:
        raise ValueError(
            f"{filepath!r}: {len(unknown)} names are not in the torchvision / timm "
            f"ResNet / ResNeXt scheme (conv1, bn1, layer<L>.<i>.conv<k>, .bn<k>, "
            f".downsample.0/1, fc), e.g. {sorted(unknown)[:5]}: the file is another "
            f"architecture (a deep stem, SE blocks, ...), which no backbone here builds.")
    if not out:
        raise ValueError(f"{filepath!r}: no torchvision / timm ResNet / ResNeXt weights in "
                         f"the file (expected names such as 'conv1.weight', "
                         f"'layer1.0.conv2.weight'); found {sorted(state)[:5]}.")
    return out


def torch_architecture(state, filepath="<state dict>"):
    """``(blocks, cardinality, width_per_group, name)`` of a torchvision / timm file.

    ``blocks``: per stage 2..5, counted from the ``layer<L>.<i>`` names (0 for
    a stage the file lacks); ``cardinality`` and ``width_per_group`` from
    ``layer1.0.conv2.weight`` (``[width, width / groups, 3, 3]``); ``name``:
    the matching ``Config.BACKBONE`` name (a ResNet 'v1.5' matches none:
    ``"torchvision-style resnet50"``...), or None.
    """
    state = {k.removeprefix("module."): v for k, v in state.items()}
    blocks = [0, 0, 0, 0]
    for name in state:
        match = _TORCH_BLOCK_RE.match(name)
        if match:
            stage, block = int(match.group(1)), int(match.group(2))
            blocks[stage - 1] = max(blocks[stage - 1], block + 1)
    conv2 = state.get("layer1.0.conv2.weight")
    if conv2 is None or np.ndim(conv2) != 4:
        raise ValueError(f"{filepath!r}: no 'layer1.0.conv2.weight' conv kernel: cannot "
                         f"tell the file's architecture.")
    width, per_group = int(np.shape(conv2)[0]), int(np.shape(conv2)[1])
    cardinality = width // per_group
    width_per_group = width // cardinality
    name = None
    for candidate, spec in BACKBONE_SPECS.items():
        if (tuple(blocks), cardinality, width_per_group) == \
                (spec.blocks, spec.cardinality, spec.width_per_group):
            name = candidate if spec.layout == "torch" else f"torchvision-style {candidate}"
    return tuple(blocks), cardinality, width_per_group, name


def model_backbone(index):
    """``(layout, cardinality, width)`` of the model's backbone, None if it has none.

    Layout ``"caffe"`` when the first block of stage 3 strides on its 1x1
    ``res3a_branch2a`` conv (our ResNet), ``"torch"`` when on the 3x3 (ResNeXt).
    """
    conv2b, conv3a = index.get("res2a_branch2b"), index.get("res3a_branch2a")
    if conv2b is None or conv3a is None or not hasattr(conv3a, "strides"):
        return None
    layout = "caffe" if tuple(conv3a.strides) != (1, 1) else "torch"
    return layout, int(conv2b.groups), int(conv2b.filters)


def torch_backbone_pairs(filepath, index, report):
    """``[(variable, array), ...]`` loading a torchvision / timm checkpoint.

    Args:
        filepath: the checkpoint (:func:`read_torch_state_dict`).
        index: ``{name: layer}`` of the model (``mrcnn.weights.io.layer_name_index``).
        report: a ``LoadReport``; ``loaded`` and ``not_in_model`` are appended to.

    Raises:
        ValueError: the model's backbone is the Caffe-style ResNet, or another
            cardinality / width than the file's, or a layer's variables or
            shapes differ (all checked before anything is assigned).
    """
    state = read_torch_state_dict(filepath)
    converted = convert_torch_state_dict(state, filepath)
    blocks, cardinality, per_group, file_name = torch_architecture(state, filepath)
    described = file_name or (f"a {sum(blocks) * 3 + 2}-layer network, cardinality "
                              f"{cardinality}, width {per_group} per group")
    model = model_backbone(index)
    if model is None:
        raise ValueError(f"{filepath!r}: the model has no ResNet / ResNeXt backbone layers "
                         f"('res2a_branch2b', 'res3a_branch2a').")
    layout, groups, width = model
    if layout == "caffe":
        raise ValueError(
            f"{filepath!r} is a torchvision / timm checkpoint ({described}); the model's "
            f"backbone is the Caffe-style ResNet of the released COCO weights (BACKBONE "
            f"'resnet50' / 'resnet101': stride on the 1x1 conv of each stage's first block, "
            f"conv biases, BatchNorm epsilon 1e-3), while torchvision and timm put that "
            f"stride on the 3x3 conv: the loaded network would compute something else, so "
            f"the file is refused. Initialise 'resnet50' / 'resnet101' from Keras's "
            f"ImageNet .h5 (get_imagenet_weights), or use a ResNeXt BACKBONE with a "
            f"torchvision / timm ResNeXt checkpoint.")
    if (groups, width) != (cardinality, cardinality * per_group):
        raise ValueError(
            f"{filepath!r} holds {described} (stage-2 width {cardinality} x {per_group}); "
            f"the model's backbone has cardinality {groups} and width {width} (layer "
            f"'res2a_branch2b'): choose the BACKBONE the file was trained as.")
    pairs = []
    for layer_name, arrays in converted.items():
        layer = index.get(layer_name)
        if layer is None or not layer.weights:
            report.not_in_model.append(layer_name)
            continue
        if hasattr(layer, "moving_variance") and \
                abs(float(layer.epsilon) - TORCH_BN_EPSILON) > 1e-12:
            raise ValueError(f"{filepath!r}: the model's BatchNorm {layer_name!r} has "
                             f"epsilon {layer.epsilon}, not PyTorch's {TORCH_BN_EPSILON}: "
                             f"the file's statistics would normalise differently.")
        variables = {v.name: v for v in layer.weights}
        if set(variables) != set(arrays):
            raise ValueError(f"{filepath!r}: layer {layer_name!r} gets {sorted(arrays)} from "
                             f"the file, but the model's layer has {sorted(variables)}.")
        for name, array in arrays.items():
            var = variables[name]
            if tuple(array.shape) != tuple(var.shape):
                raise ValueError(f"{filepath!r}: {layer_name!r} {name} has shape "
                                 f"{tuple(array.shape)} (converted from the file) but the "
                                 f"model expects {tuple(var.shape)}.")
            pairs.append((var, array))
        report.loaded.append(layer_name)
    return pairs
