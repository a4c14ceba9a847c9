"""Reading, normalising and writing microscopy images.

Every image leaves this module as a float32 array shaped ``(C, H, W)``. 16-bit and 32-bit data keep their
full precision: normalisation works on the raw values, never on an 8-bit copy.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import tifffile

TIFF_SUFFIXES = (".tif", ".tiff")
IMAGE_SUFFIXES = (*TIFF_SUFFIXES, ".png", ".jpg", ".jpeg")
# Images with more values than this (pixels x channels) are refused from their header, before decoding: a
# decompression bomb (a small file that decodes to gigabytes) must not exhaust memory. 2**29 values are 2 GiB
# as float32, e.g. a 16k x 16k x 2-channel field; raise it with the STAINLESS_MAX_PIXELS environment variable.
MAX_PIXELS = int(os.environ.get("STAINLESS_MAX_PIXELS", 2**29))


class ImageReadError(ValueError):
    """An image file that cannot be used, with the file named in the message."""


def list_images(folder: str | Path) -> list[Path]:
    """Sorted image files (TIFF, PNG, JPG) directly inside ``folder``.

    Raises:
        ImageReadError: the folder is missing or holds no image.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageReadError(f"{folder}: folder does not exist")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ImageReadError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    return files


def _tiff_axes(path: Path) -> str | None:
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        return series.axes


def _to_chw(array: np.ndarray, axes: str | None, channel_axis: int | str, path: Path) -> np.ndarray:
    """Arrange ``array`` as (C, H, W) using tifffile's axes string or the configured channel axis."""
    if array.ndim == 2:
        return array[None]
    if array.ndim != 3:
        if axes is not None and array.ndim == 4 and axes[-1] == "S":
            # e.g. a stack of RGB pages: pages x H x W x 3 -> merge into channels
            array = np.moveaxis(array, -1, 1).reshape(-1, *array.shape[1:3])
            return array
        raise ImageReadError(f"{path}: expected a 2-D or 3-D image, got shape {array.shape}")
    if channel_axis == "auto":
        if axes is not None and len(axes) == 3 and axes.endswith("YX"):
            return array  # channels, pages, Z or time first: tifffile knows
        if axes is not None and len(axes) == 3 and axes.endswith("S"):
            return np.moveaxis(array, -1, 0)  # samples per pixel (RGB)
        # No metadata: the channel axis is the short one, last if it is short (RGB), else first.
        channel_axis = -1 if array.shape[-1] <= 4 and array.shape[0] > 4 else 0
    return np.moveaxis(array, int(channel_axis), 0)


def _check_file(path: Path) -> str:
    if not path.is_file():
        raise ImageReadError(f"{path}: file does not exist")
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: file is empty (0 bytes)")
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise ImageReadError(f"{path}: unsupported format {suffix!r}; use one of {', '.join(IMAGE_SUFFIXES)}")
    return suffix


def _check_size(path: Path, shape: tuple[int, ...]) -> None:
    if int(np.prod(shape, dtype=np.float64)) > MAX_PIXELS:
        raise ImageReadError(
            f"{path}: image of shape {shape} is too large to read safely (more than {MAX_PIXELS} values; "
            "raise STAINLESS_MAX_PIXELS if it is genuine)"
        )


def _open(path: Path, decode: bool) -> tuple[tuple[int, ...], np.dtype, str | None, np.ndarray | None]:
    """Header (shape, dtype, axes) of an image file, size-checked before any pixel is decoded; and, with
    ``decode``, its pixels (a TIFF is opened once for both)."""
    suffix = _check_file(path)
    try:
        if suffix in TIFF_SUFFIXES:
            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                shape, dtype, axes = tuple(series.shape), np.dtype(series.dtype), series.axes
                _check_size(path, shape)
                return shape, dtype, axes, series.asarray() if decode else None
        props = iio.improps(path)
        shape, dtype = tuple(props.shape), np.dtype(props.dtype)
        _check_size(path, shape)
        return shape, dtype, "YXS" if len(shape) == 3 else None, iio.imread(path) if decode else None
    except ImageReadError:
        raise
    except Exception as error:  # the decoders raise many types; the user needs the file and the reason
        if type(error).__name__ == "DecompressionBombError":  # Pillow's own guard, for the same reason as ours
            raise ImageReadError(f"{path}: image is too large to read safely ({error})") from None
        raise ImageReadError(f"{path}: cannot decode image ({type(error).__name__}: {error})") from None


