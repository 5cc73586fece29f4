"""Tests for mrcnn.data.dataset: the Dataset protocol and image loading/conversion."""

import copy
import pickle

import numpy as np
import pytest
import skimage.io

from mrcnn.data.dataset import Dataset, DatasetNotPreparedError, to_rgb_uint8


def _two_source_dataset():
    ds = Dataset()
    ds.add_class("a", 1, "cat")
    ds.add_class("a", 2, "dog,canine")
    ds.add_class("b", 1, "car")
    ds.add_class("a", 1, "cat again")  # same source/id: ignored
    ds.add_image("a", image_id=10, path="/x/10.png", width=4)
    ds.add_image("b", image_id=10, path="/y/10.png")
    ds.prepare()
    return ds


def test_prepare_builds_lookup_tables():
    ds = _two_source_dataset()
    assert ds.num_classes == 4
    assert list(ds.class_ids) == [0, 1, 2, 3]
    assert ds.class_names == ["BG", "cat", "dog", "car"]
    assert ds.num_images == 2 and list(ds.image_ids) == [0, 1]
    assert ds.class_from_source_map == {".0": 0, "a.1": 1, "a.2": 2, "b.1": 3}
    assert ds.image_from_source_map == {"a.10": 0, "b.10": 1}
    assert ds.sources == ["", "a", "b"]
    assert ds.source_class_ids == {"": [0], "a": [0, 1, 2], "b": [0, 3]}
    # Same source id 1 in two sources -> two internal ids.
    assert ds.map_source_class_id("a.1") == 1 and ds.map_source_class_id("b.1") == 3
    assert ds.get_source_class_id(3, "b") == 1
    assert ds.image_info[0]["width"] == 4
    assert ds.image_reference(1) == "/y/10.png"


def test_prepare_twice_and_after_more_images():
    ds = _two_source_dataset()
    ds.add_image("a", image_id=11, path="/x/11.png")
    ds.prepare()
    ds.prepare()
    assert ds.num_images == 3 and list(ds.image_ids) == [0, 1, 2]


def test_using_ids_before_prepare_is_a_clear_error():
    ds = Dataset()
    ds.add_image("a", 1, "p")
    with pytest.raises(DatasetNotPreparedError, match="prepare"):
        ds.image_ids
    with pytest.raises(AttributeError, match="prepare"):
        ds.num_classes
    with pytest.raises(AttributeError, match="no attribute"):
        ds.no_such_thing


def test_dataset_copies_and_pickles():
    ds = _two_source_dataset()
    for clone in (copy.deepcopy(ds), pickle.loads(pickle.dumps(ds))):
        assert clone.class_names == ds.class_names
        assert list(clone.image_ids) == [0, 1]
    fresh = pickle.loads(pickle.dumps(Dataset()))
    with pytest.raises(DatasetNotPreparedError):
        fresh.image_ids


def test_lookup_errors():
    ds = _two_source_dataset()
    with pytest.raises(KeyError, match="c.1"):
        ds.map_source_class_id("c.1")
    with pytest.raises(ValueError, match="source 'a'"):
        ds.get_source_class_id(1, "b")
    with pytest.raises(ValueError, match="dots"):
        ds.add_class("a.b", 1, "x")


def test_append_data_merges_other_dataset():
    other = _two_source_dataset()
    ds = Dataset()
    ds.add_class("c", 5, "tree")
    ds.append_data(other.class_info, other.image_info)
    ds.prepare()
    assert ds.class_names == ["BG", "tree", "cat", "dog", "car"]
    assert ds.image_info[0]["width"] == 4 and ds.num_images == 2


def test_base_load_mask_warns_and_returns_empty():
    ds = _two_source_dataset()
    with pytest.warns(UserWarning, match="override"):
        masks, class_ids = ds.load_mask(0)
    assert masks.shape == (0, 0, 0) and masks.dtype == bool
    assert class_ids.shape == (0,) and class_ids.dtype == np.int32


def _dataset_with(path):
    ds = Dataset()
    ds.add_image("files", image_id="img7", path=str(path))
    ds.prepare()
    return ds


def test_load_image_conversions(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    gray = rgb[..., 0]
    rgba = np.concatenate([rgb, np.full((32, 48, 1), 7, np.uint8)], axis=-1)
    g16 = np.zeros((32, 48), np.uint16)
    g16[0, 0], g16[0, 1], g16[0, 2] = 65535, 257, 128  # -> 255, 1, round(0.498) = 0
    cases = {"rgb.png": rgb, "gray.png": gray, "rgba.png": rgba, "g16.png": g16}
    for name, array in cases.items():
        skimage.io.imsave(tmp_path / name, array, check_contrast=False)

    out = _dataset_with(tmp_path / "rgb.png").load_image(0)
    assert out.dtype == np.uint8 and out.shape == (32, 48, 3)
    np.testing.assert_array_equal(out, rgb)

    out = _dataset_with(tmp_path / "gray.png").load_image(0)
    assert out.shape == (32, 48, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], gray)

    out = _dataset_with(tmp_path / "rgba.png").load_image(0)
    np.testing.assert_array_equal(out, rgb)

    out = _dataset_with(tmp_path / "g16.png").load_image(0)
    assert out.dtype == np.uint8 and out.shape == (32, 48, 3)
    assert out[0, 0, 0] == 255 and out[0, 1, 1] == 1 and out[0, 2, 2] == 0
    assert out[1:].max() == 0


def test_to_rgb_uint8_float_and_bool_rules():
    np.testing.assert_array_equal(to_rgb_uint8(np.array([[0.0, 0.5, 1.0]]))[0, :, 0],
                                  [0, 128, 255])
    # Values beyond [0, 1]: taken as 0..255 and clipped.
    np.testing.assert_array_equal(to_rgb_uint8(np.array([[-3.0, 100.4, 300.0]]))[0, :, 1],
                                  [0, 100, 255])
    np.testing.assert_array_equal(to_rgb_uint8(np.array([[True, False]]))[0, :, 2], [255, 0])
    with pytest.raises(ValueError, match="shape"):
        to_rgb_uint8(np.zeros((4, 4, 5)))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_missing_and_unreadable_files_name_path_and_id(tmp_path):
    missing = tmp_path / "nope.png"
    with pytest.raises(FileNotFoundError) as info:
        _dataset_with(missing).load_image(0)
    assert str(missing) in str(info.value) and "img7" in str(info.value)

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"this is not a png")
    with pytest.raises(ValueError) as info:
        _dataset_with(broken).load_image(0)
    assert str(broken) in str(info.value) and "img7" in str(info.value)
