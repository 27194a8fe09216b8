"""Truncated and corrupt JPEGs: a check of the structure and of the last scan's bits.

libjpeg decodes a JPEG cut short into a grey-padded picture, with only a warning
that OpenCV does not pass on; :func:`jpeg_complete` tells such a file from a whole
one. Marker layout per ITU-T T.81.
"""

from __future__ import annotations

import io
import re

import numpy as np

from .headers import SOF_MARKERS, uint_be

__all__ = ["jpeg_complete"]


# Bytes inserted at the end of each JPEG scan by jpeg_complete: two bit patterns that
# differ from each other (and from the zeros libjpeg pads with) in every bit; no 0xFF,
# so no marker.
_JPEG_FILLERS = (b"\xaa" * 32, b"\x55" * 32)
# The marker that ends a scan's entropy-coded data: 0xFF then neither a stuffed zero,
# a restart marker (D0-D7) nor another fill 0xFF.
_SCAN_END = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_RESTART = re.compile(rb"\xff[\xd0-\xd7]")


def jpeg_complete(data: bytes) -> bool:
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
        length = uint_be(data, i, 2)
        body, i = i + 2, i + length
        if length < 2 or i > n:
            return None
        if marker in SOF_MARKERS:
            if frame is not None:
                return None  # a second frame: hierarchical JPEG, which libjpeg does not decode
            height, width, count = (
                uint_be(data, body + 1, 2),
                uint_be(data, body + 3, 2),
                data[body + 5],
            )
            comps = {}
            for k in range(count):
                at = body + 6 + 3 * k
                comps[data[at]] = (data[at + 1] >> 4, data[at + 1] & 15)
            frame = (width, height, comps)
            progressive = marker in (0xC2, 0xC6, 0xCA, 0xCE)
            lossless = marker in (0xC3, 0xC7, 0xCB, 0xCF)
            covered = {c: [None] * 64 for c in comps}
        elif marker == 0xDD:  # define restart interval
            restart = uint_be(data, body, 2)
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
