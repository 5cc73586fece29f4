"""Tests of mrcnn.weights.io (legacy HDF5 layout I/O) and mrcnn.weights.imagenet."""

import glob
import os

import h5py
import keras
import numpy as np
import pytest

from mrcnn.weights import imagenet

from mrcnn.weights import io as weights

try:  # tests/ on sys.path (pytest's default) or run as a package
    import reference_h5
except ImportError:  # pragma: no cover
    from tests import reference_h5

# ------------------------------------------------------------------ a tiny model


def build_tiny_model(num_classes=3, seed=0):
    """A small model with the structures of the real one, randomised.

    Plain Conv2D / BatchNormalization layers, the nested ``rpn_model`` and
    TimeDistributed head layers (Conv2D, BatchNormalization, Conv2DTranspose,
    Dense), named as in the released file. Every variable, BN statistics
    included, gets distinct random values, so equality after a load is
    meaningful.
    """
    keras.utils.set_random_seed(seed)
    image = keras.Input((8, 8, 3), name="input_image")
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv1")(image)
    x = keras.layers.BatchNormalization(name="bn_conv1")(x)

    feature_map = keras.Input((None, None, 4), name="input_rpn_feature_map")
    shared = keras.layers.Conv2D(6, 3, padding="same", name="rpn_conv_shared")(feature_map)
    logits = keras.layers.Conv2D(2, 1, name="rpn_class_raw")(shared)
    deltas = keras.layers.Conv2D(4, 1, name="rpn_bbox_pred")(shared)
    rpn = keras.Model(feature_map, [logits, deltas], name="rpn_model")
    rpn_logits, rpn_deltas = rpn(x)

    rois = keras.layers.Reshape((1, 8, 8, 4), name="roi_align_mask")(x)
    m = keras.layers.TimeDistributed(keras.layers.Conv2D(4, 3, padding="same"),
                                     name="mrcnn_mask_conv1")(rois)
    m = keras.layers.TimeDistributed(keras.layers.BatchNormalization(), name="mrcnn_mask_bn1")(m)
    m = keras.layers.TimeDistributed(keras.layers.Conv2DTranspose(4, 2, strides=2),
                                     name="mrcnn_mask_deconv")(m)
    m = keras.layers.TimeDistributed(keras.layers.Conv2D(num_classes, 1), name="mrcnn_mask")(m)
    pooled = keras.layers.Reshape((1, 256), name="pool_squeeze")(x)
    c = keras.layers.TimeDistributed(keras.layers.Dense(num_classes), name="mrcnn_class_logits")(
        pooled)
    model = keras.Model(image, [rpn_logits, rpn_deltas, m, c], name="tiny")
    rng = np.random.default_rng(seed)
    for v in model.weights:
        v.assign(rng.uniform(0.5, 1.5, v.shape).astype("float32"))
    return model


def values(model):
    """``{"<layer>/<variable>": array}``; nested models by sub-layer, wrappers by wrapper."""
    out = {}
    for layer in model.layers:
        owners = layer.layers if isinstance(layer, keras.Model) else [layer]
        for owner in owners:
            for v in owner.weights:
                out[f"{owner.name}/{v.name}"] = np.asarray(v).copy()
    assert len(out) == len(model.weights)
    return out


def assert_same_values(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def assert_all_differ(a, b):
    for k in a:
        assert not np.array_equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("w") / "tiny.h5")
    model = build_tiny_model(seed=0)
    weights.save_weights(model, path)
    return path, values(model)


# --------------------------------------------------------------- save layout / round trip


