"""Datasets: folder discovery, split protocols, content hashes and image decoding.

Three layouts are understood:

* ``root/<class>/*.jpg`` -- one folder per class; a split protocol
  (``train_per_class``, ``test_per_class``, ``split_seed``) divides it.
* ``root/train/<class>/*`` and ``root/test/<class>/*`` -- the split is given.
* a CSV or text file of ``path,label`` lines (paths relative to the file), with
  an optional third column ``train``/``test``; without it the split protocol
  applies.

Every image gets a content hash (BLAKE2b of its bytes). The sorted list of
(hash, class, split) is the manifest, and its hash names the dataset in cache
keys: renaming a folder does not invalidate the cache, and changing one image
invalidates only what depends on that image.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

#: Images with more pixels than this are refused before decoding (a decompression bomb guard).
MAX_PIXELS = 64_000_000

# OpenCV refuses, before allocating, any image above OPENCV_IO_MAX_IMAGE_PIXELS (default
# 2**30), whatever its format. It reads the variable once, when cv2 is first imported, so
# it is set here, before the import (bovw/__init__.py imports this module first). It backs
# up the header checks below for the formats they do not parse; when cv2 was imported
# before bovw, those header checks are the only guard.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_PIXELS))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from .errors import BadInputError  # noqa: E402, F401 - re-exported: bovw.data.BadInputError

#: File extensions treated as images; anything else is skipped with a warning.
IMAGE_EXTENSIONS = frozenset(
    {
        ".jpg",
        ".jpeg",
        ".jpe",
        ".png",
        ".bmp",
        ".dib",
        ".gif",
        ".tif",
        ".tiff",
        ".webp",
        ".pgm",
        ".ppm",
        ".pbm",
        ".pnm",
        ".jp2",
    }
)

#: Files larger than this are refused before reading.
MAX_FILE_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class Sample:
    """One image of a dataset.

    Attributes
    ----------
    path : Path
        Where the image is; not part of any cache key.
    label : int
        Index into :attr:`Dataset.classes`.
    digest : str
        Content hash of the file's bytes (hex BLAKE2b, 128 bit).
    """

    path: Path
    label: int
    digest: str


@dataclass
class Dataset:
    """A classification dataset with its train/test split.

    Attributes
    ----------
    classes : list of str
        Class names, sorted; labels index into this list.
    train, test : list of Sample
    root : Path
        The folder or list file it was loaded from.
    skipped : list of Path
        Files that were left out (not images, or undecodable with ``skip_bad``).
    """

    classes: list[str]
    train: list[Sample]
    test: list[Sample]
    root: Path
    skipped: list[Path] = field(default_factory=list)

    @property
    def manifest_hash(self) -> str:
        """Hash of the sorted (content hash, class name, split) triples."""
        h = hashlib.blake2b(digest_size=16)
        rows = sorted(
            [(s.digest, self.classes[s.label], "train") for s in self.train]
            + [(s.digest, self.classes[s.label], "test") for s in self.test]
        )
        for row in rows:
            h.update(("\t".join(row) + "\n").encode())
        return h.hexdigest()

    def split_hash(self, split: str) -> str:
        """Hash of one split's (content hash, class name) pairs, in dataset order."""
        h = hashlib.blake2b(digest_size=16)
        for s in getattr(self, split):
            h.update(f"{s.digest}\t{self.classes[s.label]}\n".encode())
        return h.hexdigest()

    def labels(self, split: str) -> np.ndarray:
        """Integer labels of ``split`` ("train" or "test")."""
        return np.array([s.label for s in getattr(self, split)], dtype=np.int64)

    def summary(self) -> str:
        """One line: classes and image counts."""
        return (
            f"{len(self.classes)} classes, {len(self.train)} train and "
            f"{len(self.test)} test images ({self.root})"
        )


# --------------------------------------------------------------------------- images