def read_header(path: str | Path) -> tuple[tuple[int, ...], np.dtype, str | None]:
    """Shape, dtype and axes (TIFF metadata, else None) of an image file, from its header only.

    Raises:
        ImageReadError: missing, empty, unsupported, corrupt or oversized (decompression bomb) file.
    """
    shape, dtype, axes, _ = _open(Path(path), decode=False)
    return shape, dtype, axes


def _select_channels(n_channels: int, channels: Sequence[int] | None, path: Path) -> list[int] | None:
    if channels is None:
        return None
    channels = list(channels)
    bad = [c for c in channels if not -n_channels <= c < n_channels]
    if bad:
        raise ImageReadError(f"{path}: channel index {bad[0]} out of range; the image has {n_channels} channel(s)")
    return channels


def image_info(
    path: str | Path, channels: Sequence[int] | None = None, channel_axis: int | str = "auto"
) -> tuple[tuple[int, int, int], np.dtype]:
    """The (C, H, W) shape :func:`read_image` would return, and the file's dtype, from the header alone."""
    path = Path(path)
    shape, dtype, axes = read_header(path)
    chw = _to_chw(np.broadcast_to(np.zeros((), np.uint8), shape), axes, channel_axis, path).shape
    selected = _select_channels(chw[0], channels, path)
    return (len(selected) if selected is not None else chw[0], chw[1], chw[2]), dtype


def image_shape(path: str | Path, channels: Sequence[int] | None = None, channel_axis: int | str = "auto") -> tuple[int, int, int]:
    """The (C, H, W) shape :func:`read_image` would return, from the header alone (nothing decoded)."""
    return image_info(path, channels, channel_axis)[0]


def read_image(
    path: str | Path,
    channels: Sequence[int] | None = None,
    channel_axis: int | str = "auto",
) -> np.ndarray:
    """Read an image file as float32 ``(C, H, W)`` at its native bit depth.

    Args:
        path: a TIFF (8/16/32-bit, multi-page, channel-first or channel-last), PNG or JPG file.
        channels: indices of the channels to keep, in order; all when None.
        channel_axis: ``"auto"`` (TIFF metadata, else the short axis), or the axis index in the file.

    Returns:
        float32 array (C, H, W) holding the raw values (not rescaled).

    Raises:
        ImageReadError: missing, empty, corrupt or oversized file (refused from its header), a channel index
            out of range, or NaN/Inf pixels.
    """
    path = Path(path)
    _, _, axes, array = _open(path, decode=True)
    chw = _to_chw(np.asarray(array), axes, channel_axis, path)
    selected = _select_channels(chw.shape[0], channels, path)
    if selected is not None:
        chw = chw[selected]
    chw = chw.astype(np.float32, copy=False)
    if not np.isfinite(chw).all():
        raise ImageReadError(f"{path}: image contains NaN or Inf pixels")
    return chw


def read_images(
    paths: str | Path | Sequence[str | Path], channels: Sequence[int] | None = None, channel_axis: int | str = "auto"
) -> np.ndarray:
    """:func:`read_image` for one file, or several files of one field stacked as channels in the given order
    (``channels`` then indexes the stacked channels).

    Raises:
        ImageReadError: as :func:`read_image`, or files of one field with different sizes.
    """
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if len(paths) == 1:
        return read_image(paths[0], channels, channel_axis)
    arrays = [read_image(path, None, channel_axis) for path in paths]
    for path, array in zip(paths[1:], arrays[1:]):
        if array.shape[-2:] != arrays[0].shape[-2:]:
            raise ImageReadError(f"{path}: size {array.shape[-2:]} differs from {paths[0]} ({arrays[0].shape[-2:]}), "
                                 "stacked with it as channels of one field")
    stacked = np.concatenate(arrays)
    selected = _select_channels(stacked.shape[0], channels, Path(paths[0]))
    return stacked[selected] if selected is not None else stacked