def test_save_writes_legacy_layout(saved_tiny):
    path, original = saved_tiny
    with h5py.File(path, "r") as f:
        layer_names = [n.decode() for n in f.attrs["layer_names"]]
        assert layer_names[0] == "input_image"          # weightless layers listed too
        assert "roi_align_mask" in layer_names
        assert len(f["input_image"].attrs["weight_names"]) == 0
        assert [n.decode() for n in f["conv1"].attrs["weight_names"]] == [
            "conv1/kernel:0", "conv1/bias:0"]
        assert [n.decode() for n in f["bn_conv1"].attrs["weight_names"]] == [
            "bn_conv1/gamma:0", "bn_conv1/beta:0", "bn_conv1/moving_mean:0",
            "bn_conv1/moving_variance:0"]
        # the nested model is one group, weights named after its sub-layers, in order
        assert [n.decode() for n in f["rpn_model"].attrs["weight_names"]] == [
            "rpn_conv_shared/kernel:0", "rpn_conv_shared/bias:0", "rpn_class_raw/kernel:0",
            "rpn_class_raw/bias:0", "rpn_bbox_pred/kernel:0", "rpn_bbox_pred/bias:0"]
        # TimeDistributed: the wrapper's name, as in the released file
        assert [n.decode() for n in f["mrcnn_mask_deconv"].attrs["weight_names"]] == [
            "mrcnn_mask_deconv/kernel:0", "mrcnn_mask_deconv/bias:0"]
        np.testing.assert_array_equal(f["conv1/conv1/kernel:0"][()],
                                      original["conv1/kernel"])
        np.testing.assert_array_equal(f["rpn_model/rpn_bbox_pred/bias:0"][()],
                                      original["rpn_bbox_pred/bias"])
        np.testing.assert_array_equal(f["mrcnn_mask_bn1/mrcnn_mask_bn1/moving_variance:0"][()],
                                      original["mrcnn_mask_bn1/moving_variance"])


@pytest.mark.parametrize("by_name", [False, True])
def test_round_trip_restores_every_value(saved_tiny, by_name):
    path, original = saved_tiny
    model = build_tiny_model(seed=1)
    assert_all_differ(values(model), original)
    report = weights.load_weights(model, path, by_name=by_name)
    assert_same_values(values(model), original)
    assert report.not_in_file == [] and report.not_in_model == []
    assert set(report.loaded) == {l.name for l in model.layers if l.weights}


def test_reads_handwritten_legacy_file_and_model_weights_wrapper(tmp_path):
    """The reader against an independent writer; nested weights given out of order."""
    model = build_tiny_model(seed=2)
    rng = np.random.default_rng(5)
    kernel = rng.normal(size=(3, 3, 3, 4)).astype("float32")
    bn = [rng.normal(size=4).astype("float32") for _ in range(4)]
    shared_k = rng.normal(size=(3, 3, 4, 6)).astype("float32")
    bbox_b = rng.normal(size=4).astype("float32")
    layers = [
        ("input_image", []),
        ("conv1", [("conv1/kernel:0", kernel), ("conv1/bias:0", np.arange(4, dtype="f4"))]),
        ("bn_conv1", [(f"bn_conv1/{n}:0", a) for n, a in
                      zip(["gamma", "beta", "moving_mean", "moving_variance"], bn)]),
        # sub-layer order differs from the model's: pairing follows the names
        ("rpn_model", [("rpn_bbox_pred/kernel:0", np.full((1, 1, 6, 4), 7, "f4")),
                       ("rpn_bbox_pred/bias:0", bbox_b),
                       ("rpn_conv_shared/kernel:0", shared_k),
                       ("rpn_conv_shared/bias:0", np.full(6, 2, "f4")),
                       ("rpn_class_raw/kernel:0", np.full((1, 1, 6, 2), 3, "f4")),
                       ("rpn_class_raw/bias:0", np.full(2, 4, "f4"))]),
        ("unknown_layer", [("unknown_layer/kernel:0", np.zeros(3, "f4"))]),
    ]
    for wrap in (False, True):
        path = str(tmp_path / f"hand_{wrap}.h5")
        reference_h5.write_legacy_h5(path, layers, wrap_model_weights=wrap)
        report = weights.load_weights(model, path, by_name=True)
        get = lambda name: np.asarray(model.get_layer(name).weights[0])  # noqa: E731
        np.testing.assert_array_equal(get("conv1"), kernel)
        np.testing.assert_array_equal(np.asarray(model.get_layer("conv1").weights[1]),
                                      [0, 1, 2, 3])
        for var, expected in zip(model.get_layer("bn_conv1").weights, bn):
            np.testing.assert_array_equal(np.asarray(var), expected)
        rpn = model.get_layer("rpn_model")
        np.testing.assert_array_equal(np.asarray(rpn.get_layer("rpn_conv_shared").kernel),
                                      shared_k)
        np.testing.assert_array_equal(np.asarray(rpn.get_layer("rpn_bbox_pred").bias), bbox_b)
        np.testing.assert_array_equal(np.asarray(rpn.get_layer("rpn_class_raw").bias), [4, 4])
        assert report.loaded == ["conv1", "bn_conv1", "rpn_model"]
        assert report.not_in_model == ["unknown_layer"]
        assert sorted(report.not_in_file) == sorted(
            ["mrcnn_mask_conv1", "mrcnn_mask_bn1", "mrcnn_mask_deconv", "mrcnn_mask",
             "mrcnn_class_logits"])


