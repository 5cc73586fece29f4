"""Tests of mrcnn.inference.video: reading / writing frames (imageio GIFs, OpenCV AVIs),
detection on every frame with COCO files that load back, and the errors when no
video backend is installed."""

import contextlib
import io
import json
import os
import sys
import warnings

import numpy as np
import pytest
from pycocotools.coco import COCO

from detecting_model import CLASS_NAMES, RecordingModel, scene
from model_fixtures import COLOURS
from mrcnn.data.loaders.coco import CocoDataset
from mrcnn.inference.video import VideoWriter, detect_video, read_video


def frames(count=3, height=48, width=64):
    return [scene(10 + k, height, width) for k in range(count)]


def write_gif(path, images, fps=5):
    with VideoWriter(path, fps, backend="imageio") as writer:
        for image in images:
            writer.write(image)
    return str(path)


def read_all(path, backend="auto"):
    source, fps, count = read_video(path, backend)
    return list(source), fps, count


def xywh(roi):
    y1, x1, y2, x2 = (float(v) for v in roi)
    return [x1, y1, x2 - x1, y2 - y1]


# ----------------------------------------------------------------------------- I/O
def test_gif_round_trip_through_imageio(tmp_path):
    images = frames()  # four colours: the GIF palette keeps them exactly
    path = write_gif(tmp_path / "clip.gif", images, fps=5)
    assert os.listdir(tmp_path) == ["clip.gif"]
    got, fps, count = read_all(path)
    assert count == 3 and fps == pytest.approx(5.0)
    assert len(got) == 3
    for a, b in zip(got, images):
        assert a.dtype == np.uint8 and a.shape == (48, 64, 3)
        np.testing.assert_array_equal(a, b)
    source, _, _ = read_video(path)
    np.testing.assert_array_equal(next(source), images[0])
    source.close()                                  # stops early: no more frames
    assert list(source) == []


def test_avi_round_trip_through_opencv(tmp_path):
    pytest.importorskip("cv2")
    images = frames(4)
    with VideoWriter(tmp_path / "clip.avi", 10, backend="opencv") as writer:
        for image in images:
            writer.write(image)
    assert writer.count == 4 and os.listdir(tmp_path) == ["clip.avi"]
    got, fps, count = read_all(tmp_path / "clip.avi", "opencv")
    assert len(got) == 4 and count == 4 and fps == pytest.approx(10.0)
    for a, b in zip(got, images):   # MJPG is lossy: close, not equal
        assert a.shape == b.shape and np.abs(a.astype(int) - b).mean() < 8
        # RGB stays RGB (OpenCV's BGR converted both ways): red is still red.
        red, blue = (np.all(b == COLOURS[c], axis=-1) for c in (1, 2))
        assert np.median(a[red][:, 0].astype(int) - a[red][:, 2]) > 120
        assert np.median(a[blue][:, 2].astype(int) - a[blue][:, 0]) > 120


def test_writer_errors_leave_nothing(tmp_path):
    target = tmp_path / "out.gif"
    with pytest.raises(ValueError, match="frame 1: shape"):
        with VideoWriter(target, 5, backend="imageio") as writer:
            writer.write(frames(1)[0])
            writer.write(frames(1, 32, 32)[0])
    with pytest.raises(ValueError, match="RGB uint8"):
        VideoWriter(target, 5, backend="imageio").write(np.zeros((4, 4), np.uint8))
    with pytest.raises(RuntimeError, match="no frame"):
        VideoWriter(target, 5, backend="imageio").close()
    with pytest.raises(ValueError, match="backend must be one of"):
        VideoWriter(target, 5, backend="ffmpeg")
    assert os.listdir(tmp_path) == []
    with pytest.raises(FileNotFoundError, match="none.avi"):
        read_video(tmp_path / "none.avi")


# ----------------------------------------------------------------------------- missing backends
@pytest.fixture
def no_video_modules(monkeypatch):
    """Make ``import cv2`` and ``import imageio`` fail as if neither were installed."""
    for name in ("cv2", "imageio", "imageio.v2"):
        monkeypatch.setitem(sys.modules, name, None)


def test_no_backend_names_the_packages_to_install(tmp_path, no_video_modules):
    path = tmp_path / "clip.avi"
    path.write_bytes(b"\0" * 64)
    for call in (lambda: read_video(path), lambda: VideoWriter(tmp_path / "o.avi", 5),
                 lambda: detect_video(RecordingModel(), path, tmp_path / "o.avi",
                                      CLASS_NAMES)):
        with pytest.raises(ImportError) as err:
            call()
        assert "pip install opencv-python-headless" in str(err.value)
        assert "imageio[ffmpeg]" in str(err.value)
    with pytest.raises(ImportError, match="pip install opencv-python-headless"):
        read_video(path, backend="opencv")
    assert os.listdir(tmp_path) == ["clip.avi"]


