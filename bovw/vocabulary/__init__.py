"""Visual vocabularies: the descriptor sample, k-means words, a GMM for Fisher vectors.

One family per module::

    sampling    descriptor sets, the even random sample, memory-bounded chunks
    kmeans      KMeansCodebook: mini-batch k-means words, BLAS assignment
    gmm         GMMVocabulary: PCA + diagonal Gaussian mixture, posteriors
    em          fit_diagonal_gmm: the mixture's EM, chunked in float32
    mirror      mirror-symmetric PCA and Gaussian pairs (free mirrored Fisher vectors)

See :mod:`bovw.vocabulary.sampling` for the conventions (descriptors are rows,
all-zero descriptors are left out of the sample).
"""

from .gmm import GMMVocabulary
from .kmeans import KMeansCodebook
from .sampling import DEFAULT_CHUNK_BYTES, as_descriptors, chunk_rows, sample_descriptors

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "GMMVocabulary",
    "KMeansCodebook",
    "as_descriptors",
    "chunk_rows",
    "sample_descriptors",
]