def file_digest(data: bytes) -> str:
    """Content hash of a file's bytes: hex BLAKE2b with a 128-bit digest."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _read_bytes(path: Path) -> bytes:
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


def _check_pixel_count(data: bytes, path: Path | str) -> None:
    """Refuse images whose header claims more than MAX_PIXELS, before decoding."""
    size = _header_size(data)
    if size is not None and size[0] * size[1] > MAX_PIXELS:
        raise BadInputError(
            f"Image {path} claims {size[0]} x {size[1]} pixels, over the limit of "
            f"{MAX_PIXELS:,}; resize it or leave it out (or pass --skip-bad)."
        )


def _header_size(data: bytes) -> tuple[int, int] | None:
    """Width and height that an image's header claims, or None for an unknown format.

    Covers every format that OpenCV's ``imdecode`` recognizes from the first
    bytes (PNG, GIF, BMP, JPEG, WebP, TIFF and BigTIFF, JPEG 2000, AVIF, the
    PNM family and PFM, Sun raster, Radiance HDR, OpenEXR). Where a file
    names its size in more than one place (a WebP canvas and its bitstream, a
    JP2 header box and its codestream), the largest claim is returned.
    """
    for reader in _HEADER_READERS:
        try:
            size = reader(data)
        except (IndexError, ValueError):  # a header cut short: decoding will fail on it
            size = None
        if size is not None:
            return size
    return None


def _be(data: bytes, offset: int, n: int) -> int:
    if offset < 0 or offset + n > len(data):
        raise IndexError("header cut short")
    return int.from_bytes(data[offset : offset + n], "big")


def _le(data: bytes, offset: int, n: int) -> int:
    if offset < 0 or offset + n > len(data):
        raise IndexError("header cut short")
    return int.from_bytes(data[offset : offset + n], "little")


def _largest(sizes: list[tuple[int, int]]) -> tuple[int, int] | None:
    return max(sizes, key=lambda wh: wh[0] * wh[1]) if sizes else None


def _png_size(data: bytes) -> tuple[int, int] | None:
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    return _be(data, 16, 4), _be(data, 20, 4)


def _gif_size(data: bytes) -> tuple[int, int] | None:
    if data[:6] not in (b"GIF87a", b"GIF89a"):
        return None
    return _le(data, 6, 2), _le(data, 8, 2)


def _bmp_size(data: bytes) -> tuple[int, int] | None:
    if data[:2] != b"BM":
        return None
    if _le(data, 14, 4) == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
        return _le(data, 18, 2), _le(data, 20, 2)
    w = int.from_bytes(data[18:22], "little", signed=True)
    h = int.from_bytes(data[22:26], "little", signed=True)
    _le(data, 22, 4)  # raises if cut short
    return abs(w), abs(h)


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    if data[:2] != b"\xff\xd8":
        return None
    i, n = 2, len(data)
    while i + 9 < n:
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
            i += 1 if marker == 0xFF else 2
            continue
        length = _be(data, i + 2, 2)
        if marker in _SOF_MARKERS:
            return _be(data, i + 7, 2), _be(data, i + 5, 2)
        i += 2 + length
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return None
    sizes = []
    i = 12
    while i + 8 <= len(data) and len(sizes) < 8:
        chunk, length = data[i : i + 4], _le(data, i + 4, 4)
        body = i + 8
        if chunk == b"VP8X":  # extended format: the canvas, 24-bit sizes minus one
            sizes.append((1 + _le(data, body + 4, 3), 1 + _le(data, body + 7, 3)))
        elif chunk == b"VP8 " and data[body + 3 : body + 6] == b"\x9d\x01\x2a":
            sizes.append((_le(data, body + 6, 2) & 0x3FFF, _le(data, body + 8, 2) & 0x3FFF))
        elif chunk == b"VP8L" and data[body : body + 1] == b"\x2f":
            bits = _le(data, body + 1, 4)
            sizes.append((1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)))
        i = body + length + (length & 1)  # chunks are padded to an even length
    return _largest(sizes)


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    head = data[:4]
    if head in (b"II*\0", b"MM\0*"):
        big = False
    elif head in (b"II+\0", b"MM\0+"):  # BigTIFF
        big = True
    else:
        return None
    read = _le if head[:2] == b"II" else _be
    if big:
        ifd, count_bytes, entry_bytes, value_at = read(data, 8, 8), 8, 20, 12
    else:
        ifd, count_bytes, entry_bytes, value_at = read(data, 4, 4), 2, 12, 8
    # OpenCV decodes the first image of a TIFF, described by the first IFD.
    dims: dict[int, int] = {}
    for k in range(min(read(data, ifd, count_bytes), 4096)):
        entry = ifd + count_bytes + k * entry_bytes
        tag, kind = read(data, entry, 2), read(data, entry + 2, 2)
        width = {3: 2, 4: 4, 16: 8}.get(kind)  # SHORT, LONG, LONG8
        if tag in (256, 257) and width is not None:  # ImageWidth, ImageLength
            dims[tag] = read(data, entry + value_at, width)
    if 256 in dims and 257 in dims:
        return dims[256], dims[257]
    return None


def _boxes(data: bytes, start: int, end: int):
    """ISO base media boxes (JPEG 2000, AVIF) in ``data[start:end]``: (type, body start, end)."""
    i = start
    while i + 8 <= end:
        size, kind, body = _be(data, i, 4), data[i + 4 : i + 8], i + 8
        if size == 1:
            size, body = _be(data, i + 8, 8), i + 16
        elif size == 0:  # the last box runs to the end
            size = end - i
        if size < body - i:
            return
        yield kind, body, min(i + size, end)
        i += size


def _j2k_size(data: bytes, at: int = 0) -> tuple[int, int] | None:
    if data[at : at + 4] != b"\xff\x4f\xff\x51":  # SOC, then SIZ
        return None
    return (
        _be(data, at + 8, 4) - _be(data, at + 16, 4),
        _be(data, at + 12, 4) - _be(data, at + 20, 4),
    )


def _jp2_size(data: bytes) -> tuple[int, int] | None:
    if data[:12] != b"\x00\x00\x00\x0cjP  \r\n\x87\n":
        return _j2k_size(data)
    sizes = []
    for kind, body, end in _boxes(data, 0, len(data)):
        if kind == b"jp2h":
            for inner, at, _ in _boxes(data, body, end):
                if inner == b"ihdr":
                    sizes.append((_be(data, at + 4, 4), _be(data, at, 4)))
        elif kind == b"jp2c":
            size = _j2k_size(data, body)
            if size is not None:
                sizes.append(size)
    return _largest(sizes)


def _avif_size(data: bytes) -> tuple[int, int] | None:
    if data[4:8] != b"ftyp":
        return None
    sizes = []

    def walk(start: int, end: int, depth: int) -> None:
        for kind, body, stop in _boxes(data, start, end):
            if kind == b"ispe":  # image spatial extents: version/flags, width, height
                sizes.append((_be(data, body + 4, 4), _be(data, body + 8, 4)))
            elif kind in (b"meta", b"iprp", b"ipco") and depth < 4:
                walk(body + 4 if kind == b"meta" else body, stop, depth + 1)

    walk(0, len(data), 0)
    return _largest(sizes)


_PNM_NUMBERS = re.compile(rb"(?:\s|#[^\r\n]*)*(\d+)(?:\s|#[^\r\n]*)+(\d+)")


def _pnm_size(data: bytes) -> tuple[int, int] | None:
    head = data[:2]
    if head in (b"P1", b"P2", b"P3", b"P4", b"P5", b"P6", b"PF", b"Pf"):
        match = _PNM_NUMBERS.match(data, 2, 4096)
        return (int(match[1]), int(match[2])) if match else None
    if head == b"P7":  # PAM: WIDTH and HEIGHT lines before ENDHDR
        header = data[: data.find(b"ENDHDR", 0, 4096)]
        w, h = re.search(rb"\bWIDTH\s+(\d+)", header), re.search(rb"\bHEIGHT\s+(\d+)", header)
        return (int(w[1]), int(h[1])) if w and h else None
    return None


def _sunras_size(data: bytes) -> tuple[int, int] | None:
    if data[:4] != b"\x59\xa6\x6a\x95":
        return None
    return _be(data, 4, 4), _be(data, 8, 4)


_HDR_RESOLUTION = re.compile(rb"\n\n([-+])([XY])\s+(\d+)\s+([-+])([XY])\s+(\d+)")


def _hdr_size(data: bytes) -> tuple[int, int] | None:
    if not data.startswith((b"#?RADIANCE", b"#?RGBE")):
        return None
    match = _HDR_RESOLUTION.search(data, 0, 65536)
    if match is None:
        return None
    first, second = int(match[3]), int(match[6])
    return (second, first) if match[2] == b"Y" else (first, second)


def _exr_size(data: bytes) -> tuple[int, int] | None:
    if data[:4] != b"\x76\x2f\x31\x01":
        return None
    i = 8
    while i < min(len(data), 65536):  # attributes: name\0 type\0 size value, then \0
        name_end = data.index(b"\0", i)
        if name_end == i:
            return None
        type_end = data.index(b"\0", name_end + 1)
        size = _le(data, type_end + 1, 4)
        value = type_end + 5
        if data[i:name_end] == b"dataWindow":
            box = [
                int.from_bytes(data[value + 4 * k : value + 4 * k + 4], "little", signed=True)
                for k in range(4)
            ]
            return box[2] - box[0] + 1, box[3] - box[1] + 1
        i = value + size
    return None


_HEADER_READERS = (
    _png_size,
    _jpeg_size,
    _gif_size,
    _bmp_size,
    _webp_size,
    _tiff_size,
    _jp2_size,
    _avif_size,
    _pnm_size,
    _sunras_size,
    _hdr_size,
    _exr_size,
)

#: JPEG start-of-frame markers (SOF0..SOF15 less DHT C4, JPG C8 and DAC CC).
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _decode_checked(data: bytes, path: Path | str) -> np.ndarray:
    """Decode an image as stored, or raise :class:`BadInputError` naming the file.

    The one rule for what bovw accepts, shared by :func:`load_dataset` (which
    checks every image up front) and :func:`decode_image` (extraction and
    ``bovw predict``): the header claims at most :data:`MAX_PIXELS`, OpenCV
    decodes it, its samples are 8- or 16-bit unsigned integers, and a JPEG's
    scans are all there (see :func:`_jpeg_scan_ends`).
    """
    _check_pixel_count(data, path)
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        image = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if buf.size else None
    except cv2.error as exc:
        if "CV_IO_MAX_IMAGE_PIXELS" in str(exc):  # OpenCV's own limit, for unparsed headers
            raise BadInputError(
                f"Image {path} has more than {MAX_PIXELS:,} pixels, over the limit; "
                "resize it or leave it out (or pass --skip-bad)."
            ) from None
        image = None
    if image is None or image.size == 0:
        raise BadInputError(
            f"Cannot decode image {path}: the file is corrupt or not an image; "
            "fix or remove it (or pass --skip-bad)."
        )
    if image.dtype not in (np.uint8, np.uint16):
        # Floating-point and signed samples have no one mapping to 8 bits (HDR
        # radiance, [0, 1] floats, signed elevation...), so bovw does not guess one.
        raise BadInputError(
            f"Image {path} has {image.dtype} samples, which bovw does not convert; "
            "save it with 8- or 16-bit unsigned samples (or pass --skip-bad)."
        )
    if data[:2] == b"\xff\xd8" and not _jpeg_complete(data):
        raise BadInputError(
            f"Image {path} is a truncated or corrupt JPEG (its image data ends early); "
            "fix or remove it (or pass --skip-bad)."
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
    :data:`MAX_PIXELS` are refused, as :func:`load_dataset` refuses them.

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
    image = fit_max_side(_decode_checked(data, path), max_side)
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
    return decode_image(_read_bytes(path), path, color=color, max_side=max_side)


def _inspect(path: Path) -> tuple[str, str | None]:
    """Content hash of a file and, if bovw refuses it, the error message."""
    data = _read_bytes(path)
    digest = file_digest(data)
    try:
        _decode_checked(data, path)
    except BadInputError as exc:
        return digest, str(exc)
    return digest, None


# Bytes inserted at the end of each JPEG scan by _jpeg_complete: two bit patterns that
# differ from each other (and from the zeros libjpeg pads with) in every bit; no 0xFF,
# so no marker.
_JPEG_FILLERS = (b"\xaa" * 32, b"\x55" * 32)
# The marker that ends a scan's entropy-coded data: 0xFF then neither a stuffed zero,
# a restart marker (D0-D7) nor another fill 0xFF.
_SCAN_END = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_RESTART = re.compile(rb"\xff[\xd0-\xd7]")


def _jpeg_complete(data: bytes) -> bool:
    """True if a JPEG's image data is all there.

    libjpeg decodes a truncated JPEG (one cut short, with or without an
    end-of-image marker after the cut) into a grey-padded picture, with only
    a warning that OpenCV does not pass on. Two checks catch it:

    1. The structure (:func:`_jpeg_scan_ends`): the end-of-image marker, every
       component in a scan, every coefficient of a progressive JPEG refined to
       full precision, and as many restart markers in each scan as its
       restart interval implies.
    2. A scan cut inside its last restart interval passes those counts. The
       decoder reads a complete scan's bits to its last block and skips
       whatever follows until the next marker, so inserting bytes at the end
       of every scan leaves the image unchanged; a truncated scan decodes
       them as image data instead of the zeros it pads with. Two insertions
       whose bits are each other's complement make sure that the first
       missing bit differs from the padding in one of them.

    The decodes of check 2 go through Pillow (the same libjpeg), which keeps
    libjpeg's warnings to itself: OpenCV would print "extraneous bytes before
    marker" to stderr for every complete JPEG probed.
    """
    ends = _jpeg_scan_ends(data)
    if ends is None:
        return False
    reference = _pillow_pixels(data)
    if reference is None:
        return False
    for filler in _JPEG_FILLERS:
        parts, start = [], 0
        for end in ends:
            parts += [data[start:end], filler]
            start = end
        probe = _pillow_pixels(b"".join(parts) + data[start:])
        if probe is None or not np.array_equal(probe, reference):
            return False
    return True


def _pillow_pixels(data: bytes) -> np.ndarray | None:
    """The pixels Pillow decodes from ``data``, or None if it cannot."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return np.asarray(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def _jpeg_scan_ends(data: bytes) -> list[int] | None:
    """Where each scan's entropy-coded data ends, if the JPEG's structure is complete; else None.

    Complete means (ITU-T T.81): an end-of-image marker follows the last scan;
    every frame component is in a scan; in a progressive JPEG each of the 64
    coefficients of every component reaches successive-approximation bit 0
    (libjpeg's encoder refuses scan scripts that do not); and a scan with a
    restart interval of R MCUs holds ``ceil(MCUs / R) - 1`` restart markers.
    """
    n, i = len(data), 2
    frame: tuple[int, int, dict[int, tuple[int, int]]] | None = None
    progressive = lossless = False
    restart = 0
    covered: dict[int, list[int | None]] = {}  # component -> lowest bit coded, per coefficient
    ends: list[int] = []
    while True:
        start = i
        while i < n and data[i] == 0xFF:  # a marker, after any fill bytes
            i += 1
        if i == start or i >= n:
            return None
        marker = data[i]
        i += 1
        if marker == 0xD9:  # end of image
            break
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # no length field
            continue
        if i + 2 > n:
            return None
        length = _be(data, i, 2)
        body, i = i + 2, i + length
        if length < 2 or i > n:
            return None
        if marker in _SOF_MARKERS:
            if frame is not None:
                return None  # a second frame: hierarchical JPEG, which libjpeg does not decode
            height, width, count = _be(data, body + 1, 2), _be(data, body + 3, 2), data[body + 5]
            comps = {}
            for k in range(count):
                at = body + 6 + 3 * k
                comps[data[at]] = (data[at + 1] >> 4, data[at + 1] & 15)
            frame = (width, height, comps)
            progressive = marker in (0xC2, 0xC6, 0xCA, 0xCE)
            lossless = marker in (0xC3, 0xC7, 0xCB, 0xCF)
            covered = {c: [None] * 64 for c in comps}
        elif marker == 0xDD:  # define restart interval
            restart = _be(data, body, 2)
        elif marker == 0xDA:  # start of scan
            if frame is None:
                return None
            count = data[body]
            ids = [data[body + 1 + 2 * k] for k in range(count)]
            at = body + 1 + 2 * count
            # Only the last bit coded counts (Al): a refinement (Ah > 0) lowers it.
            ss, se, al = data[at], data[at + 1], data[at + 2] & 15
            if any(c not in covered for c in ids):
                return None
            if not progressive:
                ss, se, al = 0, 63, 0
            for c in ids:
                for k in range(ss, min(se, 63) + 1):
                    covered[c][k] = al
            found = _SCAN_END.search(data, i)
            if found is None:
                return None
            end = found.start()
            while end > i and data[end - 1] == 0xFF:  # fill bytes belong to the marker
                end -= 1
            if restart and not lossless and frame[1]:
                markers = len(_RESTART.findall(data, i, end))
                if markers != _ceil_div(_jpeg_mcus(frame, ids), restart) - 1:
                    return None
            ends.append(end)
            i = end
    if frame is None or not ends:
        return None
    if any(level != 0 for levels in covered.values() for level in levels):
        return None
    return ends


