"""Decompression-bomb guard: the size an image's header claims, read before decoding.

One small reader per format that OpenCV's ``imdecode`` recognizes from the first
bytes; :func:`check_pixel_count` refuses an image whose header claims more than
:data:`~bovw.images.limits.MAX_PIXELS` pixels, so that no decoder allocates for it.
Readers take the whole file's bytes and return ``(width, height)``, or None when the
bytes are not of their format; a header cut short raises ``IndexError`` (or
``ValueError``), which :func:`header_size` treats as "unknown": decoding then fails
on such a file anyway.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import BadInputError
from .limits import MAX_PIXELS

__all__ = ["check_pixel_count", "header_size", "uint_be", "uint_le", "SOF_MARKERS"]

#: JPEG start-of-frame markers (SOF0..SOF15 less DHT C4, JPG C8 and DAC CC).
SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def check_pixel_count(data: bytes, path: Path | str) -> None:
    """Refuse images whose header claims more than MAX_PIXELS, before decoding."""
    size = header_size(data)
    if size is not None and size[0] * size[1] > MAX_PIXELS:
        raise BadInputError(
            f"Image {path} claims {size[0]} x {size[1]} pixels, over the limit of "
            f"{MAX_PIXELS:,}; resize it or leave it out."
        )


def header_size(data: bytes) -> tuple[int, int] | None:
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


def uint_be(data: bytes, offset: int, n: int) -> int:
    """Unsigned big-endian integer of ``n`` bytes at ``offset``; IndexError past the end."""
    if offset < 0 or offset + n > len(data):
        raise IndexError("header cut short")
    return int.from_bytes(data[offset : offset + n], "big")


def uint_le(data: bytes, offset: int, n: int) -> int:
    """Unsigned little-endian integer of ``n`` bytes at ``offset``; IndexError past the end."""
    if offset < 0 or offset + n > len(data):
        raise IndexError("header cut short")
    return int.from_bytes(data[offset : offset + n], "little")


def _largest(sizes: list[tuple[int, int]]) -> tuple[int, int] | None:
    return max(sizes, key=lambda wh: wh[0] * wh[1]) if sizes else None


def _png_size(data: bytes) -> tuple[int, int] | None:
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    return uint_be(data, 16, 4), uint_be(data, 20, 4)


def _gif_size(data: bytes) -> tuple[int, int] | None:
    if data[:6] not in (b"GIF87a", b"GIF89a"):
        return None
    return uint_le(data, 6, 2), uint_le(data, 8, 2)


def _bmp_size(data: bytes) -> tuple[int, int] | None:
    if data[:2] != b"BM":
        return None
    if uint_le(data, 14, 4) == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
        return uint_le(data, 18, 2), uint_le(data, 20, 2)
    w = int.from_bytes(data[18:22], "little", signed=True)
    h = int.from_bytes(data[22:26], "little", signed=True)
    uint_le(data, 22, 4)  # raises if cut short
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
        length = uint_be(data, i + 2, 2)
        if marker in SOF_MARKERS:
            return uint_be(data, i + 7, 2), uint_be(data, i + 5, 2)
        i += 2 + length
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return None
    sizes = []
    i = 12
    while i + 8 <= len(data) and len(sizes) < 8:
        chunk, length = data[i : i + 4], uint_le(data, i + 4, 4)
        body = i + 8
        if chunk == b"VP8X":  # extended format: the canvas, 24-bit sizes minus one
            sizes.append((1 + uint_le(data, body + 4, 3), 1 + uint_le(data, body + 7, 3)))
        elif chunk == b"VP8 " and data[body + 3 : body + 6] == b"\x9d\x01\x2a":
            sizes.append((uint_le(data, body + 6, 2) & 0x3FFF, uint_le(data, body + 8, 2) & 0x3FFF))
        elif chunk == b"VP8L" and data[body : body + 1] == b"\x2f":
            bits = uint_le(data, body + 1, 4)
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
    read = uint_le if head[:2] == b"II" else uint_be
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
        size, kind, body = uint_be(data, i, 4), data[i + 4 : i + 8], i + 8
        if size == 1:
            size, body = uint_be(data, i + 8, 8), i + 16
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
        uint_be(data, at + 8, 4) - uint_be(data, at + 16, 4),
        uint_be(data, at + 12, 4) - uint_be(data, at + 20, 4),
    )


def _jp2_size(data: bytes) -> tuple[int, int] | None:
    if data[:12] != b"\x00\x00\x00\x0cjP  \r\n\x87\n":
        return _j2k_size(data)
    sizes = []
    for kind, body, end in _boxes(data, 0, len(data)):
        if kind == b"jp2h":
            for inner, at, _ in _boxes(data, body, end):
                if inner == b"ihdr":
                    sizes.append((uint_be(data, at + 4, 4), uint_be(data, at, 4)))
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
                sizes.append((uint_be(data, body + 4, 4), uint_be(data, body + 8, 4)))
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
    return uint_be(data, 4, 4), uint_be(data, 8, 4)


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
        size = uint_le(data, type_end + 1, 4)
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
