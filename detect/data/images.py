"""Reading any image file into ``(H, W, 3) uint8 RGB`` with clear errors and a size limit.

OpenCV is imported by the functions that decode or encode, so reading an image's size from its
header (:func:`header_size`, what a proposal cache look-up does) does not load it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from detect.config import DataConfig
from detect.errors import DetectError

# Images whose header states more pixels than this are refused before decoding (a 100 KB PNG can
# claim 30000x30000 and take 9 GB to decode). The config's ``data.max_image_pixels`` sets it.
DEFAULT_MAX_IMAGE_PIXELS = DataConfig.max_image_pixels

# The suffixes (lower case) of the image files read_image decodes: how an image folder is listed
# and how a VOC image id finds its file.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def header_size(path: Path) -> tuple[int, int] | None:
    """``(width, height)`` stated by the image file's header, read without decoding the pixels;
    None when PIL does not know the format (OpenCV may still decode it)."""
    # PIL's own decompression-bomb check raises without saying the size; the caller applies its
    # limit instead, so PIL's is lifted for this header read only.
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        with Image.open(path) as image:
            return image.size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return None
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def read_image(path: str | Path, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """Read an image as ``(H, W, 3)`` uint8 RGB.

    Grayscale is replicated to three channels, alpha is dropped, 16-bit images are scaled to 8
    bits, and the EXIF orientation is applied (OpenCV does that for ``IMREAD_COLOR``).

    Args:
        max_pixels: refuse an image whose header states more than this many pixels (width x
            height), before any decoding.

    Raises:
        DetectError: naming the file when it is missing, not a readable image, or too large (with
            its size).
    """
    path = Path(path)
    if path.is_dir():
        raise DetectError(f"image {path}: is a folder, not an image file")
    if not path.is_file():
        raise DetectError(f"image {path}: file not found")
    size = header_size(path)
    if size is not None and size[0] * size[1] > max_pixels:
        raise DetectError(
            f"image {path}: {size[0]}x{size[1]} pixels is over the limit of {max_pixels} pixels "
            "(data.max_image_pixels)"
        )
    import cv2

    data = np.fromfile(str(path), dtype=np.uint8)
    try:
        image = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH) if data.size else None
    except cv2.error as exc:  # e.g. OpenCV's own limit of 2^30 pixels
        reason = " ".join(str(exc).split())[-200:]
        raise DetectError(f"image {path}: cannot decode ({data.size} bytes): {reason}") from exc
    if image is None:
        raise DetectError(f"image {path}: not a readable image file ({data.size} bytes)")
    if image.dtype == np.uint16:
        image = (image / 257.0).round().astype(np.uint8)
    elif image.dtype != np.uint8:
        image = cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    return np.ascontiguousarray(image[:, :, ::-1])


def write_image(path: str | Path, image: np.ndarray) -> None:
    """Write an ``(H, W, 3)`` uint8 RGB image (format from the suffix), creating folders."""
    import cv2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, encoded = cv2.imencode(path.suffix or ".png", np.ascontiguousarray(image[:, :, ::-1]))
    if not ok:
        raise DetectError(f"image {path}: cannot encode as {path.suffix}")
    encoded.tofile(str(path))