def test_reads_chunked_layer_names(tmp_path):
    """Keras splits long name lists into layer_names0, layer_names1, ... attributes."""
    path = str(tmp_path / "chunked.h5")
    with h5py.File(path, "w") as f:
        f.attrs["layer_names0"] = np.array([b"input_image", b"conv1"])
        f.attrs["layer_names1"] = np.array([b"bn_conv1"])
        f.create_group("input_image").attrs["weight_names"] = np.zeros((0,), "S1")
        conv = f.create_group("conv1")
        conv.attrs["weight_names"] = np.array([b"conv1/kernel:0", b"conv1/bias:0"])
        conv.create_dataset("conv1/kernel:0", data=np.full((3, 3, 3, 4), 2.0, "f4"))
        conv.create_dataset("conv1/bias:0", data=np.full(4, 3.0, "f4"))
        bn = f.create_group("bn_conv1")
        bn.attrs["weight_names0"] = np.array([b"bn_conv1/gamma:0", b"bn_conv1/beta:0"])
        bn.attrs["weight_names1"] = np.array([b"bn_conv1/moving_mean:0",
                                              b"bn_conv1/moving_variance:0"])
        for i, n in enumerate(["gamma", "beta", "moving_mean", "moving_variance"]):
            bn.create_dataset(f"bn_conv1/{n}:0", data=np.full(4, 10.0 + i, "f4"))
    model = build_tiny_model()
    report = weights.load_weights(model, path, by_name=True)
    assert report.loaded == ["conv1", "bn_conv1"]
    got = values(model)
    np.testing.assert_array_equal(got["conv1/bias"], np.full(4, 3.0))
    np.testing.assert_array_equal(got["bn_conv1/moving_mean"], np.full(4, 12.0))
    np.testing.assert_array_equal(got["bn_conv1/moving_variance"], np.full(4, 13.0))


def test_long_name_lists_are_written_in_chunks(tmp_path):
    names = [f"layer_with_a_rather_long_name_{i:05d}" for i in range(3000)]  # ~110 KB
    path = str(tmp_path / "long.h5")
    with h5py.File(path, "w") as f:
        weights._write_attr_strings(f, "layer_names", names)
    with h5py.File(path, "r") as f:
        assert "layer_names" not in f.attrs and "layer_names1" in f.attrs
        assert weights.read_attr_strings(f, "layer_names") == names


def test_missing_layers_warned_when_verbose(tmp_path):
    path = str(tmp_path / "partial.h5")
    reference_h5.write_legacy_h5(path, [("conv1", [("conv1/kernel:0", ((3, 3, 3, 4), 0.5)),
                                                   ("conv1/bias:0", ((4,), 0.25))])])
    model = build_tiny_model()
    before = values(model)
    with pytest.warns(UserWarning, match="mrcnn_mask_deconv"):
        report = weights.load_weights(model, path, by_name=True, verbose=1)
    assert report.loaded == ["conv1"]
    assert "bn_conv1" in report.not_in_file and "rpn_model" in report.not_in_file
    after = values(model)
    np.testing.assert_array_equal(after["conv1/kernel"], np.full((3, 3, 3, 4), 0.5))
    np.testing.assert_array_equal(after["conv1/bias"], np.full(4, 0.25))
    np.testing.assert_array_equal(after["bn_conv1/gamma"], before["bn_conv1/gamma"])


# ------------------------------------------------------------ class-count change / exclude


def test_shape_mismatch_message_names_everything(tmp_path):
    path = str(tmp_path / "five_classes.h5")
    weights.save_weights(build_tiny_model(num_classes=5), path)
    model = build_tiny_model(num_classes=3, seed=1)
    before = values(model)
    with pytest.raises(ValueError) as info:
        weights.load_weights(model, path, by_name=True)
    message = str(info.value)
    assert path in message
    assert "'mrcnn_mask'" in message and "mrcnn_mask/kernel:0" in message
    assert "(1, 1, 4, 5)" in message and "(1, 1, 4, 3)" in message
    assert ("exclude=['mrcnn_class_logits', 'mrcnn_bbox_fc', 'mrcnn_bbox', 'mrcnn_mask']"
            in message)
    # all-or-nothing: layers before the failing one were not assigned either
    assert_same_values(values(model), before)


