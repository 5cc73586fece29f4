"""State dicts named and shaped as torchvision's / timm's ResNet and ResNeXt.

Written from the published architecture (He et al. 2016, Xie et al. 2017, and
torchvision's naming: ``conv1``, ``bn1``, ``layer<L>.<i>.conv<k>`` /
``.bn<k>``, ``.downsample.0`` / ``.1``, ``fc``), not from any implementation.
The stage-2 bottleneck width is ``cardinality * width_per_group`` and doubles
at each stage; block outputs have ``4 * 64 * 2 ** (L - 1)`` channels.
"""

import numpy as np

# Blocks per stage and (cardinality, width per group) of the named networks.
ARCHITECTURES = {
    "resnet50": ((3, 4, 6, 3), 1, 64),
    "resnext50_32x4d": ((3, 4, 6, 3), 32, 4),
    "resnext101_32x4d": ((3, 4, 23, 3), 32, 4),
    "resnext101_64x4d": ((3, 4, 23, 3), 64, 4),
    "resnext101_32x8d": ((3, 4, 23, 3), 32, 8),
}
BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def torch_state_dict(blocks, cardinality, width_per_group, rng=None, fc=True,
                     batches_tracked=True, stages=4):
    """``{name: array}`` of a torchvision-style network.

    ``rng`` None: zero-memory arrays of the right shapes (for counting);
    otherwise random float32 weights of a sensible scale (He-normal kernels,
    BatchNorm gamma ~ U(0.5, 1.5), beta / mean ~ N(0, 0.1), var ~ U(0.5, 2)).
    ``stages`` < 4 writes only ``layer1`` .. ``layer<stages>``.
    """
    state = {}

    def array(shape, kind):
        if rng is None:
            return np.broadcast_to(np.float32(0), shape)
        if kind == "conv":
            fan_in = int(np.prod(shape[1:]))
            return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        if kind == "gamma":
            return rng.uniform(0.5, 1.5, shape).astype(np.float32)
        if kind == "var":
            return rng.uniform(0.5, 2.0, shape).astype(np.float32)
        return (0.1 * rng.standard_normal(shape)).astype(np.float32)

    def conv(name, out, inp, k):
        state[name + ".weight"] = array((out, inp, k, k), "conv")

    def bn(name, c):
        state[name + ".weight"] = array((c,), "gamma")
        state[name + ".bias"] = array((c,), "beta")
        state[name + ".running_mean"] = array((c,), "mean")
        state[name + ".running_var"] = array((c,), "var")
        if batches_tracked:
            state[name + ".num_batches_tracked"] = np.array(1000, np.int64)

    conv("conv1", 64, 3, 7)
    bn("bn1", 64)
    inplanes = 64
    for stage, n in enumerate(blocks[:stages], start=1):
        planes = 64 * 2 ** (stage - 1)
        width = cardinality * width_per_group * 2 ** (stage - 1)
        for i in range(n):
            p = f"layer{stage}.{i}."
            conv(p + "conv1", width, inplanes, 1)
            bn(p + "bn1", width)
            conv(p + "conv2", width, width // cardinality, 3)
            bn(p + "bn2", width)
            conv(p + "conv3", planes * 4, width, 1)
            bn(p + "bn3", planes * 4)
            if i == 0:
                conv(p + "downsample.0", planes * 4, inplanes, 1)
                bn(p + "downsample.1", planes * 4)
            inplanes = planes * 4
    if fc:
        state["fc.weight"] = array((1000, 2048), "conv")
        state["fc.bias"] = array((1000,), "beta")
    return state


def named_state_dict(architecture, rng=None, **kwargs):
    """:func:`torch_state_dict` of an :data:`ARCHITECTURES` name."""
    return torch_state_dict(*ARCHITECTURES[architecture], rng=rng, **kwargs)


def parameter_count(state):
    """What PyTorch's ``sum(p.numel() for p in model.parameters())`` counts:
    weights and biases, not the BatchNorm buffers."""
    return sum(int(np.prod(np.shape(v))) for k, v in state.items()
               if k.rsplit(".", 1)[-1] not in BN_BUFFERS)
