"""Size limits on images, and OpenCV's own pixel limit, set before cv2 is imported.

This module imports nothing that imports cv2: :mod:`bovw.images` imports it before
anything else, so that ``OPENCV_IO_MAX_IMAGE_PIXELS`` is in the environment when cv2
is first imported (``import bovw`` imports :mod:`bovw.images` first of all).
"""

from __future__ import annotations

import os

__all__ = ["MAX_PIXELS", "MAX_FILE_BYTES"]

#: Images with more pixels than this are refused before decoding (a decompression bomb guard).
MAX_PIXELS = 64_000_000

#: Files larger than this are refused before reading.
MAX_FILE_BYTES = 256 * 1024 * 1024

# OpenCV refuses, before allocating, any image above OPENCV_IO_MAX_IMAGE_PIXELS (default
# 2**30), whatever its format. It reads the variable once, when cv2 is first imported, so
# it is set here, before the import (bovw/__init__.py imports bovw.images first, and
# bovw/images/__init__.py imports this module first). It backs up the header checks of
# bovw.images.headers for the formats they do not parse; when cv2 was imported before
# bovw, those header checks are the only guard.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_PIXELS))
