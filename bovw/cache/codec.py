"""Stage results as plain data: a JSON tree plus named NumPy arrays, never a pickle.

The cache is shared between runs, processes, bovw versions and (with Dask)
machines, so nothing read from it may execute code. :func:`encode` turns a
stage result into a JSON-able tree in which every array is replaced by a
reference to a named array; :func:`decode` rebuilds the value from that tree
and those arrays. Objects are rebuilt only for the classes in
:data:`ALLOWED_CLASSES` (and functions only from :data:`ALLOWED_FUNCTIONS`):
the file names a class, the code that runs is this module's, and the state it
sets is data (numbers, strings, arrays, nested allowed objects). Object arrays
are refused on both sides.

Node forms of the tree (every non-JSON value is a one-key dict, so a plain
dict is tagged too)::

    None, bool, int, str                  as themselves
    float                                 itself, or {"float": "nan" | "inf" | "-inf"}
    list                                  [node, ...]
    tuple                                 {"tuple": [node, ...]}
    dict                                  {"dict": [[key node, value node], ...]}
    ndarray                               {"array": name}
    NumPy scalar                          {"scalar": [dtype str, Python value node]}
    dtype                                 {"dtype": str}
    allowed object                        {"object": class name, "state": {attr: node}}
    allowed function                      {"function": name}
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


class CodecError(ValueError):
    """A value that cannot be stored as data, or a tree that does not describe one."""


#: The classes an entry may name, by ``module.qualname``: scikit-learn's here, bovw's
#: registered by the modules that store them (:func:`allow`), so the cache imports no stage.
_CLASSES: dict[str, type] = {}
#: The functions an entry may name (e.g. a FunctionTransformer's ``func``).
_FUNCTIONS: dict[str, Any] = {}


def _name(obj: Any) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


def allow(*classes: type) -> None:
    """Let entries hold objects of these classes (rebuilt from their ``__dict__``)."""
    for cls in classes:
        _CLASSES[_name(cls)] = cls


def allow_function(*functions: Any) -> None:
    """Let entries refer to these module-level functions by name."""
    for func in functions:
        _FUNCTIONS[_name(func)] = func


def allowed_classes() -> dict[str, type]:
    """The classes an entry may name (scikit-learn's fitted pieces, and those :func:`allow`-ed)."""
    if not any(name.startswith("sklearn.") for name in _CLASSES):
        from sklearn.decomposition import PCA
        from sklearn.kernel_approximation import AdditiveChi2Sampler
        from sklearn.linear_model import SGDClassifier
        from sklearn.mixture import GaussianMixture
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import FunctionTransformer, Normalizer

        allow(PCA, AdditiveChi2Sampler, SGDClassifier, GaussianMixture, Pipeline)
        allow(FunctionTransformer, Normalizer)
    return _CLASSES


def allowed_functions() -> dict[str, Any]:
    """The functions an entry may name."""
    return _FUNCTIONS


def encode(value: Any) -> tuple[Any, dict[str, np.ndarray]]:
    """``value`` as ``(tree, arrays)``: a JSON-able tree and the arrays it refers to.

    One array object referred to twice (e.g. an attribute and its cached alias)
    is stored once and comes back as one object.
    """
    arrays: dict[str, np.ndarray] = {}
    names: dict[int, str] = {}
    keep: list[Any] = []  # holds the arrays so that their ids stay unique while encoding
    return _encode_value(value, arrays, names, keep), arrays


def _encode_value(v: Any, arrays: dict, names: dict, keep: list) -> Any:
    """One node of :func:`encode`'s tree (module-level: a nested recursive closure would
    form a reference cycle that keeps every array alive until the cyclic collector runs)."""
    if v is None or isinstance(v, bool | str):
        return v
    if isinstance(v, int) and not isinstance(v, np.integer):
        return v
    if isinstance(v, float) and not isinstance(v, np.floating):
        return v if math.isfinite(v) else {"float": repr(v)}
    if isinstance(v, np.ndarray):
        if v.dtype.hasobject:
            raise CodecError("object arrays cannot be stored as data")
        name = names.get(id(v))
        if name is None:
            name = f"a{len(arrays)}"
            names[id(v)] = name
            arrays[name] = v
            keep.append(v)
        return {"array": name}
    if isinstance(v, np.generic):
        if v.dtype.hasobject:
            raise CodecError("object scalars cannot be stored as data")
        return {"scalar": [v.dtype.str, _encode_value(v.item(), arrays, names, keep)]}
    if isinstance(v, np.dtype):
        return {"dtype": v.str}
    if isinstance(v, list):
        return [_encode_value(x, arrays, names, keep) for x in v]
    if isinstance(v, tuple):
        return {"tuple": [_encode_value(x, arrays, names, keep) for x in v]}
    if isinstance(v, dict):
        return {
            "dict": [
                [_encode_value(k, arrays, names, keep), _encode_value(x, arrays, names, keep)]
                for k, x in v.items()
            ]
        }
    for name, func in allowed_functions().items():
        if v is func:
            return {"function": name}
    cls = type(v)
    name = f"{cls.__module__}.{cls.__qualname__}"
    if allowed_classes().get(name) is cls:
        return {
            "object": name,
            "state": {str(k): _encode_value(x, arrays, names, keep) for k, x in vars(v).items()},
        }
    raise CodecError(f"a {name} cannot be stored in the cache as data")


def decode(tree: Any, arrays: dict[str, np.ndarray]) -> Any:
    """The value that :func:`encode` described; raises :class:`CodecError` on a malformed tree."""

    return _decode_node(tree, arrays, 0)


def _decode_node(node: Any, arrays: dict[str, np.ndarray], depth: int) -> Any:
    """One node of :func:`decode` (module-level, for the reason given in :func:`_encode_value`)."""
    if depth > 64:
        raise CodecError("the entry is nested too deeply")
    if node is None or isinstance(node, bool | int | float | str):
        return node
    if isinstance(node, list):
        return [_decode_node(x, arrays, depth + 1) for x in node]
    if not isinstance(node, dict) or len(node) not in (1, 2):
        raise CodecError(f"unexpected node {type(node).__name__}")
    if "array" in node:
        try:
            return arrays[node["array"]]
        except (KeyError, TypeError):
            raise CodecError(f"missing array {node['array']!r}") from None
    if "float" in node:
        if node["float"] not in ("nan", "inf", "-inf"):
            raise CodecError(f"bad float {node['float']!r}")
        return float(node["float"])
    if "tuple" in node:
        return tuple(_decode_node(x, arrays, depth + 1) for x in _as_list(node["tuple"]))
    if "dict" in node:
        return {
            _decode_node(k, arrays, depth + 1): _decode_node(x, arrays, depth + 1)
            for k, x in _pairs(node["dict"])
        }
    if "scalar" in node:
        dtype, value = _as_list(node["scalar"])
        dt = _dtype(dtype)
        return dt.type(_decode_node(value, arrays, depth + 1))
    if "dtype" in node:
        return _dtype(node["dtype"])
    if "function" in node:
        try:
            return allowed_functions()[node["function"]]
        except (KeyError, TypeError):
            raise CodecError(f"function {node['function']!r} is not allowed") from None
    if "object" in node:
        cls = allowed_classes().get(node["object"]) if isinstance(node["object"], str) else None
        if cls is None:
            raise CodecError(f"class {node['object']!r} is not allowed")
        state = node.get("state")
        if not isinstance(state, dict):
            raise CodecError("an object without state")
        obj = cls.__new__(cls)
        obj.__dict__.update({str(k): _decode_node(x, arrays, depth + 1) for k, x in state.items()})
        return obj
    raise CodecError(f"unknown node {sorted(node)}")


def _as_list(node: Any) -> list:
    if not isinstance(node, list):
        raise CodecError("expected a list")
    return node


def _pairs(node: Any) -> list:
    pairs = _as_list(node)
    if not all(isinstance(p, list) and len(p) == 2 for p in pairs):
        raise CodecError("expected key-value pairs")
    return pairs


def _dtype(text: Any) -> np.dtype:
    try:
        dt = np.dtype(str(text))
    except TypeError:
        raise CodecError(f"bad dtype {text!r}") from None
    if dt.hasobject:
        raise CodecError("object dtypes are not allowed")
    return dt
