"""Video decoding behind one interface for `frames.py`: OpenCV (the FFmpeg build inside
opencv-python) or PyAV (the `video` extra, FFmpeg with its own codecs). `auto` uses OpenCV and
falls back to PyAV when OpenCV cannot decode a frame of the file (opencv-python's FFmpeg has no
AV1 decoder, for one), so any video either library decodes can be sampled.

A reader gives (fps, frame count, first frame) and then the wanted frames, by decoded-frame index,
as BGR uint8 arrays; both count frames the same way (every decoded frame, from 0).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from ..errors import VideoError

READERS = ("auto", "opencv", "pyav")
PYAV_HINT = "pip install 'tiepoint[video]' (PyAV)"


def _check(reader: str) -> str:
    if reader not in READERS:
        raise VideoError(f"video reader must be one of {', '.join(READERS)}, got '{reader}'")
    return reader


# ------------------------------------------------------------------------------ OpenCV
def _opencv_probe(path: Path) -> tuple[float, int, np.ndarray] | None:
    cap = cv2.VideoCapture(str(path))
    try:
        ok, frame = cap.read() if cap.isOpened() else (False, None)
        if not ok or frame is None:
            return None
        fps = float(cap.get(cv2.CAP_PROP_FPS))
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if n <= 0:  # some containers do not store it: count by decoding
            n = 1
            while cap.grab():
                n += 1
    finally:
        cap.release()
    return fps, n, frame


def _opencv_frames(path: Path, todo: list[int]) -> Iterator[tuple[int, np.ndarray]]:
    cap = cv2.VideoCapture(str(path))
    wanted, pos = set(todo), 0
    if todo[0] > 0:
        cap.set(cv2.CAP_PROP_POS_FRAMES, todo[0])
        pos = int(cap.get(cv2.CAP_PROP_POS_FRAMES))
        if pos != todo[0]:  # inexact seeking: decode from the start
            cap.release()
            cap, pos = cv2.VideoCapture(str(path)), 0
    try:
        while wanted and pos <= todo[-1]:
            if pos not in wanted:
                if not cap.grab():
                    return
            else:
                ok, frame = cap.read()
                if not ok:
                    return
                wanted.discard(pos)
                yield pos, frame
            pos += 1
    finally:
        cap.release()


# ------------------------------------------------------------------------------ PyAV
def _av():
    try:
        import av
    except ImportError:
        return None
    return av


def _pyav_open(path: Path):
    """(container, video stream) or None when PyAV cannot open it as a video."""
    av = _av()
    try:
        container = av.open(str(path))
    except (av.FFmpegError, UnicodeDecodeError, ValueError):
        return None
    if not container.streams.video:
        container.close()
        return None
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return container, stream


def _pyav_decode(container, stream) -> Iterator:
    """Decoded frames until the end or the first undecodable packet (a truncated file)."""
    av = _av()
    try:
        yield from container.decode(stream)
    except (av.FFmpegError, EOFError):
        return


def _pyav_probe(path: Path) -> tuple[float, int, np.ndarray] | None:
    opened = _pyav_open(path)
    if opened is None:
        return None
    container, stream = opened
    with container:
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else float("nan")
        first, n = None, 0
        if stream.frames > 0:
            first = next(_pyav_decode(container, stream), None)
            n = int(stream.frames)
        else:  # the container does not store the count: decode them all
            for frame in _pyav_decode(container, stream):
                first = frame if first is None else first
                n += 1
        if first is None:
            return None
        return fps, n, first.to_ndarray(format="bgr24")


def _pyav_frames(path: Path, todo: list[int]) -> Iterator[tuple[int, np.ndarray]]:
    """Decodes from the start (PyAV seeks to keyframes by time, not to frame indices)."""
    opened = _pyav_open(path)
    if opened is None:
        return
    container, stream = opened
    wanted = set(todo)
    with container:
        for pos, frame in enumerate(_pyav_decode(container, stream)):
            if pos in wanted:
                wanted.discard(pos)
                yield pos, frame.to_ndarray(format="bgr24")
            if not wanted:
                return


# ------------------------------------------------------------------------------ interface
def probe_video(path: Path, reader: str = "auto") -> tuple[str, float, int, np.ndarray]:
    """(reader used, fps, frame count, first BGR frame); one-line VideoError when none decodes."""
    _check(reader)
    if reader in ("auto", "opencv"):
        got = _opencv_probe(path)
        if got is not None:
            return ("opencv", *got)
        if reader == "opencv":
            raise VideoError(f"{path}: not a readable video (OpenCV could not decode a frame)")
    if _av() is None:
        what = "OpenCV could not decode a frame and " if reader == "auto" else ""
        raise VideoError(f"{path}: not a readable video ({what}PyAV is not installed: {PYAV_HINT})")
    got = _pyav_probe(path)
    if got is None:
        what = "neither OpenCV nor PyAV" if reader == "auto" else "PyAV"
        raise VideoError(f"{path}: not a readable video ({what} could decode a frame)")
    return ("pyav", *got)


def read_frames(path: Path, todo: list[int], reader: str) -> Iterator[tuple[int, np.ndarray]]:
    """(index, BGR frame) for the sorted indices `todo`, in order, with `reader` ("opencv" or
    "pyav", as `probe_video` chose); stops early where decoding stops."""
    frames = {"opencv": _opencv_frames, "pyav": _pyav_frames}
    if reader not in frames:
        raise VideoError(f"frames are read with 'opencv' or 'pyav', got '{reader}'")
    return frames[reader](path, todo) if todo else iter(())
