"""Synthetic features for the tests of bovw.svm."""

from __future__ import annotations

import numpy as np


def histograms(n_per_class=40, n_classes=4, dim=200, seed=0, weight=0.3):
    """Sparse, bursty count vectors: the regime where plain SGD struggles."""
    profiles = np.random.default_rng(42).dirichlet(np.full(dim, 0.2), size=n_classes)
    rng = np.random.default_rng(seed)
    X, y = [], []
    for k in range(n_classes):
        for _ in range(n_per_class):
            X.append(rng.multinomial(100, weight * profiles[k] + (1 - weight) / dim))
            y.append(k)
    X = np.asarray(X, np.float32)
    return X / X.sum(1, keepdims=True), np.asarray(y)


def sqrt_l2(A):
    R = np.sqrt(A)
    return (R / np.linalg.norm(R, axis=1, keepdims=True)).astype(np.float32)


def dense_classes(n_per_class=50, n_classes=4, dim=500, seed=0):
    """Unit-norm features with a common offset (what centering is for), n < d."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), n_per_class)
    centres = 0.5 * rng.normal(size=(n_classes, dim))
    X = (rng.normal(size=(y.size, dim)) + centres[y] + 1.0).astype(np.float32)
    return X / np.linalg.norm(X, axis=1, keepdims=True), y
