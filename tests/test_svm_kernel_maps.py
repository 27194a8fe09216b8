"""Tests for bovw.svm.kernel_maps: explicit feature maps of additive kernels."""

from __future__ import annotations

import numpy as np
import pytest

from bovw.svm import make_kernel_map


def test_hellinger_map_is_the_hellinger_kernel():
    rng = np.random.default_rng(0)
    a, b = rng.random((2, 30))
    m = make_kernel_map("hellinger").fit(a[None])
    fa, fb = m.transform(a[None])[0], m.transform(b[None])[0]
    assert np.isclose(fa @ fb, np.sqrt(a * b).sum())


def test_chi2_refuses_signed_features():
    X = np.array([[0.5, -0.1], [0.2, 0.3]])
    m = make_kernel_map("chi2")
    with pytest.raises(ValueError, match="non-negative"):
        m.fit(np.abs(X)).transform(X)
