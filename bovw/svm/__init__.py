"""Linear SVMs trained by SGD, explicit kernel maps, and model selection.

One family per module::

    linear       LinearSVM: one-vs-rest mini-batch SGD, all classes per BLAS call
    spaces       the primal and dual (Gram matrix) coordinates SGD runs in
    gram         GramLinearSVM: the same SGD from a precomputed Gram matrix
    kernel_maps  Hellinger and chi2 explicit feature maps
    selection    LinearSVMCV: alpha by stratified cross-validation; make_classifier
    alpha_grid   which end of its alpha grid model selection chose, and a wider grid
    shard_gram   LinearSVMCV's model from the Gram matrix of feature shards on disk
    streaming    the linear SVM by streaming SGD over feature shards on disk
"""

from .alpha_grid import AlphaAtGridEdgeWarning, alpha_at_grid_edge, widened_grid
from .gram import GramLinearSVM
from .kernel_maps import KERNEL_MAPS, NonNegativeChi2, make_kernel_map, signed_sqrt
from .linear import LOSSES, LinearSVM
from .selection import SOLVERS, LinearSVMCV, make_classifier
from .spaces import DUAL_MAX_SAMPLES, gram_matrix

__all__ = [
    "DUAL_MAX_SAMPLES",
    "KERNEL_MAPS",
    "LOSSES",
    "SOLVERS",
    "AlphaAtGridEdgeWarning",
    "GramLinearSVM",
    "LinearSVM",
    "LinearSVMCV",
    "NonNegativeChi2",
    "alpha_at_grid_edge",
    "gram_matrix",
    "make_classifier",
    "make_kernel_map",
    "signed_sqrt",
    "widened_grid",
]
