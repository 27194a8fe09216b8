"""Encoders: one vector per image from its local descriptors, with spatial pyramid pooling.

One family per module::

    pyramid        grids, the cell of each keypoint, the weight of each grid
    normalization  L1, L2, Hellinger (sqrt), signed square root
    base           PyramidEncoder: the vocabulary, the cells, one image at a time
    histogram      HistogramEncoder: hard-assignment histograms (bag of words)
    soft           SoftAssignmentEncoder: kernel-codebook soft assignment
    vlad           VLADEncoder: sums of residuals
    fisher         FisherEncoder: the improved Fisher vector of a GMM

Conventions
-----------
An encoder is a scikit-learn transformer. ``fit`` takes a list of per-image
features and ``transform`` returns a 2-D float32 array, one row per image,
computed one image at a time (memory does not grow with the number of images
beyond the output matrix). A per-image item is a
:class:`bovw.features.ImageFeatures` (descriptors *and* keypoint positions) or
a bare ``(n, d)`` descriptor array, which has no positions and so allows only
a one-cell pyramid.

An encoder takes a fitted vocabulary through ``vocabulary=`` (kept as it is by
:func:`sklearn.base.clone`), or fits its own from its settings when it is None
(:mod:`bovw.encoding.base`). Its defaults are those of the command line: the
pyramid of ``encoding.pyramid = "auto"`` for its encoding, ``"1,2,4"`` for
histograms and ``"1,2x2,3x1"`` for VLAD and Fisher vectors (see
:mod:`bovw.encoding.pyramid` for the grids and the cell layout), and the
vocabulary sizes and samples of the ``codebook`` settings.

Zero descriptors (dense SIFT's low-contrast patches) are encoded like any
other: they are assigned to the word nearest the origin (hist, soft) or
contribute their residual (VLAD) or posterior statistics (Fisher). The
vocabularies leave them out of their *training* sample only.

An image without descriptors (or a pyramid cell without any) encodes to zeros,
never NaN.
"""

from __future__ import annotations

from .base import PyramidEncoder
from .fisher import FisherEncoder
from .histogram import HistogramEncoder
from .normalization import NORMALIZATIONS, normalize_rows
from .pyramid import LEVEL_WEIGHTS, cell_indices, parse_pyramid, pyramid_level_weights
from .soft import SoftAssignmentEncoder
from .vlad import VLADEncoder

__all__ = [
    "ENCODINGS",
    "LEVEL_WEIGHTS",
    "NORMALIZATIONS",
    "FisherEncoder",
    "HistogramEncoder",
    "PyramidEncoder",
    "SoftAssignmentEncoder",
    "VLADEncoder",
    "cell_indices",
    "make_encoder",
    "normalize_rows",
    "parse_pyramid",
    "pyramid_level_weights",
]

#: Names accepted by :func:`make_encoder` (and the CLI's ``--encoding``).
ENCODINGS = ("hist", "soft", "vlad", "fisher")

_ENCODERS = {
    "hist": HistogramEncoder,
    "soft": SoftAssignmentEncoder,
    "vlad": VLADEncoder,
    "fisher": FisherEncoder,
}


def make_encoder(name: str, vocabulary=None, **params) -> PyramidEncoder:
    """Build an encoder by name.

    Parameters
    ----------
    name : {"hist", "soft", "vlad", "fisher"}
    vocabulary : KMeansCodebook, GMMVocabulary or None
        ``fisher`` needs a :class:`~bovw.vocabulary.GMMVocabulary`, the others a
        :class:`~bovw.vocabulary.KMeansCodebook`, fitted; ``None`` lets the encoder fit its own.
    **params
        Encoder parameters (``pyramid``, ``normalize``, ``n_words`` ...).

    Returns
    -------
    HistogramEncoder, SoftAssignmentEncoder, VLADEncoder or FisherEncoder

    Examples
    --------
    >>> make_encoder("vlad", pyramid="1,2").pyramid
    '1,2'
    """
    try:
        cls = _ENCODERS[name]
    except KeyError:
        raise ValueError(
            f"Unknown encoding {name!r}: choose one of {', '.join(ENCODINGS)}."
        ) from None
    return cls(vocabulary=vocabulary, **params)
