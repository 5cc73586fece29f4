"""Tests for mrcnn.structures.image_meta: compose / parse, NumPy and graph."""

import numpy as np
import pytest

from image_fixtures import TinyConfig
from mrcnn.structures import image_meta as M
from mrcnn.structures.image_meta import compose_image_meta, parse_image_meta, parse_image_meta_graph


def test_compose_and_parse_image_meta():
    config = TinyConfig()
    meta = M.compose_image_meta(7, (50, 100, 3), (128, 128, 3), (32, 0, 96, 128), 1.28,
                                np.array([1, 1, 0, 1]))
    assert meta.shape == (config.IMAGE_META_SIZE,) == (12 + 4,)
    np.testing.assert_allclose(meta, [7, 50, 100, 3, 128, 128, 3, 32, 0, 96, 128, 1.28,
                                      1, 1, 0, 1])
    parsed = M.parse_image_meta(np.stack([meta, meta]))
    assert parsed["image_id"].dtype == np.int32
    np.testing.assert_array_equal(parsed["image_id"], [7, 7])
    np.testing.assert_array_equal(parsed["original_image_shape"][1], [50, 100, 3])
    np.testing.assert_array_equal(parsed["image_shape"][0], [128, 128, 3])
    np.testing.assert_array_equal(parsed["window"][0], [32, 0, 96, 128])
    assert parsed["window"].dtype == np.int32
    np.testing.assert_allclose(parsed["scale"], [1.28, 1.28], rtol=1e-6)
    np.testing.assert_array_equal(parsed["active_class_ids"][0], [1, 1, 0, 1])
    single = M.parse_image_meta(meta)
    assert single["image_id"] == 7 and single["window"].shape == (4,)
    with pytest.raises(ValueError, match="window"):
        M.compose_image_meta(7, (50, 100, 3), (128, 128, 3), (32, 0, 96), 1.0, [1, 1])


def test_parse_image_meta_matches_numpy():
    meta = np.stack([compose_image_meta(7, (480, 640, 3), (128, 128, 3), (16, 0, 112, 128),
                                        0.2, [1, 1, 0, 1]),
                     compose_image_meta(3, (10, 20, 3), (128, 128, 3), (0, 0, 128, 128),
                                        6.4, [1, 0, 1, 1])])
    got = {k: np.asarray(v) for k, v in parse_image_meta_graph(meta).items()}
    ref = parse_image_meta(meta)
    assert set(got) == set(ref)
    for key in ref:
        np.testing.assert_allclose(got[key], ref[key], rtol=1e-6, err_msg=key)
