"""Reading videos frame by frame (TIFF pages, folders of images, mp4/avi) and writing overlay videos as frames come."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import tifffile

from stainless.io import IMAGE_SUFFIXES, ImageReadError, read_image

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv")


def _frame_chw(array: np.ndarray) -> np.ndarray:
    """One frame as float32 (C, H, W): grey (H, W), or colour with the channels last (H, W, <=4) or first."""
    array = np.asarray(array)
    if array.ndim == 2:
        return array[None].astype(np.float32)
    return (np.moveaxis(array, -1, 0) if array.shape[-1] <= 4 else array).astype(np.float32)


def frame_order(path: Path) -> list:
    """Sort key of a frame file: numbers in the name compared as numbers, so ``frame_2`` comes before ``frame_10``
    (a plain sort would put ``frame_10`` second and scramble every unpadded time-lapse). Zero-padded names
    (``t000.tif``, the Cell Tracking Challenge layout) sort as before."""
    key = [(0, int(part), "") if part.isdigit() else (1, 0, part.lower()) for part in re.split(r"(\d+)", path.name)]
    return [*key, (2, 0, path.name)]  # equal numbers written differently (t1, t01) in a fixed order


def iter_frames(path: str | Path) -> Iterator[np.ndarray]:
    """The frames of a video one at a time, as float32 (C, H, W), decoding each only when it is asked for: a
    multi-page TIFF page by page, a folder image by image, an mp4/avi frame by frame (PyAV, else ffmpeg). Memory
    does not grow with the length of the video.

    Raises:
        ImageReadError: missing or unreadable input, or a frame that cannot be decoded (named by its index).
    """
    path = Path(path)
    if path.is_dir():
        files = sorted((p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=frame_order)
        if not files:
            raise ImageReadError(f"{path}: no frames (images) in this folder")
        for file in files:
            yield read_image(file)
        return
    if not path.is_file():
        raise ImageReadError(f"{path}: video does not exist")
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff"):
        yield from _tiff_frames(path)
        return
    if suffix not in VIDEO_SUFFIXES:
        raise ImageReadError(f"{path}: unsupported video format {suffix!r}; use mp4/avi, a TIFF stack or a folder")
    index = 0
    try:
        frames = iio.imiter(path, plugin="pyav") if _has_pyav() else _ffmpeg_frames(path)
        for index, frame in enumerate(frames):
            yield _frame_chw(frame)
    except ImageReadError:
        raise
    except Exception as error:
        raise ImageReadError(f"{path}: cannot read video frame {index} ({type(error).__name__}: {error})") from None


def _tiff_frames(path: Path) -> Iterator[np.ndarray]:
    try:
        tif = tifffile.TiffFile(path)
    except Exception as error:
        raise ImageReadError(f"{path}: cannot read video ({type(error).__name__}: {error})") from None
    with tif:
        series = tif.series[0]
        axes, shape = series.axes, series.shape
        # one page per frame (T/Z/I Y X, with samples per pixel S last): decode page by page
        per_page = len(series.pages) == (shape[0] if len(shape) > 2 and axes[0] in "TZIQ" else 1)
        if not per_page or len(shape) == 2:
            try:
                array = series.asarray()
            except Exception as error:
                raise ImageReadError(f"{path}: cannot read video ({type(error).__name__}: {error})") from None
            frames = array[None] if array.ndim == 2 else array
            for frame in frames:
                yield _frame_chw(frame)
            return
        for index, page in enumerate(series.pages):
            try:
                frame = page.asarray()
            except Exception as error:
                raise ImageReadError(f"{path}: cannot read video frame {index} ({type(error).__name__}: {error})") from None
            yield _frame_chw(frame)


def count_frames(path: str | Path) -> int | None:
    """The number of frames of a video from its header or folder listing; None when only decoding would say."""
    path = Path(path)
    if path.is_dir():
        return sum(1 for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if path.suffix.lower() in (".tif", ".tiff") and path.is_file():
        try:
            with tifffile.TiffFile(path) as tif:
                shape = tif.series[0].shape
                return shape[0] if len(shape) > 2 and tif.series[0].axes[0] in "TZIQ" else 1
        except Exception:  # an unreadable file is named by iter_frames
            return None
    return None


def read_frames(path: str | Path) -> np.ndarray:
    """All frames of a video as float32 (T, C, H, W) (see :func:`iter_frames`, which streams them instead).

    Raises:
        ImageReadError: missing or unreadable input, named with the reason.
    """
    return np.stack(list(iter_frames(path)))


def _has_pyav() -> bool:
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


def _ffmpeg_frames(path: Path) -> Iterator[np.ndarray]:
    import imageio.v2 as iio2

    with iio2.get_reader(path, format="FFMPEG") as reader:
        for frame in reader:
            yield np.asarray(frame)


class VideoWriter:
    """RGB uint8 frames appended one at a time to an mp4 (ffmpeg), or to a multi-page TIFF where ffmpeg is not
    available; nothing is held in memory."""

    def __init__(self, path: Path, fps: float = 10.0):
        self.path, self._writer, self._tiff = Path(path), None, None
        try:
            import imageio.v2 as iio2

            # x264's fastest preset: the overlay is for looking at tracks, and the default preset cost about ten
            # times the CPU (it competes with the network on a small machine)
            self._writer = iio2.get_writer(self.path, format="FFMPEG", fps=fps, macro_block_size=1,
                                           output_params=["-preset", "ultrafast"])
        except Exception:  # no ffmpeg: a TIFF stack instead
            self.path = self.path.with_suffix(".tif")
            self._tiff = tifffile.TiffWriter(self.path)

    def append(self, frame: np.ndarray) -> None:
        if self._writer is not None:
            self._writer.append_data(frame)
        else:
            self._tiff.write(frame, photometric="rgb", contiguous=True)

    def close(self) -> Path:
        (self._writer or self._tiff).close()
        return self.path


def write_video(path: Path, frames: Iterable[np.ndarray], fps: float = 10.0) -> Path:
    """RGB uint8 frames to mp4 (ffmpeg), or to a multi-page TIFF where ffmpeg is unavailable, as they come."""
    writer = VideoWriter(path, fps)
    try:
        for frame in frames:
            writer.append(frame)
    finally:
        path = writer.close()
    return path
