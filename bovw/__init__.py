"""bovw: image classification with a bag of visual words, and a small CNN beside it.

The public API, re-exported from the modules that implement it::

    bovw.read_image                             image decoding               (bovw.images)
    bovw.load_dataset                           datasets                     (bovw.data)
    bovw.dense_sift, bovw.DenseSIFT             dense SIFT, VLFeat-style     (bovw.features.dsift)
    bovw.KMeansCodebook, bovw.GMMVocabulary     visual vocabularies          (bovw.vocabulary)
    bovw.HistogramEncoder, ... make_encoder     one vector per image         (bovw.encoding)
    bovw.LinearSVM, bovw.LinearSVMCV            linear SVM, alpha by CV      (bovw.svm)
    bovw.make_classifier, make_kernel_map       the run's classifier         (bovw.svm)
    bovw.Config, bovw.run                       the cached pipeline          (bovw.config, bovw.pipeline)
    bovw.BoVWClassifier                         the run's model, in memory   (bovw.estimator)
    bovw.make_bovw_pipeline                     one scikit-learn Pipeline    (bovw.estimator)
    bovw.BoVWModel                              a trained model, inference   (bovw.model)
    bovw.load_model, bovw.save_model            saved models as plain data   (bovw.persistence)
    bovw.write_run_folder                       report, plots, model         (bovw.run_folder)
    bovw.find_word_patches, plot_visual_words   what the words look like     (bovw.visual_words)
"""

# First: bovw.images sets OpenCV's pixel limit, which cv2 reads once, when it is first imported.
from . import images  # noqa: F401, I001
from .config import Config, load_config
from .data import BadInputError, Dataset, Sample, load_dataset
from .encoding import (
    ENCODINGS,
    FisherEncoder,
    HistogramEncoder,
    SoftAssignmentEncoder,
    VLADEncoder,
    make_encoder,
)
from .estimator import BoVWClassifier, make_bovw_pipeline
from .features import ImageFeatures
from .features.dsift import DenseSIFT, dense_sift
from .images import read_image
from .model import BoVWModel
from .persistence import load_model, save_model
from .pipeline import RunResult, run
from .run_folder import write_run_folder
from .svm import LinearSVM, LinearSVMCV, make_classifier, make_kernel_map
from .version import __version__
from .visual_words import WordPatches, find_word_patches, plot_visual_words
from .vocabulary import GMMVocabulary, KMeansCodebook, sample_descriptors

__all__ = [
    "BadInputError",
    "BoVWClassifier",
    "BoVWModel",
    "Config",
    "Dataset",
    "DenseSIFT",
    "ENCODINGS",
    "FisherEncoder",
    "GMMVocabulary",
    "HistogramEncoder",
    "ImageFeatures",
    "KMeansCodebook",
    "LinearSVM",
    "LinearSVMCV",
    "RunResult",
    "Sample",
    "SoftAssignmentEncoder",
    "VLADEncoder",
    "WordPatches",
    "__version__",
    "dense_sift",
    "find_word_patches",
    "load_config",
    "load_dataset",
    "load_model",
    "make_bovw_pipeline",
    "make_classifier",
    "make_encoder",
    "make_kernel_map",
    "plot_visual_words",
    "read_image",
    "run",
    "sample_descriptors",
    "save_model",
    "write_run_folder",
]
