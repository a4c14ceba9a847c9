"""Reading LabelMe annotations (JSON) into images, instance labels and class masks.

LabelMe has no maintained reader library for training use (the ``labelme`` package is a Qt GUI), so the
format is parsed here: shapes are rasterised with scikit-image, the embedded image decoded with imageio.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Mapping
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from skimage.draw import disk, polygon

from stainless.io import MAX_PIXELS, ImageReadError, read_image

SHAPE_TYPES = ("polygon", "rectangle", "circle", "mask")


class LabelMeError(ImageReadError):
    """A LabelMe file that cannot be used, with the file named in the message."""


def _load_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise LabelMeError(f"{path}: not a valid LabelMe JSON file ({error})") from None
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
        raise LabelMeError(f"{path}: not a LabelMe file (no 'shapes' list)")
    return data


def _image_path(path: Path, data: dict, root: Path) -> Path:
    """The image referenced by ``imagePath``, refused if it lies outside ``root``."""
    relative = data.get("imagePath")
    if not relative:
        raise LabelMeError(f"{path}: no embedded imageData and no imagePath")
    image_path = (path.parent / relative).resolve()
    if not image_path.is_relative_to(root.resolve()):
        raise LabelMeError(f"{path}: imagePath {relative!r} points outside the dataset folder {root}")
    if not image_path.is_file():
        raise LabelMeError(f"{path}: image {relative!r} does not exist")
    return image_path


def read_labelme_image(path: str | Path, root: str | Path | None = None, channels=None) -> np.ndarray:
    """The annotated image as float32 (C, H, W), from ``imageData`` if embedded, else from ``imagePath``.

    Args:
        path: the JSON file.
        root: the dataset folder; ``imagePath`` may not leave it (default: the JSON's folder).
        channels: channel indices to keep.
    """
    path = Path(path)
    data = _load_json(path)
    if data.get("imageData"):
        try:
            raw = base64.b64decode(data["imageData"])
            props = iio.improps(io.BytesIO(raw))
            if int(np.prod(props.shape)) > MAX_PIXELS:
                raise LabelMeError(f"{path}: embedded image of shape {props.shape} is too large to read safely")
            array = np.asarray(iio.imread(io.BytesIO(raw)))
        except LabelMeError:
            raise
        except Exception as error:
            raise LabelMeError(f"{path}: embedded imageData cannot be decoded ({error})") from None
        chw = array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)
        if channels is not None:
            chw = chw[list(channels)]
        return chw.astype(np.float32)
    return read_image(_image_path(path, data, Path(root or path.parent)), channels)


def rasterize_labelme(
    path: str | Path, shape: tuple[int, int] | None = None, label_map: Mapping[str, int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Instance labels and class mask of a LabelMe file's shapes, in drawing order (later shapes on top).

    Args:
        path: the JSON file.
        shape: (H, W) of the image (default: ``imageHeight``/``imageWidth`` of the file).
        label_map: LabelMe label name -> class index (0 = background). None: every label is class 1.
            Labels absent from the map are ignored.

    Returns:
        (instances, classes): int32 arrays (H, W); every shape is its own instance (1, 2, ...).

    Raises:
        LabelMeError: unknown shape type, a polygon with fewer than three points, malformed points.
    """
    path = Path(path)
    data = _load_json(path)
    height, width = shape or (int(data.get("imageHeight") or 0), int(data.get("imageWidth") or 0))
    if not height or not width:
        raise LabelMeError(f"{path}: image size unknown (no imageHeight/imageWidth)")
    instances = np.zeros((height, width), np.int32)
    classes = np.zeros((height, width), np.int32)
    next_id = 1
    for number, item in enumerate(data["shapes"]):
        kind = item.get("shape_type") or "polygon"
        label = item.get("label", "")
        where = f"{path}: shape {number} ({label!r}, {kind})"
        if kind not in SHAPE_TYPES:
            raise LabelMeError(f"{where}: unknown shape type; supported: {', '.join(SHAPE_TYPES)}")
        class_id = 1 if label_map is None else label_map.get(label)
        if not class_id:
            continue
        try:
            points = np.asarray(item.get("points", []), dtype=np.float64).reshape(-1, 2)
        except ValueError:
            raise LabelMeError(f"{where}: points are not a list of [x, y] pairs") from None
        region = _shape_region(kind, points, item, (height, width), where)
        instances[region] = next_id
        classes[region] = class_id
        next_id += 1
    return instances, classes


def _shape_region(kind: str, points: np.ndarray, item: dict, size: tuple[int, int], where: str) -> tuple:
    """Pixel coordinates (rows, cols) covered by one shape."""
    if kind == "polygon":
        if len(points) < 3:
            raise LabelMeError(f"{where}: a polygon needs at least three points, got {len(points)}")
        return polygon(points[:, 1], points[:, 0], shape=size)
    if kind == "rectangle":
        if len(points) != 2:
            raise LabelMeError(f"{where}: a rectangle needs two corner points, got {len(points)}")
        (x0, y0), (x1, y1) = points.min(0), points.max(0)
        rows = np.arange(max(0, round(y0)), min(size[0], round(y1) + 1))
        cols = np.arange(max(0, round(x0)), min(size[1], round(x1) + 1))
        rr, cc = np.meshgrid(rows, cols, indexing="ij")
        return rr.ravel(), cc.ravel()
    if kind == "circle":
        if len(points) != 2:
            raise LabelMeError(f"{where}: a circle needs a centre and a point on its edge, got {len(points)} points")
        (cx, cy), (ex, ey) = points
        return disk((cy, cx), float(np.hypot(ex - cx, ey - cy)), shape=size)
    # mask: a base64 PNG of the box between the two points
    if len(points) != 2 or not item.get("mask"):
        raise LabelMeError(f"{where}: a mask shape needs two box points and base64 'mask' data")
    try:
        mask = np.asarray(iio.imread(io.BytesIO(base64.b64decode(item["mask"])))) > 0
    except Exception as error:
        raise LabelMeError(f"{where}: mask data cannot be decoded ({error})") from None
    if mask.ndim == 3:
        mask = mask.any(-1)
    top, left = int(round(points[:, 1].min())), int(round(points[:, 0].min()))
    rr, cc = np.nonzero(mask)
    rr, cc = rr + top, cc + left
    keep = (rr >= 0) & (rr < size[0]) & (cc >= 0) & (cc < size[1])
    return rr[keep], cc[keep]


def export_folder(source: str | Path, destination: str | Path, label_map: Mapping[str, int] | None = None) -> int:
    """Write every LabelMe file of ``source`` as ``images/<stem>.tif``, ``masks/<stem>.png`` (class indices,
    uint8) and ``labels/<stem>.tif`` (instances, uint16) under ``destination``; returns the number written.

    Raises:
        FileExistsError: ``destination`` already holds an export (nothing is overwritten).
    """
    import tifffile

    source, destination = Path(source), Path(destination)
    files = sorted(source.glob("*.json"))
    if not files:
        raise LabelMeError(f"{source}: no LabelMe .json files in this folder")
    if any((destination / sub).exists() for sub in ("images", "masks", "labels")):
        raise FileExistsError(f"{destination}: already holds images/, masks/ or labels/; choose an empty folder")
    for sub in ("images", "masks", "labels"):
        (destination / sub).mkdir(parents=True)
    for path in files:
        image = read_labelme_image(path, source)
        instances, classes = rasterize_labelme(path, image.shape[-2:], label_map)
        tifffile.imwrite(destination / "images" / f"{path.stem}.tif", image[0] if image.shape[0] == 1 else image)
        iio.imwrite(destination / "masks" / f"{path.stem}.png", classes.astype(np.uint8))
        tifffile.imwrite(destination / "labels" / f"{path.stem}.tif", instances.astype(np.uint16))
    return len(files)


def main(argv: list[str] | None = None) -> int:
    """``python -m stainless.data.labelme SRC DST [--label cell=1 --label debris=2]``."""
    import argparse

    parser = argparse.ArgumentParser(description="Export a folder of LabelMe files to image/mask/label files.")
    parser.add_argument("source", help="folder of LabelMe .json files")
    parser.add_argument("destination", help="output folder (gets images/, masks/, labels/)")
    parser.add_argument("--label", action="append", default=[], metavar="NAME=CLASS",
                        help="map a LabelMe label to a class index (repeat); default: every shape is class 1")
    args = parser.parse_args(argv)
    try:
        label_map = {k: int(v) for k, v in (item.split("=", 1) for item in args.label)} or None
    except ValueError:
        parser.error("--label takes NAME=CLASS with an integer CLASS")
    try:
        count = export_folder(args.source, args.destination, label_map)
    except (LabelMeError, FileExistsError) as error:
        print(f"error: {error}")
        return 1
    print(f"exported {count} annotated images to {args.destination}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
