"""Tests of checkpoint bookkeeping: find_last's log-directory matching and the
optimizer state kept with checkpoints (resuming continues the optimizer)."""

import os

import pytest

from model_fixtures import TinyConfig
from mrcnn import model as modellib


class CocoConfig(TinyConfig):
    NAME = "coco"


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def test_find_last_ignores_runs_of_names_with_the_same_prefix(tmp_path):
    model = modellib.MaskRCNN("inference", CocoConfig(), str(tmp_path))
    _touch(tmp_path / "coco20260101T0000" / "mask_rcnn_coco_0003.h5")
    # Newer, and its name starts with "coco": another config's run.
    _touch(tmp_path / "coco_person20261201T1200" / "mask_rcnn_coco_person_0005.h5")
    # Not <name>YYYYMMDDTHHMM either: ignored.
    _touch(tmp_path / "coco20270101T00001" / "mask_rcnn_coco_0001.h5")
    _touch(tmp_path / "coco2027x101T0000" / "mask_rcnn_coco_0001.h5")
    (tmp_path / "coco20280101T0000").write_bytes(b"")  # a file, not a directory
    assert model.find_last() == str(tmp_path / "coco20260101T0000" /
                                     "mask_rcnn_coco_0003.h5")
    # The newest matching timestamp wins.
    _touch(tmp_path / "coco20260102T0000" / "mask_rcnn_coco_0001.h5")
    assert model.find_last() == str(tmp_path / "coco20260102T0000" /
                                     "mask_rcnn_coco_0001.h5")


def test_find_last_without_a_matching_directory(tmp_path):
    model = modellib.MaskRCNN("inference", CocoConfig(), str(tmp_path))
    _touch(tmp_path / "coco_person20261201T1200" / "mask_rcnn_coco_person_0005.h5")
    with pytest.raises(FileNotFoundError, match="cocoYYYYMMDDTHHMM"):
        model.find_last()
    assert os.path.isdir(tmp_path / "coco_person20261201T1200")
