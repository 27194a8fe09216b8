"""Image decoding and the format guards in front of it.

::

    limits.py    MAX_PIXELS, MAX_FILE_BYTES; OpenCV's pixel limit, set before cv2 is imported
    headers.py   the size each format's header claims: the decompression-bomb guard
    jpeg.py      truncated and corrupt JPEGs
    decode.py    decode_image, read_image: the one rule for what bovw accepts

What is decoded here shapes the extracted features (the extract stage's cache key
hashes these modules); which files make up a dataset is :mod:`bovw.data`'s job.
"""

# First: .limits sets OpenCV's pixel limit, which cv2 reads once, when it is first imported.
from .limits import MAX_FILE_BYTES, MAX_PIXELS  # noqa: I001
from .decode import decode_checked, decode_image, fit_max_side, read_bytes, read_image

__all__ = [
    "MAX_FILE_BYTES",
    "MAX_PIXELS",
    "decode_checked",
    "decode_image",
    "fit_max_side",
    "read_bytes",
    "read_image",
]