def images_info(
    paths: str | Path | Sequence[str | Path], channels: Sequence[int] | None = None, channel_axis: int | str = "auto"
) -> tuple[tuple[int, int, int], np.dtype]:
    """:func:`image_info` for one file or several files stacked as channels (headers only)."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if len(paths) == 1:
        return image_info(paths[0], channels, channel_axis)
    infos = [image_info(path, None, channel_axis) for path in paths]
    for path, (shape, _) in zip(paths[1:], infos[1:]):
        if shape[-2:] != infos[0][0][-2:]:
            raise ImageReadError(f"{path}: size {shape[-2:]} differs from {paths[0]} ({infos[0][0][-2:]}), "
                                 "stacked with it as channels of one field")
    n = sum(shape[0] for shape, _ in infos)
    selected = _select_channels(n, channels, Path(paths[0]))
    dtype = np.result_type(*[dtype for _, dtype in infos])
    return (len(selected) if selected is not None else n, *infos[0][0][-2:]), dtype


def dtype_range(dtype: np.dtype) -> tuple[float, float]:
    """The value range of an integer dtype, or (0, 1) for floats."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return float(info.min), float(info.max)
    return 0.0, 1.0


def normalize(
    image: np.ndarray,
    mode: str = "percentile",
    low: float = 1.0,
    high: float = 99.8,
    vmin: float | None = None,
    vmax: float | None = None,
    clip: bool = True,
) -> np.ndarray:
    """Rescale each channel of a (C, H, W) image to roughly [0, 1].

    Args:
        image: float array (C, H, W).
        mode: ``"percentile"`` (per image and channel, between the ``low`` and ``high`` percentiles) or
            ``"range"`` (fixed ``vmin``..``vmax`` for every image, e.g. 0..65535 or a camera's range).
        low, high: percentiles for ``"percentile"``.
        vmin, vmax: the fixed range for ``"range"``.
        clip: clip the result to [0, 1].

    Returns:
        float32 array of the same shape.
    """
    image = np.asarray(image, dtype=np.float32)
    if mode == "percentile":
        flat = image.reshape(image.shape[0], -1)
        lo = np.percentile(flat, low, axis=1)[:, None, None]
        hi = np.percentile(flat, high, axis=1)[:, None, None]
    elif mode == "range":
        if vmin is None or vmax is None:
            raise ValueError("normalisation mode 'range' needs vmin and vmax")
        lo = np.float32(vmin)
        hi = np.float32(vmax)
    else:
        raise ValueError(f"unknown normalisation mode {mode!r}; use 'percentile' or 'range'")
    out = (image - lo) / np.maximum(hi - lo, 1e-8)
    if clip:
        out = np.clip(out, 0.0, 1.0)
    return out.astype(np.float32, copy=False)


