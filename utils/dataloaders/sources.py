"""Inputs for detect.py: image files, folders, globs, .txt lists, videos, webcams and network streams.

Every loader yields batches (lists) of Frame: one frame per image / video frame for LoadImages, one frame per stream
for LoadStreams. Frames are original BGR images; letterboxing happens in the caller, which keeps loaders independent
of the model's input size.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from utils.core.errors import UserError
from utils.core.files import IMG_FORMATS, VID_FORMATS, file_ext, find_files
from utils.core.image_io import imread  # the one reader (label check, loaders, detect)
from utils.core.log import LOGGER

URL_PREFIXES = ("rtsp://", "rtmp://", "http://", "https://")


@dataclass
class Frame:
    """One original image from a source, with where it came from."""

    path: str  # file path, or the stream address / webcam index
    image: np.ndarray  # BGR uint8 (H, W, 3), as read
    kind: str  # "image", "video" or "stream"
    frame: int = 0  # 1-based frame number within a video / stream (0 for images)
    frames: int = 0  # total frames of a video file (0 when unknown)
    fps: float = 30.0  # source frame rate, used when writing the annotated video
    index: int = 0  # 0-based position of this source among all sources
    count: int = 1  # number of sources

    def describe(self) -> str:
        """Log prefix like YOLOv5's: 'image 2/5 path: ' or 'video 1/1 (frame 3/10) path: '."""
        if self.kind == "image":
            return f"image {self.index + 1}/{self.count} {self.path}: "
        total = f"/{self.frames}" if self.frames else ""
        return f"{self.kind} {self.index + 1}/{self.count} (frame {self.frame}{total}) {self.path}: "


def is_stream(source: str) -> bool:
    """Webcam index ("0"), a .streams list file, or a URL (rtsp/rtmp/http/https)."""
    s = str(source)
    return s.isnumeric() or s.endswith(".streams") or s.lower().startswith(URL_PREFIXES)


def _safe_fps(cap: cv2.VideoCapture) -> float:
    """Frame rate from the container, 30 when it is missing or nonsense (some webcams/streams report 0 or 180000)."""
    fps = cap.get(cv2.CAP_PROP_FPS)
    return float(fps) if math.isfinite(fps) and 0 < fps <= 240 else 30.0


def collect_files(source: str | Path | list | tuple) -> tuple[list[str], list[str]]:
    """(images, videos) from a path, folder (recursive), glob, .txt list of those, or a list of those
    (utils.core.files.find_files: the dataset loader's rule)."""
    found = find_files(source, IMG_FORMATS + VID_FORMATS)
    if found.missing:
        raise UserError(f"--source {found.missing[0]}: no such file or folder — check the path")
    images = [f for f in found.files if file_ext(f) in IMG_FORMATS]
    videos = [f for f in found.files if file_ext(f) in VID_FORMATS]
    if not images and not videos:
        named = " ".join(map(str, source)) if isinstance(source, (list, tuple)) else str(source)
        raise UserError(
            f"--source {named}: no images or videos found — supported: "
            f"{', '.join(IMG_FORMATS)} / {', '.join(VID_FORMATS)}"
        )
    return images, videos


