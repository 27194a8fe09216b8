"""The spatial pyramid: grids, the cell of each keypoint, the weight of each grid.

``pyramid`` lists grids; a grid ``RxC`` has ``R`` rows and ``C`` columns, an
integer ``n`` means ``n x n``: ``"1,2,4"`` is ``1x1 + 2x2 + 4x4`` (21 cells,
Lazebnik et al. 2006), and ``"1,2x2,3x1"`` is the whole image, its quadrants
and three horizontal stripes (Perronnin et al. 2010; Chatfield et al. 2011). A
keypoint at column ``x``, row ``y`` (0-based pixels,
:class:`~bovw.features.ImageFeatures`) of a ``width x height`` image falls in
grid column ``floor(x * C / width)`` and grid row ``floor(y * R / height)``,
clipped to the grid. Cells are numbered grid by grid in the order given,
row-major inside a grid; an encoder's output vector is the concatenation of the
per-cell codes in that order.
"""

from __future__ import annotations

import re

import numpy as np

__all__ = [
    "LEVEL_WEIGHTS",
    "cell_indices",
    "cell_positions",
    "level_scale",
    "parse_pyramid",
    "pyramid_level_weights",
]

#: The named grid weightings of :func:`pyramid_level_weights`.
LEVEL_WEIGHTS = ("uniform", "lazebnik")


def parse_pyramid(spec) -> tuple[tuple[int, int], ...]:
    """Parse a spatial pyramid specification into ``(rows, cols)`` grids.

    Parameters
    ----------
    spec : int, str, or sequence of (int | str | (rows, cols))
        ``n`` means an ``n x n`` grid, ``"RxC"`` ``R`` rows by ``C`` columns
        (``"3x1"``: three horizontal stripes). A string may list several grids
        separated by commas, ``+`` or spaces: ``"1,2,4"``, ``"1,2x2,3x1"``.
        ``None`` means the single cell ``1x1``.

    Returns
    -------
    tuple of (int, int)
        One ``(rows, cols)`` pair per grid, in the order given.

    Raises
    ------
    ValueError
        On an empty, malformed or non-positive grid.

    Examples
    --------
    >>> parse_pyramid((1, 2, 4))
    ((1, 1), (2, 2), (4, 4))
    >>> parse_pyramid("1,2x2,3x1")
    ((1, 1), (2, 2), (3, 1))
    """
    if spec is None:
        return ((1, 1),)
    if isinstance(spec, str):
        items: list = [t for t in re.split(r"[,+\s]+", spec.strip()) if t]
    elif isinstance(spec, (int, np.integer)):
        items = [int(spec)]
    else:
        items = list(spec)
    if not items:
        raise ValueError(f"Empty spatial pyramid {spec!r}: give grids such as '1,2,4'.")
    grids = []
    for item in items:
        if isinstance(item, str):
            m = re.fullmatch(r"\s*(\d+)\s*(?:[xX*]\s*(\d+))?\s*", item)
            if not m:
                raise ValueError(
                    f"Bad spatial pyramid grid {item!r} in {spec!r}: use 'N' or 'RxC' "
                    "(rows x columns), e.g. '1,2x2,3x1'."
                )
            r = int(m.group(1))
            c = int(m.group(2)) if m.group(2) is not None else r
        elif isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            r = c = int(item)
        elif isinstance(item, (tuple, list)) and len(item) == 2:
            r, c = (int(v) for v in item)
        else:
            raise ValueError(f"Bad spatial pyramid grid {item!r} in {spec!r}.")
        if r < 1 or c < 1:
            raise ValueError(f"Spatial pyramid grids must be positive, got {r}x{c} in {spec!r}.")
        grids.append((r, c))
    return tuple(grids)