def test_imageio_without_its_ffmpeg_plugin_says_so(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)
    path = tmp_path / "clip.avi"
    path.write_bytes(b"\0" * 64)
    with pytest.raises(ImportError, match=r"imageio\[ffmpeg\].*opencv-python-headless"):
        read_video(path, backend="imageio")
    with pytest.raises(ImportError, match=r"imageio\[ffmpeg\]"):
        with VideoWriter(tmp_path / "o.avi", 5, backend="imageio") as writer:
            writer.write(frames(1)[0])
    assert os.listdir(tmp_path) == ["clip.avi"]


# ----------------------------------------------------------------------------- detection
def test_detect_video_gif_writes_frames_and_coco_that_load_back(tmp_path, capsys,
                                                                 monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)   # the text progress counter
    source = write_gif(tmp_path / "clip.gif", frames(3), fps=4)
    model = RecordingModel()
    out = tmp_path / "out"
    export = detect_video(model, source, out / "clip_detections.gif", CLASS_NAMES,
                          results_json=out / "res.json", dataset_json=out / "data.json")
    assert model.calls == [2, 1]
    assert "frames: 3/3" in capsys.readouterr().err
    assert sorted(os.listdir(out)) == ["clip_detections.gif", "data.json", "res.json"]
    assert export.frames == 3 and export.fps == pytest.approx(4.0)
    assert export.num_results == sum(len(r["class_ids"]) for r in model.results) > 0
    assert export.images[1] == {"id": 1, "file_name": "clip.gif#frame=1", "height": 48,
                                "width": 64, "frame_index": 1}
    decoded, _, _ = read_all(source)
    for a, b in zip(model.images, decoded):     # detect() saw the decoded frames
        np.testing.assert_array_equal(a, b)
    drawn, fps, _ = read_all(out / "clip_detections.gif")
    assert len(drawn) == 3 and drawn[0].shape == (48, 64, 3) and fps == pytest.approx(4.0)

    with contextlib.redirect_stdout(io.StringIO()):
        dt = COCO(str(out / "data.json")).loadRes(str(out / "res.json"))
    dataset = CocoDataset()
    dataset.load_coco(str(out / "data.json"), str(tmp_path))
    dataset.prepare()
    assert dataset.class_names == CLASS_NAMES
    for frame, r in enumerate(model.results):
        anns = dt.loadAnns(dt.getAnnIds(imgIds=[frame]))
        assert [a["bbox"] for a in anns] == [xywh(b) for b in r["rois"]]
        assert [a["category_id"] for a in anns] == r["class_ids"].tolist()
        for k, ann in enumerate(anns):
            np.testing.assert_array_equal(dt.annToMask(ann).astype(bool), r["masks"][..., k])
        keep = r["masks"].any(axis=(0, 1))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            masks, class_ids = dataset.load_mask(frame)
        np.testing.assert_array_equal(masks, r["masks"][..., keep])
        np.testing.assert_array_equal(class_ids, r["class_ids"][keep])
    info = json.loads((out / "data.json").read_text())["info"]
    assert info["video"] == "clip.gif" and info["fps"] == pytest.approx(4.0)


def test_detect_video_avi_max_frames_polygons(tmp_path):
    pytest.importorskip("cv2")
    with VideoWriter(tmp_path / "clip.avi", 8, backend="opencv") as writer:
        for image in frames(4):
            writer.write(image)
    model = RecordingModel()
    export = detect_video(model, tmp_path / "clip.avi", tmp_path / "drawn.avi", CLASS_NAMES,
                          results_json=tmp_path / "res.json", polygons=True, max_frames=3,
                          batch_size=1, progress=False)
    assert model.calls == [1, 1, 1] and export.frames == 3
    results = json.loads((tmp_path / "res.json").read_text())
    assert sorted({r["image_id"] for r in results}) == [0, 1, 2]
    masks = [m for r in model.results for m in np.moveaxis(r["masks"], -1, 0)]
    assert len(results) == len(masks)
    assert all(isinstance(r["segmentation"], list) for r, m in zip(results, masks) if m.any())
    drawn, fps, count = read_all(tmp_path / "drawn.avi")
    assert len(drawn) == 3 and drawn[0].shape == (48, 64, 3) and fps == pytest.approx(8.0)
    assert sorted(os.listdir(tmp_path)) == ["clip.avi", "drawn.avi", "res.json"]


def test_detect_video_failure_keeps_old_outputs(tmp_path, monkeypatch):
    source = write_gif(tmp_path / "clip.gif", frames(3))
    (tmp_path / "drawn.gif").write_bytes(b"old")
    calls = []

    def failing_render(image, result, class_names):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("render failed")
        return np.asarray(image)

    monkeypatch.setattr("mrcnn.inference.video.render_detections", failing_render)
    with pytest.raises(RuntimeError, match="render failed"):
        detect_video(RecordingModel(), source, tmp_path / "drawn.gif", CLASS_NAMES,
                     results_json=tmp_path / "res.json", progress=False)
    assert (tmp_path / "drawn.gif").read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["clip.gif", "drawn.gif"]