def write_tiff(path: str | Path, image: np.ndarray, pixel_size: float | None = None, axes: str | None = None) -> None:
    """Write a (C, H, W) or (H, W) array as an OME-TIFF, keeping its dtype.

    Args:
        pixel_size: µm per pixel, stored as the OME ``PhysicalSizeX/Y`` (Fiji, napari and :func:`pixel_size` read
            it back); None: no physical size.
        axes: the OME axes of ``image`` (default ``CYX`` for 3-D, ``YX`` for 2-D; ``TYX`` for a label stack).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[0] == 1 and axes is None:
        image = image[0]
    metadata: dict = {"axes": axes or ("CYX" if image.ndim == 3 else "YX")}
    if pixel_size:
        metadata.update(PhysicalSizeX=float(pixel_size), PhysicalSizeXUnit="µm",
                        PhysicalSizeY=float(pixel_size), PhysicalSizeYUnit="µm")
    tifffile.imwrite(path, image, photometric="minisblack", compression="zlib", ome=True, metadata=metadata)


# Length units of OME (UnitsLength) and ImageJ TIFFs, in micrometres.
UNITS_UM = {
    "m": 1e6, "meter": 1e6, "metre": 1e6, "cm": 1e4, "centimeter": 1e4, "mm": 1e3, "millimeter": 1e3,
    "µm": 1.0, "μm": 1.0, "um": 1.0, "micron": 1.0, "microns": 1.0, "micrometer": 1.0, "micrometre": 1.0,
    "\\u00b5m": 1.0, "nm": 1e-3, "nanometer": 1e-3, "nanometre": 1e-3, "pm": 1e-6, "å": 1e-4, "angstrom": 1e-4,
}
# Units that say "no physical size": the pixel size is unknown, which is not an error.
NO_UNITS = {"", "pixel", "pixels", "px", "reference frame", "none"}


def _in_um(value: float, unit: str, path: Path, where: str) -> float | None:
    key = unit.strip().lower()
    if key in NO_UNITS:
        return None
    if key not in UNITS_UM:
        raise ImageReadError(f"{path}: unknown length unit {unit!r} in its {where}; give pixel_size=<µm per pixel>")
    return float(value) * UNITS_UM[key]


def _ome_pixel_size(tif: tifffile.TiffFile, path: Path) -> tuple[float, float] | None:
    import xml.etree.ElementTree as ET

    pixels = next((e for e in ET.fromstring(tif.ome_metadata).iter() if e.tag.endswith("}Pixels")), None)
    if pixels is None or "PhysicalSizeX" not in pixels.attrib:
        return None
    sizes = [_in_um(float(pixels.attrib.get(f"PhysicalSize{a}", pixels.attrib["PhysicalSizeX"])),
                    pixels.attrib.get(f"PhysicalSize{a}Unit", "µm"), path, "OME metadata") for a in "YX"]
    return None if None in sizes else (sizes[0], sizes[1])


def _imagej_pixel_size(tif: tifffile.TiffFile, path: Path) -> tuple[float, float] | None:
    unit = (tif.imagej_metadata or {}).get("unit")
    tags = tif.pages.first.tags
    if unit is None or "XResolution" not in tags:
        return None
    sizes = []
    for name in ("YResolution", "XResolution"):
        numerator, denominator = (tags[name] if name in tags else tags["XResolution"]).value
        if numerator == 0:
            return None
        sizes.append(_in_um(denominator / numerator, unit, path, "ImageJ metadata"))  # resolution: pixels per unit
    return None if None in sizes else (sizes[0], sizes[1])


def pixel_size(path: str | Path) -> float | None:
    """µm per pixel recorded in an OME-TIFF (``PhysicalSizeX/Y`` and their units) or an ImageJ TIFF (resolution
    and unit); None for other files or when no physical size is recorded (plain TIFF resolutions, such as 72 dpi,
    are not microscope calibrations and are ignored).

    Raises:
        ImageReadError: an unknown unit, or pixels that are not square (x and y sizes differ by more than 0.1%).
    """
    path = Path(path)
    if path.is_dir() or path.suffix.lower() not in TIFF_SUFFIXES:
        return None
    _check_file(path)
    try:
        with tifffile.TiffFile(path) as tif:
            sizes = _ome_pixel_size(tif, path) if tif.is_ome else _imagej_pixel_size(tif, path) if tif.is_imagej else None
    except ImageReadError:
        raise
    except Exception as error:
        raise ImageReadError(f"{path}: cannot read its metadata ({type(error).__name__}: {error})") from None
    if sizes is None:
        return None
    if abs(sizes[0] - sizes[1]) > 1e-3 * max(sizes):
        raise ImageReadError(f"{path}: pixels are not square ({sizes[1]:g} x {sizes[0]:g} µm); stainless measures "
                             "with one pixel size: resample the image or give pixel_size=<µm per pixel>")
    return sizes[1]


def check_pixel_size(given: float | None) -> float | None:
    """A pixel size given on the command line (µm per pixel), refused when not positive."""
    if given is not None and not given > 0:
        raise ValueError(f"pixel_size={given}: must be a positive number of µm per pixel")
    return None if given is None else float(given)


def pixel_size_of(path: str | Path, given: float | None = None) -> float | None:
    """``given`` (the command line's ``pixel_size``, which wins) or the pixel size recorded in the file."""
    return check_pixel_size(given) if given is not None else pixel_size(path)


def common_pixel_size(paths: Sequence[str | Path], what: str = "these files") -> float | None:
    """The one pixel size of several files (frames, conditions), or None when none records one.

    Raises:
        ImageReadError: see :func:`agreed_pixel_size`.
    """
    return agreed_pixel_size({str(p): pixel_size(p) for p in paths}, what)


def agreed_pixel_size(sizes: dict[str, float | None], what: str) -> float | None:
    """The pixel size that every entry of ``sizes`` (file -> µm or None) records, or None when none records one.

    Raises:
        ImageReadError: entries that record different pixel sizes, or some that record one and some not.
    """
    known = {p: s for p, s in sizes.items() if s is not None}
    if not known:
        return None
    first_path, first = next(iter(known.items()))
    for path, size in sizes.items():
        if size is None or abs(size - first) > 1e-6 * first:
            found = "none" if size is None else f"{size:g} µm"
            raise ImageReadError(f"{path}: pixel size {found} differs from {first_path} ({first:g} µm) among {what}; "
                                 "they are measured in one unit: give pixel_size=<µm per pixel> if they share one")
    return first


class CTCWriter:
    """A Cell Tracking Challenge tracking result (or, with ``mask_prefix="man_track"`` and
    ``track_file="man_track.txt"``, a ground-truth TRA folder), written frame by frame: one ``<prefix>TTT.tif`` per
    frame (labels are track ids) and, on :meth:`close`, the track file of ``label first_frame last_frame parent``
    lines.

    The CTC format wants every label present from its first frame to its last, so a track missed in some frames is
    cut there: the part after a gap becomes a new label whose parent is the part before. Daughters (``parents``:
    track id -> mother's track id) hang on the last part of their mother. The cuts are worked out from ``presence``
    (track id -> the frames it is in) before the first frame is written.
    """

    def __init__(self, folder: str | Path, presence: dict[int, list[int]], n_frames: int,
                 parents: dict[int, int] | None = None, mask_prefix: str = "mask", track_file: str = "res_track.txt"):
        self.folder, self.mask_prefix, self.track_file = Path(folder), mask_prefix, track_file
        self.folder.mkdir(parents=True, exist_ok=True)
        self.digits = max(3, len(str(max(n_frames, 1) - 1)))
        self.lines: list[tuple[int, int, int, int]] = []
        self.relabel: dict[int, dict[int, int]] = {}  # frame -> {track id: CTC label}
        next_label, last_part = max(presence, default=0) + 1, {}
        parents = parents or {}
        for track_id in sorted(presence):
            frames = np.array(sorted(set(presence[track_id])))
            runs = np.split(frames, np.flatnonzero(np.diff(frames) > 1) + 1)
            parent = last_part.get(parents.get(track_id, 0), 0)
            for k, run in enumerate(runs):
                label = track_id if k == 0 else next_label
                next_label += int(k > 0)
                for t in run:
                    self.relabel.setdefault(int(t), {})[track_id] = label
                self.lines.append((label, int(run[0]), int(run[-1]), parent))
                parent = label
            last_part[track_id] = self.lines[-1][0]
        self.dtype = np.uint16 if next_label < 2**16 else np.uint32

    def write(self, t: int, tracks: np.ndarray) -> None:
        """Frame ``t``, given as an image of track ids."""
        mapping = self.relabel.get(t, {})
        lut = np.zeros(max([int(tracks.max(initial=0)), *mapping]) + 1, self.dtype)
        for track_id, label in mapping.items():
            lut[track_id] = label
        tifffile.imwrite(self.folder / f"{self.mask_prefix}{t:0{self.digits}d}.tif", lut[tracks], compression="zlib")

    def close(self) -> Path:
        (self.folder / self.track_file).write_text("".join(f"{a} {b} {c} {d}\n" for a, b, c, d in sorted(self.lines)))
        return self.folder


def write_ctc(folder: str | Path, stack: np.ndarray, parents: dict[int, int] | None = None, mask_prefix: str = "mask",
              track_file: str = "res_track.txt") -> Path:
    """A whole label stack ``(T, H, W)`` (labels are track ids) as a CTC folder: see :class:`CTCWriter`."""
    stack = np.asarray(stack)
    presence: dict[int, list[int]] = {}
    for t, frame in enumerate(stack):
        for v in np.unique(frame):
            if v:
                presence.setdefault(int(v), []).append(t)
    writer = CTCWriter(folder, presence, len(stack), parents, mask_prefix, track_file)
    for t, frame in enumerate(stack):
        writer.write(t, frame)
    return writer.close()


def to_dtype(image01: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Map an image in [0, 1] to the full range of ``dtype`` (floats are returned as float32)."""
    dtype = np.dtype(dtype)
    if not np.issubdtype(dtype, np.integer):
        return image01.astype(np.float32)
    lo, hi = dtype_range(dtype)
    return np.round(np.clip(image01, 0, 1) * (hi - lo) + lo).astype(dtype)


def image_dtype(path: str | Path) -> np.dtype:
    """The stored pixel type of an image file, read from its header."""
    path = Path(path)
    if path.suffix.lower() in TIFF_SUFFIXES:
        with tifffile.TiffFile(path) as tif:
            return np.dtype(tif.series[0].dtype)
    return np.dtype(iio.improps(path).dtype)
