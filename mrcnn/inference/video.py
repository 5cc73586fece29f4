"""Videos in and out, and detection on every frame of a video.

    from mrcnn.inference.video import detect_video
    detect_video(model, "clip.mp4", "out/clip_detections.avi", ["BG", "cat", "dog"],
                 results_json="out/clip_coco_results.json",
                 dataset_json="out/clip_coco_dataset.json")

Frames are read and written through OpenCV (``pip install
opencv-python-headless``) or imageio (GIFs through Pillow, which comes with it;
other formats through its FFMPEG plugin, ``pip install imageio[ffmpeg]``).
Neither is a dependency of this package: a missing one raises ImportError naming
the package to install. Frames are RGB uint8 ``[H, W, 3]`` on both sides
(OpenCV's BGR is converted). The COCO files are those of
`mrcnn.inference.results` with one image per frame.
"""

import dataclasses
import importlib
import os

import numpy as np

from mrcnn.data.dataset import to_rgb_uint8
from mrcnn.inference.results import (CocoCollector, check_class_names, model_batch_size,
                                     progress_bar, remove_if_exists, render_detections,
                                     temp_path)

__all__ = ["VIDEO_EXTENSIONS", "VIDEO_BACKENDS", "read_video", "VideoWriter", "VideoExport",
           "detect_video"]

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg", ".gif")
VIDEO_BACKENDS = ("auto", "opencv", "imageio")
_NO_VIDEO_BACKEND = ("reading and writing videos needs OpenCV or imageio, and neither can be "
                     "imported: pip install opencv-python-headless (or pip install "
                     "imageio[ffmpeg])")


# ----------------------------------------------------------------------------- reading, writing
def _import(name):
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _video_backend(path, backend):
    """``("opencv", cv2)`` or ``("imageio", imageio.v2)`` for reading/writing ``path``."""
    if backend not in VIDEO_BACKENDS:
        raise ValueError(f"video backend must be one of {VIDEO_BACKENDS}, got {backend!r}")
    gif = os.fspath(path).lower().endswith(".gif")
    order = {"auto": ("imageio", "opencv") if gif else ("opencv", "imageio"),
             "opencv": ("opencv",), "imageio": ("imageio",)}[backend]
    for name in order:
        module = _import("cv2" if name == "opencv" else "imageio.v2")
        if module is not None:
            return name, module
    if backend == "opencv":
        raise ImportError("the OpenCV video backend needs OpenCV: pip install "
                          "opencv-python-headless")
    if backend == "imageio":
        raise ImportError("the imageio video backend needs imageio: pip install imageio[ffmpeg]")
    raise ImportError(_NO_VIDEO_BACKEND)


def _imageio_format(path):
    """imageio's format for a video file: Pillow for GIFs, its FFMPEG plugin otherwise
    (without it imageio would silently write other extensions as TIFF)."""
    return None if os.fspath(path).lower().endswith(".gif") else "FFMPEG"


def _imageio_call(fn, path, what):
    try:
        return fn()
    except ImportError as exc:
        raise ImportError(f"imageio cannot {what} {path!r}: {exc} (or pip install "
                          f"opencv-python-headless)") from exc


