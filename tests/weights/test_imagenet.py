"""Tests of mrcnn.weights.imagenet: ImageNet initialisation of every backbone.

The torchvision / timm checkpoints are written by the tests themselves
(`torch_state_fixtures`: names and shapes of the published architectures,
random values); the converted network is checked against a NumPy evaluation
of the source's formulas (PyTorch's conv, BatchNorm with eps 1e-5, max pool).
"""

import keras
import numpy as np
import pytest

from model_fixtures import TinyConfig
from mrcnn import model as modellib
from mrcnn.modeling.backbone import resnet_graph
from mrcnn.weights import imagenet
from torch_state_fixtures import named_state_dict, torch_state_dict

TORCH_EPS = 1e-5


def _backbone(architecture, size=32):
    """(full backbone model, model with outputs [C1, C2, res3a_out])."""
    image = keras.Input((size, size, 3))
    outs = resnet_graph(image, architecture, stage5=True, train_bn=False)
    full = keras.Model(image, outs)
    probe = keras.Model(image, [outs[0], outs[1], full.get_layer("res3a_out").output])
    return full, probe


# ---------------------------------------------------------------- NumPy reference

def _conv(x, w, stride, pad, groups=1):
    """PyTorch's conv2d on one image: x [C, H, W], w [O, C / groups, kh, kw]."""
    c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), (pad, pad), (pad, pad)))
    ho, wo = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
    out = np.zeros((o, ho, wo))
    og = o // groups
    for g in range(groups):
        xs, ws = xp[g * cg:(g + 1) * cg], w[g * og:(g + 1) * og].astype(np.float64)
        for i in range(kh):
            for j in range(kw):
                patch = xs[:, i:i + stride * ho:stride, j:j + stride * wo:stride]
                out[g * og:(g + 1) * og] += np.einsum("oc,chw->ohw", ws[:, :, i, j], patch)
    return out


def _bn(x, state, prefix):
    def v(name):
        return state[f"{prefix}.{name}"].astype(np.float64)[:, None, None]
    return (x - v("running_mean")) / np.sqrt(v("running_var") + TORCH_EPS) * v("weight") \
        + v("bias")


def _max_pool(x):
    """3x3, stride 2, padding 1 (padded with -inf)."""
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    ho, wo = (x.shape[1] - 1) // 2 + 1, (x.shape[2] - 1) // 2 + 1
    return np.max([xp[:, i:i + 2 * ho:2, j:j + 2 * wo:2]
                   for i in range(3) for j in range(3)], axis=0)


def _stem(image_chw, state):
    x = np.maximum(_bn(_conv(image_chw, state["conv1.weight"], 2, 3), state, "bn1"), 0)
    return _max_pool(x)


def _block(x, state, prefix, stride, groups):
    """torchvision's Bottleneck: 1x1, grouped 3x3 carrying the stride, 1x1, shortcut."""
    y = np.maximum(_bn(_conv(x, state[prefix + "conv1.weight"], 1, 0), state, prefix + "bn1"), 0)
    y = np.maximum(_bn(_conv(y, state[prefix + "conv2.weight"], stride, 1, groups), state,
                       prefix + "bn2"), 0)
    y = _bn(_conv(y, state[prefix + "conv3.weight"], 1, 0), state, prefix + "bn3")
    short = _bn(_conv(x, state[prefix + "downsample.0.weight"], stride, 0), state,
                prefix + "downsample.1")
    return np.maximum(y + short, 0)


# ---------------------------------------------------------------------- the tests

@pytest.fixture(scope="module")
def resnext50():
    return _backbone("resnext50_32x4d")


def _check_against_reference(probe, state, seed):
    image = np.random.default_rng(seed).uniform(-1, 1, (1, 32, 32, 3)).astype(np.float32)
    c1, c2, res3a = (np.asarray(t) for t in probe(image))
    ref_c1 = _stem(image[0].transpose(2, 0, 1), state)
    np.testing.assert_allclose(c1[0].transpose(2, 0, 1), ref_c1, rtol=1e-4, atol=1e-4)
    # Stage 3's first block from Keras's own C2: the stride on the grouped 3x3.
    ref = _block(c2[0].transpose(2, 0, 1).astype(np.float64), state, "layer2.0.", 2, 32)
    assert res3a.shape == (1, 4, 4, 512)
    np.testing.assert_allclose(res3a[0].transpose(2, 0, 1), ref, rtol=1e-4, atol=1e-4)
    assert np.abs(ref).max() > 0.1  # not a trivially small output


def test_torchvision_npz_loads_exactly_into_resnext50(resnext50, tmp_path):
    full, probe = resnext50
    state = named_state_dict("resnext50_32x4d", rng=np.random.default_rng(0))
    path = tmp_path / "resnext50_32x4d.npz"
    np.savez(path, **{"module." + k: v for k, v in state.items()})  # DataParallel names
    report = imagenet.load_imagenet_backbone(full, str(path))
    assert len(report.loaded) == 2 * 53  # 53 convs and their BatchNorms
    assert report.not_in_file == [] and report.not_in_model == []
    np.testing.assert_array_equal(np.asarray(full.get_layer("res3a_branch2b").kernel),
                                  state["layer2.0.conv2.weight"].transpose(2, 3, 1, 0))
    _check_against_reference(probe, state, seed=0)


