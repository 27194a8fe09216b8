"""Dense SIFT: VLFeat's ``vl_dsift`` and ``vl_phow``, vectorized with NumPy and OpenCV.

Length: one algorithm and its estimator; a split would scatter VLFeat's conventions.

Conventions (read these first)
------------------------------
Frames
    ``frames[i] = (x, y, size, contrast)``. ``x`` is the column and ``y`` the row of
    the descriptor centre in 0-based pixel coordinates of the input image (the centre
    of the top-left pixel is ``(0, 0)``, x grows to the right, y grows downwards).
    ``size`` is the side of one spatial bin in pixels (VLFeat's "size"/"bin size", not
    a Gaussian scale). ``contrast`` is VLFeat's descriptor "norm": the sum of the
    (windowed) histogram before normalization divided by the area of the descriptor
    support, ``(3 * size + 1) ** 2``.
Descriptor layout
    128 = 4 x 4 spatial bins x 8 orientations, stored like VLFeat's C library
    (``vl_dsift_get_descriptors``, also what ``cyvlfeat.sift.dsift`` returns):
    element ``t + 8 * (bx + 4 * by)``, i.e. the orientation index ``t`` varies
    fastest, then the spatial bin column ``bx`` (x, left to right), then the spatial
    bin row ``by`` (y, top to bottom). Orientation bin ``t`` is centred on the
    gradient angle ``2 * pi * t / 8`` measured with ``atan2(gy, gx)`` in image
    coordinates, so from the +x axis towards the +y axis (clockwise as displayed,
    since y points down). MATLAB's ``vl_dsift`` transposes this layout for its
    column-major images; this module follows the C layout.
Colour descriptors
    384 = 3 x 128, channel-major: ``[channel 0 | channel 1 | channel 2]`` as
    ``vl_phow`` concatenates them.

Algorithm (written from VLFeat's definition, ``vl/dsift.c`` of VLFeat 0.9.21)
---------------------------------------------------------------------------
1. Gradients by central differences (one-sided at the image border).
2. Soft orientation binning: the gradient magnitude is split linearly between the two
   nearest of 8 orientation bins, giving 8 orientation maps.
3. Spatial binning as a separable filtering of the 8 maps with a triangular kernel of
   half-width ``size`` (bilinear spatial interpolation), border pixels replicated
   (VLFeat's padding by continuity). ``fast=True`` (flat window): one filtering of the
   8 maps at once, then each spatial bin is multiplied by the mean of the Gaussian
   window over that bin. ``fast=False``: the Gaussian window (sigma
   ``window_size * size``, centred on the descriptor) is folded into 4 + 4
   bin-specific separable kernels (the rows are subsampled before the second pass).
4. ``fast=True``: one gather (``np.take``) reads the 8 orientations at the 16 bin
   centres of every keypoint from the filtered maps; ``fast=False``: one strided slice
   per spatial bin.
5. VLFeat's normalization: L2-normalize, clamp at 0.2, L2-normalize (Lowe 2004);
   descriptors whose contrast is below ``contrast_threshold`` are set to zero.

There is no Python loop over keypoints; the loops run over scales, channels and the
16 spatial bins only. The per-pixel work is float32 OpenCV and NumPy calls writing
into per-thread scratch buffers that are reused between calls (fresh large arrays
cost page faults that can exceed the arithmetic); :func:`dense_sift` is thread-safe
and never returns a view of these buffers, nor modifies its input.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Sequence

import cv2
import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from bovw.features import ImageFeatures

__all__ = ["dense_sift", "DenseSIFT", "extract_features", "descriptor_size", "COLOR_SPACES"]

#: Supported values of the ``color`` parameter.
COLOR_SPACES = ("gray", "rgb", "hsv", "opponent")

_NUM_BINS = 4  # spatial bins per side
_NUM_ORI = 8  # orientation bins
_DESCR_SIZE = _NUM_BINS * _NUM_BINS * _NUM_ORI  # 128
#: Contrast below which a descriptor is zero whatever ``contrast_threshold``: float32
#: smoothing of a flat region leaves gradients of about 1e-8 (summation order), which
#: normalization would blow up into a full descriptor of noise.
CONTRAST_FLOOR = 1e-6
_EPS = np.float32(np.finfo(np.float32).eps)  # VL_EPSILON_F, added to the L2 norms
_ORI_SCALE = np.float32(_NUM_ORI / (2.0 * math.pi))
_MAX_CACHED_PIXELS = 512 * 512  # larger images get scratch buffers that are not kept


def descriptor_size(color: str = "gray") -> int:
    """Length of a descriptor: 128 (4 x 4 bins x 8 orientations) per channel of ``color``.

    Parameters
    ----------
    color : {"gray", "rgb", "hsv", "opponent"}

    Returns
    -------
    int
        128 for ``"gray"``, 384 for the three-channel colour spaces.

    Examples
    --------
    >>> descriptor_size("gray"), descriptor_size("opponent")
    (128, 384)
    """
    if color not in COLOR_SPACES:
        raise ValueError(f"color must be one of {COLOR_SPACES}, got {color!r}")
    return (1 if color == "gray" else 3) * _DESCR_SIZE


# --------------------------------------------------------------------------- inputs


def _as_float(image: np.ndarray) -> np.ndarray:
    """Return ``image`` as float32 with intensities in [0, 1] for integer inputs."""
    image = np.asarray(image)
    if image.dtype == np.float32:
        return image
    if np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        return image.astype(np.float32) * np.float32(1.0 / info.max)
    return image.astype(np.float32)  # float (kept as it is) or bool


def _channels(image: np.ndarray, color: str) -> list[np.ndarray]:
    """Split an image into the float32 channels described by ``color`` (vl_phow)."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ValueError(
            f"dense_sift expects an HxW gray or HxWx3 BGR image, got shape {image.shape}"
        )
    img = _as_float(image)
    if color == "gray":
        if img.ndim == 3:
            img = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_BGR2GRAY)
        return [np.ascontiguousarray(img)]
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    b, g, r = img[:, :, 0], img[:, :, 1], img[:, :, 2]
    if color == "rgb":
        chans = [r, g, b]
    elif color == "hsv":
        hsv = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_BGR2HSV)
        chans = [hsv[:, :, 0] * np.float32(1.0 / 360.0), hsv[:, :, 1], hsv[:, :, 2]]
    else:  # opponent, as vl_phow defines it (mean = intensity, plus alpha * mean)
        mu = np.float32(0.3) * r + np.float32(0.59) * g + np.float32(0.11) * b
        alpha = np.float32(0.01)
        chans = [
            mu,
            (r - g) * np.float32(1.0 / math.sqrt(2.0)) + alpha * mu,
            (r + g - 2 * b) * np.float32(1.0 / math.sqrt(6.0)) + alpha * mu,
        ]
    return [np.ascontiguousarray(c, dtype=np.float32) for c in chans]


