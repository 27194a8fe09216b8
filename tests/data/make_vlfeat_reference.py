"""Make ``vlfeat_dsift_reference.npz``: VLFeat's dense SIFT on three crops of the demo data.

The reference that ``tests/test_dsift.py::test_fidelity_to_committed_vlfeat_reference``
checks bovw's dense SIFT against, so that fidelity to VLFeat is tested in CI, where
VLFeat is not installed. Run it once, from the repository root, where VLFeat's C
library and cyvlfeat are installed (the recipe is in benchmarks/README.md: Debian's
``libvlfeat-dev`` 0.9.21, then ``pip install --no-build-isolation cyvlfeat``)::

    python tests/data/make_vlfeat_reference.py

It uses no bovw code: the crops are decoded with OpenCV, smoothed with VLFeat's own
``vl_imsmooth_f`` (called from ``libvl.so`` through ctypes) and described with
VLFeat's ``vl_dsift`` (through ``cyvlfeat.sift.dsift``), following ``vl_phow``:

- for each size ``s``: Gaussian smoothing of the [0, 1] gray image with sigma
  ``s / magnif`` (magnif 6);
- ``vl_dsift`` with bin size ``s``, the step, bounds offset by
  ``floor(3/2 (max(sizes) - s))`` pixels on the top and left, window size 1.5,
  ``norm`` (the contrast in the frame's 4th column), ``fast`` or not;
- descriptors whose contrast is below 0.005 set to zero.

Two settings, each with the flat (``fast``) and the Gaussian spatial window:
S1 (bin size 4, step 8) and S2, PHOW (bin sizes 4, 6, 8, 10, step 3).

What the file holds, for crop ``i`` in 0..2 and ``key`` in ``S1-fast``, ``S1-gauss``,
``S2-fast``, ``S2-gauss``:

``image_i``
    The crop, ``uint8`` gray, ``(H, W)``.
``frames_i_key``
    ``float32`` ``(N, 4)``: x, y (0-based pixels), bin size, contrast (bovw's order;
    cyvlfeat gives y first).
``descriptors_i_key``
    ``uint8`` ``(N, 128)``: VLFeat's float descriptors as cyvlfeat returns them,
    ``min(512 d, 255)``, rounded to the nearest integer, in VLFeat's layout
    (orientation fastest, then bin column, then bin row). Rounding moves each value by
    at most 0.5 (a cosine error of about 1e-5 on these descriptors, of norm about
    500; the test asks for 0.999) and keeps the file small.
``vlfeat_version``, ``cyvlfeat_version``
    What made the file.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(__file__).resolve().parent / "vlfeat_dsift_reference.npz"

#: (file under data/, top, left, height, width): a coast, a forest and an office,
#: textures of three kinds; odd sizes so that the grids do not fill the crops evenly.
CROPS = [
    ("train/Coast/image_0010.jpg", 40, 30, 56, 73),
    ("train/Forest/image_0003.jpg", 100, 60, 61, 58),
    ("train/Office/image_0018.jpg", 20, 90, 53, 70),
]
SETTINGS = {"S1": ((4,), 8), "S2": ((4, 6, 8, 10), 3)}
MAGNIF = 6.0
WINDOW_SIZE = 1.5
CONTRAST_THRESHOLD = 0.005


def load_libvl() -> ctypes.CDLL:
    name = ctypes.util.find_library("vl") or "libvl.so"
    lib = ctypes.CDLL(name)
    lib.vl_get_version_string.restype = ctypes.c_char_p
    lib.vl_imsmooth_f.argtypes = [
        ctypes.POINTER(ctypes.c_float),
        ctypes.c_size_t,
        ctypes.POINTER(ctypes.c_float),
        ctypes.c_size_t,
        ctypes.c_size_t,
        ctypes.c_size_t,
        ctypes.c_double,
        ctypes.c_double,
    ]
    lib.vl_imsmooth_f.restype = None
    return lib


def vl_imsmooth(lib: ctypes.CDLL, img: np.ndarray, sigma: float) -> np.ndarray:
    """VLFeat's ``vl_imsmooth_f`` on a row-major float32 image (width = columns)."""
    img = np.ascontiguousarray(img, dtype=np.float32)
    out = np.empty_like(img)
    h, w = img.shape
    ptr = ctypes.POINTER(ctypes.c_float)
    lib.vl_imsmooth_f(out.ctypes.data_as(ptr), w, img.ctypes.data_as(ptr), w, h, w, sigma, sigma)
    return out


def vlfeat_phow(lib, img, sizes, step, fast):
    """``vl_phow``'s dense SIFT of a [0, 1] float32 gray image, frames in bovw's order."""
    from cyvlfeat.sift import dsift

    frames, descrs = [], []
    for s in sizes:
        off = int(math.floor(1 + 1.5 * (max(sizes) - s))) - 1  # vl_phow's, made 0-based
        ims = vl_imsmooth(lib, img, s / MAGNIF)
        h, w = ims.shape
        f, d = dsift(
            ims,
            step=step,
            size=s,
            bounds=[off, off, h - 1, w - 1],
            window_size=WINDOW_SIZE,
            norm=True,
            fast=fast,
            float_descriptors=True,
        )
        d = np.array(d, dtype=np.float32)  # cyvlfeat returns min(512 d, 255) even as float
        d[f[:, 2] < CONTRAST_THRESHOLD] = 0
        frames.append(np.column_stack([f[:, 1], f[:, 0], np.full(len(f), s), f[:, 2]]))
        descrs.append(d)
    return np.concatenate(frames).astype(np.float32), np.concatenate(descrs)


def main() -> None:
    import cyvlfeat

    lib = load_libvl()
    arrays: dict[str, np.ndarray] = {
        "vlfeat_version": np.array(lib.vl_get_version_string().decode()),
        "cyvlfeat_version": np.array(cyvlfeat.__version__),
    }
    for i, (name, top, left, height, width) in enumerate(CROPS):
        data = np.frombuffer((ROOT / "data" / name).read_bytes(), np.uint8)
        gray = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)
        crop = np.ascontiguousarray(gray[top : top + height, left : left + width])
        assert crop.shape == (height, width), (name, crop.shape)
        arrays[f"image_{i}"] = crop
        img = crop.astype(np.float32) / 255
        for setting, (sizes, step) in SETTINGS.items():
            for fast in (True, False):
                key = f"{i}_{setting}-{'fast' if fast else 'gauss'}"
                frames, descrs = vlfeat_phow(lib, img, sizes, step, fast)
                arrays[f"frames_{key}"] = frames
                arrays[f"descriptors_{key}"] = np.round(descrs).astype(np.uint8)
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT.relative_to(ROOT)} ({OUT.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