def cell_indices(x: np.ndarray, y: np.ndarray, width: float, height: float, grids) -> np.ndarray:
    """Pyramid cell of each keypoint in each grid.

    Parameters
    ----------
    x, y : ndarray of shape (n,)
        Keypoint column and row, 0-based pixels.
    width, height : float
        Image size in pixels.
    grids : sequence of (rows, cols)
        As returned by :func:`parse_pyramid`.

    Returns
    -------
    ndarray of shape (n, n_grids), int64
        Global cell index: the offset of the grid (cells of earlier grids)
        plus ``row * cols + col`` with ``col = floor(x * cols / width)`` and
        ``row = floor(y * rows / height)``, both clipped to the grid.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    width, height = float(width), float(height)
    if (x.size or y.size) and (width <= 0 or height <= 0):
        raise ValueError(
            f"Image size must be positive for a spatial pyramid, got {width}x{height}."
        )
    out = np.empty((x.size, len(grids)), dtype=np.int64)
    offset = 0
    for g, (rows, cols) in enumerate(grids):
        col = np.clip(np.floor(x * cols / width), 0, cols - 1).astype(np.int64)
        row = np.clip(np.floor(y * rows / height), 0, rows - 1).astype(np.int64)
        out[:, g] = offset + row * cols + col
        offset += rows * cols
    return out


def cell_positions(x: np.ndarray, y: np.ndarray, width: float, height: float, grids) -> np.ndarray:
    """Where each keypoint lies inside its cell of each grid, centred: about ``[-0.5, 0.5]``.

    The pixel's centre, in cell widths from the centre of the keypoint's cell
    (:func:`cell_indices`): ``(x + 0.5) * cols / width - col - 0.5``, and the same
    for ``y``. Pixel centres make the mirror ``x -> width - 1 - x`` negate the
    position exactly; a keypoint within half a pixel of a cut may lie up to
    ``cols / (2 width)`` outside its cell's range.

    Returns
    -------
    ndarray of shape (n, n_grids, 2), float32
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    out = np.empty((x.size, len(grids), 2), dtype=np.float32)
    for g, (rows, cols) in enumerate(grids):
        for axis, (v, parts, size) in enumerate(((x, cols, width), (y, rows, height))):
            cell = np.clip(np.floor(v * parts / float(size)), 0, parts - 1)
            out[:, g, axis] = (v + 0.5) * parts / float(size) - cell - 0.5
    return out


def pyramid_level_weights(grids, level_weights="uniform") -> np.ndarray:
    """Weight of each pyramid grid.

    Parameters
    ----------
    grids : sequence of (rows, cols)
    level_weights : {"uniform", "lazebnik"} or sequence of float
        ``"uniform"``: 1 for every grid. ``"lazebnik"``: the spatial pyramid
        matching weights of Lazebnik, Schmid & Ponce 2006 for grids listed
        from coarse to fine, ``l = 0 .. L``: ``1 / 2^L`` for ``l = 0`` and
        ``1 / 2^(L - l + 1)`` otherwise (``1/4, 1/4, 1/2`` for ``1, 2, 4``).
        A sequence gives one weight per grid.

    Returns
    -------
    ndarray of shape (n_grids,), float64
    """
    n = len(grids)
    if isinstance(level_weights, str):
        if level_weights == "uniform":
            return np.ones(n)
        if level_weights == "lazebnik":
            L = n - 1
            return np.array([1.0 / 2**L if i == 0 else 1.0 / 2 ** (L - i + 1) for i in range(n)])
        raise ValueError(
            f"Unknown level_weights {level_weights!r}: use 'uniform', 'lazebnik' or one weight per grid."
        )
    w = np.asarray(level_weights, dtype=np.float64).ravel()
    if w.size != n or np.any(w < 0) or not np.all(np.isfinite(w)):
        raise ValueError(f"level_weights needs {n} non-negative weights, got {level_weights!r}.")
    return w


def level_scale(grids, level_weights, n_words: int) -> np.ndarray:
    """Per-element weight vector of a cell-major ``(cell, word)`` histogram."""
    w = pyramid_level_weights(grids, level_weights)
    return np.repeat(np.repeat(w, [r * c for r, c in grids]), n_words)