def test_exclude_loads_everything_else(tmp_path):
    path = str(tmp_path / "five_classes.h5")
    source = build_tiny_model(num_classes=5, seed=0)
    weights.save_weights(source, path)
    src = values(source)
    model = build_tiny_model(num_classes=3, seed=1)
    before = values(model)
    report = weights.load_weights(model, path, by_name=True,
                                  exclude=weights.HEAD_LAYERS_FOR_NEW_CLASSES)
    after = values(model)
    assert sorted(report.excluded) == ["mrcnn_class_logits", "mrcnn_mask"]
    assert report.not_in_file == []
    for k in after:
        if k.startswith(("mrcnn_mask/", "mrcnn_class_logits/")):
            np.testing.assert_array_equal(after[k], before[k], err_msg=k)
        else:
            np.testing.assert_array_equal(after[k], src[k], err_msg=k)


# ---------------------------------------------------------------------- bad files


def test_missing_file(tmp_path):
    path = str(tmp_path / "nope.h5")
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        weights.load_weights(build_tiny_model(), path)


def test_not_hdf5(tmp_path):
    path = tmp_path / "text.h5"
    path.write_text("this is not an HDF5 file\n" * 20)
    with pytest.raises(ValueError, match="not a readable HDF5 weights file") as info:
        weights.load_weights(build_tiny_model(), str(path))
    assert str(path) in str(info.value)


def test_truncated_file(saved_tiny, tmp_path):
    path, _ = saved_tiny
    data = open(path, "rb").read()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(data[: len(data) // 2])
    model = build_tiny_model(seed=1)
    before = values(model)
    with pytest.raises(ValueError, match="not a readable HDF5 weights file") as info:
        weights.load_weights(model, str(cut), by_name=True)
    assert str(cut) in str(info.value)
    assert_same_values(values(model), before)


def test_hdf5_without_layer_names(tmp_path):
    path = str(tmp_path / "plain.h5")
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=np.zeros(3))
        f.attrs["note"] = "x"
    with pytest.raises(ValueError, match="not a Keras weights file") as info:
        weights.load_weights(build_tiny_model(), path)
    assert path in str(info.value) and "'data'" in str(info.value)


def test_keras3_weights_file_gets_a_hint(tmp_path):
    model = build_tiny_model()
    path = str(tmp_path / "k3.weights.h5")
    model.save_weights(path)
    with pytest.raises(ValueError, match="Keras 3 '.weights.h5'"):
        weights.load_weights(model, path, by_name=True)


def test_wrong_architecture_by_order(tmp_path):
    path = str(tmp_path / "other.h5")
    image = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="a")(image)
    x = keras.layers.Conv2D(5, 3, name="b")(x)
    other = keras.Model(image, x)
    weights.save_weights(other, path)
    with pytest.raises(ValueError, match="has 2 weighted layers but the model has 8") as info:
        weights.load_weights(build_tiny_model(), path, by_name=False)
    assert path in str(info.value)

    # same number of weighted layers, different kinds: names the first mismatch
    tiny = build_tiny_model()
    layers = [(l.name, [(w, np.zeros(v.shape, "f4")) for w, v in
                        weights._layer_weight_entries(l)]) for l in tiny.layers if l.weights]
    layers[1] = ("bn_other", [("bn_other/kernel:0", np.zeros((3, 3, 4, 4), "f4")),
                              ("bn_other/bias:0", np.zeros(4, "f4"))])
    path2 = str(tmp_path / "other2.h5")
    reference_h5.write_legacy_h5(path2, layers)
    with pytest.raises(ValueError, match="'bn_other', does not match the model's 'bn_conv1'"):
        weights.load_weights(tiny, path2, by_name=False)


# ---------------------------------------------------------------------- atomic save


