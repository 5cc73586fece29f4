"""Tests of samples/common.py's export_results: images, folders, videos and Datasets
dispatched to the COCO / picture / video writers of mrcnn.inference."""

import argparse
import json
import os

import numpy as np
import pytest
import skimage.io

from detecting_model import CLASS_NAMES, RecordingModel, scene
from model_fixtures import RectanglesDataset
from mrcnn.inference.video import VideoWriter
from samples.common import add_export_options, export_results


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    (root / "photos").mkdir()
    for k in range(2):
        skimage.io.imsave(root / "photos" / f"p{k}.png", scene(k), check_contrast=False)
    (root / "photos" / "notes.txt").write_text("not an image")
    skimage.io.imsave(root / "single.jpg", scene(5), check_contrast=False)
    for folder in ("a", "b"):
        (root / folder).mkdir()
        with VideoWriter(root / folder / "clip.gif", 5, backend="imageio") as writer:
            for k in range(2):
                writer.write(scene(20 + k, 48, 64))
    return root


def test_export_results_dispatches_images_folders_and_videos(tmp_path, inputs):
    model = RecordingModel()
    out = tmp_path / "out"
    exported = export_results(model, [str(inputs / "photos"), str(inputs / "a" / "clip.gif"),
                                      str(inputs / "single.jpg"), str(inputs / "b" / "clip.gif")],
                              out, CLASS_NAMES, progress=False)
    assert sorted(os.listdir(out)) == sorted([
        "coco_results.json", "coco_dataset.json",
        "p0_detections.png", "p1_detections.png", "single_detections.png",
        "clip_detections.gif", "clip_coco_results.json", "clip_coco_dataset.json",
        "clip_1_detections.gif", "clip_1_coco_results.json", "clip_1_coco_dataset.json"])
    images = exported["images"]
    # The folder's images first, then the single file; one COCO file for all three.
    assert [e["file_name"] for e in images.images] == ["photos/p0.png", "photos/p1.png",
                                                       "single.jpg"]
    assert images.image_dir == str(inputs)
    # Images: batches of 2 then 1; each video: one batch of its 2 frames.
    assert model.calls == [2, 1, 2, 2]
    videos = exported["videos"]
    assert [v.frames for v in videos] == [2, 2]
    assert videos[1].out_video == str(out / "clip_1_detections.gif")
    results = json.loads((out / "coco_results.json").read_text())
    counts = [len(r["class_ids"]) for r in model.results]
    assert len(results) == sum(counts[:3]) == images.num_results
    frames = json.loads((out / "clip_coco_results.json").read_text())
    assert len(frames) == sum(counts[3:5]) == videos[0].num_results
    assert {r["image_id"] for r in frames} <= {0, 1}


def test_export_results_of_a_dataset_with_polygons(tmp_path):
    model = RecordingModel()
    exported = export_results(model, RectanglesDataset([1, 2]), tmp_path, CLASS_NAMES,
                              polygons=True, pictures=False, progress=False)
    assert sorted(os.listdir(tmp_path)) == ["coco_dataset.json", "coco_results.json"]
    assert exported["videos"] == []
    data = json.loads((tmp_path / "coco_dataset.json").read_text())
    assert [i["id"] for i in data["images"]] == [0, 1]
    masks = [m for r in model.results for m in np.moveaxis(r["masks"], -1, 0)]
    assert len(data["annotations"]) == len(masks)
    assert all(isinstance(a["segmentation"], list)
               for a, m in zip(data["annotations"], masks) if m.any())


def test_export_results_checks_inputs_first(tmp_path, inputs):
    model = RecordingModel()
    with pytest.raises(FileNotFoundError, match="missing.png"):
        export_results(model, [str(inputs / "single.jpg"), str(tmp_path / "missing.png")],
                       tmp_path / "out", CLASS_NAMES)
    assert model.calls == [] and not (tmp_path / "out").exists()


def test_add_export_options():
    parser = argparse.ArgumentParser()
    add_export_options(parser)
    args = parser.parse_args(["--video", "clip.mp4", "--polygons"])
    assert (args.video, args.polygons) == ("clip.mp4", True)
    args = parser.parse_args([])
    assert (args.video, args.polygons) == (None, False)
