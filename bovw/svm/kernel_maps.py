"""Explicit feature maps of additive kernels, applied before a linear SVM.

A linear SVM on ``phi(x)`` is an SVM with the kernel ``K(x, y) = phi(x) . phi(y)``:
with an explicit map the additive kernels that suit histograms (Hellinger,
chi-squared) keep the linear SVM's training cost.

References
----------
Vedaldi & Zisserman, "Efficient Additive Kernels via Explicit Feature Maps", PAMI 2012.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.kernel_approximation import AdditiveChi2Sampler
from sklearn.preprocessing import FunctionTransformer

__all__ = ["KERNEL_MAPS", "NonNegativeChi2", "make_kernel_map", "signed_sqrt"]

KERNEL_MAPS = ("none", "hellinger", "chi2")


def signed_sqrt(x: np.ndarray) -> np.ndarray:
    """``sign(x) sqrt(|x|)``: the Hellinger kernel's feature map."""
    return np.sign(x) * np.sqrt(np.abs(x))


def make_kernel_map(name: str) -> BaseEstimator | str:
    """A transformer whose dot products approximate an additive kernel.

    * ``"hellinger"``: signed square root, exact feature map of the Hellinger
      (Bhattacharyya) kernel ``sum_i sqrt(x_i y_i)``.
    * ``"chi2"``: ``AdditiveChi2Sampler`` (Vedaldi & Zisserman 2012), a
      3-term sampled map of the additive chi-squared kernel; features must be
      non-negative, as histograms are.
    * ``"none"``: identity (``"passthrough"`` in a scikit-learn Pipeline).
    """
    if name == "none":
        return "passthrough"
    if name == "hellinger":
        return FunctionTransformer(signed_sqrt, feature_names_out="one-to-one")
    if name == "chi2":
        return NonNegativeChi2()
    raise ValueError(f"kernel_map must be one of {', '.join(KERNEL_MAPS)}, not {name!r}.")


class NonNegativeChi2(TransformerMixin, BaseEstimator):
    """AdditiveChi2Sampler that refuses signed features with a clear message."""

    def __init__(self, sample_steps: int = 2):
        self.sample_steps = sample_steps

    def fit(self, X, y=None):
        self.sampler_ = AdditiveChi2Sampler(sample_steps=self.sample_steps).fit(X)
        return self

    def transform(self, X):
        if np.any(np.asarray(X) < 0):
            raise ValueError(
                "The chi2 kernel map needs non-negative features; use it with the 'hist' or "
                "'soft' encodings, or choose --kernel-map hellinger or none."
            )
        return self.sampler_.transform(X).astype(np.float32, copy=False)