def _check_params(sizes, step, magnif, window_size, color) -> tuple[int, ...]:
    if isinstance(sizes, int | np.integer):
        sizes = (int(sizes),)
    sizes = tuple(int(s) for s in sizes)
    if not sizes or min(sizes) < 1:
        raise ValueError(f"sizes must be positive integers, got {sizes!r}")
    if int(step) != step or step < 1:
        raise ValueError(f"step must be a positive integer, got {step!r}")
    if not magnif > 0:
        raise ValueError(f"magnif must be positive, got {magnif!r}")
    if not window_size > 0:
        raise ValueError(f"window_size must be positive, got {window_size!r}")
    if color not in COLOR_SPACES:
        raise ValueError(f"color must be one of {COLOR_SPACES}, got {color!r}")
    return sizes


# ------------------------------------------------------------------------- kernels


def _window_mean(size: int, index: int, window_size: float) -> float:
    """Mean of the Gaussian window over spatial bin ``index`` (VLFeat, flat window)."""
    delta = size * (index - 0.5 * (_NUM_BINS - 1))
    sigma = size * window_size
    x = np.arange(-size + 1, size, dtype=np.float64)
    return float(np.mean(np.exp(-0.5 * ((x - delta) / sigma) ** 2)))


def _tri_kernel(size: int) -> np.ndarray:
    """Bilinear spatial-binning weights ``1 - |o| / size`` for offsets ``|o| < size``."""
    o = np.arange(-size + 1, size, dtype=np.float64)
    return (1.0 - np.abs(o) / size).astype(np.float32)


