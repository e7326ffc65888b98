"""MP4 encoding and decoding for camera streams, through imageio's ffmpeg.

Encoding streams frames into an ``ffmpeg`` child process as they arrive, so the
encoder works in parallel with the simulator or robot loop and closing a file at the
end of an episode only waits for the last few frames. A background thread feeds
the pipe, so a slow encoder does not stall ``add_frame`` either (frames queue up
in memory instead; the queue is unbounded because dropping frames would corrupt
the episode).

Codec: H.264 (libx264), yuv420p, which every player and LeRobot's decoders read.
yuv420p halves the colour resolution, so frames must have even width and height
and colours at sharp edges come back slightly blurred; the default quality
(``crf`` 18) keeps the mean absolute error on rendered frames around 1-2 grey
levels (tests/test_episodes.py checks the bound).
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np

DEFAULT_CRF = 18  # x264 constant-rate factor: 0 lossless .. 51 worst; 18 is visually lossless
DEFAULT_GOP = 2  # keyframe every 2 frames, as LeRobot does, so random access decodes little
_STOP = object()


def check_frame_size(height: int, width: int, what: str) -> None:
    if height % 2 or width % 2:
        raise ValueError(
            f"{what} is {height}x{width}; H.264 video in yuv420p needs even height and width "
            f"(use an even image size, e.g. {height + height % 2}x{width + width % 2})"
        )


class VideoStream:
    """One mp4 being written: ``append(frame)`` ... ``close()`` (or ``abort()``)."""

    def __init__(self, path: Path, fps: float, crf: int = DEFAULT_CRF, gop: int = DEFAULT_GOP) -> None:
        import imageio.v2 as iio

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.frames = 0
        self._writer = iio.get_writer(
            self.path,
            format="FFMPEG",
            fps=fps,
            codec="libx264",
            pixelformat="yuv420p",
            macro_block_size=1,  # never resize; sizes are checked to be even instead
            ffmpeg_log_level="error",
            output_params=["-crf", str(int(crf)), "-g", str(int(gop)), "-preset", "veryfast"],
        )
        self._queue: queue.Queue = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"video-{self.path.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            frame = self._queue.get()
            if frame is _STOP:
                return
            if self._error is None:
                try:
                    self._writer.append_data(frame)
                except BaseException as err:  # noqa: BLE001 - reported on close
                    self._error = err

    def append(self, frame: np.ndarray) -> None:
        if self._error is not None:
            raise RuntimeError(f"video encoder for {self.path} failed: {self._error}") from self._error
        self._queue.put(np.ascontiguousarray(frame))
        self.frames += 1

    def close(self) -> None:
        """Wait for the encoder to finish the file; raise if it failed."""
        self._queue.put(_STOP)
        self._thread.join()
        try:
            self._writer.close()
        except BaseException as err:  # noqa: BLE001
            self._error = self._error or err
        if self._error is not None:
            raise RuntimeError(f"video encoder for {self.path} failed: {self._error}") from self._error

    def abort(self) -> None:
        """Stop encoding and delete the partial file."""
        self._error = self._error or RuntimeError("aborted")
        self._queue.put(_STOP)
        self._thread.join()
        with contextlib.suppress(BaseException):  # the file is deleted anyway
            self._writer.close()
        self.path.unlink(missing_ok=True)


def read_frames(path: Path) -> Iterator[np.ndarray]:
    """Decode every frame of an mp4 as (H, W, 3) uint8, in order."""
    import imageio.v2 as iio

    reader = iio.get_reader(Path(path), format="FFMPEG")
    try:
        yield from reader
    finally:
        reader.close()


def decode(path: Path) -> np.ndarray:
    """All frames of an mp4 as one (T, H, W, 3) uint8 array."""
    frames = list(read_frames(path))
    if not frames:
        return np.zeros((0, 0, 0, 3), np.uint8)
    return np.stack(frames)


def probe(path: Path) -> dict:
    """Frame count, duration and size of an mp4 (decodes it once: exact, not from headers)."""
    import imageio.v2 as iio
    import imageio_ffmpeg

    reader = iio.get_reader(Path(path), format="FFMPEG")
    try:
        meta = reader.get_meta_data()
    finally:
        reader.close()
    frames, secs = imageio_ffmpeg.count_frames_and_secs(str(path))
    width, height = meta.get("size", (0, 0))
    return {"frames": int(frames), "seconds": float(secs), "height": int(height), "width": int(width),
            "fps": float(meta.get("fps", 0.0)), "codec": meta.get("codec", "")}
