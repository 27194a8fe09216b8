"""Saved models as plain data: writing them, and reading them back without trusting the files.

Length: the writer and the verifying reader of one file format, defined in one place.

A trained BoVW model is written as two files side by side:

``model.npz``
    The learned arrays only, loaded with ``numpy.load(allow_pickle=False)``:

    ============================  ===========================================
    ``centers``                   k-means words, ``(n_words, d)`` float32
    ``gmm_weights``               GMM mixture weights ``(K,)`` (Fisher)
    ``gmm_means``                 GMM means ``(K, D)``
    ``gmm_variances``             GMM diagonal variances ``(K, D)``
    ``pca_mean``                  PCA mean ``(d,)`` (Fisher with PCA)
    ``pca_components``            PCA components ``(D, d)``
    ``pca_explained_variance``    PCA variances ``(D,)``, used when whitening
    ``coef``                      linear SVM weights ``(n_classes or 1, n_features)``
    ``intercept``                 linear SVM biases ``(n_classes or 1,)``
    ``classes``                   class index of each SVM row, int64
    ============================  ===========================================

``model.json``
    Everything else, as data: the format name and version, every setting of the
    run (``Config``), the encoder's parameters, the kernel map, the class names,
    the dataset manifest hash, the versions of the libraries that made it, the
    shape and dtype of every array and the SHA-256 of ``model.npz``.

Loading never runs code from the files: arrays come from ``.npy`` members
without pickles, settings from JSON, and the estimators are rebuilt from
them by this module. Anything unexpected (not a regular file, not an npz, a
truncated or oversize file, a member that is not one of the model's arrays,
a member whose size in the zip directory disagrees with its ``.npy`` header,
a missing or misshapen array, JSON too large, too deep or with numbers bovw
never writes, a missing or wrong ``npz_sha256``, an unknown format version or
setting) is refused with a :class:`~bovw.data.BadInputError` of one sentence,
before the data it concerns is read.

A loaded model reproduces the pipeline's predictions exactly: an image goes
through the same dense SIFT, the same encoder around the same vocabulary, the
same kernel map, L2 normalization and linear decision ``X W^T + b``
(scikit-learn's ``SGDClassifier.decision_function``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import re
import stat
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import cv2
import numpy as np

from .config import ConfigError, config_from_dict
from .data import BadInputError
from .model import KERNEL_MAPS, BoVWModel, _jsonable
from .version import __version__
from .vocabulary import GMMVocabulary, KMeansCodebook

__all__ = ["FORMAT", "FORMAT_VERSION", "MAX_MODEL_BYTES", "load_model", "model_paths", "save_model"]

#: Name written in (and required from) ``model.json``.
FORMAT = "bovw-model"
#: The format version this code writes; it reads exactly the versions in ``READABLE_VERSIONS``.
FORMAT_VERSION = 1
READABLE_VERSIONS = (1,)
#: ``model.npz`` files (and the sum of their members, uncompressed) larger than this are refused.
MAX_MODEL_BYTES = 2 * 1024**3
#: ``model.json`` files larger than this are refused.
MAX_JSON_BYTES = 16 * 1024**2
#: ``model.json`` nested deeper than this is refused before parsing (bovw writes 4 levels;
#: Python's parser would recurse once per level).
MAX_JSON_DEPTH = 32
#: Integers in ``model.json`` longer than this are refused (int64 needs 19 digits; parsing
#: a 10,000-digit one costs quadratic time, and Python refuses past 4,300).
MAX_JSON_INT_DIGITS = 20

_KMEANS_ARRAYS = ("centers",)
_GMM_ARRAYS = ("gmm_weights", "gmm_means", "gmm_variances")
_PCA_ARRAYS = ("pca_mean", "pca_components", "pca_explained_variance")
_SVM_ARRAYS = ("coef", "intercept", "classes")


# --------------------------------------------------------------------------- save / load


def model_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """``(model.npz, model.json)`` for a model given as either file or as its run folder."""
    p = Path(path)
    if p.is_dir():
        p = p / "model.npz"
    if p.suffix == ".json":
        return p.with_suffix(".npz"), p
    return p, p.with_suffix(".json")


def save_model(model, path: str | os.PathLike) -> tuple[Path, Path]:
    """Write a model as ``model.npz`` + ``model.json`` (plain data, no pickle).

    Parameters
    ----------
    model : BoVWModel or RunResult
        A run is converted with :meth:`BoVWModel.from_run`.
    path : path-like
        The ``.npz`` file (the JSON goes beside it, same stem), or a folder
        (``model.npz`` and ``model.json`` inside).

    Returns
    -------
    (Path, Path)
        The npz and JSON files written.
    """
    if not isinstance(model, BoVWModel):
        model = BoVWModel.from_run(model)
    npz_path, json_path = model_paths(path)
    if Path(path).suffix not in (".npz", ".json") and not Path(path).exists():
        Path(path).mkdir(parents=True)
        npz_path, json_path = model_paths(path)
    arrays = model_arrays(model)
    tmp = npz_path.with_name(npz_path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, npz_path)
    meta = model_metadata(model)
    meta["arrays"] = {k: {"shape": list(a.shape), "dtype": a.dtype.str} for k, a in arrays.items()}
    meta["npz_sha256"] = _sha256(npz_path)
    tmp = json_path.with_name(json_path.name + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, json_path)
    return npz_path, json_path


def load_model(path: str | os.PathLike, *, max_bytes: int = MAX_MODEL_BYTES) -> BoVWModel:
    """Load a model written by :func:`save_model`, refusing anything else.

    Nothing in the files is executed: the arrays are read from ``.npy`` members
    without pickles, the settings are JSON, and every array is checked for
    presence, dtype and shape before the estimators are rebuilt. Sizes are
    checked before reading (the zip directory against each ``.npy`` header and
    ``max_bytes``), and ``model.json`` must carry the SHA-256 of the npz.

    Parameters
    ----------
    path : path-like
        ``model.npz``, ``model.json`` or the run folder that holds them.
    max_bytes : int
        Size limit of the npz file and of its members uncompressed.

    Returns
    -------
    BoVWModel

    Raises
    ------
    BadInputError
        One sentence naming the file and what is wrong with it.
    """
    npz_path, json_path = model_paths(path)
    # One open file throughout, so that the checks, the arrays and the checksum all see
    # the same bytes; cheap checks first: existence, file type, size, zip magic.
    with _open_model_file(npz_path) as npz:
        _check_npz_file(npz, npz_path, max_bytes)
        meta = _read_metadata(json_path, npz_path)
        arrays = _read_arrays(npz, npz_path, meta, max_bytes)
        _check_arrays(arrays, meta, npz_path)
        digest = _sha256(npz)
    recorded = meta.get("npz_sha256")
    if not isinstance(recorded, str) or not re.fullmatch(r"[0-9a-f]{64}", recorded):
        raise BadInputError(
            f"Model settings {json_path} lack the SHA-256 of {npz_path.name} (npz_sha256), "
            "so the arrays cannot be verified; save the model again with bovw."
        )
    if recorded != digest:
        raise BadInputError(
            f"Model file {npz_path} does not match {json_path.name} (different SHA-256); "
            "keep the model.npz and model.json of one run together."
        )
    try:
        return _rebuild(meta, arrays)
    except (BadInputError, ConfigError):
        raise
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise BadInputError(
            f"Model {json_path} has settings this version of bovw cannot honour ({exc}); "
            "retrain it with this version."
        ) from None


_FILE_KINDS = {
    stat.S_IFDIR: "a folder",
    stat.S_IFIFO: "a named pipe",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a device",
    stat.S_IFBLK: "a device",
}


def _open_regular(path: Path, what: str) -> BinaryIO:
    """``path`` opened for binary reading if it is a regular file, else :class:`BadInputError`.

    The file is opened without blocking and its type checked on the open descriptor,
    so that a named pipe (which would block ``open`` until a writer comes) or a device
    is refused at once, even if it replaced a regular file after a ``stat``. A missing
    file raises :class:`FileNotFoundError` for the caller to word.
    """
    nonblock = getattr(os, "O_NONBLOCK", 0)  # POSIX; Windows has no named pipes to fear here
    try:
        fd = os.open(path, os.O_RDONLY | nonblock | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise BadInputError(f"Cannot read {what} {path}: {exc.strerror or exc}.") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = _FILE_KINDS.get(stat.S_IFMT(mode), "not a regular file")
            raise BadInputError(
                f"{what[0].upper() + what[1:]} {path} is {kind}, not a regular file; "
                "give the files bovw wrote."
            )
        if nonblock:
            os.set_blocking(fd, True)  # a regular file: plain blocking reads from here on
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _open_model_file(npz_path: Path) -> BinaryIO:
    try:
        return _open_regular(npz_path, "model")
    except FileNotFoundError:
        raise BadInputError(
            f"Model {npz_path} does not exist; give a run folder or its model.npz."
        ) from None


class _JSONRefused(ValueError):
    """A value that bovw never writes in model.json, met while parsing it."""


def _json_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_JSON_INT_DIGITS:
        raise _JSONRefused(f"an integer of {len(text.lstrip('-'))} digits")
    return int(text)


def _json_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _JSONRefused(f"the number {text[:40]}, beyond the range of a float")
    return value


def _json_constant(name: str) -> float:
    raise _JSONRefused(f"{name}, which is not a number")


#: A JSON string literal: what the depth count must skip (brackets inside strings).
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


def _json_depth(data: bytes) -> int:
    """How deeply ``[`` and ``{`` nest in JSON text, counted without recursion."""
    b = np.frombuffer(_JSON_STRING.sub(b'""', data), dtype=np.uint8)
    opens = (b == ord("[")) | (b == ord("{"))
    closes = (b == ord("]")) | (b == ord("}"))
    return int(np.cumsum(opens.astype(np.int64) - closes).max(initial=0))


def _read_metadata(json_path: Path, npz_path: Path) -> dict[str, Any]:
    try:
        f = _open_regular(json_path, "model settings")
    except FileNotFoundError:
        raise BadInputError(
            f"Model settings {json_path} are missing; keep model.json beside {npz_path.name}."
        ) from None
    with f:
        size = os.fstat(f.fileno()).st_size
        # Read at most one byte past the limit: the size may change after the fstat.
        data = f.read(MAX_JSON_BYTES + 1) if size <= MAX_JSON_BYTES else b""
    if size > MAX_JSON_BYTES or len(data) > MAX_JSON_BYTES:
        raise BadInputError(
            f"Model settings {json_path} are {max(size, len(data)) / 2**20:.0f} MiB, over the "
            f"{MAX_JSON_BYTES // 2**20} MiB limit; it is not a bovw model.json."
        )
    depth = _json_depth(data)
    if depth > MAX_JSON_DEPTH:
        raise BadInputError(
            f"Model settings {json_path} nest {depth} levels deep, over the limit of "
            f"{MAX_JSON_DEPTH}; it is not a bovw model.json."
        )
    try:
        meta = json.loads(
            data.decode("utf-8"),
            parse_int=_json_int,
            parse_float=_json_float,
            parse_constant=_json_constant,
        )
    except _JSONRefused as exc:
        raise BadInputError(
            f"Model settings {json_path} hold {exc}, which bovw never writes; "
            "it is not a bovw model.json."
        ) from None
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadInputError(
            f"Model settings {json_path} are not valid JSON; it is not a bovw model."
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise BadInputError(
            f'{json_path} is not a bovw model description (no "format": "{FORMAT}").'
        )
    version = meta.get("format_version")
    if version not in READABLE_VERSIONS:
        raise BadInputError(
            f"Model {json_path} has format version {version!r}, but this bovw reads version "
            f"{', '.join(map(str, READABLE_VERSIONS))}; retrain it or use the bovw that made it."
        )
    return meta


def _check_npz_file(npz: BinaryIO, npz_path: Path, max_bytes: int) -> None:
    size = os.fstat(npz.fileno()).st_size
    if size > max_bytes:
        raise BadInputError(
            f"Model {npz_path} is {size / 2**20:.0f} MiB, over the {max_bytes / 2**20:.0f} MiB "
            "limit; pass a larger max_bytes if you trust it."
        )
    magic = npz.read(4)
    npz.seek(0)
    if magic != b"PK\x03\x04":
        raise BadInputError(
            f"Model {npz_path} is not an .npz archive (a pickle or another file?); "
            "bovw loads only the model.npz it writes."
        )


def _required_arrays(meta: dict[str, Any], npz_path: Path) -> tuple[str, ...]:
    """The arrays a model of ``meta``'s vocabulary type has, no more and no fewer."""
    vocab = meta.get("vocabulary")
    vocab_type = vocab.get("type") if isinstance(vocab, dict) else None
    if vocab_type == "kmeans":
        return _KMEANS_ARRAYS + _SVM_ARRAYS
    if vocab_type == "gmm":
        return _GMM_ARRAYS + _SVM_ARRAYS + (_PCA_ARRAYS if vocab.get("pca") else ())
    raise BadInputError(f"Model {npz_path} names an unknown vocabulary type {vocab_type!r}.")


def _read_arrays(
    npz: BinaryIO, npz_path: Path, meta: dict[str, Any], max_bytes: int
) -> dict[str, np.ndarray]:
    """The model's arrays, each checked from the zip directory and its header before reading.

    Sizes come from the zip's central directory and each ``.npy`` header, and must
    agree with each other and with ``max_bytes`` before a byte of array data is
    read or a buffer allocated; members that are not the model's arrays are
    refused unread.
    """
    try:
        with zipfile.ZipFile(npz) as z:
            infos = z.infolist()
            total = sum(info.file_size for info in infos)
            if total > max_bytes:
                raise BadInputError(
                    f"Model {npz_path} unpacks to {total / 2**20:.0f} MiB, over the "
                    f"{max_bytes / 2**20:.0f} MiB limit; it is not a bovw model."
                )
            names = [info.filename for info in infos]
            if any(not n.endswith(".npy") or "/" in n for n in names):
                raise BadInputError(
                    f"Model {npz_path} holds files other than arrays; it is not a bovw model."
                )
            required = _required_arrays(meta, npz_path)
            present = {n[: -len(".npy")]: info for n, info in zip(names, infos, strict=True)}
            if len(present) != len(names):
                raise BadInputError(f"Model {npz_path} holds an array twice; save it again.")
            extra = sorted(set(present) - set(required))
            if extra:
                raise BadInputError(
                    f"Model {npz_path} holds arrays bovw does not write ({', '.join(extra)}); "
                    "it is not a bovw model."
                )
            missing = [name for name in required if name not in present]
            if missing:
                raise BadInputError(
                    f"Model {npz_path} lacks the arrays {', '.join(missing)}; "
                    "it is incomplete, save it again."
                )
            described = meta.get("arrays") if isinstance(meta.get("arrays"), dict) else {}
            return {
                name: _read_member(z, present[name], npz_path, described.get(name))
                for name in required
            }
    except BadInputError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        raise BadInputError(
            f"Model {npz_path} is corrupt or truncated ({exc}); save it again."
        ) from None
    except (RuntimeError, NotImplementedError) as exc:  # encrypted, or an unknown compression
        raise BadInputError(
            f"Model {npz_path} is not an archive bovw wrote ({exc}); save it again."
        ) from None


def _read_member(
    z: zipfile.ZipFile, info: zipfile.ZipInfo, npz_path: Path, want: Any
) -> np.ndarray:
    """One ``.npy`` member, its header checked against its size before the data is read."""
    name = info.filename[: -len(".npy")]
    with z.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise BadInputError(f"Model {npz_path}: array {name} has an unknown .npy version.")
        if any(n < 0 for n in shape):
            raise BadInputError(f"Model {npz_path}: array {name} has a negative shape {shape}.")
        if dtype.hasobject:
            raise BadInputError(
                f"Model {npz_path} contains pickled objects, which bovw never loads; "
                "it is not a bovw model."
            )
        if isinstance(want, dict) and list(shape) != list(want.get("shape", [])):
            raise BadInputError(
                f"Model {npz_path}: array {name} has shape {shape}, but model.json says "
                f"{tuple(want.get('shape', []))}; the files do not belong together."
            )
        count = math.prod(shape)
        nbytes = count * dtype.itemsize
        # The header's claim must be exactly what the directory says the member holds
        # (which the caller bounded by max_bytes): nothing is allocated on its word alone.
        if f.tell() + nbytes != info.file_size:
            raise BadInputError(
                f"Model {npz_path}: array {name} claims {count:,} values of {dtype}, but its "
                f"member holds {info.file_size:,} bytes; the file is corrupt, save it again."
            )
        buf = bytearray(nbytes)
        view, done = memoryview(buf), 0
        while done < nbytes:
            n = f.readinto(view[done:])
            if not n:
                raise EOFError(f"array {name} ends early")
            done += n
    a = np.frombuffer(buf, dtype=dtype)
    return a.reshape(shape[::-1]).T if fortran else a.reshape(shape)


def _check_arrays(arrays: dict[str, np.ndarray], meta: dict[str, Any], npz_path: Path) -> None:
    described = meta.get("arrays") if isinstance(meta.get("arrays"), dict) else {}
    for name in _required_arrays(meta, npz_path):
        a = arrays[name]
        if a.dtype.kind not in "fiu":
            raise BadInputError(f"Model {npz_path}: array {name} has dtype {a.dtype}, not numbers.")
        want = described.get(name)
        if isinstance(want, dict) and a.dtype.str != want.get("dtype", a.dtype.str):
            raise BadInputError(
                f"Model {npz_path}: array {name} has dtype {a.dtype.str}, but model.json says "
                f"{want['dtype']}; the files do not belong together."
            )
        if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            raise BadInputError(f"Model {npz_path}: array {name} holds NaN or infinite values.")


def _rebuild(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> BoVWModel:
    settings = meta["config"]
    if isinstance(settings, dict) and isinstance(settings.get("sift"), dict):
        # Models written before sift.min_side existed never enlarged an image: they keep
        # predicting so, whatever the default is now.
        settings = {**settings, "sift": {"min_side": 0, **settings["sift"]}}
    config = config_from_dict(settings, source="model.json").validate()
    classes = meta["classes"]
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise ValueError("classes must be a list of names")
    encoder = meta["encoder"]
    if encoder.get("name") != config.encoding.encoding:
        raise ValueError(f"encoder {encoder.get('name')!r} differs from the encoding setting")
    kernel = dict(meta["kernel_map"])
    if kernel.get("name") not in KERNEL_MAPS:
        raise ValueError(f"unknown kernel map {kernel.get('name')!r}")
    vocab_meta = meta["vocabulary"]
    if vocab_meta["type"] == "kmeans":
        if config.encoding.encoding == "fisher":
            raise ValueError("a Fisher encoder needs a GMM vocabulary")
        vocabulary = KMeansCodebook.from_centers(
            arrays["centers"], chunk_size=vocab_meta.get("chunk_size")
        )
    else:
        if config.encoding.encoding != "fisher":
            raise ValueError("a GMM vocabulary needs the fisher encoding")
        vocabulary = _gmm_from_arrays(
            arrays,
            bool(vocab_meta.get("whiten", False)),
            bool(vocab_meta.get("pca", False)),
            bool(vocab_meta.get("mirror_symmetric", False)),
        )
        vocabulary.set_params(chunk_size=vocab_meta.get("chunk_size"))
    coef, intercept, svm_classes = arrays["coef"], arrays["intercept"], arrays["classes"]
    n_rows = coef.shape[0] if coef.ndim == 2 else -1
    if n_rows not in (
        {1, 2} if svm_classes.size == 2 else {svm_classes.size}
    ) or intercept.shape != (n_rows,):
        raise ValueError(
            f"classifier arrays of shapes {coef.shape}, {intercept.shape} for {svm_classes.size} classes"
        )
    if svm_classes.size and (svm_classes.min() < 0 or svm_classes.max() >= len(classes)):
        raise ValueError("classifier classes outside the class names")
    model = BoVWModel(
        config=config,
        classes=classes,
        vocabulary=vocabulary,
        encoder_params=encoder.get("params") or {},
        kernel_map=kernel,
        coef=coef,
        intercept=intercept,
        svm_classes=svm_classes,
        dataset_manifest=meta.get("dataset_manifest"),
        alpha=(meta.get("classifier") or {}).get("alpha"),
    )
    expected = model.n_features_ * (
        2 * int(kernel.get("sample_steps", 2)) - 1 if kernel["name"] == "chi2" else 1
    )
    if coef.shape[1] != expected:
        raise ValueError(
            f"classifier expects {coef.shape[1]} features, the encoder gives {expected}"
        )
    return model


def _gmm_from_arrays(
    arrays: dict[str, np.ndarray], whiten: bool, pca: bool, mirror_symmetric: bool
) -> GMMVocabulary:
    kwargs: dict[str, Any] = {"mirror_symmetric": mirror_symmetric}
    if pca:
        kwargs |= {
            "pca_mean": arrays["pca_mean"],
            "pca_components": arrays["pca_components"],
            "pca_explained_variance": arrays["pca_explained_variance"],
        }
    return GMMVocabulary.from_arrays(
        arrays["gmm_weights"], arrays["gmm_means"], arrays["gmm_variances"], whiten=whiten, **kwargs
    )


# --------------------------------------------------------------------------- as plain data


def model_arrays(model: BoVWModel) -> dict[str, np.ndarray]:
    """The learned arrays of a model, as written to ``model.npz``."""
    v = model.vocabulary
    out: dict[str, np.ndarray] = {}
    if isinstance(v, GMMVocabulary):
        out["gmm_weights"] = np.asarray(v.weights_, dtype=np.float64)
        out["gmm_means"] = np.asarray(v.means_, dtype=np.float32)
        out["gmm_variances"] = np.asarray(v.variances_, dtype=np.float32)
        if v.pca_ is not None:
            out["pca_mean"] = np.asarray(v.pca_.mean_)
            out["pca_components"] = np.asarray(v.pca_.components_)
            out["pca_explained_variance"] = np.asarray(v.pca_.explained_variance_)
    else:
        out["centers"] = np.asarray(v.centers_, dtype=np.float32)
    out["coef"] = model.coef
    out["intercept"] = model.intercept
    out["classes"] = model.svm_classes
    return out


def model_metadata(model: BoVWModel) -> dict[str, Any]:
    """Everything but the arrays, as written to ``model.json`` (without the npz hash)."""
    v = model.vocabulary
    if isinstance(v, GMMVocabulary):
        vocab = {
            "type": "gmm",
            "n_words": int(v.means_.shape[0]),
            "n_features_in": int(v.n_features_in_),
            "pca": v.pca_ is not None,
            "whiten": bool(v.whiten),
            "mirror_symmetric": bool(v.mirror_symmetric),
        }
    else:
        vocab = {
            "type": "kmeans",
            "n_words": int(v.centers_.shape[0]),
            "n_features_in": int(v.centers_.shape[1]),
        }
    vocab["chunk_size"] = getattr(v, "chunk_size", None)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": _versions(),
        "classes": model.classes,
        "dataset_manifest": model.dataset_manifest,
        "config": _jsonable(model.config.to_dict()),
        "vocabulary": vocab,
        "encoder": {"name": model.config.encoding.encoding, "params": model.encoder_params},
        "kernel_map": model.kernel_map,
        "classifier": {
            "alpha": model.alpha,
            "n_features": model.n_features_,
            "loss": model.config.classifier.loss,
        },
    }


# --------------------------------------------------------------------------- helpers


def _versions() -> dict[str, str]:
    import sklearn

    return {
        "bovw": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "opencv": cv2.__version__,
    }


def _sha256(source: Path | BinaryIO) -> str:
    """SHA-256 of a file, given as a path or as an open binary file (read from its start)."""
    if isinstance(source, str | os.PathLike):
        with open(source, "rb") as f:
            return _sha256(f)
    h = hashlib.sha256()
    source.seek(0)
    for block in iter(lambda: source.read(1 << 20), b""):
        h.update(block)
    return h.hexdigest()