def read_video(path, backend="auto"):
    """Open a video for reading.

    Returns:
        ``(frames, fps, count)``: an iterator of RGB uint8 ``[H, W, 3]`` frames
        (its ``close()`` releases the file; reading to the end does too), the
        frame rate (25 when the file does not say) and the frame count (None
        when unknown).

    Raises:
        FileNotFoundError: no such file. ImportError: no backend (the message
        names the pip package). RuntimeError: the backend cannot open it.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"video {path!r} does not exist")
    name, module = _video_backend(path, backend)
    if name == "opencv":
        capture = module.VideoCapture(path)
        if not capture.isOpened():
            raise RuntimeError(f"OpenCV cannot open the video {path!r} (is its codec supported "
                               f"by this OpenCV build?)")
        fps = float(capture.get(module.CAP_PROP_FPS) or 0) or 25.0
        count = int(capture.get(module.CAP_PROP_FRAME_COUNT) or 0) or None

        def next_frame():
            ok, frame = capture.read()
            return np.ascontiguousarray(frame[..., ::-1]) if ok else None  # BGR -> RGB
        return _Frames(next_frame, capture.release), fps, count
    try:
        reader = _imageio_call(lambda: module.get_reader(path, format=_imageio_format(path)),
                               path, "read")
    except (OSError, ValueError) as exc:
        raise RuntimeError(f"imageio cannot open the video {path!r}: {exc}") from exc
    meta = reader.get_meta_data()
    fps = meta.get("fps") or (1000.0 / meta["duration"] if meta.get("duration") else 25.0)
    try:
        count = int(reader.get_length())
    except (TypeError, ValueError, OverflowError):
        count = None
    count = count if count and count > 0 else None
    frames = iter(reader)

    def next_frame():
        frame = next(frames, None)
        return None if frame is None else to_rgb_uint8(np.asarray(frame))
    return _Frames(next_frame, reader.close), float(fps), count


class _Frames:
    """An iterator of frames whose `close` releases the file, read to the end or not."""

    def __init__(self, next_frame, release):
        self._next, self._release = next_frame, release

    def __iter__(self):
        return self

    def __next__(self):
        frame = self._next() if self._release is not None else None
        if frame is None:
            self.close()
            raise StopIteration
        return frame

    def close(self):
        release, self._release = self._release, None
        if release is not None:
            release()


class VideoWriter:
    """Write RGB uint8 frames to a video file, atomically (the file appears on `close`).

    The container follows the extension: with OpenCV ``.mp4`` / ``.m4v`` /
    ``.mov`` use the ``mp4v`` codec, anything else ``MJPG`` (``.avi`` is the
    safe choice); with imageio a ``.gif`` goes through Pillow, anything else
    through its FFMPEG plugin. Use as a context manager; on an error the
    partial file is removed.
    """

    def __init__(self, path, fps, backend="auto"):
        self.path, self.fps = os.fspath(path), float(fps)
        self.backend, self._module = _video_backend(self.path, backend)
        self._tmp = temp_path(self.path)
        self._writer, self._shape, self.count, self.closed = None, None, 0, False

    def _open(self, height, width):
        if self.backend == "opencv":
            cv2 = self._module
            ext = os.path.splitext(self.path)[1].lower()
            codec = "mp4v" if ext in (".mp4", ".m4v", ".mov") else "MJPG"
            writer = cv2.VideoWriter(self._tmp, cv2.VideoWriter_fourcc(*codec), self.fps,
                                     (width, height))
            if not writer.isOpened():
                raise RuntimeError(f"OpenCV cannot write the video {self.path!r} with codec "
                                   f"{codec} (try an .avi path)")
            return writer
        fmt = _imageio_format(self.path)
        kwargs = {"fps": self.fps} if fmt else {"duration": 1000.0 / self.fps, "loop": 0}
        return _imageio_call(lambda: self._module.get_writer(self._tmp, format=fmt,
                                                             mode="I", **kwargs),
                             self.path, "write")

    def write(self, frame):
        """Append one RGB uint8 ``[H, W, 3]`` frame (all frames one size)."""
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[-1] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"video {self.path!r}, frame {self.count}: expected RGB uint8 "
                             f"[H, W, 3], got {frame.dtype} {frame.shape}")
        if self._writer is None:
            self._shape = frame.shape
            self._writer = self._open(*frame.shape[:2])
        elif frame.shape != self._shape:
            raise ValueError(f"video {self.path!r}, frame {self.count}: shape {frame.shape} "
                             f"differs from the first frame's {self._shape}")
        if self.backend == "opencv":
            self._writer.write(np.ascontiguousarray(frame[..., ::-1]))
        else:
            self._writer.append_data(frame)
        self.count += 1

    def close(self):
        """Finish the file and move it into place.

        Raises:
            RuntimeError: no frame was written (nothing is left behind).
        """
        if self.closed:
            return
        self.closed = True
        try:
            if self._writer is None:
                raise RuntimeError(f"video {self.path!r}: no frame was written")
            (self._writer.release if self.backend == "opencv" else self._writer.close)()
            os.replace(self._tmp, self.path)
        except BaseException:
            remove_if_exists(self._tmp)
            raise

    def abort(self):
        """Stop and remove the partial file; ``path`` is left as it was."""
        if self.closed:
            return
        self.closed = True
        try:
            if self._writer is not None:
                (self._writer.release if self.backend == "opencv" else self._writer.close)()
        except Exception:  # already failing: the partial file goes anyway
            pass
        remove_if_exists(self._tmp)

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if exc is None:
            self.close()
        else:
            self.abort()
        return False


# ----------------------------------------------------------------------------- detection
@dataclasses.dataclass
class VideoExport:
    """What `detect_video` wrote.

    Attributes:
        out_video, results_json, dataset_json: the paths written (None if not asked).
        fps: the input's frame rate (also the output's).
        frames: number of frames read and detected on.
        images: the ``"images"`` entries, one per frame (``id`` = frame index).
        detections: per frame, ``{"image_id", "rois", "class_ids", "scores"}``.
        num_results: the number of result dicts.
    """

    out_video: object
    results_json: object
    dataset_json: object
    fps: float
    frames: int
    images: list
    detections: list
    num_results: int


def detect_video(model, video_path, out_video, class_names, results_json=None,
                 dataset_json=None, polygons=False, batch_size=None, backend="auto",
                 max_frames=None, progress=True):
    """Detect on every frame of a video; write the frames with their detections drawn
    (`render_detections`) and the COCO files of the module docstring.

    Frames are images ``0, 1, ...`` (``id`` = frame index); their
    ``file_name`` is ``"<video file name>#frame=<index>"`` (they are not files:
    `CocoDataset` reads their masks, not their pixels) and they carry
    ``"frame_index"``.

    Args:
        model: ``detect(images, verbose=0)``. video_path: the input.
        out_video: the annotated video to write (None: none), same frame rate;
            see `VideoWriter` for the containers.
        class_names: indexed by class id, ``"BG"`` first.
        results_json / dataset_json: paths, or None for none.
        polygons: polygon segmentations instead of RLE.
        batch_size: frames per ``detect`` call (default ``model.config.BATCH_SIZE``).
        backend: ``"auto"`` (OpenCV, or imageio where OpenCV is missing; imageio
            first for GIFs), ``"opencv"`` or ``"imageio"``.
        max_frames: stop after this many frames.
        progress: a progress bar on stderr (tqdm if installed).

    Returns:
        `VideoExport`.

    Raises:
        ImportError: neither OpenCV nor imageio (the message names the pip
            package). FileNotFoundError: no such video. RuntimeError: the
            video cannot be opened or has no frame.
    """
    names = check_class_names(list(class_names), model)
    batch_size = model_batch_size(model, batch_size)
    frames, fps, count = read_video(video_path, backend)
    if max_frames is not None:
        count = min(count, int(max_frames)) if count else int(max_frames)
    collector = CocoCollector(None, names, polygons)  # image id = frame index
    base = os.path.basename(os.fspath(video_path))
    writer = None
    bar = progress_bar(count, "frames", progress)

    def run(chunk):
        outputs = model.detect([frame for _, frame in chunk], verbose=0)
        for (index, frame), r in zip(chunk, outputs):
            collector.add(index, frame, r, f"{base}#frame={index}",
                          f"video {base!r}, frame {index}", frame_index=index)
            if writer is not None:
                writer.write(render_detections(frame, r, names))
        bar.update(len(chunk))

    try:
        if out_video is not None:
            writer = VideoWriter(out_video, fps, backend)
        chunk = []
        for index, frame in enumerate(frames):
            if max_frames is not None and index >= max_frames:
                break
            chunk.append((index, frame))
            if len(chunk) == batch_size:
                run(chunk)
                chunk = []
        if chunk:
            run(chunk)
        if not collector.images:
            raise RuntimeError(f"no frame could be read from the video {video_path!r}")
        if writer is not None:
            writer.close()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        frames.close()
        bar.close()
    collector.write(results_json, dataset_json, info={
        "description": f"Mask R-CNN detections on the frames of {base}",
        "image_dir": os.path.dirname(os.path.abspath(os.fspath(video_path))),
        "video": base, "fps": fps})
    return VideoExport(out_video=None if out_video is None else os.fspath(out_video),
                       results_json=None if results_json is None else os.fspath(results_json),
                       dataset_json=None if dataset_json is None else os.fspath(dataset_json),
                       fps=fps, frames=len(collector.images), images=collector.images,
                       detections=collector.detections, num_results=len(collector.results))
