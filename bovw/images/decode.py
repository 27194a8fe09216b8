"""Image decoding: bytes to an 8-bit gray or BGR array, with one rule for what is accepted.

Decoding is done by OpenCV from bytes (``cv2.imdecode``), so any path works, unicode
included. Before decoding, a file over :data:`~bovw.images.limits.MAX_FILE_BYTES` or
whose header claims more than :data:`~bovw.images.limits.MAX_PIXELS` pixels is refused
(:mod:`bovw.images.headers`); after it, samples other than 8- or 16-bit unsigned
integers and truncated JPEGs (:mod:`bovw.images.jpeg`) are refused. Gray, BGR, BGRA,
16-bit and palette images are converted explicitly.
"""

from __future__ import annotations

import os
from pathlib import Path

# cv2 reads OPENCV_IO_MAX_IMAGE_PIXELS when first imported: bovw/images/__init__.py sets
# it (through .limits) before this module is imported.
import cv2
import numpy as np

from ..errors import BadInputError
from .headers import check_pixel_count
from .jpeg import jpeg_complete
from .limits import MAX_FILE_BYTES, MAX_PIXELS

__all__ = ["read_bytes", "decode_checked", "fit_max_side", "decode_image", "read_image"]


def read_bytes(path: Path) -> bytes:
    """The bytes of an image file, refused over MAX_FILE_BYTES; errors name the file."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise BadInputError(f"Cannot read image {path}: {exc.strerror or exc}.") from None
    if size > MAX_FILE_BYTES:
        raise BadInputError(
            f"Image {path} is {size / 2**20:.0f} MiB, over the {MAX_FILE_BYTES // 2**20} MiB "
            "limit; shrink it or leave it out."
        )
    try:
        return path.read_bytes()
    except OSError as exc:
        raise BadInputError(f"Cannot read image {path}: {exc.strerror or exc}.") from None


def decode_checked(data: bytes, path: Path | str) -> np.ndarray:
    """Decode an image as stored, or raise :class:`BadInputError` naming the file.

    The one rule for what bovw accepts, shared by :func:`bovw.data.load_dataset` (which
    checks every image up front) and :func:`decode_image` (extraction and
    ``bovw predict``): the header claims at most :data:`MAX_PIXELS`, OpenCV
    decodes it, its samples are 8- or 16-bit unsigned integers, and a JPEG's
    scans are all there (see :func:`bovw.images.jpeg.jpeg_complete`).
    """
    check_pixel_count(data, path)
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        image = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if buf.size else None
    except cv2.error as exc:
        if "CV_IO_MAX_IMAGE_PIXELS" in str(exc):  # OpenCV's own limit, for unparsed headers
            raise BadInputError(
                f"Image {path} has more than {MAX_PIXELS:,} pixels, over the limit; "
                "resize it or leave it out."
            ) from None
        image = None
    if image is None or image.size == 0:
        raise BadInputError(
            f"Cannot decode image {path}: the file is corrupt or not an image; fix or remove it."
        )
    if image.dtype not in (np.uint8, np.uint16):
        # Floating-point and signed samples have no one mapping to 8 bits (HDR
        # radiance, [0, 1] floats, signed elevation...), so bovw does not guess one.
        raise BadInputError(
            f"Image {path} has {image.dtype} samples, which bovw does not convert; "
            "save it with 8- or 16-bit unsigned samples."
        )
    if data[:2] == b"\xff\xd8" and not jpeg_complete(data):
        raise BadInputError(
            f"Image {path} is a truncated or corrupt JPEG (its image data ends early); "
            "fix or remove it."
        )
    return image


def fit_max_side(image: np.ndarray, max_side: int) -> np.ndarray:
    """Shrink ``image`` so that its longest side is at most ``max_side`` (0: unchanged).

    Area interpolation (``cv2.INTER_AREA``), the new sides rounded, at least 1.
    """
    h, w = image.shape[:2]
    if not max_side or max(h, w) <= max_side:
        return image
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def decode_image(
    data: bytes, path: Path | str = "<bytes>", *, color: str = "gray", max_side: int = 0
) -> np.ndarray:
    """Decode image bytes with OpenCV into an 8-bit array.

    Gray, BGR, BGRA, 16-bit and palette images are accepted and converted
    explicitly: alpha is dropped (composited on black), 16-bit is scaled to
    8-bit. Floating-point and signed samples, truncated JPEGs and images over
    :data:`MAX_PIXELS` are refused, as :func:`bovw.data.load_dataset` refuses them.

    Parameters
    ----------
    data : bytes
        The encoded file.
    path : path-like
        Only for error messages.
    color : {"gray", "bgr"}
        ``"gray"`` gives an (H, W) array, ``"bgr"`` an (H, W, 3) array.
    max_side : int
        Shrink the image, right after decoding and before any conversion, so
        that its longest side is at most this (:func:`fit_max_side`; 0: keep
        the size). The conversions of a large image (16-bit, alpha) then cost
        memory in proportion to the shrunk image.

    Returns
    -------
    ndarray of uint8

    Raises
    ------
    BadInputError
        If the image is refused; the message names ``path``.
    """
    if color not in ("gray", "bgr"):
        raise ValueError(f"color must be 'gray' or 'bgr', not {color!r}.")
    image = fit_max_side(decode_checked(data, path), max_side)
    if image.dtype == np.uint16:
        image = (image.astype(np.uint32) * 255 // 65535).astype(np.uint8)
    if image.ndim == 3 and image.shape[2] == 4:
        alpha = image[:, :, 3:4].astype(np.float32) / 255.0
        image = (image[:, :, :3].astype(np.float32) * alpha + 0.5).astype(np.uint8)
    elif image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if color == "gray":
        if image.ndim == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    elif image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return np.ascontiguousarray(image)


def read_image(path: str | os.PathLike, *, color: str = "gray", max_side: int = 0) -> np.ndarray:
    """Read and decode one image file (any path, unicode included).

    Parameters
    ----------
    path : path-like
    color : {"gray", "bgr"}
    max_side : int
        Longest side after decoding (0: keep the size); see :func:`decode_image`.

    Returns
    -------
    ndarray of uint8, shape (H, W) or (H, W, 3)

    Raises
    ------
    BadInputError
        If the file cannot be read, is too large, or cannot be decoded.
    """
    path = Path(path)
    return decode_image(read_bytes(path), path, color=color, max_side=max_side)
