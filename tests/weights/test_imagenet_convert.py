"""Tests of mrcnn.weights.imagenet_convert: torchvision / timm names, layouts, files."""

import sys

import numpy as np
import pytest

from mrcnn.modeling.backbone import BACKBONE_SPECS
from mrcnn.weights.imagenet_convert import (convert_torch_state_dict, read_torch_state_dict,
                                            torch_architecture, torch_to_mrcnn_name)
from torch_state_fixtures import ARCHITECTURES, named_state_dict, parameter_count, \
    torch_state_dict

# torchvision's published classifier sizes (torchvision.models docs, "num_params").
TORCHVISION_PARAMS = {"resnet50": 25_557_032, "resnext50_32x4d": 25_028_904,
                      "resnext101_64x4d": 83_455_272, "resnext101_32x8d": 88_791_336}


@pytest.mark.parametrize("name, expected", [
    ("conv1.weight", ("conv1", "kernel")),
    ("bn1.weight", ("bn_conv1", "gamma")),
    ("bn1.bias", ("bn_conv1", "beta")),
    ("bn1.running_mean", ("bn_conv1", "moving_mean")),
    ("bn1.running_var", ("bn_conv1", "moving_variance")),
    ("layer1.0.conv1.weight", ("res2a_branch2a", "kernel")),
    ("layer2.3.bn2.running_var", ("bn3d_branch2b", "moving_variance")),
    ("layer3.22.conv3.weight", ("res4w_branch2c", "kernel")),
    ("layer4.0.downsample.0.weight", ("res5a_branch1", "kernel")),
    ("layer1.0.downsample.1.bias", ("bn2a_branch1", "beta")),
    ("module.layer4.2.bn3.weight", ("bn5c_branch2c", "gamma")),
    ("fc.weight", None),
    ("layer1.0.conv1.bias", None),          # torchvision convs have no bias
    ("layer1.0.se.fc1.weight", None),       # SE block: another architecture
    ("conv1.0.weight", None),               # timm's deep stem
])
def test_torch_names_map_onto_ours(name, expected):
    assert torch_to_mrcnn_name(name) == expected


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_file_architecture_is_recognised_from_names_and_shapes(architecture):
    state = named_state_dict(architecture)  # shapes only (no memory)
    blocks, cardinality, per_group, name = torch_architecture(state)
    spec = BACKBONE_SPECS[architecture]
    assert (blocks, cardinality, per_group) == (spec.blocks, spec.cardinality,
                                                spec.width_per_group)
    # A torchvision ResNet is not our (Caffe-style) resnet50.
    assert name == (architecture if architecture.startswith("resnext")
                    else "torchvision-style resnet50")


def test_the_state_dicts_have_torchvisions_parameter_counts():
    # The names and shapes the tests write reproduce torchvision's published
    # counts, so they are the published architectures; resnext101_32x4d (not
    # in torchvision) follows from the same construction: 44,177,704 (timm
    # lists its resnext101_32x4d as 44.2 M).
    for architecture, count in TORCHVISION_PARAMS.items():
        assert parameter_count(named_state_dict(architecture)) == count, architecture
    assert parameter_count(named_state_dict("resnext101_32x4d")) == 44_177_704


def test_conversion_transposes_kernels_and_copies_batchnorm():
    rng = np.random.default_rng(0)
    state = torch_state_dict((1, 1, 1, 1), 32, 4, rng=rng)
    out = convert_torch_state_dict(state, "x.npz")
    grouped = state["layer2.0.conv2.weight"]                   # [out, in / groups, kh, kw]
    assert grouped.shape == (256, 8, 3, 3)
    kernel = out["res3a_branch2b"]["kernel"]                   # [kh, kw, in / groups, out]
    assert kernel.shape == (3, 3, 8, 256)
    np.testing.assert_array_equal(kernel[1, 2, 5, 100], grouped[100, 5, 1, 2])
    np.testing.assert_array_equal(out["bn3a_branch1"]["moving_variance"],
                                  state["layer2.0.downsample.1.running_var"])
    assert set(out["bn_conv1"]) == {"gamma", "beta", "moving_mean", "moving_variance"}
    assert "fc" not in out and len(out) == 2 + 4 * (6 + 2)   # stem, 4 blocks x (3 + 1) x 2


def test_names_of_another_architecture_are_an_error():
    state = torch_state_dict((1, 1, 1, 1), 32, 4, rng=None)
    state["layer1.0.se.fc1.weight"] = np.zeros((8, 256, 1, 1), np.float32)
    with pytest.raises(ValueError, match=r"layer1\.0\.se\.fc1.*another architecture"):
        convert_torch_state_dict(state, "seresnext.safetensors")
    with pytest.raises(ValueError, match="no torchvision / timm ResNet"):
        convert_torch_state_dict({"fc.weight": np.zeros((2, 2))}, "head.npz")


def test_npz_and_safetensors_read_back_the_named_arrays(tmp_path):
    from safetensors.numpy import save_file
    rng = np.random.default_rng(1)
    state = {k: np.ascontiguousarray(v)
             for k, v in torch_state_dict((1, 1, 1, 1), 1, 64, rng=rng,
                                          batches_tracked=False).items()}
    np.savez(tmp_path / "w.npz", **state)
    save_file(state, str(tmp_path / "w.safetensors"))
    for path in (tmp_path / "w.npz", tmp_path / "w.safetensors"):
        read = read_torch_state_dict(path)
        assert set(read) == set(state)
        np.testing.assert_array_equal(read["layer3.0.conv2.weight"],
                                      state["layer3.0.conv2.weight"])


def test_unreadable_and_unknown_files_say_so(tmp_path):
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="broken.safetensors.*not a readable"):
        read_torch_state_dict(bad)
    bad_npz = tmp_path / "broken.npz"
    bad_npz.write_bytes(b"PK no zip")
    with pytest.raises(ValueError, match="broken.npz.*not a readable .npz"):
        read_torch_state_dict(bad_npz)
    other = tmp_path / "w.onnx"
    other.write_bytes(b"")
    with pytest.raises(ValueError, match="unknown checkpoint suffix '.onnx'"):
        read_torch_state_dict(other)
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        read_torch_state_dict(tmp_path / "missing.npz")


def test_safetensors_without_the_package_is_a_clear_import_error(tmp_path, monkeypatch):
    path = tmp_path / "w.safetensors"
    path.write_bytes(b"")
    monkeypatch.setitem(sys.modules, "safetensors", None)
    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)
    with pytest.raises(ImportError, match=r"needs the 'safetensors' package"):
        read_torch_state_dict(path)


def test_pth_needs_pytorch(tmp_path):
    path = tmp_path / "resnext50_32x4d-7cdf4587.pth"
    try:
        import torch
    except ImportError:
        path.write_bytes(b"")
        with pytest.raises(ImportError, match=r"needs PyTorch.*np\.savez"):
            read_torch_state_dict(path)
        return
    state = torch_state_dict((1, 1, 1, 1), 32, 4, rng=np.random.default_rng(2))
    torch.save({"state_dict": {k: torch.from_numpy(np.array(v)) for k, v in state.items()}},
               path)
    read = read_torch_state_dict(path)
    np.testing.assert_array_equal(read["layer2.0.conv2.weight"], state["layer2.0.conv2.weight"])