def test_failed_save_keeps_previous_file(saved_tiny, tmp_path, monkeypatch):
    path = str(tmp_path / "ckpt.h5")
    first = build_tiny_model(seed=0)
    weights.save_weights(first, path)
    original_writer = weights._write_layer_group
    calls = []

    def failing_writer(root, layer):
        calls.append(layer.name)
        if len(calls) == 4:
            raise OSError("disk full (simulated)")
        return original_writer(root, layer)

    monkeypatch.setattr(weights, "_write_layer_group", failing_writer)
    with pytest.raises(OSError, match="disk full"):
        weights.save_weights(build_tiny_model(seed=1), path)
    monkeypatch.undo()
    assert len(calls) == 4
    assert glob.glob(str(tmp_path / "*tmp*")) == []
    restored = build_tiny_model(seed=3)
    weights.load_weights(restored, path)
    assert_same_values(values(restored), values(first))


# ------------------------------------------------------------------------- ImageNet


def test_keras_to_mrcnn_names():
    assert imagenet.keras_to_mrcnn_name("conv1_conv") == "conv1"
    assert imagenet.keras_to_mrcnn_name("conv1_bn") == "bn_conv1"
    assert imagenet.keras_to_mrcnn_name("conv2_block1_0_conv") == "res2a_branch1"
    assert imagenet.keras_to_mrcnn_name("conv2_block1_0_bn") == "bn2a_branch1"
    assert imagenet.keras_to_mrcnn_name("conv3_block4_2_conv") == "res3d_branch2b"
    assert imagenet.keras_to_mrcnn_name("conv4_block23_3_bn") == "bn4w_branch2c"
    assert imagenet.keras_to_mrcnn_name("conv5_block3_1_bn") == "bn5c_branch2a"
    assert imagenet.keras_to_mrcnn_name("res4b_branch2a") == "res4b_branch2a"
    assert imagenet.keras_to_mrcnn_name("conv2_block1_1_relu") is None
    assert imagenet.keras_to_mrcnn_name("predictions") is None


