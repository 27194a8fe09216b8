"""Normalization of encoded vectors: L1, L2, Hellinger (sqrt), signed square root.

References
----------
.. [1] A. Vedaldi and A. Zisserman. Efficient additive kernels via explicit
   feature maps. IEEE TPAMI 2012.
.. [2] F. Perronnin, J. Sanchez and T. Mensink. Improving the Fisher kernel
   for large-scale image classification. ECCV 2010.
"""

from __future__ import annotations

import numpy as np

__all__ = ["EPS", "NORMALIZATIONS", "normalize_rows", "signed_sqrt_l2"]

#: Normalizations of hist and soft histograms (:func:`normalize_rows`).
NORMALIZATIONS = ("l1", "l2", "sqrt", "none")

#: Floor of a norm before dividing by it, so that an all-zero vector stays zero.
EPS = 1e-12


def normalize_rows(H: np.ndarray, method: str = "sqrt") -> np.ndarray:
    """Normalize histogram rows in place and return them.

    Parameters
    ----------
    H : ndarray of shape (n, dim) or (dim,), float
        Non-negative histograms.
    method : {"l1", "l2", "sqrt", "none"}
        ``"l1"``: divide by the sum; ``"l2"``: by the Euclidean norm;
        ``"sqrt"``: L1, element-wise square root, then L2 (Hellinger /
        Bhattacharyya kernel, Arandjelovic & Zisserman 2012's RootSIFT idea
        applied to histograms; Vedaldi & Zisserman 2012); ``"none"``: raw.
        All-zero rows stay zero.
    """
    if method not in NORMALIZATIONS:
        raise ValueError(
            f"Unknown normalization {method!r}: use one of {', '.join(NORMALIZATIONS)}."
        )
    if method == "none":
        return H
    H2 = H.reshape(1, -1) if H.ndim == 1 else H
    if method in ("l1", "sqrt"):
        H2 /= np.maximum(np.abs(H2).sum(axis=1, keepdims=True), EPS)
        if method == "sqrt":
            np.sqrt(np.abs(H2), out=H2)
    if method in ("l2", "sqrt"):
        H2 /= np.maximum(np.linalg.norm(H2, axis=1, keepdims=True), EPS)
    return H


def signed_sqrt_l2(v: np.ndarray, power: float = 0.5) -> np.ndarray:
    """``sign(v) |v|^power`` then L2, in place (zero stays zero)."""
    if power != 1.0:
        np.multiply(np.sign(v), np.abs(v) ** power, out=v)
    v /= max(float(np.linalg.norm(v)), EPS)
    return v
