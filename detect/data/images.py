"""Reading any image file into ``(H, W, 3) uint8 RGB`` with clear errors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from detect.errors import DetectError


def read_image(path: str | Path) -> np.ndarray:
    """Read an image as ``(H, W, 3)`` uint8 RGB.

    Grayscale is replicated to three channels, alpha is dropped, 16-bit images are scaled to 8
    bits, and the EXIF orientation is applied (OpenCV does that for ``IMREAD_COLOR``).

    Raises:
        DetectError: naming the file when it is missing or not a readable image.
    """
    path = Path(path)
    if path.is_dir():
        raise DetectError(f"image {path}: is a folder, not an image file")
    if not path.is_file():
        raise DetectError(f"image {path}: file not found")
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH) if data.size else None
    if image is None:
        raise DetectError(f"image {path}: not a readable image file ({data.size} bytes)")
    if image.dtype == np.uint16:
        image = (image / 257.0).round().astype(np.uint8)
    elif image.dtype != np.uint8:
        image = cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    return np.ascontiguousarray(image[:, :, ::-1])


def write_image(path: str | Path, image: np.ndarray) -> None:
    """Write an ``(H, W, 3)`` uint8 RGB image (format from the suffix), creating folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, encoded = cv2.imencode(path.suffix or ".png", np.ascontiguousarray(image[:, :, ::-1]))
    if not ok:
        raise DetectError(f"image {path}: cannot encode as {path.suffix}")
    encoded.tofile(str(path))