def test_imagenet_weights_location(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    expected = str(tmp_path / "models" / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5")
    assert imagenet.imagenet_weights_path() == expected
    with pytest.raises(FileNotFoundError) as info:
        imagenet.get_imagenet_weights()
    message = str(info.value)
    assert expected in message
    assert ("https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
            "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5") in message
    os.makedirs(tmp_path / "models")
    open(expected, "wb").close()
    assert imagenet.get_imagenet_weights() == expected


@pytest.fixture(scope="module")
def keras_resnet50():
    """keras.applications.ResNet50 (no top) with every variable randomised."""
    app = keras.applications.ResNet50(weights=None, include_top=False, input_shape=(32, 32, 3))
    rng = np.random.default_rng(0)
    for v in app.weights:
        v.assign(rng.normal(size=v.shape).astype("float32"))
    return app


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["keras3", "legacy"])
def test_load_imagenet_backbone(keras_resnet50, tmp_path, layout):
    from mrcnn.modeling.backbone import resnet_graph
    if layout == "keras3":
        path = str(tmp_path / "resnet50.weights.h5")
        keras_resnet50.save_weights(path)   # Keras 3 layout
    else:
        path = str(tmp_path / "resnet50_notop.h5")
        weights.save_weights(keras_resnet50, path)   # the layout of Keras's download
    image = keras.Input((64, 64, 3))
    ours = keras.Model(image, resnet_graph(image, "resnet50", stage5=True, train_bn=False)[1:])
    report = imagenet.load_imagenet_backbone(ours, path)
    assert len(report.loaded) == 106 and report.not_in_file == []
    checked = 0
    for layer in keras_resnet50.layers:
        name = imagenet.keras_to_mrcnn_name(layer.name)
        if name is None or not layer.weights:
            continue
        target = ours.get_layer(name)
        assert [v.name for v in target.weights] == [v.name for v in layer.weights]
        for src, dst in zip(layer.weights, target.weights):
            np.testing.assert_array_equal(np.asarray(dst), np.asarray(src), err_msg=name)
            checked += 1
    assert checked == len(ours.weights) == len(keras_resnet50.weights)


# ----------------------------------------------------- the released COCO file's layout


def _build_full_model(mode, tmp_path, **extra):
    from mrcnn import model as modellib
    from mrcnn.config import Config

    class CocoLayoutConfig(Config):
        NAME = "coco_layout"
        BACKBONE = "resnet101"
        NUM_CLASSES = 81
        IMAGE_MIN_DIM = 128
        IMAGE_MAX_DIM = 128
        IMAGES_PER_GPU = 1
        GPU_COUNT = 1

    config = type("CocoLayoutConfig", (CocoLayoutConfig,), extra)()
    return modellib.MaskRCNN(mode=mode, config=config, model_dir=str(tmp_path)).keras_model


@pytest.mark.slow
def test_a_narrower_rpn_head_loads_the_released_layout_without_its_rpn(tmp_path):
    path = str(tmp_path / "coco_inference.h5")
    expected = reference_h5.write_reference_h5(reference_h5.reference_tsv("inference"), path)
    model = _build_full_model("inference", tmp_path, RPN_HEAD_CHANNELS=256)
    assert model.get_layer("rpn_model").get_layer("rpn_conv_shared").kernel.shape == (
        3, 3, 256, 256)
    with pytest.raises(ValueError, match=r"rpn_conv_shared.*\(3, 3, 256, 512\).*"
                                         r"\(3, 3, 256, 256\).*RPN_HEAD_CHANNELS"):
        weights.load_weights(model, path, by_name=True)
    report = weights.load_weights(model, path, by_name=True, exclude=["rpn_model"])
    assert report.loaded == [n for n in expected if n not in ("anchors", "rpn_model")]
    assert report.excluded == ["rpn_model"] and report.not_in_file == []


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["inference", "training"])
def test_released_coco_layout_loads_every_layer(mode, tmp_path):
    path = str(tmp_path / f"coco_{mode}.h5")
    expected = reference_h5.write_reference_h5(reference_h5.reference_tsv(mode), path)
    assert os.path.getsize(path) < 2_000_000      # fill values only, no data
    model = _build_full_model(mode, tmp_path)
    report = weights.load_weights(model, path, by_name=True)

    assert report.not_in_file == []                # EVERY weighted layer assigned
    assert report.not_in_model == []
    file_layers = [n for n in expected if n != "anchors"]
    assert report.loaded == file_layers
    index = weights.layer_name_index(model)
    n_vars = 0
    for name in file_layers:
        layer = index[name]
        entries = expected[name]
        if name == "rpn_model":
            variables = [layer.get_layer(w.split("/")[0]).weights[
                ["kernel", "bias"].index(w.split("/")[1][:-2])] for w, _, _ in entries]
        else:
            variables = layer.weights
        assert len(variables) == len(entries), name
        for var, (wname, shape, fill) in zip(variables, entries):
            assert var.name == wname.rsplit("/", 1)[1][:-2], (name, wname)
            value = np.asarray(var)
            assert value.shape == shape, (name, wname)
            assert np.all(value == fill), (name, wname)
            n_vars += 1
    assert n_vars == len(model.weights)            # nothing left unassigned

    if mode == "inference":
        # our weighted layers come in the file's order, so loading by order works too
        report = weights.load_weights(model, path, by_name=False)
        assert report.loaded == file_layers
        # and our own checkpoints use exactly the released layout
        saved = str(tmp_path / "ours.h5")
        weights.save_weights(model, saved)
        try:
            with h5py.File(saved, "r") as f:
                for name in file_layers:
                    names = [w.decode() for w in f[name].attrs["weight_names"]]
                    assert names == [w for w, _, _ in expected[name]], name
                    for wname, shape, _ in expected[name]:
                        assert f[name][wname].shape == shape, (name, wname)
        finally:
            os.remove(saved)                       # ~250 MB


def test_load_report_prints_one_line_and_keeps_the_names(tmp_path):
    path = str(tmp_path / "w.h5")
    source = build_tiny_model(num_classes=5)
    weights.save_weights(source, path)
    target = build_tiny_model(num_classes=5)
    report = weights.load_weights(target, path, by_name=True, exclude=["mrcnn_mask"])
    line = repr(report)
    assert "\n" not in line and line == str(report)
    assert line.startswith("LoadReport('w.h5': ")
    assert f"{len(report.loaded)} layers loaded" in line and "1 excluded" in line
    assert report.excluded == ["mrcnn_mask"] and len(report.loaded) > 3
    details = report.details()
    assert details.count("\n") >= 4 and "mrcnn_mask" in details
    for name in report.loaded:
        assert name in details