def test_timm_safetensors_loads_exactly_into_resnext50(resnext50, tmp_path):
    from safetensors.numpy import save_file
    full, probe = resnext50
    # timm's files: the same names, no num_batches_tracked.
    state = named_state_dict("resnext50_32x4d", rng=np.random.default_rng(1),
                             batches_tracked=False)
    path = tmp_path / "model.safetensors"
    save_file(state, str(path))
    report = imagenet.load_imagenet_backbone(full, path, verbose=1)
    assert len(report.loaded) == 106 and report.not_in_file == []
    _check_against_reference(probe, state, seed=1)


def test_a_partial_file_reports_the_layers_it_left(resnext50, tmp_path):
    full, _ = resnext50
    state = named_state_dict("resnext50_32x4d", rng=np.random.default_rng(2), stages=2)
    path = tmp_path / "stages_2_3.npz"
    np.savez(path, **state)
    report = imagenet.load_imagenet_backbone(full, path)
    assert "res3d_branch2c" in report.loaded and "res4a_branch2a" in report.not_in_file
    assert len(report.not_in_file) == 2 * (3 * 9 + 2)  # stages 4 and 5: 9 blocks


def test_other_cardinality_or_names_are_refused_before_anything_changes(resnext50, tmp_path):
    full, _ = resnext50
    before = np.asarray(full.get_layer("conv1").kernel).copy()
    wide = torch_state_dict((3, 4, 6, 3), 64, 4, rng=np.random.default_rng(3), stages=1)
    np.savez(tmp_path / "x50_64x4d.npz", **wide)
    with pytest.raises(ValueError, match=r"cardinality 64.*the model's backbone has "
                                         r"cardinality 32"):
        imagenet.load_imagenet_backbone(full, tmp_path / "x50_64x4d.npz")
    keras_h5 = tmp_path / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    keras_h5.write_bytes(b"")
    with pytest.raises(ValueError, match="Keras's ImageNet files are ResNets"):
        imagenet.load_imagenet_backbone(full, keras_h5)
    np.testing.assert_array_equal(np.asarray(full.get_layer("conv1").kernel), before)


def test_torchvision_resnet50_is_refused_for_our_caffe_style_resnet50(tmp_path):
    full, _ = _backbone("resnet50")
    before = np.asarray(full.get_layer("res3a_branch2a").kernel).copy()
    path = tmp_path / "resnet50.npz"
    np.savez(path, **named_state_dict("resnet50", rng=np.random.default_rng(4)))
    with pytest.raises(ValueError, match=r"torchvision-style resnet50.*Caffe-style ResNet.*"
                                         r"stride on the 3x3 conv.*refused"):
        imagenet.load_imagenet_backbone(full, path)
    np.testing.assert_array_equal(np.asarray(full.get_layer("res3a_branch2a").kernel), before)


def test_get_imagenet_weights_for_resnext_names_the_download(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError,
                       match=r"huggingface\.co/timm/resnext50_32x4d\.tv_in1k/resolve/main/"
                             r"model\.safetensors.*ResNeXt50_32X4D_Weights"):
        imagenet.get_imagenet_weights("resnext50_32x4d")
    with pytest.raises(FileNotFoundError, match=r"resnext101_32x4d\.gluon_in1k"):
        imagenet.get_imagenet_weights("resnext101_32x4d")
    (tmp_path / "models").mkdir()
    target = tmp_path / "models" / "resnext101_32x8d.npz"
    target.write_bytes(b"")
    assert imagenet.get_imagenet_weights("resnext101_32x8d") == str(target)
    assert imagenet.imagenet_weights_path("resnet101").endswith(
        "resnet101_weights_tf_dim_ordering_tf_kernels_notop.h5")


def test_imagenet_weights_reach_the_c4_heads_res5(tmp_path):
    """With HEAD_ARCHITECTURE = "c4" stage 5 is the box head (`res5_head`): the
    ImageNet file's layer4 loads into it by name, as into an FPN backbone."""
    config = type("C4", (TinyConfig,), {"BACKBONE": "resnext50_32x4d", "IMAGES_PER_GPU": 1,
                                        "HEAD_ARCHITECTURE": "c4", "POOL_SIZE": 6,
                                        "MASK_SHAPE": [6, 6]})()
    model = modellib.MaskRCNN("inference", config, str(tmp_path))
    state = named_state_dict("resnext50_32x4d", rng=np.random.default_rng(2))
    path = tmp_path / "resnext50_32x4d.npz"
    np.savez(path, **state)
    report = imagenet.load_imagenet_backbone(model.keras_model, str(path))
    assert len(report.loaded) == 106 and report.not_in_model == []
    res5 = model.keras_model.get_layer("res5_head")
    np.testing.assert_array_equal(np.asarray(res5.get_layer("res5a_branch2b").kernel),
                                  state["layer4.0.conv2.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(np.asarray(res5.get_layer("bn5c_branch2c").moving_variance),
                                  state["layer4.2.bn3.running_var"])
