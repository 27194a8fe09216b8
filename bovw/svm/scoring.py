"""Class predictions for encoded images, a block of rows at a time, with mirror scoring.

Test-time mirror augmentation: an image is scored by the sum of the decision
values of itself and of its left-right mirror (the layout of the pipeline's
encode stage: ``n`` images, then their ``n`` mirrors).
"""

from __future__ import annotations

import numpy as np

__all__ = ["predict_encoded"]


def _decision_by_chunks(model, X: np.ndarray, rows: int = 1024) -> np.ndarray:
    """``model.decision_function(X)`` a block of rows at a time.

    The model copies its input (kernel map, normalization); by
    blocks, the copies stay a block in size whatever the number of images.
    """
    blocks = [model.decision_function(X[i : i + rows]) for i in range(0, X.shape[0], rows)]
    return np.concatenate(blocks) if blocks else model.decision_function(X)


def predict_encoded(model, X: np.ndarray, *, mirror: bool = False) -> np.ndarray:
    """Labels a fitted classifier predicts for encoded images.

    With ``mirror``, ``X`` holds ``n`` images then their ``n`` mirrors (the
    layout of the pipeline's encode stage), and each image gets the class of
    the sum of its two score vectors (test-time mirror augmentation).
    Scores are computed a block of rows at a time.
    """
    n = X.shape[0] // 2 if mirror else X.shape[0]
    if mirror and X.shape[0] != 2 * n:
        raise ValueError(f"Mirrored features need an even number of rows, not {X.shape[0]}.")
    scores = _decision_by_chunks(model, X[:n])
    if mirror:
        scores = scores + _decision_by_chunks(model, X[n:])
    if scores.ndim == 1:
        return model.classes_[(scores > 0).astype(int)]
    return model.classes_[np.argmax(scores, axis=1)]