def _gauss_kernel(size: int, index: int, window_size: float) -> np.ndarray:
    """Triangular bin kernel times the Gaussian window, indexed by pixel offset.

    Entry ``j`` weighs the pixel at offset ``o = j - (size - 1)`` from the bin centre;
    that pixel lies at ``o + delta`` from the descriptor centre.
    """
    o = np.arange(-size + 1, size, dtype=np.float64)
    delta = size * (index - 0.5 * (_NUM_BINS - 1))
    sigma = size * window_size
    k = (1.0 - np.abs(o) / size) * np.exp(-0.5 * ((o + delta) / sigma) ** 2)
    return k.astype(np.float32)


def _smooth(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing as ``vl_imsmooth``: radius ceil(4 sigma), replicated border."""
    if sigma < 0.01:
        return img
    radius = int(math.ceil(4.0 * sigma))
    k = 2 * radius + 1
    return cv2.GaussianBlur(img, (k, k), sigma, sigmaY=sigma, borderType=cv2.BORDER_REPLICATE)


# ---------------------------------------------------------------------- core steps


class _Workspace(threading.local):
    """Per-thread scratch buffers, reused across calls.

    Large temporary arrays freshly allocated on every call cost page faults that can
    take longer than the arithmetic; the extractor therefore works in buffers that grow
    to the largest image seen and are reused. Nothing returned to the caller is a view
    of these buffers.
    """

    def __init__(self) -> None:
        self.buffers: dict[str, np.ndarray] = {}
        self.bases: dict[tuple[int, int], np.ndarray] = {}
        self.plans: dict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
        need = math.prod(shape)
        buf = self.buffers.get(name)
        if buf is None or buf.size < need or buf.dtype != dtype:
            buf = self.buffers[name] = np.empty(max(need, 1), dtype=dtype)
        return buf[:need].reshape(shape)

    def gather_plan(self, h, w, size, step, off, ny, nx, window_size):
        """Flat pixel index of the 16 bin centres of every keypoint (bin-major, x fastest),
        the window weight of each of the 128 descriptor entries, and the weights that turn
        the 16 bin magnitudes into VLFeat's contrast."""
        key = (h, w, size, step, off, ny, nx, window_size)
        plan = self.plans.get(key)
        if plan is None:
            if len(self.plans) > 32:
                self.plans.clear()
            rows = off + step * np.arange(ny)[:, None] + size * np.arange(_NUM_BINS)
            cols = off + step * np.arange(nx)[:, None] + size * np.arange(_NUM_BINS)
            idx = (rows[:, None, :, None] * w + cols[None, :, None, :]).reshape(-1)
            wmean = [_window_mean(size, i, window_size) for i in range(_NUM_BINS)]
            w16 = np.outer(wmean, wmean).reshape(-1)  # [by, bx]
            weights = np.repeat(w16, _NUM_ORI).astype(np.float32)
            cweights = (w16 / ((_NUM_BINS - 1) * size + 1) ** 2).astype(np.float32)
            plan = self.plans[key] = (idx.astype(np.intp), weights, cweights)
        return plan

    def pixel_base(self, h: int, w: int) -> np.ndarray:
        """Flat index of orientation 0 of every pixel of an (H, W, 8) array."""
        base = self.bases.get((h, w))
        if base is None:
            if len(self.bases) > 16:
                self.bases.clear()
            base = np.arange(0, h * w * _NUM_ORI, _NUM_ORI, dtype=np.intp).reshape(h, w)
            self.bases[(h, w)] = base
        return base


_WS = _Workspace()


def _orientation_maps(img: np.ndarray, ws: _Workspace = _WS) -> np.ndarray:
    """Gradient magnitude softly binned into 8 orientations: array (H, W, 8) float32.

    ``maps[y, x, t]`` holds ``(1 - r) |g|`` for ``t = floor(8 a / 2 pi)`` and ``r |g|``
    for the next orientation, with ``a = atan2(gy, gx)`` and ``r`` the fractional part.
    Gradients are central differences, one-sided on the image border (as VLFeat).
    The result is a workspace buffer, valid until the next call.
    """
    h, w = img.shape
    gx = ws.get("gx", (h, w))
    gy = ws.get("gy", (h, w))
    cv2.Sobel(img, cv2.CV_32F, 1, 0, dst=gx, ksize=1, scale=0.5, borderType=cv2.BORDER_REPLICATE)
    cv2.Sobel(img, cv2.CV_32F, 0, 1, dst=gy, ksize=1, scale=0.5, borderType=cv2.BORDER_REPLICATE)
    # one-sided differences on the border: twice the replicated central difference
    gx[:, 0] *= 2
    gx[:, -1] *= 2
    gy[0, :] *= 2
    gy[-1, :] *= 2
    mag = ws.get("mag", (h, w))
    cv2.magnitude(gx, gy, mag)
    np.copyto(ws.get("magsum", (h, w)), mag)  # kept for the contrast
    nt = ws.get("nt", (h, w))
    np.arctan2(gy, gx, out=nt)
    nt *= _ORI_SCALE  # in [-4, 4]
    nt += np.float32(_NUM_ORI)  # in [4, 12]: positive
    fl = gx  # gx is no longer needed
    np.floor(nt, out=fl)
    nt -= fl  # fractional part r, in [0, 1)
    bin0 = ws.get("bin", (h, w), np.intp)
    np.copyto(bin0, fl, casting="unsafe")
    bin0 &= _NUM_ORI - 1
    nt *= mag  # r |g|, for the next orientation
    mag -= nt  # (1 - r) |g|
    base = ws.pixel_base(h, w)
    maps = ws.get("maps", (h, w, _NUM_ORI))
    maps.fill(0)
    flat = maps.reshape(-1)
    bin0 += base
    flat[bin0] = mag
    bin0 -= base
    bin0 += 1
    bin0 &= _NUM_ORI - 1
    bin0 += base
    flat[bin0] = nt
    return maps


def _triangle_filter(maps: np.ndarray, size: int, name: str, ws: _Workspace = _WS) -> np.ndarray:
    """Filter each map with the separable kernel ``(1 - |dx| / size)(1 - |dy| / size)``.

    This is bilinear spatial binning: the value at a bin centre is the sum of the pixels
    within ``size - 1`` of it, weighted by their distance. Border pixels are replicated,
    as VLFeat's ``vl_imconvcoltri`` (padding by continuity). Returns a workspace buffer.
    """
    k = _tri_kernel(size)
    out = ws.get(name, maps.shape)
    cv2.sepFilter2D(maps, cv2.CV_32F, k, k, dst=out, borderType=cv2.BORDER_REPLICATE)
    return out


def _grid(length: int, size: int, step: int, off: int) -> int:
    """Number of frames along one axis (VLFeat: bounds ``[off, length - 1]``)."""
    rng = (length - 1) - off - (_NUM_BINS - 1) * size
    return rng // step + 1 if rng >= 0 else 0


def _dsift_channel(
    img: np.ndarray,
    size: int,
    step: int,
    off: int,
    out: np.ndarray,
    fast: bool,
    window_size: float,
    ws: _Workspace = _WS,
) -> np.ndarray:
    """Unnormalized descriptors of one smoothed channel, written into ``out``.

    ``out`` is a (ny, nx, 4, 4, 8) float32 view; returns the contrast, shape (ny * nx,).
    """
    ny, nx = out.shape[:2]
    maps = _orientation_maps(img, ws)
    if fast:
        # one gather: the 16 bin centres of every keypoint, 8 orientations at a time
        h, w = img.shape
        idx, weights, cweights = ws.gather_plan(h, w, size, step, off, ny, nx, window_size)
        filt = _triangle_filter(maps, size, "filt", ws)
        item = np.dtype((np.void, 4 * _NUM_ORI))  # the 8 orientations of one pixel
        dest = out if out.flags.c_contiguous else ws.get("gather", out.shape)
        np.take(filt.reshape(-1).view(item), idx, out=dest.reshape(-1).view(item))
        flat = dest.reshape(ny * nx, _DESCR_SIZE)
        flat *= weights  # mean of the Gaussian window over each spatial bin
        if dest is not out:
            out[...] = dest
        # contrast: the same bins of the filtered magnitude (the sum over orientations)
        magsum = _triangle_filter(ws.get("magsum", (h, w)), size, "filtmag", ws)
        contrast = np.take(magsum.reshape(-1), idx).reshape(ny * nx, _NUM_BINS * _NUM_BINS)
        return contrast @ cweights
    else:
        ylen = step * (ny - 1) + 1
        xlen = step * (nx - 1) + 1
        one = np.ones(1, dtype=np.float32)
        kers = [_gauss_kernel(size, i, window_size) for i in range(_NUM_BINS)]
        for by in range(_NUM_BINS):
            y0 = off + by * size
            fy = cv2.sepFilter2D(maps, cv2.CV_32F, one, kers[by], borderType=cv2.BORDER_REPLICATE)
            rows = np.ascontiguousarray(fy[y0 : y0 + ylen : step])
            for bx in range(_NUM_BINS):
                x0 = off + bx * size
                fxy = cv2.sepFilter2D(
                    rows, cv2.CV_32F, kers[bx], one, borderType=cv2.BORDER_REPLICATE
                )
                if fxy.ndim == 2:  # OpenCV drops a trailing axis of length 1 for 1 row
                    fxy = fxy.reshape(rows.shape)
                out[:, :, by, bx, :] = fxy[:, x0 : x0 + xlen : step]
    descr = out.reshape(ny * nx, _DESCR_SIZE)
    contrast = descr.sum(axis=1, dtype=np.float32)
    contrast *= np.float32(1.0 / float((_NUM_BINS - 1) * size + 1) ** 2)
    return contrast


def _normalize(descr: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """VLFeat/Lowe normalization in place, times ``scale``; returns an upper bound per row.

    ``d = min(d / (|d| + eps), 0.2)``, then ``d / (|d| + eps)`` with ``eps`` FLT_EPSILON,
    as ``vl_dsift``; computed as ``min(d, 0.2 n1) / (n1 n2)`` to save passes over memory.
    """
    n1 = np.sqrt(np.einsum("ij,ij->i", descr, descr))
    n1 += _EPS
    limit = np.float32(0.2) * n1
    np.minimum(descr, limit[:, None], out=descr)
    n2 = np.sqrt(np.einsum("ij,ij->i", descr, descr))
    n2 /= n1
    n2 += _EPS
    n2 *= n1
    np.divide(np.float32(scale), n2, out=n2)
    descr *= n2[:, None]
    limit *= n2
    return limit  # no entry of a row exceeds this


def _root(descr: np.ndarray) -> None:
    """RootSIFT in place: L1-normalize then square root (Arandjelovic & Zisserman 2012)."""
    l1 = descr.sum(axis=1, dtype=np.float32)
    l1[l1 == 0] = 1
    descr /= l1[:, None]
    np.sqrt(descr, out=descr)


# ------------------------------------------------------------------------- public


def dense_sift(
    image: np.ndarray,
    *,
    sizes: int | Sequence[int] = (4, 6, 8, 10),
    step: int = 4,
    fast: bool = True,
    magnif: float = 8.0,
    window_size: float = 1.5,
    contrast_threshold: float = 0.005,
    color: str = "gray",
    root: bool = True,
    float_descriptors: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    r"""Dense SIFT descriptors on a regular grid, at one or several scales (PHOW).

    SIFT (Lowe 2004) describes a square patch by 4 x 4 spatial bins, each a histogram
    of gradient orientations in 8 bins, weighted by the gradient magnitude, with
    bilinear interpolation in space and linear interpolation in orientation, a
    Gaussian window centred on the patch, and the normalization
    :math:`d \leftarrow \min(d / \lVert d \rVert, 0.2) / \lVert \cdot \rVert`.
    Dense SIFT (VLFeat ``vl_dsift``) computes it for every keypoint of a grid with
    the same bin size and no rotation. PHOW (VLFeat ``vl_phow``, Bosch et al. 2007)
    repeats this for several bin sizes: for each size ``s`` the image is smoothed by a
    Gaussian of sigma ``s / magnif`` and the grid is offset by
    ``floor(3/2 (max(sizes) - s))`` pixels so that the keypoint centres of all sizes
    coincide (``vl_phow``: ``off = floor(1 + 3/2 (max(sizes) - s))`` in MATLAB's
    1-based coordinates). With a single size, this is ``vl_dsift`` on the image
    smoothed with sigma ``size / magnif`` and default bounds.

    Parameters
    ----------
    image : ndarray
        ``(H, W)`` gray or ``(H, W, 3)`` BGR (OpenCV order) image; ``(H, W, 4)`` BGRA
        drops alpha. Integer images are scaled to [0, 1] (uint8 divided by 255);
        float images are used as they are and should be in [0, 1], the range the
        contrast threshold refers to.
    sizes : int or sequence of int, default (4, 6, 8, 10)
        Spatial bin sizes in pixels; a descriptor covers ``4 * size`` pixels.
    step : int, default 4
        Grid step in pixels, the same for every size.
    fast : bool, default True
        ``True``: flat window (VLFeat's ``fast`` option): each spatial bin is weighed
        by the mean of the Gaussian window over the bin. ``False``: exact Gaussian
        window of sigma ``window_size * size`` per pixel.
    magnif : float, default 8.0
        Magnification factor: each size is pre-smoothed with sigma ``size / magnif``
        (``vl_phow`` uses 6; 8 validated higher on two datasets, see ``bovw.config``).
    window_size : float, default 1.5
        Sigma of the Gaussian window in units of spatial bins (``vl_phow`` uses 1.5).
    contrast_threshold : float, default 0.005
        Descriptors whose contrast (``frames[:, 3]``) is below this value become zero;
        their frames are kept. Below :data:`CONTRAST_FLOOR` (1e-6, the rounding noise of
        a flat region) a descriptor is zero even with 0. For ``color="rgb"`` the contrast is the mean over the
        channels, for ``"hsv"`` that of V, for ``"opponent"`` that of the intensity.
    color : {"gray", "rgb", "hsv", "opponent"}, default "gray"
        Colour space of ``vl_phow``. BGR input is converted to gray (OpenCV's
        weights 0.299 R + 0.587 G + 0.114 B) for ``"gray"``; a gray image is
        replicated to three channels for the others. ``"hsv"`` has H, S, V in [0, 1];
        ``"opponent"`` is ``(mu, (R - G) / sqrt 2 + 0.01 mu, (R + G - 2 B) / sqrt 6 +
        0.01 mu)`` with ``mu = 0.3 R + 0.59 G + 0.11 B``, as ``vl_phow``.
    root : bool, default True
        RootSIFT (Arandjelovic & Zisserman 2012), the command line's default
        (``--root-sift``; ``False`` gives VLFeat's plain SIFT): after VLFeat's normalization (and
        the contrast threshold) each descriptor, each 128-block of a colour one
        separately, is L1-normalized and square-rooted, giving unit L2 norm again.
        This happens *before* quantization, on the float descriptor: the uint8 output
        is ``min(floor(512 r), 255)`` of the RootSIFT vector ``r``, the same
        quantization as plain SIFT. Components above 255/512 would saturate; in a
        sample of 15-Scene images none did (the largest was 0.48). Taking the square root of the
        uint8 SIFT instead would compound its rounding, which this order avoids.
        Zero descriptors stay zero.
    float_descriptors : bool, default False
        Return float32 unit-norm descriptors instead of VLFeat's uint8 quantization
        ``min(floor(512 d), 255)``.

    Returns
    -------
    frames : ndarray of shape (N, 4), float32
        ``x, y, size, contrast`` per keypoint, 0-based pixel centres (see the module
        documentation). Ordered size by size in the order of ``sizes``, then
        row-major over the grid (x fastest).
    descriptors : ndarray of shape (N, D), uint8 or float32
        ``D = 128`` for gray, ``384`` for colour (channel-major). Element
        ``t + 8 * (bx + 4 * by)`` of each 128-block is orientation ``t``, spatial bin
        column ``bx`` and row ``by``.

    Shape
    -----
    - image: :math:`(H, W)` or :math:`(H, W, 3)`
    - frames: :math:`(N, 4)` with
      :math:`N = \sum_s n_x(s) n_y(s)`,
      :math:`n_x(s) = \lfloor (W - 1 - o_s - 3 s) / \mathrm{step} \rfloor + 1`
      (0 if negative), :math:`o_s = \lfloor 3/2 (\max \mathrm{sizes} - s) \rfloor`,
      and likewise :math:`n_y` with :math:`H`.
    - descriptors: :math:`(N, 128)` or :math:`(N, 384)`

    An image too small for one patch gives ``N = 0`` (no error); a constant image gives
    all-zero descriptors.

    References
    ----------
    .. [1] D. G. Lowe, "Distinctive image features from scale-invariant keypoints",
       IJCV 60(2), 2004.
    .. [2] A. Vedaldi and B. Fulkerson, "VLFeat: an open and portable library of
       computer vision algorithms", 2008 (``vl_dsift``, ``vl_phow``, ``vl/dsift.c``).
    .. [3] A. Bosch, A. Zisserman and X. Munoz, "Image classification using random
       forests and ferns", ICCV 2007 (PHOW).
    .. [4] R. Arandjelovic and A. Zisserman, "Three things everyone should know to
       improve object retrieval", CVPR 2012 (RootSIFT).

    Examples
    --------
    >>> import numpy as np
    >>> from bovw.features.dsift import dense_sift
    >>> rng = np.random.default_rng(0)
    >>> image = rng.integers(0, 256, size=(40, 50), dtype=np.uint8)
    >>> frames, descriptors = dense_sift(image, sizes=4, step=8)
    >>> frames.shape, descriptors.shape, descriptors.dtype
    ((20, 4), (20, 128), dtype('uint8'))
    >>> frames[0, :3].tolist()  # x, y, bin size of the first keypoint
    [6.0, 6.0, 4.0]
    >>> frames, descriptors = dense_sift(image, color="opponent", float_descriptors=True)
    >>> descriptors.shape[1], descriptors.dtype
    (384, dtype('float32'))
    """
    sizes = _check_params(sizes, step, magnif, window_size, color)
    step = int(step)
    dim = descriptor_size(color)
    out_dtype = np.float32 if float_descriptors else np.uint8
    shape = np.shape(image)
    if len(shape) < 2 or min(shape[:2]) < 2:  # no patch fits (and no gradient exists)
        if len(shape) not in (2, 3):
            raise ValueError(f"dense_sift expects an HxW or HxWx3 image, got shape {shape}")
        return np.zeros((0, 4), np.float32), np.zeros((0, dim), out_dtype)
    chans = _channels(image, color)
    height, width = chans[0].shape
    max_size = max(sizes)
    nchan = len(chans)
    grids = []
    for size in sizes:
        off = int(math.floor(1.5 * (max_size - size)))
        nx, ny = _grid(width, size, step, off), _grid(height, size, step, off)
        if nx * ny:
            grids.append((size, off, nx, ny))
    total = sum(nx * ny for _, _, nx, ny in grids)
    frames = np.empty((total, 4), dtype=np.float32)
    descriptors = np.empty((total, dim), dtype=out_dtype)
    # scratch buffers: reused across calls (per thread) for images of usual size
    ws = _WS if height * width <= _MAX_CACHED_PIXELS else _Workspace()
    start = 0
    for size, off, nx, ny in grids:
        n = nx * ny
        stop = start + n
        if float_descriptors:
            work = descriptors[start:stop]
        else:
            work = ws.get("descr", (n, dim))
        blocks = work.reshape(ny, nx, nchan, _NUM_BINS, _NUM_BINS, _NUM_ORI)
        contrasts = []
        for c, chan in enumerate(chans):
            smoothed = _smooth(chan, size / magnif)
            contrasts.append(
                _dsift_channel(smoothed, size, step, off, blocks[:, :, c], fast, window_size, ws)
            )
        if color == "rgb":
            contrast = (contrasts[0] + contrasts[1] + contrasts[2]) / np.float32(3)
        elif color == "hsv":
            contrast = contrasts[2]
        else:
            contrast = contrasts[0]
        scale = 1.0 if (float_descriptors or root) else 512.0
        peak = np.zeros(n, dtype=np.float32)
        for c in range(nchan):
            limit = _normalize(work[:, c * _DESCR_SIZE : (c + 1) * _DESCR_SIZE], scale)
            np.maximum(peak, limit, out=peak)
        work[contrast < max(contrast_threshold, CONTRAST_FLOOR)] = 0
        if root:
            for c in range(nchan):
                _root(work[:, c * _DESCR_SIZE : (c + 1) * _DESCR_SIZE])
            if not float_descriptors:
                work *= np.float32(512.0)
            peak.fill(np.inf)
        if not float_descriptors:
            # VLFeat's uint8: min(512 d, 255), truncated; only rows that can exceed 255
            sat = np.flatnonzero(peak > 255)
            if len(sat):
                work[sat] = np.minimum(work[sat], np.float32(255.0))
            np.copyto(descriptors[start:stop], work, casting="unsafe")
        fr = frames[start:stop]
        centre = off + 1.5 * size
        fr[:, 0].reshape(ny, nx)[:] = centre + step * np.arange(nx, dtype=np.float32)
        fr[:, 1].reshape(ny, nx)[:] = (centre + step * np.arange(ny, dtype=np.float32))[:, None]
        fr[:, 2] = size
        fr[:, 3] = contrast
        start = stop
    return frames, descriptors


def extract_features(image: np.ndarray, **params) -> ImageFeatures:
    """Dense SIFT of one image as :class:`~bovw.features.ImageFeatures`.

    ``params`` are those of :func:`dense_sift`.

    Examples
    --------
    >>> import numpy as np
    >>> feats = extract_features(np.zeros((30, 40), np.uint8), sizes=4, step=4)
    >>> len(feats), feats.width, feats.height
    (35, 40, 30)
    """
    frames, descriptors = dense_sift(image, **params)
    height, width = np.asarray(image).shape[:2]
    return ImageFeatures(frames=frames, descriptors=descriptors, width=width, height=height)


class DenseSIFT(TransformerMixin, BaseEstimator):
    """Dense SIFT as a scikit-learn transformer: images in, :class:`ImageFeatures` out.

    The parameters are those of :func:`dense_sift`, with the same names and defaults
    (the PHOW recipe of ``vl_phow``, but with ``step=4`` and RootSIFT: the command
    line's defaults). Nothing is learned: ``fit``
    returns ``self``.

    Shape
    -----
    - transform input: a list of ``n`` images, each :math:`(H_i, W_i)` or
      :math:`(H_i, W_i, 3)`
    - transform output: a list of ``n`` :class:`~bovw.features.ImageFeatures`, with
      frames :math:`(N_i, 4)` and descriptors :math:`(N_i, 128)` (384 for colour)

    Examples
    --------
    >>> import numpy as np
    >>> from bovw.features.dsift import DenseSIFT
    >>> images = [np.zeros((40, 40), np.uint8), np.zeros((50, 30), np.uint8)]
    >>> feats = DenseSIFT(sizes=(4, 6), step=8).fit(images).transform(images)
    >>> [f.descriptors.shape for f in feats]
    [(25, 128), (18, 128)]
    """

    def __init__(
        self,
        sizes: int | Sequence[int] = (4, 6, 8, 10),
        step: int = 4,
        fast: bool = True,
        magnif: float = 8.0,
        window_size: float = 1.5,
        contrast_threshold: float = 0.005,
        color: str = "gray",
        root: bool = True,
        float_descriptors: bool = False,
    ):
        self.sizes = sizes
        self.step = step
        self.fast = fast
        self.magnif = magnif
        self.window_size = window_size
        self.contrast_threshold = contrast_threshold
        self.color = color
        self.root = root
        self.float_descriptors = float_descriptors

    def fit(self, images: Iterable[np.ndarray] | None = None, y=None) -> DenseSIFT:
        """Check the parameters; nothing to learn. Returns ``self``."""
        _check_params(self.sizes, self.step, self.magnif, self.window_size, self.color)
        return self

    def transform(self, images: Iterable[np.ndarray]) -> list[ImageFeatures]:
        """Dense SIFT of each image, as a list of :class:`ImageFeatures`."""
        params = self.get_params()
        return [extract_features(image, **params) for image in images]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = False
        return tags