def _jpeg_mcus(frame: tuple[int, int, dict[int, tuple[int, int]]], ids: list[int]) -> int:
    """Minimum coded units in a scan of components ``ids`` (T.81, A.2)."""
    width, height, comps = frame
    hmax = max(h for h, _ in comps.values())
    vmax = max(v for _, v in comps.values())
    if len(ids) == 1:  # non-interleaved: one 8 x 8 block of the component per MCU
        h, v = comps[ids[0]]
        return _ceil_div(_ceil_div(width * h, hmax), 8) * _ceil_div(_ceil_div(height * v, vmax), 8)
    return _ceil_div(width, 8 * hmax) * _ceil_div(height, 8 * vmax)


def _ceil_div(a: int, b: int) -> int:
    return -(a // -b)


# --------------------------------------------------------------------------- discovery


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _list_files(folder: Path) -> tuple[list[Path], list[Path], list[Path]]:
    """Image files under ``folder`` (recursively), the other files, and the folder links skipped.

    Links to folders inside a class folder are not followed: one such as
    ``Coast/loop -> ..`` would give every class's images the label Coast.
    ``folder`` itself may be a link (a class folder kept elsewhere), and links
    to files are kept: the same content under two labels is warned about by
    :func:`load_dataset`.
    """
    images, others, links = [], [], []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        here = Path(dirpath)
        links += [here / d for d in dirnames if (here / d).is_symlink()]
        dirnames[:] = sorted(d for d in dirnames if not (here / d).is_symlink())
        for name in sorted(filenames):
            p = here / name
            (images if _is_image(p) else others).append(p)
    return images, others, links


def _split_protocol(
    items: list[tuple[Path, str]],
    classes: list[str],
    train_per_class: int | None,
    test_per_class: int | None,
    split_seed: int,
) -> tuple[list[tuple[Path, str]], list[tuple[Path, str]]]:
    """Per class, a random disjoint draw of train and test images."""
    rng = np.random.default_rng(split_seed)
    train, test = [], []
    for name in classes:
        members = sorted(p for p, c in items if c == name)
        order = rng.permutation(len(members))
        members = [members[i] for i in order]
        n_train = train_per_class if train_per_class is not None else (len(members) + 1) // 2
        if n_train + 1 > len(members):
            warnings.warn(
                f"Class {name!r} has only {len(members)} images, fewer than "
                f"{n_train} train + 1 test; it gets {max(len(members) - 1, 0)} train images.",
                stacklevel=3,
            )
            n_train = max(len(members) - 1, 0)
        rest = members[n_train:]
        if test_per_class is not None:
            rest = rest[:test_per_class]
        train += [(p, name) for p in members[:n_train]]
        test += [(p, name) for p in rest]
    return train, test


def _read_list_file(path: Path) -> list[tuple[Path, str, str | None]]:
    rows = []
    with path.open(newline="", encoding="utf-8") as f:
        for lineno, row in enumerate(csv.reader(f), start=1):
            if not row or not "".join(row).strip() or row[0].startswith("#"):
                continue
            if lineno == 1 and row[0].strip().lower() in ("path", "file", "filename"):
                continue
            if len(row) < 2:
                raise BadInputError(
                    f"Line {lineno} of {path} has no label; write each line as 'path,label'."
                )
            split = row[2].strip().lower() if len(row) > 2 and row[2].strip() else None
            if split not in (None, "train", "test"):
                raise BadInputError(
                    f"Line {lineno} of {path} names split {row[2]!r}; use 'train' or 'test'."
                )
            p = Path(row[0].strip())
            rows.append(((p if p.is_absolute() else path.parent / p), row[1].strip(), split))
    return rows


def load_dataset(
    source: str | os.PathLike,
    *,
    train_per_class: int | None = None,
    test_per_class: int | None = None,
    split_seed: int = 0,
    skip_bad: bool = False,
    n_jobs: int = 1,
) -> Dataset:
    """Discover a dataset, hash its images and split it.

    Parameters
    ----------
    source : path-like
        A folder of class folders, a folder with ``train/`` and ``test/``, or a
        CSV/text list of ``path,label[,split]`` lines.
    train_per_class, test_per_class : int, optional
        The split protocol for data that has no split of its own: per class,
        ``train_per_class`` random images for training and up to
        ``test_per_class`` of the rest for testing (default: half and the rest).
        For a given split they cap each class (first N in file order).
    split_seed : int
        Seed of the random split.
    skip_bad : bool
        Leave out images that cannot be decoded (with a warning) instead of
        raising.
    n_jobs : int
        Processes used to hash and check the images.

    Returns
    -------
    Dataset

    Raises
    ------
    BadInputError
        For a missing path, an empty dataset, fewer than two classes, or an
        undecodable image (unless ``skip_bad``).
    """
    root = Path(source)
    if not root.exists():
        raise BadInputError(f"Dataset {root} does not exist; give a folder of class folders.")
    for name, value in (("train_per_class", train_per_class), ("test_per_class", test_per_class)):
        if value is not None and value < 1:
            raise BadInputError(f"--{name.replace('_', '-')} must be at least 1, not {value}.")

    others: list[Path] = []
    links: list[Path] = []
    empty_folders: list[str] = []
    given_split: list[tuple[Path, str, str]] | None = None
    items: list[tuple[Path, str]] = []
    if root.is_file():
        rows = _read_list_file(root)
        if rows and all(split is not None for _, _, split in rows):
            given_split = [(p, c, s) for p, c, s in rows]  # type: ignore[misc]
        else:
            items = [(p, c) for p, c, _ in rows]
    elif (root / "train").is_dir() and (root / "test").is_dir():
        given_split = []
        for split in ("train", "test"):
            others += [p for p in (root / split).iterdir() if p.is_file()]
            for folder in _class_folders(root / split):
                images, junk, skipped_links = _list_files(folder)
                others += junk
                links += skipped_links
                given_split += [(p, folder.name, split) for p in images]
    else:
        for folder in _class_folders(root):
            images, junk, skipped_links = _list_files(folder)
            others += junk
            links += skipped_links
            items += [(p, folder.name) for p in images]
            if not images:
                empty_folders.append(folder.name)
        others += [p for p in root.iterdir() if p.is_file()]

    if others:
        shown = ", ".join(str(p) for p in others[:10])
        more = f" and {len(others) - 10} more" if len(others) > 10 else ""
        warnings.warn(
            f"Skipped {len(others)} files that are not images: {shown}{more}.", stacklevel=2
        )

    if links:
        shown = ", ".join(str(p) for p in links[:10])
        more = f" and {len(links) - 10} more" if len(links) > 10 else ""
        warnings.warn(
            f"Did not follow {len(links)} links to folders inside class folders: {shown}{more}; "
            "move or copy the images into the class folder if they belong to it.",
            stacklevel=2,
        )

    if given_split is not None:
        classes = sorted({c for _, c, s in given_split if s == "train"})
        train_items = [(p, c) for p, c, s in given_split if s == "train"]
        test_items = [(p, c) for p, c, s in given_split if s == "test"]
        if train_per_class is not None or test_per_class is not None:
            train_items = _cap_per_class(train_items, train_per_class)
            test_items = _cap_per_class(test_items, test_per_class)
        unknown = sorted({c for _, c in test_items} - set(classes))
        if unknown:
            raise BadInputError(
                f"Test classes {unknown} in {root} have no training images; "
                "add training images or remove them."
            )
        for name in classes:
            if not any(c == name for _, c in test_items):
                warnings.warn(f"Class {name!r} in {root} has no test images.", stacklevel=2)
    else:
        classes = sorted({c for _, c in items})
        train_items, test_items = (
            _split_protocol(items, classes, train_per_class, test_per_class, split_seed)
            if classes
            else ([], [])
        )

    empty_classes = empty_folders + [
        c for c in classes if not any(cc == c for _, cc in train_items)
    ]
    if not train_items:
        raise BadInputError(
            f"Dataset {root} has no images; put images in one folder per class "
            f"({root}/<class>/*.jpg)."
        )
    if empty_classes:
        warnings.warn(
            f"Class folders with no training images are left out: {', '.join(empty_classes)}.",
            stacklevel=2,
        )
        classes = [c for c in classes if c not in empty_classes]
        test_items = [(p, c) for p, c in test_items if c in classes]
    if len(classes) < 2:
        raise BadInputError(
            f"Dataset {root} has {len(classes)} class ({', '.join(classes)}); "
            "classification needs at least two class folders."
        )

    paths = [p for p, _ in train_items] + [p for p, _ in test_items]
    results = _inspect_all(paths, n_jobs)
    index = {name: i for i, name in enumerate(classes)}
    skipped: list[Path] = list(others)
    bad: list[str] = []

    def build(pairs: Sequence[tuple[Path, str]], offset: int) -> list[Sample]:
        out = []
        for k, (p, c) in enumerate(pairs):
            digest, error = results[offset + k]
            if error is not None:
                bad.append(error)
                skipped.append(p)
                continue
            out.append(Sample(path=p, label=index[c], digest=digest))
        return out

    train = build(train_items, 0)
    test = build(test_items, len(train_items))
    if bad and not skip_bad:
        more = f" ({len(bad) - 1} more bad files)" if len(bad) > 1 else ""
        raise BadInputError(bad[0] + more)
    if bad:
        warnings.warn(f"Skipped {len(bad)} undecodable images: {'; '.join(bad[:5])}", stacklevel=2)

    labels_of: dict[str, set[int]] = {}
    for s in train + test:
        labels_of.setdefault(s.digest, set()).add(s.label)
    clashes = [d for d, labels in labels_of.items() if len(labels) > 1]
    if clashes:
        example = {s.label: s.path for s in train + test if s.digest == clashes[0]}
        warnings.warn(
            f"{len(clashes)} images appear under more than one class (same content), e.g. "
            f"{' and '.join(str(p) for p in list(example.values())[:2])}; "
            "check the class folders.",
            stacklevel=2,
        )
    leaked = {s.digest for s in train} & {s.digest for s in test}
    if leaked:
        warnings.warn(
            f"{len(leaked)} images appear in both train and test (same content); "
            "test accuracy will be optimistic.",
            stacklevel=2,
        )
    return Dataset(classes=classes, train=train, test=test, root=root, skipped=skipped)


def _cap_per_class(items: list[tuple[Path, str]], cap: int | None) -> list[tuple[Path, str]]:
    if cap is None:
        return items
    counts: dict[str, int] = {}
    out = []
    for p, c in sorted(items):
        if counts.get(c, 0) < cap:
            counts[c] = counts.get(c, 0) + 1
            out.append((p, c))
    return out


def _inspect_all(paths: list[Path], n_jobs: int) -> list[tuple[str, str | None]]:
    """Hash and check every file; a file that cannot be read at all is an error."""

    def one(p: Path) -> tuple[str, str | None]:
        try:
            return _inspect(p)
        except BadInputError as exc:
            return "", str(exc)

    if n_jobs == 1 or len(paths) < 64:
        return [one(p) for p in paths]
    from concurrent.futures import ThreadPoolExecutor

    # Decoding releases the GIL inside OpenCV, so threads are enough here.
    with ThreadPoolExecutor(max_workers=n_jobs) as pool:
        return list(pool.map(one, paths))