class LoadImages:
    """Images and video files, one frame per batch. Unreadable images and videos are skipped with a warning."""

    def __init__(self, source: str | Path | list | tuple, vid_stride: int = 1):
        if vid_stride < 1:
            raise UserError(f"--vid-stride {vid_stride} must be at least 1")
        images, videos = collect_files(source)
        self.files, self.n_images, self.vid_stride = images + videos, len(images), vid_stride
        if len(self.files) == 1 and videos:  # a single video source that cannot be opened is an error, not a skip
            cap = cv2.VideoCapture(videos[0])
            ok = cap.isOpened()
            cap.release()
            if not ok:
                raise UserError(f"--source {videos[0]}: cannot open the video — is it a valid, complete file?")

    def __len__(self) -> int:
        return len(self.files)

    def __iter__(self) -> Iterator[list[Frame]]:
        n = len(self.files)
        for i, f in enumerate(self.files):
            if i < self.n_images:
                im = imread(f)
                if im is None:
                    LOGGER.warning(f"WARNING: skipping {f}: not a readable image")
                    continue
                yield [Frame(f, im, "image", index=i, count=n)]
            else:
                yield from self._video(f, i, n)

    def _video(self, f: str, i: int, n: int) -> Iterator[list[Frame]]:
        """Decode a video frame by frame, keeping every vid_stride-th frame."""
        cap = cv2.VideoCapture(f)
        if not cap.isOpened():
            LOGGER.warning(f"WARNING: skipping {f}: cannot open the video")
            return
        fps, total = _safe_fps(cap), int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        total = max(total // self.vid_stride, 0)
        k = 0
        try:
            while True:
                for _ in range(self.vid_stride - 1):  # grab() skips frames without decoding them
                    if not cap.grab():
                        return
                ok, im = cap.read()
                if not ok:
                    return
                k += 1
                yield [Frame(f, im, "video", frame=k, frames=total, fps=fps / self.vid_stride, index=i, count=n)]
        finally:
            cap.release()


def _open_capture(source: str) -> cv2.VideoCapture:
    """A VideoCapture for a webcam index or a stream / file address; UserError when it does not open."""
    cap = cv2.VideoCapture(int(source) if str(source).isnumeric() else str(source))
    if not cap.isOpened():
        cap.release()
        what = "webcam" if str(source).isnumeric() else "stream"
        raise UserError(f"--source {source}: cannot open the {what} — check the device index / address and network")
    return cap


class StreamReader:
    """Reads one capture in a background thread and keeps only its newest frame.

    A live source produces frames at its own rate; keeping only the newest means detection never falls behind
    real time (frames arriving while the model runs are dropped, not queued).
    """

    def __init__(self, source: str, vid_stride: int = 1, timeout: float = 30.0):
        self.source, self.vid_stride, self.timeout = str(source), max(int(vid_stride), 1), timeout
        self.cap = _open_capture(self.source)
        self.fps = _safe_fps(self.cap) / self.vid_stride
        self.w, self.h = int(self.cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(self.cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        ok, im = self.cap.read()
        if not ok:
            self.cap.release()
            raise UserError(f"--source {source}: opened but no frame could be read — check the camera / stream")
        self.image, self.seq, self.ended, self._stop = im, 1, False, False
        self._cond = threading.Condition()
        self.thread = threading.Thread(target=self._update, daemon=True, name=f"stream-{source}")
        self.thread.start()

    def _update(self) -> None:
        """Thread body: grab every frame (keeps the stream's buffer drained), decode every vid_stride-th."""
        n = 0
        while not self._stop:
            if not self.cap.grab():
                break
            n += 1
            if n % self.vid_stride:
                continue
            ok, im = self.cap.retrieve()
            if not ok:
                LOGGER.warning(f"WARNING: stream {self.source} returned an empty frame, skipping it")
                continue
            with self._cond:
                self.image, self.seq = im, self.seq + 1
                self._cond.notify_all()
        with self._cond:
            self.ended = True
            self._cond.notify_all()
        self.cap.release()

    def read(self, last_seq: int) -> tuple[np.ndarray, int] | None:
        """The newest frame after last_seq (waiting for one), or None when the stream ended or stalled."""
        with self._cond:
            self._cond.wait_for(lambda: self.seq != last_seq or self.ended, timeout=self.timeout)
            if self.seq == last_seq:
                if not self.ended:
                    LOGGER.warning(f"WARNING: stream {self.source}: no new frame for {self.timeout:.0f}s, stopping")
                return None
            return self.image, self.seq

    def close(self) -> None:
        """Stop the thread and release the capture."""
        self._stop = True
        self.thread.join(timeout=5)


class LoadStreams:
    """Webcams / RTSP / HTTP streams (or a .streams file listing them), one newest frame per stream per batch."""

    def __init__(self, source: str | list[str], vid_stride: int = 1, timeout: float = 30.0):
        sources = [str(s) for s in source] if isinstance(source, (list, tuple)) else [str(source)]
        if len(sources) == 1 and sources[0].endswith(".streams"):
            path = Path(sources[0])
            if not path.is_file():
                raise UserError(f"--source {path}: no such .streams file")
            sources = [x.strip() for x in path.read_text().splitlines() if x.strip()]
        self.sources = sources
        self.readers: list[StreamReader] = []
        for s in sources:
            self.readers.append(StreamReader(s, vid_stride, timeout))
            r = self.readers[-1]
            LOGGER.info(f"stream {len(self.readers)}/{len(sources)}: {s} ({r.w}x{r.h} at {r.fps:.1f} FPS)")

    def __len__(self) -> int:
        return len(self.sources)

    def __iter__(self) -> Iterator[list[Frame]]:
        last = [0] * len(self.readers)
        try:
            while True:
                batch = []
                for i, r in enumerate(self.readers):
                    got = r.read(last[i])
                    if got is None:  # one stream ended: stop all, like closing the window
                        return
                    im, last[i] = got
                    batch.append(
                        Frame(r.source, im, "stream", frame=last[i], fps=r.fps, index=i, count=len(self.readers))
                    )
                yield batch
        finally:
            self.close()

    def close(self) -> None:
        for r in self.readers:
            r.close()


def load_source(source: str | Path | list, vid_stride: int = 1) -> LoadImages | LoadStreams:
    """The right loader for a --source value."""
    if isinstance(source, (str, Path)) and is_stream(str(source)):
        return LoadStreams(str(source), vid_stride=vid_stride)
    return LoadImages(source, vid_stride=vid_stride)
